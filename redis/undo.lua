-- undo.lua: takes back a pending write whose event the log refused: the
-- value by the write's own difference (so later writes stand), the
-- escrow, a counted user if no other pending write rests on them, the
-- stamp if no later write replaced it, and an Idempotency-Key record (so
-- that a retry applies afresh). Only while the write's pending entry is
-- there: after a restore (the data set does not have the write) or once
-- it was resolved or taken over, nothing is done.
-- KEYS: 1 value, 2 stamp, 3 pending hash, 4 guard, 5 lo, 6 hi.
-- ARGV: 1 event id, 2 the api's record token ('': unkeyed).
-- Returns 1 undone, 0 no entry, -1 the record is another attempt's or
-- done, -2 a resolver took the entry over.
local key, tkey, pkey, gkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local lkey, hkey = KEYS[5], KEYS[6]
local field = 'e:' .. ARGV[1]
-- a keyed write's record first: done (the applier or a resolver found its
-- event in the log) or another attempt's, it is not ours to take back
if ARGV[2] ~= '' then
  local g = redis.call('GET', gkey)
  if g and g:match('^AP|%d+|(%x+)|') ~= ARGV[2] then return -1 end
end
local raw = redis.call('HGET', pkey, field)
if not raw then return 0 end
local en = entry_parse(raw)
if not en or en.claim then return -2 end
if ARGV[2] ~= '' then redis.call('DEL', gkey) end
redis.call('HDEL', pkey, field)

local v = redis.call('GET', key) or '0'
local lo, hi = escrow_get(lkey, hkey, v)
local ttl = redis.call('PTTL', key)
ttl = ttl > 0 and math.ceil(ttl / 1000) or 0
local d = en.d
if entry_has(en, 'm') then
  local mark = mark_field(en.dkey, en.user)
  local n = redis.call('HGET', pkey, mark)
  -- no mark: another write of this user was confirmed; the user stays
  if n and tonumber(n) > 1 then
    redis.call('HINCRBY', pkey, mark, -1)
  elseif n then
    redis.call('HDEL', pkey, mark)
    redis.call('SREM', en.dkey, en.user)
    redis.call('DECRBY', key, 1)
    escrow_put(lkey, hkey, lo, i64_sub(hi, '1'), ttl)
  end
elseif d ~= '0' then
  redis.call('DECRBY', key, d)
  if i64_neg_p(d) then lo = i64_sub(lo, d) else hi = i64_sub(hi, d) end
  escrow_put(lkey, hkey, lo, hi, ttl)
end
if redis.call('GET', tkey) == en.stamp then
  if en.prev_stamp == '' then redis.call('DEL', tkey)
  else redis.call('SET', tkey, en.prev_stamp, 'KEEPTTL') end
end
if redis.call('GET', key) == '0' and redis.call('EXISTS', tkey) == 0 then
  redis.call('DEL', key)
end
return 1
