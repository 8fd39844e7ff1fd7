--- A JSON writer that keeps what the decoder read: integers exact (lua-cjson
-- prints 2^53 + 1 as 9.007199254741e+15), floats in their shortest exact
-- form, object members in a given order. Used by the json/jsonl report
-- formats and by the page cache.
local M = {}

local floor = math.floor

local ESCAPE = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}

--- A JSON string literal; UTF-8 passes through, control bytes are escaped,
-- a byte that is not UTF-8 is read as U+FFFD (text.valid: the one rule for
-- such bytes), so the literal is always JSON.
function M.string(s)
  if s:find "[\128-\255]" then
    s = require("openai_usage.text").valid(s)
  end
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ESCAPE[c] or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

--- Whether a number is an integer: its subtype from Lua 5.3 on; on 5.1
-- and LuaJIT, a whole double within 2^53 (where doubles count exactly).
local function is_integer(v)
  if math.type then
    return math.type(v) == "integer"
  end
  return v == floor(v) and v >= -2 ^ 53 and v <= 2 ^ 53
end
M.is_integer = is_integer

--- The shortest decimal text that reads back as the same number; nil for
-- NaN and infinities, which JSON cannot hold.
function M.number(v)
  if is_integer(v) then
    return ("%d"):format(v)
  end
  if v ~= v or v == math.huge or v == -math.huge then
    return nil
  end
  for digits = 15, 17 do
    -- the C locale's decimal point may be a comma (tonumber reads it back
    -- in that locale); JSON's is a point
    local text = ("%." .. digits .. "g"):format(v)
    if tonumber(text) == v then
      text = text:gsub(",", ".")
      if not text:find "[%.eEn]" then
        text = text .. ".0" -- stays a float when read back
      end
      return text
    end
  end
end

local function is_list(t)
  local n = 0
  for _ in pairs(t) do
    n = n + 1
  end
  return n == #t and (n > 0 or getmetatable(t) == M.array)
end

M.array = {} -- metatable marking an empty table as [] rather than {}

--- JSON text of a value: nil -> null, tables with keys 1..n -> arrays,
-- other tables -> objects with sorted keys (or keys in order, a list of
-- names, when given for the top level).
function M.encode(value, order)
  local t = type(value)
  if value == nil then
    return "null"
  elseif t == "boolean" then
    return tostring(value)
  elseif t == "number" then
    return M.number(value) or "null"
  elseif t == "string" then
    return M.string(value)
  elseif t ~= "table" then
    error("json: cannot encode a " .. t)
  end
  local parts = {}
  if is_list(value) then
    for i = 1, #value do
      parts[i] = M.encode(value[i])
    end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  if not order then
    order = {}
    for k in pairs(value) do
      if type(k) ~= "string" then
        error("json: object keys must be strings, got a " .. type(k))
      end
      order[#order + 1] = k
    end
    table.sort(order)
    for i, k in ipairs(order) do
      parts[i] = M.string(k) .. ":" .. M.encode(value[k])
    end
  else
    for i, k in ipairs(order) do
      parts[i] = M.string(k) .. ":" .. M.encode(value[k])
    end
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

return M
