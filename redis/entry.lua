-- entry.lua: a write's pending entry, field "e:<event id>" of the pending
-- hash beside its value key (see ingest/apply.h), prepended to the
-- scripts that read one. Its text:
--   <delta>|<stamp>|<previous stamp>|<created ms>|<gen>|<flags>|<dedup key>|<user>
-- flags: c counted a new user, m holds a membership mark, h HyperLogLog,
-- k keyed (an Idempotency-Key record is in the guard key). A resolver
-- that took the entry over prefixes it with "C<token>@<ms>|".
local function entry_parse(e)
  local claim = nil
  if e:byte(1) == 67 then -- 'C'
    local p = e:find('|', 1, true)
    claim = e:sub(2, p - 1)
    e = e:sub(p + 1)
  end
  local f, pos = {}, 1
  for i = 1, 7 do
    local p = e:find('|', pos, true)
    if not p then return nil end
    f[i] = e:sub(pos, p - 1)
    pos = p + 1
  end
  return {d = f[1], stamp = f[2], prev_stamp = f[3], created = f[4],
          gen = f[5], flags = f[6], dkey = f[7], user = e:sub(pos),
          claim = claim}
end

local function entry_has(en, flag) return en.flags:find(flag, 1, true) ~= nil end

-- The membership mark of a user: how many pending writes rest on the
-- user being in the dedup set. Gone once one of them is confirmed.
local function mark_field(dkey, user) return 'm:' .. dkey .. '|' .. user end

-- The worst cases of a value while writes are pending: lo if every
-- pending increase fails, hi if every pending decrease does, two string
-- keys beside the value (<value key>:lo, :hi) so that a read's MGET takes
-- lo too: a counter that only grows is read at lo, what no failure can
-- take back. Absent when nothing is pending (then both are the value).
local function escrow_get(lkey, hkey, v)
  local w = redis.call('MGET', lkey, hkey)
  return w[1] or v, w[2] or v
end

local function escrow_put(lkey, hkey, lo, hi, ttl)
  if lo == hi then
    redis.call('DEL', lkey, hkey)
    return
  end
  redis.call('MSET', lkey, lo, hkey, hi)
  if ttl and ttl > 0 then
    redis.call('EXPIRE', lkey, ttl)
    redis.call('EXPIRE', hkey, ttl)
  end
end
