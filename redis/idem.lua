-- idem.lua: a retry takes over the pending Idempotency-Key record of a
-- first attempt whose lease ran out, if it still reads ARGV[1] exactly,
-- by writing ARGV[2], keeping its expiry. KEYS: 1 guard.
-- Returns 1 taken over, 0 not.
local g = redis.call('GET', KEYS[1])
if g ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
