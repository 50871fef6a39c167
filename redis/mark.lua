-- mark.lua: a restore marks a slot as its own ("restoring:<gen>:<token>")
-- unless a later restore (a higher generation, from INCR of
-- counter:restore-gen when it took the lock) already marked it or set its
-- epoch ("<gen>-..."): a restore that stalled past its lock and wakes up
-- must not take slots back from the one that replaced it.
-- KEYS: 1 the marker. ARGV: 1 this restore's generation, 2 the mark.
-- Returns OK, or the error "FENCED".
local cur = redis.call('GET', KEYS[1])
if cur then
  local gen = cur:match('^restoring:(%d+):') or cur:match('^(%d+)%-')
  if gen and tonumber(gen) > tonumber(ARGV[1]) then
    return redis.error_reply('FENCED a later restore holds the slot')
  end
end
return redis.call('SET', KEYS[1], ARGV[2])
