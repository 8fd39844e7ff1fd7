-- Paging, memory, wire and start-up, against the stand-in server on
-- 127.0.0.1. Each figure is printed with the peer it is measured against
-- in the same run.
--   lua5.4 bench/paging.lua
local usage = require "openai_usage"
local standin = require "spec.support.standin"

local KEY = "sk-admin-bench"
local NOW = 1732406400
local lua = os.getenv("OPENAI_USAGE_LUA") or "lua5.4"
local clock = usage.clock

local srv = standin.start { key = KEY, now = NOW }
local function client(options)
  return assert(usage.new(srv:client_options(options)))
end

-- 1. Overlapped paging: 20 pages, 50 ms server latency, 50 ms of work a page.
local function busy(seconds)
  local t = clock()
  while clock() - t < seconds do
  end
end

local function walk(prefetch)
  local c = client()
  local t0 = clock()
  local pages = 0
  for _ in c:pages("images", { start_time = NOW - 20 * 3600, end_time = NOW, bucket_width = "1h", limit = 1 },
    { prefetch = prefetch }) do
    pages = pages + 1
    busy(0.05)
  end
  c:close()
  assert(pages == 20, pages)
  return clock() - t0
end

srv:settings { latency_ms = 50 }
local sequential, overlapped = walk(false), walk(true)
srv:reset()
print(("paging: 20 pages, 50 ms latency, 50 ms work a page: sequential %.0f ms, prefetch %.0f ms, ratio %.2f (goal <= 0.60)")
  :format(sequential * 1000, overlapped * 1000, overlapped / sequential))

-- 2. Memory: a lazy walk of 200 pages against one decoded page.
local function heap()
  return collectgarbage "count" * 1024
end

local c = client()
local params = { start_time = NOW - 200 * 3600, end_time = NOW, bucket_width = "1m", limit = 60,
  group_by = { "model", "size" } }
collectgarbage()
collectgarbage()
local base = heap()
local one = assert(c:images(params))
collectgarbage()
collectgarbage()
local one_page = heap() - base + c:last_transfer().buffer_bytes
one = nil -- luacheck: ignore
local function lazy_walk(step)
  collectgarbage()
  collectgarbage()
  local start = heap()
  local peak, pages, images = 0, 0, 0
  for page in c:pages("images", params) do
    pages = pages + 1
    for _, bucket in ipairs(page.data) do
      for _, row in ipairs(bucket.results) do
        images = images + row.images
      end
    end
    if step then
      collectgarbage("step", step)
    end
    local now = heap() - start + c:last_transfer().buffer_bytes
    if now > peak then
      peak = now
    end
  end
  return peak, pages, images
end
local peak, pages, images = lazy_walk()
print(("memory: %d pages walked lazily (%d images), default collector: peak %.0f KiB (Lua heap + C buffers) vs one decoded page %.0f KiB: ratio %.2f (goal <= 2.00)")
  :format(pages, images, peak / 1024, one_page / 1024, peak / one_page))
peak = lazy_walk(200)
print(("memory: the same walk with collectgarbage(\"step\", 200) after each page: peak %.0f KiB: ratio %.2f")
  :format(peak / 1024, peak / one_page))
c:close()

-- 3. Wire: the reference page, gzip, one connection for a whole walk.
local page_file = require("bench.pages").write()
srv:reset()
srv:settings { fixture_page = page_file, fixture_pages = 10 }
c = client()
local wire, body, n = 0, 0, 0
for _ in c:pages("images", { start_time = NOW - 86400 }, { prefetch = false }) do
  local t = c:last_transfer()
  wire, body, n = wire + t.wire_bytes, body + t.body_bytes, n + 1
end
c:close()
local connections = {}
local count = 0
for _, r in ipairs(srv:requests()) do
  if not connections[r.connection] then
    connections[r.connection] = true
    count = count + 1
  end
end
print(("wire: %d reference pages: %d bytes received for %d bytes of JSON: %.1f%% (goal <= 20%%), %d TCP connection(s)")
  :format(n, wire, body, 100 * wire / body, count))
os.remove(page_file)

-- 4. Start-up: require alone, and require + client + the first request ready
-- to send; beside it, what loading libcurl costs an empty C program.
local function median_of(cmd, runs)
  local xs = {}
  for i = 1, runs do
    local p = assert(io.popen(cmd))
    xs[i] = tonumber(p:read "*a")
    p:close()
  end
  table.sort(xs)
  return xs[(runs + 1) // 2]
end
local script = [[
local t0 = os.clock()
local usage = require "openai_usage"
local t1 = os.clock()
local c = assert(usage.new { api_key = "sk-x", base_url = "http://127.0.0.1:9/v1" })
assert(c:url("images", { start_time = 1730419200, group_by = "model" }))
io.write(%s)
]]
local runs = 15
local req = median_of(lua .. " -e '" .. script:format("t1 - t0") .. "'", runs)
local ready = median_of(lua .. " -e '" .. script:format("os.clock() - t0") .. "'", runs)
-- the same exec of two C programs, one of which loads libcurl: the difference
-- is what loading Debian's libcurl and its dependencies costs anyone
local function exec_ms(prog)
  local xs = {}
  for i = 1, runs do
    local t = clock()
    os.execute(prog)
    xs[i] = clock() - t
  end
  table.sort(xs)
  return xs[(runs + 1) // 2] * 1000
end
local cc = os.getenv("CC") or "cc"
local with_curl, empty = os.tmpname(), os.tmpname()
local loader = "n/a"
if os.execute(("printf '#include <curl/curl.h>\\nint main(void){return curl_global_init(CURL_GLOBAL_DEFAULT);}' "
  .. "| %s -x c -o %s - -lcurl"):format(cc, with_curl))
  and os.execute(("printf 'int main(void){return 0;}' | %s -x c -o %s -"):format(cc, empty)) then
  loader = ("%.1f ms"):format(exec_ms(with_curl) - exec_ms(empty))
end
os.remove(with_curl)
os.remove(empty)
print(("start-up: require %.2f ms; require + new + first request ready %.2f ms (goal < 10 ms); loading libcurl alone costs an empty C program %s")
  :format(req * 1000, ready * 1000, loader))

srv:stop()
