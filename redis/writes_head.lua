-- writes_head.lua, writes_tail.lua: around write.lua, the writes of one
-- loop turn of the api in one call (redis/CMakeLists.txt: writes). Each
-- write is write.lua on its own 9 keys and 16 arguments, in order, and
-- answers as write.lua does; one that raises an error answers that error
-- in its place and the others still run.
local function write_one(KEYS, ARGV)
