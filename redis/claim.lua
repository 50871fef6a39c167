-- claim.lua: a resolver takes over a pending entry it read, if it still
-- reads the same, so that neither the api's late undo nor another
-- resolver acts on it while this one decides (see applier/resolver.c).
-- KEYS: 1 pending hash. ARGV: 1 event id, 2 the entry as read, 3 the
-- claim prefix "C<token>@<ms>|".
-- Returns 1 claimed, 0 changed meanwhile.
local field = 'e:' .. ARGV[1]
local raw = redis.call('HGET', KEYS[1], field)
if raw ~= ARGV[2] then return 0 end
if raw:byte(1) == 67 then raw = raw:sub(raw:find('|', 1, true) + 1) end
redis.call('HSET', KEYS[1], field, ARGV[3] .. raw)
return 1
