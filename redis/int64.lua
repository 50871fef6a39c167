-- int64.lua: exact signed 64-bit arithmetic on decimal strings, prepended
-- to every script that does arithmetic. Lua's numbers are doubles, exact
-- only to 2^53, and Redis hands integer replies to Lua as doubles: every
-- value, bound and difference is a canonical decimal string here
-- ("-12", "0", never "+1" or "007"). Numbers of at most 15 characters
-- (|x| < 10^15 < 2^53) take the fast path through doubles, which is exact
-- for them; longer ones go digit by digit.
local I64_MAX, I64_MIN = '9223372036854775807', '-9223372036854775808'

local function i64_small(x) return #x <= 15 end

-- -1, 0 or 1 as a <, =, > b
local function i64_cmp(a, b)
  if i64_small(a) and i64_small(b) then
    local x, y = tonumber(a), tonumber(b)
    if x < y then return -1 elseif x > y then return 1 else return 0 end
  end
  local na, nb = a:byte(1) == 45, b:byte(1) == 45
  if na ~= nb then return na and -1 or 1 end
  local c
  if #a ~= #b then c = #a < #b and -1 or 1
  elseif a == b then c = 0
  else c = a < b and -1 or 1 end
  if na then return -c end
  return c
end

-- magnitudes (digit strings): x + y, or x - y with x >= y
local function mag(x, y, add)
  local out, carry, i, j = {}, 0, #x, #y
  while i >= 1 or j >= 1 or carry ~= 0 do
    local d = (i >= 1 and x:byte(i) - 48 or 0)
    local e = (j >= 1 and y:byte(j) - 48 or 0)
    if add then d = d + e + carry else d = d - e - carry end
    carry = 0
    if d < 0 then d, carry = d + 10, 1 elseif d > 9 then d, carry = d - 10, 1 end
    out[#out + 1] = string.char(48 + d)
    i, j = i - 1, j - 1
  end
  local s = string.reverse(table.concat(out)):gsub('^0+', '')
  if s == '' then return '0' end
  return s
end

local function i64_neg(a)
  if a == '0' then return a end
  if a:byte(1) == 45 then return a:sub(2) end
  return '-' .. a
end

-- a + b, exact; the result may lie outside int64 (see i64_fits)
local function i64_add(a, b)
  if i64_small(a) and i64_small(b) then
    return string.format('%d', tonumber(a) + tonumber(b))
  end
  local na, nb = a:byte(1) == 45, b:byte(1) == 45
  local ma, mb = na and a:sub(2) or a, nb and b:sub(2) or b
  if na == nb then
    local s = mag(ma, mb, true)
    if na then return '-' .. s end
    return s
  end
  local c
  if #ma ~= #mb then c = #ma < #mb and -1 or 1
  elseif ma == mb then return '0'
  else c = ma < mb and -1 or 1 end
  if c > 0 then
    local s = mag(ma, mb, false)
    if na then return '-' .. s end
    return s
  end
  local s = mag(mb, ma, false)
  if nb then return '-' .. s end
  return s
end

local function i64_sub(a, b) return i64_add(a, i64_neg(b)) end

local function i64_fits(x)
  return i64_cmp(x, I64_MIN) >= 0 and i64_cmp(x, I64_MAX) <= 0
end

local function i64_neg_p(x) return x:byte(1) == 45 end
