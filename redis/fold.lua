-- fold.lua: consecutive external events of one counter (one value key, one
-- partition of one topic), applied in order in one call by counter-applier.
-- Each event is decided as write.lua decides a confirmed write (no pending
-- entry, no Idempotency-Key record): the same epoch check, offset fence,
-- dedup (SADD or PFADD), bounds judged on the escrow's worst cases (lo/hi)
-- and int64 arithmetic (int64.lua); the value, its stamp and the escrow are
-- written once, at the end. Nothing is written before the checks that can
-- fail (an error reply leaves no trace).
--
-- An event id is remembered in the counter's id window rather than in a
-- key of its own: 63-bit fingerprints in sets of integers (Redis intsets,
-- 8 bytes each), one group of sets per slice of ARGV[8] seconds, looked up
-- in this slice and the one before, all expiring two slices after their
-- own began. A slice's sets grow by linear hashing: its meta key
-- "<prefix>:<slice>" holds "L,s,n" (level, split pointer, ids) and bucket
-- b is "<prefix>:<slice>:<b>"; buckets split when they average more than
-- SPLIT_AT ids, so each stays an intset (Redis's default limit is 512).
-- A guard key of the id ({c:NAME}:id:ID, written by a restore, by
-- write.lua or an older version) counts as seen too.
--
-- What an event led to is kept, beside the fence, only where replaying it
-- could not tell (the "outcome log", ARGV[9..11]): if the applier dies
-- before the records of these events are delivered and their offsets
-- committed, the events come again, the fence says "applied before", and
-- the log says what to publish. Only exceptions are kept (a duplicate,
-- a refusal, a clamp, an overflow); a plain applied event publishes its own
-- delta. One list element per call, "<last offset>|<off>:<code>,...",
-- dropped once the group's committed offset passed it.
--
-- KEYS: 1 value, 2 stamp, 3 pending hash, 4 dedup set or HLL, 5 fence,
--   6 epoch marker of the slot, 7 lo, 8 hi, 9 outcome log, 10 id window
--   prefix, 11 guard key prefix ("{c:NAME}:id:").
-- ARGV: 1 dedup (''|exact|hll), 2 min, 3 max ('': none), 4 on_bound
--   (reject|clamp), 5 expiry of value and stamp ('0': none), 6 of the dedup
--   key, 7 now (s), 8 window slice (s), 9 committed offset (entries of the
--   outcome log below it go; '': none known), 10 outcome log expiry (s),
--   11 events, then 6 per event: offset, id, fingerprint (decimal, < 2^63),
--   delta, stamp ms ('0': none), user id.
-- Returns {'ok', code...} with one code per event, or {'epoch', marker}
-- when the slot holds no epoch (nothing done). Codes: 'a<delta>' applied,
-- 'u' user counted before, 'r' refused by a bound, 'o' out of the int64
-- range, 'd' id in the window, 'g<guard>' id in a guard key, 'A' offset
-- applied before (then the log's code, or 'G<guard>' when only a guard
-- key knows).
local key, tkey, pkey, dkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local fkey, ekey, lkey, hkey = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local xkey, wpre, gpre = KEYS[9], KEYS[10], KEYS[11]
local dedup, min, max, clamp = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == 'clamp'
local ttl, dttl = tonumber(ARGV[5]), tonumber(ARGV[6])
local now, slice_s = tonumber(ARGV[7]), tonumber(ARGV[8])
local n = tonumber(ARGV[11])
local SPLIT_AT, MAX_LEVEL = 128, 24

local epoch = redis.call('GET', ekey) or ''
if epoch == '' or epoch:byte(1) == 114 then -- none, or 'restoring:'
  return {'epoch', epoch}
end

-- reads that may fail (a key of the wrong type) come before any write
local v0 = redis.call('GET', key)
local existed = v0 ~= nil and v0 ~= false
if not existed then v0 = '0' end
if not v0:match('^%-?%d+$') then
  return redis.error_reply('ERR value of ' .. key .. ' is not an integer')
end
local lo, hi = escrow_get(lkey, hkey, v0)
local escrow_on = lo ~= v0 or hi ~= v0
local last = redis.call('GET', fkey)
local hll_count
if dedup == 'exact' then
  local t = redis.call('TYPE', dkey).ok
  if t ~= 'none' and t ~= 'set' then
    return redis.error_reply('WRONGTYPE ' .. dkey)
  end
elseif dedup == 'hll' then
  hll_count = redis.call('PFCOUNT', dkey)
end
local ids = {}
for i = 1, n do ids[i] = gpre .. ARGV[12 + (i - 1) * 6 + 1] end
local guards = redis.call('MGET', unpack(ids))

-- ---------------------------------------------------------- id window ---
local slice = math.floor(now / slice_s)
local expire_at = (slice + 2) * slice_s + 60
local function sel(m) return tonumber(m:sub(-9)) end
local function meta_read(s)
  local t = redis.call('GET', wpre .. ':' .. s)
  if not t then return nil end
  local l, sp, c = t:match('^(%d+),(%d+),(%d+)$')
  return {l = tonumber(l), s = tonumber(sp), n = tonumber(c)}
end
local cpre = wpre .. ':' .. slice .. ':' -- this slice's buckets
local function bucket(meta, m)
  local b = sel(m) % 2 ^ meta.l
  if b < meta.s then b = sel(m) % 2 ^ (meta.l + 1) end
  return b
end
local make_first = false
local prev = meta_read(slice - 1)
local cur = meta_read(slice)
if not cur then
  cur = {l = 0, s = 0, n = 0}
  make_first = true
end
-- A bucket is made (with its expiry) when its slice or its split makes
-- it, holding the sentinel -1 (no fingerprint is negative), so that an
-- insert never needs to set an expiry.
local function make(bk)
  redis.call('SADD', bk, '-1')
  redis.call('EXPIREAT', bk, expire_at)
end
local function split()
  local from = cur.s
  local to = from + 2 ^ cur.l
  local fk, tk = wpre .. ':' .. slice .. ':' .. from, wpre .. ':' .. slice .. ':' .. to
  local move = {}
  for _, m in ipairs(redis.call('SMEMBERS', fk)) do
    if m ~= '-1' and sel(m) % 2 ^ (cur.l + 1) == to then move[#move + 1] = m end
  end
  make(tk)
  if #move > 0 then
    redis.call('SREM', fk, unpack(move))
    redis.call('SADD', tk, unpack(move))
  end
  cur.s = cur.s + 1
  if cur.s == 2 ^ cur.l then cur.l, cur.s = cur.l + 1, 0 end
end
-- 1 if m was in the window, else 0 (and m is in it now)
local function seen(m)
  if prev and redis.call('SISMEMBER', wpre .. ':' .. (slice - 1) .. ':' ..
      bucket(prev, m), m) == 1 then
    return 1
  end
  if make_first then
    make(wpre .. ':' .. slice .. ':0')
    make_first = false
  end
  if redis.call('SADD', cpre .. bucket(cur, m), m) == 0 then return 1 end
  cur.n = cur.n + 1
  if cur.n > (2 ^ cur.l + cur.s) * SPLIT_AT and cur.l < MAX_LEVEL then split() end
  return 0
end
local function unsee(m)
  redis.call('SREM', cpre .. bucket(cur, m), m)
end

-- ------------------------------------------------------- outcome log ---
local log_map
local function logged(off)
  if not log_map then
    log_map = {}
    for _, e in ipairs(redis.call('LRANGE', xkey, 0, -1)) do
      for o, c in e:gmatch('(%d+):([^,]*)') do log_map[o] = c end
    end
  end
  return log_map[off]
end
local exceptions = {}

-- ------------------------------------------------------------ events ---
local v, stamp, applied, dedup_touched = v0, nil, false, false
local out = {'ok'}
local last_off = nil
for i = 1, n do
  local b = 12 + (i - 1) * 6
  local off, m, arg, ts, user = ARGV[b], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  local code
  if last and i64_cmp(off, last) <= 0 then
    local c = logged(off)
    if c then
      code = 'A' .. c
      if c == 'g' then code = code .. (guards[i] or '') end
    elseif guards[i] then code = 'AG' .. guards[i]
    else code = 'A' end
  elseif guards[i] then
    code = 'g' .. guards[i]
  elseif seen(m) == 1 then
    code = 'd'
  elseif dedup == 'exact' then
    dedup_touched = true
    if redis.call('SADD', dkey, user) == 0 then
      local mark = mark_field(dkey, user)
      if redis.call('HEXISTS', pkey, mark) == 1 then
        -- a pending write rests on this user: this one confirms it
        redis.call('HDEL', pkey, mark)
        lo = i64_add(lo, '1')
        escrow_on = true
      end
      code = 'u'
    elseif not i64_fits(i64_add(hi, '1')) then
      redis.call('SREM', dkey, user)
      code = 'o'
    else
      lo, hi, v = i64_add(lo, '1'), i64_add(hi, '1'), i64_add(v, '1')
      if ts ~= '0' then stamp = ts end
      applied = true
      code = 'a1'
    end
  else
    local d = arg
    if dedup == 'hll' then
      dedup_touched = true
      redis.call('PFADD', dkey, user)
      local after = redis.call('PFCOUNT', dkey)
      d = after > hll_count and string.format('%d', after - hll_count) or nil
      hll_count = after
    end
    if d == nil then
      code = 'u'
    elseif not escrow_on and min == '' and max == '' then
      -- nothing pending, no bounds: lo = hi = v, one sum to judge
      local nv = i64_add(v, d)
      if i64_fits(nv) then
        v, lo, hi = nv, nv, nv
        if ts ~= '0' then stamp = ts end
        applied = true
        code = 'a' .. d
      else
        code = 'o'
      end
    else
      local nlo, nhi = i64_add(lo, d), i64_add(hi, d)
      local down = i64_neg_p(d)
      local below = down and min ~= '' and i64_cmp(nlo, min) < 0
      local above = not down and d ~= '0' and max ~= '' and i64_cmp(nhi, max) > 0
      if (below or above) and not clamp then
        code = 'r'
      else
        if below then
          d = i64_sub(min, lo)
          if not i64_neg_p(d) then d = '0' end
        elseif above then
          d = i64_sub(max, hi)
          if i64_neg_p(d) then d = '0' end
        end
        nlo, nhi = i64_add(lo, d), i64_add(hi, d)
        if not (i64_fits(d) and i64_fits(nlo) and i64_fits(nhi)) then
          code = 'o'
        else
          lo, hi, v = nlo, nhi, i64_add(v, d)
          if ts ~= '0' then stamp = ts end
          applied = true
          code = 'a' .. d
        end
      end
    end
  end
  if code == 'o' then unsee(m) end -- as write.lua: not remembered
  out[#out + 1] = code
  if code:byte(1) ~= 65 then -- not 'A': decided now
    last_off = off
    local plain = code == 'a' .. arg or
      (dedup ~= '' and (code == 'u' or code:byte(1) == 97))
    if not plain then
      exceptions[#exceptions + 1] = off .. ':' .. code:sub(1, 1) ..
        (code:byte(1) == 97 and code:sub(2) or '')
    end
  end
end

-- ------------------------------------------------------------ writes ---
if applied then
  if v ~= v0 or not existed then redis.call('SET', key, v, 'KEEPTTL') end
  if stamp then redis.call('SET', tkey, stamp) end
  if ttl > 0 then
    redis.call('EXPIRE', key, ttl)
    redis.call('EXPIRE', tkey, ttl)
  end
end
if escrow_on then escrow_put(lkey, hkey, lo, hi, ttl) end
if dedup_touched and dttl > 0 then redis.call('EXPIRE', dkey, dttl) end
if cur.n > 0 then
  redis.call('SET', wpre .. ':' .. slice, cur.l .. ',' .. cur.s .. ',' .. cur.n,
    'EXAT', expire_at)
end
if last_off then redis.call('SET', fkey, last_off) end
-- the outcome log: what the committed offset passed goes
local committed = ARGV[9]
if committed ~= '' then
  while true do
    local head = redis.call('LINDEX', xkey, 0)
    if not head then break end
    local o = head:match('^(%d+)|')
    if not o or i64_cmp(o, committed) >= 0 then break end
    redis.call('LPOP', xkey)
  end
end
if #exceptions > 0 then
  redis.call('RPUSH', xkey, last_off .. '|' .. table.concat(exceptions, ','))
  redis.call('EXPIRE', xkey, ARGV[10])
end
return out
