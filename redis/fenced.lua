-- fenced.lua: one command of a restore on one key, run only while the
-- epoch marker of the key's slot still names this restore
-- ("restoring:<token>"), so that a restore that stalled past its lock
-- and was replaced by another cannot write into the other's data set.
-- KEYS: 1 the marker, 2 the key. ARGV: 1 the marker's expected text,
-- 2 the command, 3.. its arguments after the key.
-- Returns the command's reply, or the error "FENCED".
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED the restore lost its lock')
end
return redis.call(ARGV[2], KEYS[2], unpack(ARGV, 3))
