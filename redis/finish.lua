-- finish.lua: pending writes of one value key whose events are in the
-- log: their entries go, the escrow is released (a confirmed increase
-- raises the low worst case, a confirmed decrease lowers the high one),
-- users they counted are confirmed (and count in lo), and an
-- Idempotency-Key record becomes done. An entry already gone is skipped.
-- KEYS: 1 value, 2 pending hash, 3 lo, 4 hi, then a guard key per write
--   (any key of the slot when unkeyed).
-- ARGV: per write, its event id and the api's record token ('': the
--   record is marked done whoever holds it).
-- Returns the number of entries finished.
local key, pkey, lkey, hkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local got = redis.call('MGET', key, lkey, hkey)
local v = got[1] or '0'
local lo, hi = got[2] or v, got[3] or v
-- the entries of every write at once; an id named twice is finished once
local fields = {}
for i = 1, #ARGV, 2 do fields[#fields + 1] = 'e:' .. ARGV[i] end
local raws = redis.call('HMGET', pkey, unpack(fields))
local gone, taken = {}, {}
local moved, n = false, 0
for i = 1, #ARGV, 2 do
  local field = fields[(i + 1) / 2]
  local raw = not taken[field] and raws[(i + 1) / 2]
  local en = raw and entry_parse(raw)
  if en then
    taken[field] = true
    gone[#gone + 1] = field
    n = n + 1
    if entry_has(en, 'm') then
      -- the user's membership is confirmed: it counts in lo, once
      if redis.call('HDEL', pkey, mark_field(en.dkey, en.user)) == 1 then
        lo = i64_add(lo, '1')
        moved = true
      end
    elseif en.d ~= '0' then
      if i64_neg_p(en.d) then hi = i64_add(hi, en.d)
      else lo = i64_add(lo, en.d) end
      moved = true
    end
  end
  -- the record: the attempt's own (its token), or whoever's pending one
  -- when a resolver finishes a keyed entry
  if ARGV[i + 1] ~= '' or (en and entry_has(en, 'k')) then
    local gkey = KEYS[4 + (i + 1) / 2]
    local g = redis.call('GET', gkey)
    local tok = g and g:match('^AP|%d+|(%x+)|')
    if tok and (ARGV[i + 1] == '' or tok == ARGV[i + 1]) then
      redis.call('SET', gkey, 'AD' .. g:sub(3), 'KEEPTTL')
    end
  end
end
if #gone > 0 then redis.call('HDEL', pkey, unpack(gone)) end
if moved then
  local ttl = redis.call('PTTL', key)
  escrow_put(lkey, hkey, lo, hi, ttl > 0 and math.ceil(ttl / 1000) or 0)
end
return n
