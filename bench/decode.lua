-- Decoder throughput: usage.decode against lua-cjson's cjson.decode in the
-- same process, on the reference page and on pages of other shapes.
-- Median of interleaved runs; prints one row per shape with the ratio.
--   lua5.4 bench/decode.lua [RUNS=21]
local usage = require "openai_usage"
local cjson = require "cjson"
local pages = require "bench.pages"

local runs = tonumber(arg and arg[1]) or 21

-- Other shapes, derived from the reference page so they stay comparable.
local function pretty(text)
  local out, depth, in_string, escaped = {}, 0, false, false
  for i = 1, #text do
    local c = text:sub(i, i)
    if in_string then
      out[#out + 1] = c
      if escaped then
        escaped = false
      elseif c == "\\" then
        escaped = true
      elseif c == '"' then
        in_string = false
      end
    elseif c == '"' then
      in_string = true
      out[#out + 1] = c
    elseif c == "{" or c == "[" then
      depth = depth + 1
      out[#out + 1] = c .. "\n" .. ("  "):rep(depth)
    elseif c == "}" or c == "]" then
      depth = depth - 1
      out[#out + 1] = "\n" .. ("  "):rep(depth) .. c
    elseif c == "," then
      out[#out + 1] = ",\n" .. ("  "):rep(depth)
    elseif c == ":" then
      out[#out + 1] = ": "
    else
      out[#out + 1] = c
    end
  end
  return table.concat(out)
end

local reference = pages.generate(1440, 8)
local shapes = {
  { "reference page (1440 x 8)", reference },
  { "sparse minute buckets (1440 x 1)", pages.generate(1440, 1) },
  { "long ids", (reference:gsub('"proj_(%d+)"', '"proj_%1' .. ("abcdefghijklmnopqrstuvwxyz0123456789"):rep(3) .. '"')) },
  { "escaped and non-ASCII strings", (reference:gsub('"user_id":null', '"user_id":"us\\u00e9r-\\"q\\"-\\ud83d\\ude00-ñ"')) },
  { "pretty-printed", pretty(reference) },
}

local function median(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end

local function time(f, text)
  local t0 = os.clock()
  local v = f(text)
  local t = os.clock() - t0
  assert(v ~= nil)
  return t
end

print(("decode: median of %d interleaved runs, %s, lua-cjson %s"):format(runs, _VERSION, cjson._VERSION or "?"))
print(("%-34s %9s %12s %12s %8s"):format("page", "bytes", "cjson ms", "usage ms", "ratio"))
for _, shape in ipairs(shapes) do
  local name, text = shape[1], shape[2]
  assert(usage.decode(text), name)
  local ours, theirs = {}, {}
  for i = 1, runs do
    collectgarbage()
    if i % 2 == 0 then
      theirs[i] = time(cjson.decode, text)
      ours[i] = time(usage.decode, text)
    else
      ours[i] = time(usage.decode, text)
      theirs[i] = time(cjson.decode, text)
    end
  end
  local c, u = median(theirs), median(ours)
  print(("%-34s %9d %12.2f %12.2f %7.2fx"):format(name, #text, c * 1000, u * 1000, c / u))
end
