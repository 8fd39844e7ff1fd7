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

-- A page of every endpoint's own result object (1440 buckets x 8 results),
-- its fields and their JSON types taken from the rule table: the decoder
-- must keep its speed on every result type, not only on images.
local function endpoint_page(endpoint)
  local fields = usage.rules(endpoint).fields
  local seed = 7
  local function rand(n)
    seed = (seed * 1103515245 + 12345) % 2147483648
    return seed % n
  end
  local buckets = {}
  local t0 = 1730419200
  for b = 1, 1440 do
    local results = {}
    for r = 1, 8 do
      local parts = {}
      for i, f in ipairs(fields) do
        local v
        if f.name == "object" then
          v = ('"organization.%s.result"'):format(endpoint == "costs" and "costs" or "usage." .. endpoint)
        elseif f.nullable and rand(4) == 0 then
          v = "null"
        elseif f.type == "integer" then
          v = tostring(rand(5000000))
        elseif f.type == "number" then
          v = ("%.6f"):format(rand(10000000) / 1000)
        elseif f.type == "boolean" then
          v = rand(2) == 0 and "true" or "false"
        elseif f.type == "object" then
          v = ('{"value":%.8f,"currency":"usd"}'):format(rand(100000000) / 1e6)
        else
          v = ('"%s_%d"'):format(f.name:gsub("_id$", ""), rand(40))
        end
        parts[i] = ('"%s":%s'):format(f.name, v)
      end
      results[r] = "{" .. table.concat(parts, ",") .. "}"
    end
    local start = t0 + (b - 1) * 60
    buckets[b] = ('{"object":"bucket","start_time":%d,"end_time":%d,"results":[%s]}'):format(start, start + 60,
      table.concat(results, ","))
  end
  return ('{"object":"page","data":[%s],"has_more":true,"next_page":"page_AAAAAGdGxdEiJdKOAAAAAGcqsYA="}')
    :format(table.concat(buckets, ","))
end

for _, endpoint in ipairs(usage.rules()) do
  if endpoint ~= "images" then
    shapes[#shapes + 1] = { endpoint .. " results (1440 x 8)", endpoint_page(endpoint) }
  end
end

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
