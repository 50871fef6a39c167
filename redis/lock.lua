-- lock.lua: a lock held by its owner only. KEYS: 1 the lock.
-- ARGV: 1 the owner's token, 2 take|renew|release, 3 its time to live (ms).
-- take sets it if free; renew extends it and release deletes it only
-- while it still holds the token. Returns 1 done, 0 not the owner.
local held = redis.call('GET', KEYS[1])
if ARGV[2] == 'take' then
  if held and held ~= ARGV[1] then return 0 end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return 1
end
if held ~= ARGV[1] then return 0 end
if ARGV[2] == 'renew' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  redis.call('DEL', KEYS[1])
end
return 1
