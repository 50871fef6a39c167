end

-- KEYS: 9 per write, ARGV: 16 per write, write after write.
local out = {}
for i = 0, #KEYS / 9 - 1 do
  local k, a = {}, {}
  for j = 1, 9 do k[j] = KEYS[i * 9 + j] end
  for j = 1, 16 do a[j] = ARGV[i * 16 + j] end
  local ok, res = pcall(write_one, k, a)
  if not ok then
    res = {err = type(res) == 'table' and res.err or tostring(res)}
  end
  out[i + 1] = res
end
return out
