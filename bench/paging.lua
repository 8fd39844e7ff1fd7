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

-- In the host: one decoded page, then 200 pages walked lazily, as client
-- options say. Writes "one_page peak pages images" in bytes.
local function memory_walk(url, gc)
  local heap = rawget(_G, "heap") -- the host's: bytes now, high-water mark
  local c = assert(usage.new { api_key = KEY, base_url = url, gc = gc == "on" })
  local params = { start_time = NOW - 200 * 3600, end_time = NOW, bucket_width = "1m", limit = 60,
    group_by = { "model", "size" } }
  local function full()
    collectgarbage()
    collectgarbage()
    return (heap(true))
  end
  local base = full()
  local one = assert(c:images(params))
  local one_page = full() - base + c:last_transfer().buffer_bytes
  one = nil -- luacheck: ignore
  local start = full()
  local pages, images = 0, 0
  for page in c:pages("images", params) do
    pages = pages + 1
    for _, bucket in ipairs(page.data) do
      for _, row in ipairs(bucket.results) do
        images = images + row.images
      end
    end
  end
  local _, peak = heap()
  io.write(("%d %d %d %d"):format(one_page, peak - start + c:last_transfer().buffer_bytes, pages, images))
  c:close()
end
if arg and arg[1] == "--memory-walk" then
  memory_walk(arg[2], arg[3])
  os.exit(0)
end

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

-- 2. Memory: a lazy walk of 200 pages against one decoded page. The walk
-- runs in a child process, a small C host whose Lua allocator keeps the
-- heap's high-water mark, so the peak is the true one (mid-decode, with the
-- previous page still held by the loop), not a sample between pages. C
-- buffers: the client's body and URL buffers, which only grow.
local MEMORY_HOST = [[
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
static size_t now_bytes, peak_bytes;
static void *counting_alloc(void *ud, void *p, size_t osize, size_t nsize)
{
    void *q;
    (void)ud;
    if (!p)
        osize = 0;
    if (nsize == 0) {
        free(p);
        now_bytes -= osize;
        return NULL;
    }
    q = realloc(p, nsize);
    if (q) {
        now_bytes = now_bytes - osize + nsize;
        if (now_bytes > peak_bytes)
            peak_bytes = now_bytes;
    }
    return q;
}
/* heap() -> bytes now, high-water mark since the last heap(true) */
static int heap(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)now_bytes);
    lua_pushinteger(L, (lua_Integer)peak_bytes);
    if (lua_toboolean(L, 1))
        peak_bytes = now_bytes;
    return 2;
}
int main(int argc, char **argv)
{
    lua_State *L = lua_newstate(counting_alloc, NULL);
    luaL_openlibs(L);
    lua_register(L, "heap", heap);
    lua_createtable(L, argc, 0);
    for (int i = 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    lua_setglobal(L, "arg");
    if (argc < 2 || luaL_dofile(L, argv[1])) {
        fprintf(stderr, "%s\n", argc < 2 ? "usage: host script [args]" : lua_tostring(L, -1));
        return 1;
    }
    lua_close(L);
    return 0;
}
]]

local cc = os.getenv("CC") or "cc"
local lua_pkg = (os.getenv("OPENAI_USAGE_MAKE_ARGS") or ""):match "LUA_PKG=(%S+)" or "lua5.4"
local host = os.tmpname()
local host_c = host .. ".c"
local f = assert(io.open(host_c, "w"))
f:write(MEMORY_HOST)
f:close()
if os.execute(("%s -O2 -o %s %s $(pkg-config --cflags --libs %s)"):format(cc, host, host_c, lua_pkg)) then
  local function walk_in_host(gc)
    local p = assert(io.popen(("%s bench/paging.lua --memory-walk %s %s"):format(host, srv.url, gc)))
    local out = p:read "*a"
    p:close()
    local one_page, peak, pages, images = out:match "^(%d+) (%d+) (%d+) (%d+)$"
    assert(one_page, "memory walk failed: " .. out)
    return tonumber(one_page), tonumber(peak), tonumber(pages), tonumber(images)
  end
  local one_page, peak, pages, images = walk_in_host "on"
  local _, peak_off = walk_in_host "off"
  print(("memory: %d pages walked lazily (%d images): peak %.0f KiB (Lua heap high-water mark + C buffers) vs one decoded page %.0f KiB: ratio %.2f (goal <= 2.00); with gc = false %.0f KiB: ratio %.2f")
    :format(pages, images, peak / 1024, one_page / 1024, peak / one_page, peak_off / 1024, peak_off / one_page))
else
  print "memory: n/a (could not build the measuring host: needs cc and the Lua headers)"
end
os.remove(host)
os.remove(host_c)

-- 3. Wire: the reference page, gzip, one connection for a whole walk.
local page_file = require("bench.pages").write()
srv:reset()
srv:settings { fixture_page = page_file, fixture_pages = 10 }
local c = client()
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
local with_curl, empty = os.tmpname(), os.tmpname()
local loader = "n/a"
if os.execute(("printf '#include <curl/curl.h>\\nint main(void){return curl_global_init(CURL_GLOBAL_DEFAULT);}' "
  .. "| %s -x c -o %s - -lcurl"):format(cc, with_curl))
  and os.execute(("printf 'int main(void){return 0;}' | %s -x c -o %s -"):format(cc, empty)) then
  loader = ("%.1f ms"):format(exec_ms(with_curl) - exec_ms(empty))
end
os.remove(with_curl)
os.remove(empty)
-- and where that goes, timed inside a C program loading libcurl the way
-- src/curl_api.c does: dlopen (mapping, relocating and running the
-- constructors of libcurl and its dependencies), then curl_global_init
local DLOPEN_TIMER = [[
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <time.h>
static double ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
static int count(struct dl_phdr_info *info, size_t size, void *n)
{
    (void)info, (void)size;
    ++*(int *)n;
    return 0;
}
int main(void)
{
    int before = 0, after = 0;
    dl_iterate_phdr(count, &before);
    double t0 = ms();
    void *lib = dlopen("libcurl.so.4", RTLD_LAZY | RTLD_LOCAL);
    double t1 = ms();
    if (!lib)
        return 1;
    int (*global_init)(long) = (int (*)(long))dlsym(lib, "curl_global_init");
    if (!global_init || global_init(3) != 0)
        return 1;
    double t2 = ms();
    dl_iterate_phdr(count, &after);
    printf("%.3f %.3f %d\n", t1 - t0, t2 - t1, after - before);
    return 0;
}
]]
local timer = os.tmpname()
f = assert(io.open(timer .. ".c", "w"))
f:write(DLOPEN_TIMER)
f:close()
local breakdown = ""
if os.execute(("%s -O2 -o %s %s.c -ldl"):format(cc, timer, timer)) then
  local opens, inits, libs = {}, {}, 0
  for i = 1, runs do
    local p = assert(io.popen(timer))
    local a, b, n = p:read("*a"):match "^(%S+) (%S+) (%d+)"
    p:close()
    opens[i], inits[i], libs = tonumber(a), tonumber(b), tonumber(n)
  end
  table.sort(opens)
  table.sort(inits)
  breakdown = ("; in-process: dlopen %.1f ms (%d libraries mapped) + curl_global_init %.1f ms")
    :format(opens[(runs + 1) // 2], libs, inits[(runs + 1) // 2])
end
os.remove(timer)
os.remove(timer .. ".c")
print(("start-up: require %.2f ms; require + new + first request ready %.2f ms (goal < 10 ms); loading libcurl alone costs an empty C program %s%s")
  :format(req * 1000, ready * 1000, loader, breakdown))

srv:stop()
