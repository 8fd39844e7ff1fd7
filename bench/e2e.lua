-- End to end: fetch 30 reference pages (1440 buckets x 8 results, gzip)
-- from the stand-in and sum images by model, side by side with the official
-- OpenAI Node SDK, Python requests + json, and lua-cjson over curl. Each
-- contender is a fresh process; median wall time of interleaved runs.
--   lua5.4 bench/e2e.lua [RUNS=3]
local usage = require "openai_usage"
local cjson = require "cjson"
local standin = require "spec.support.standin"

local runs = tonumber(arg and arg[1]) or 3
local lua = os.getenv("OPENAI_USAGE_LUA") or "lua5.4"
local KEY = "sk-admin-e2e"

if not io.open("bench/e2e/node_modules/openai/package.json") then
  assert(os.execute "cd bench/e2e && npm ci --no-audit --no-fund --silent", "npm ci failed (the npm registry is needed once)")
end

local page_file = require("bench.pages").write()

local srv = standin.start { key = KEY }
srv:settings { fixture_page = page_file, fixture_pages = 30 }
local args = ("%s %s 1730419200"):format(srv.url, KEY)
local contenders = {
  { "openai_usage (this project)", ("%s bench/e2e/ours.lua %s"):format(lua, args) },
  { "OpenAI Node SDK " .. "6.49.0", ("node bench/e2e/sdk.mjs %s"):format(args) },
  { "Python requests + json", ("/usr/bin/python3 bench/e2e/requests_json.py %s"):format(args) },
  { "lua-cjson over curl", ("%s bench/e2e/curl_cjson.lua %s"):format(lua, args) },
}

-- warm-up: the stand-in compresses each of the 30 pages once, on first request
assert(io.popen(contenders[1][2]):read "*a":find('"pages":30', 1, true), "warm-up walk failed")

local times, answers = {}, {}
for run = 1, runs do
  for i, c in ipairs(contenders) do
    local t0 = usage.clock()
    local p = assert(io.popen(c[2] .. " 2>&1"))
    local out = p:read "*a"
    p:close()
    local elapsed = usage.clock() - t0
    local ok, result = pcall(cjson.decode, out)
    assert(ok and result.pages == 30, c[1] .. " failed: " .. out:sub(1, 400))
    times[i] = times[i] or {}
    times[i][run] = elapsed
    answers[i] = cjson.encode(result.totals)
  end
end
srv:stop()
os.remove(page_file)

for i = 2, #contenders do
  -- every contender must reach the same totals
  local a, b = cjson.decode(answers[1]), cjson.decode(answers[i])
  for model, n in pairs(a) do
    assert(b[model] == n, contenders[i][1] .. " disagrees on " .. model)
  end
end

local function median(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end
print(("end to end: 30 reference pages (%.0f MB of JSON, gzip) summed by model; median of %d runs, wall time per process")
  :format(30 * 2.61, runs))
local ours = median(times[1])
for i, c in ipairs(contenders) do
  local t = median(times[i])
  print(("  %-30s %8.0f ms  %5.2fx our time"):format(c[1], t * 1000, t / ours))
end
