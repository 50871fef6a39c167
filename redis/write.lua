-- write.lua: one write to one counter, whole or not at all: the epoch
-- check, the applier's offset fence and event id guard, the api's
-- Idempotency-Key record, dedup (SADD or PFADD), bounds (reject or clamp)
-- judged on the worst case of the writes still pending (escrow), the
-- change, its stamp, expiries, and the write's pending entry.
--
-- KEYS: 1 value, 2 stamp, 3 pending hash, 4 dedup set or HLL, 5 fence,
--   6 guard, 7 the epoch marker of the keys' slot, 8 lo, 9 hi.
-- ARGV: 1 op (add|set), 2 delta or target, 3 stamp ms ('0': none),
--   4 dedup (''|exact|hll), 5 user id, 6 min, 7 max ('': none),
--   8 on_bound (reject|clamp), 9 expiry of value, stamp and pending hash
--   ('0': none), 10 of the dedup key, 11 fence offset ('': none),
--   12 guard expiry ('0': no guard), 13 the api's record head ('': an
--   applier guard), 14 pending entry id ('': the write is confirmed
--   already, it comes from the log), 15 '<created ms>|<gen>' of the entry,
--   16 epoch: '' the marker must hold an epoch; '=X' it must be X (a
--   restore writing); else as '' and skip if the epoch is X (an api event
--   of an older data set is applied again only on a newer one).
-- Returns {outcome, value, previous value, previous stamp, recorded,
--   epoch, seen}. Outcomes: 0 applied, 1 duplicate user, 2 refused by a
--   bound, 3 offset applied before, 4 event id applied before, 5 the api's
--   key has a record (nothing done), 6 no epoch (nothing done: the data
--   set is being restored), 7 out of the int64 range (nothing done), 8 same
--   epoch (nothing done). recorded: the guard's text (applier "a<delta>" or
--   "r", or the api's record). seen: the value a reader of a counter that
--   only grows sees once this write is confirmed (lo then).
local key, tkey, pkey, dkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local fkey, gkey, ekey, lkey, hkey = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local op, arg, ts = ARGV[1], ARGV[2], ARGV[3]
local pend = ARGV[14]

-- every key the write reads, in one call: the epoch marker, the value,
-- its stamp and worst cases (false when absent)
local got = redis.call('MGET', ekey, key, tkey, lkey, hkey)
local epoch = got[1] or ''
local want = ARGV[16]
if want:byte(1) == 61 then -- '='
  if epoch ~= want:sub(2) then return {6, '0', '0', '', '', epoch, '0'} end
elseif epoch == '' or epoch:byte(1) == 114 then -- none, or 'restoring:'
  return {6, '0', '0', '', '', epoch, '0'}
elseif want ~= '' and epoch == want then
  return {8, '0', '0', '', '', epoch, '0'}
end

-- MGET reads a key of another type as absent: a value key that is not a
-- string must fail the write before anything is written, as GET did
if not got[2] and redis.call('EXISTS', key) == 1 then
  return redis.error_reply('WRONGTYPE the value key ' .. key .. ' is not a string')
end
local prev = got[2] or '0'
local old_t = got[3] or ''
local lo, hi = got[4] or prev, got[5] or prev
local seen = lo
-- the value once the write is done: change() moves it (INCRBY's own
-- answer is a double in Lua, inexact past 2^53)
local cur = prev
local function done(outcome, recorded)
  if ARGV[11] ~= '' then redis.call('SET', fkey, ARGV[11]) end
  local v = cur
  if ARGV[13] ~= '' and outcome ~= 2 then
    recorded = ARGV[13] .. '|' .. outcome .. '|' .. v .. '|' ..
      recorded:sub(2) .. '|' .. ts .. '|' .. ARGV[15]:match('|(.*)$') ..
      '|' .. seen
    redis.call('SET', gkey, recorded, 'EX', ARGV[12])
  elseif ARGV[12] ~= '0' and ARGV[13] == '' then
    redis.call('SET', gkey, recorded, 'EX', ARGV[12])
  end
  return {outcome, v, prev, old_t, recorded, epoch, seen}
end

if ARGV[11] ~= '' then
  local last = redis.call('GET', fkey)
  if last and i64_cmp(ARGV[11], last) <= 0 then
    return {3, prev, prev, old_t, redis.call('GET', gkey) or '', epoch, lo}
  end
end
if ARGV[12] ~= '0' then
  local g = redis.call('GET', gkey)
  if g and ARGV[13] ~= '' then return {5, prev, prev, old_t, g, epoch, lo} end
  if g then
    if ARGV[11] ~= '' then redis.call('SET', fkey, ARGV[11]) end
    return {4, prev, prev, old_t, g, epoch, lo}
  end
end

local ttl, dttl = tonumber(ARGV[9]), tonumber(ARGV[10])
local flags = ARGV[13] ~= '' and 'k' or ''
local function enter(d)
  if pend == '' then return end
  local c = ARGV[15]:match('^[^|]*')
  redis.call('HSET', pkey, 'e:' .. pend, d .. '|' .. ts .. '|' .. old_t ..
    '|' .. c .. '|' .. ARGV[15]:match('|(.*)$') .. '|' .. flags .. '|' ..
    (ARGV[4] ~= '' and dkey or '') .. '|' .. ARGV[5])
  if ttl > 0 then redis.call('EXPIRE', pkey, ttl) end
end

-- the change and its stamp; the value key exists once written
local function change(d)
  if d ~= '0' then
    redis.call('INCRBY', key, d)
    cur = i64_add(prev, d)
  elseif not got[2] then redis.call('SET', key, '0') end
  if ts ~= '0' then redis.call('SET', tkey, ts) end
  if ttl > 0 then
    redis.call('EXPIRE', key, ttl)
    redis.call('EXPIRE', tkey, ttl)
  end
  enter(d)
end

if ARGV[4] == 'exact' then
  local mark = mark_field(dkey, ARGV[5])
  local added = redis.call('SADD', dkey, ARGV[5])
  if dttl > 0 then redis.call('EXPIRE', dkey, dttl) end
  if added == 0 then
    -- already counted; if that rests on writes still pending, this one
    -- rests on it too (or, coming from the log, confirms it)
    if redis.call('HEXISTS', pkey, mark) == 1 then
      if pend ~= '' then
        redis.call('HINCRBY', pkey, mark, 1)
        flags = flags .. 'm'
        enter('0')
        seen = i64_add(lo, '1') -- the user counts once this is confirmed
      else
        redis.call('HDEL', pkey, mark)
        lo = i64_add(lo, '1')
        escrow_put(lkey, hkey, lo, hi, ttl)
        seen = lo
      end
    end
    return done(1, 'a0')
  end
  if not i64_fits(i64_add(hi, '1')) then
    redis.call('SREM', dkey, ARGV[5])
    return {7, prev, prev, old_t, '', epoch, lo}
  end
  if pend ~= '' then
    redis.call('HSET', pkey, mark, 1)
    flags = flags .. 'cm'
    escrow_put(lkey, hkey, lo, i64_add(hi, '1'), ttl)
  elseif lo ~= prev or hi ~= prev then
    escrow_put(lkey, hkey, i64_add(lo, '1'), i64_add(hi, '1'), ttl)
  end
  seen = i64_add(lo, '1')
  change('1')
  return done(0, 'a1')
end

if ARGV[4] == 'hll' then
  local before = redis.call('PFCOUNT', dkey)
  redis.call('PFADD', dkey, ARGV[5])
  if dttl > 0 then redis.call('EXPIRE', dkey, dttl) end
  local after = redis.call('PFCOUNT', dkey)
  if after <= before then return done(1, 'a0') end
  arg, op, flags = string.format('%d', after - before), 'add', flags .. 'h'
end

-- the change, and the worst cases with it: a pending write moves only the
-- side it may take back; a confirmed one (from the log) moves both
local d = op == 'set' and i64_sub(arg, prev) or arg
local function worst(dd)
  if pend == '' then return i64_add(lo, dd), i64_add(hi, dd) end
  if i64_neg_p(dd) then return i64_add(lo, dd), hi end
  return lo, i64_add(hi, dd)
end
local nlo, nhi = worst(d)
-- a bound is judged on the side the write moves towards
local down, min, max = i64_neg_p(d), ARGV[6], ARGV[7]
local below = down and min ~= '' and i64_cmp(nlo, min) < 0
local above = not down and d ~= '0' and max ~= '' and i64_cmp(nhi, max) > 0
if below or above then
  if ARGV[8] ~= 'clamp' then return done(2, 'r') end
  -- as far as the bound allows, and never the other way
  if below then
    d = i64_sub(min, lo)
    if not i64_neg_p(d) then d = '0' end
  else
    d = i64_sub(max, hi)
    if i64_neg_p(d) then d = '0' end
  end
  nlo, nhi = worst(d)
end
if not (i64_fits(d) and i64_fits(nlo) and i64_fits(nhi)) then
  return {7, prev, prev, old_t, '', epoch, lo}
end
if pend ~= '' or lo ~= prev or hi ~= prev then
  escrow_put(lkey, hkey, nlo, nhi, ttl)
end
-- once confirmed, this write's whole change is in lo
seen = pend ~= '' and i64_add(lo, d) or nlo
change(d)
return done(0, 'a' .. d)
