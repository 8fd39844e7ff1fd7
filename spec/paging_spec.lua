-- Iterators: pages, buckets and result rows, fetched lazily by following
-- next_page; a repeating or missing cursor is an error, never a loop or a
-- silently short walk.
local usage = require "openai_usage"
-- the C handle's protocol (prefetch, poll, collect): private to the walks
local protocol = require "openai_usage.protocol"
local standin = require "spec.support.standin"
local util = require "spec.support.util"

local KEY = "sk-admin-paging"
local NOW = 1732406400 -- 2024-11-24T00:00:00Z
local START = NOW - 3 * 86400

-- Wall-clock seconds with sub-second precision (plain Lua has none).
local wall = util.wall

-- Bounds stretch under valgrind (make check-memory), which runs the
-- transfer thread many times slower.
local SLOW = os.getenv "OPENAI_USAGE_VALGRIND" and 10 or 1

describe("paging", function()
  local srv, c

  setup(function()
    srv = standin.start { key = KEY, now = NOW }
    c = assert(usage.new { api_key = KEY, base_url = srv.url, retry_backoff = 0.01 })
  end)

  teardown(function()
    c:close()
    srv:stop()
  end)

  before_each(function()
    srv:reset()
  end)

  local params = { start_time = START, end_time = NOW, bucket_width = "1h", limit = 24, group_by = "model" }

  it("pages() follows next_page until has_more is false", function()
    local pages, buckets = 0, 0
    for page in c:pages("images", params) do
      pages = pages + 1
      buckets = buckets + #page.data
      assert.are.equal(pages < 3, page.has_more)
    end
    assert.are.equal(3, pages)
    assert.are.equal(72, buckets)
    local records = srv:requests()
    assert.are.equal(3, #records)
    assert.is_nil(records[1].query:find("page=", 1, true))
    assert.is_not_nil(records[2].query:find("&page=", 1, true))
  end)

  it("sends each cursor exactly as next_page gave it", function()
    local cursors = {}
    for page in c:pages("images", params) do
      cursors[#cursors + 1] = page.next_page
    end
    local records = srv:requests()
    for i = 2, #records do
      local sent = usage.encode_query("images", {
        start_time = START, end_time = NOW, bucket_width = "1h", limit = 24, group_by = "model", page = cursors[i - 1],
      })
      assert.are.equal(sent, records[i].query)
    end
  end)

  it("is lazy: with prefetch off, one request per page the caller takes", function()
    local next_page = c:pages("images", params, { prefetch = false })
    assert.are.same({}, srv:requests())
    next_page()
    assert.are.equal(1, #srv:requests())
    next_page()
    assert.are.equal(2, #srv:requests())
  end)

  it("prefetches exactly one page ahead of the caller by default", function()
    local next_page = c:pages("images", params)
    assert.are.same({}, srv:requests())
    local first = next_page()
    c:last_transfer() -- waits for the prefetch to land
    local records = srv:requests()
    assert.are.equal(2, #records)
    assert.matches("page=" .. first.next_page:gsub("%p", "%%%0"), records[2].query)
    next_page()
    c:last_transfer()
    assert.are.equal(3, #srv:requests())
    assert.is_false(next_page().has_more) -- the last page: nothing more is fetched
    assert.is_nil(next_page())
    assert.are.equal(3, #srv:requests())
  end)

  it("gives the same pages with and without prefetch", function()
    local function walk(options)
      local out = {}
      for page in c:pages("images", params, options) do
        out[#out + 1] = page
      end
      return out
    end
    assert.are.same(walk { prefetch = false }, walk())
    local off = assert(usage.new { api_key = KEY, base_url = srv.url, prefetch = false })
    srv:reset()
    for _ in off:pages("images", params) do
    end
    assert.are.equal(3, #srv:requests())
    local _, err = usage.new { api_key = KEY, prefetch = "yes" }
    assert.are.equal("prefetch", err.param)
  end)

  it("stays correct when another request uses the client mid-walk", function()
    local starts = {}
    for page in c:pages("images", params) do
      assert.is_table(c:images { start_time = START, bucket_width = "1d" })
      starts[#starts + 1] = page.data[1].start_time
    end
    assert.are.same({ START, START + 86400, START + 2 * 86400 }, starts)
  end)

  it("stops a slow prefetch at once when the loop is left early (Lua 5.4)", function()
    if _VERSION ~= "Lua 5.4" then
      return pending "the generic for closes its fourth value from Lua 5.4 on"
    end
    srv:faults { { latency_ms = 0 }, { latency_ms = 5000 } }
    local t0 = wall()
    -- the break out of the generic for is what this spec tests: it stays a loop
    for _ in c:pages("images", params) do -- luacheck: ignore 512
      break
    end
    local left = wall() - t0
    assert.is_table(c:images { start_time = START }) -- the handle is free again
    -- the prefetch would take 5 s; the abort wakes its thread
    assert.is_true(left < 1.6, ("leaving the loop took %.2f s"):format(left))
  end)

  it("takes times as the report layer reads them: dates, UTC date-times, relative", function()
    local want = c:url("images", { start_time = 1730419200, end_time = 1730419200 + 12 * 3600 })
    assert.are.equal(want, c:url("images", { start_time = "2024-11-01", end_time = "2024-11-01T12:00:00Z" }))
    local page = assert(c:images { start_time = "2024-11-20", end_time = "2024-11-21" })
    assert.are.equal(1732060800, page.data[1].start_time)
    -- a relative start is read once per walk: every page asks the same range
    local seen = {}
    for p in c:pages("images", { start_time = "3d", end_time = "1d", bucket_width = "1h", limit = 24 }) do
      seen[#seen + 1] = p
    end
    assert.is_true(#seen >= 2) -- two days of hours, a day a page
    local records = srv:requests()
    local first = records[#records - #seen + 1].query:match "start_time=(%d+)"
    for i = #records - #seen + 1, #records do
      assert.are.equal(first, records[i].query:match "start_time=(%d+)")
    end
    local _, err = c:images { start_time = "yesterday" }
    assert.are.equal("invalid_argument", err.kind)
    assert.are.equal("start_time", err.param)
    assert.matches('start_time: time "yesterday"', tostring(err))
    assert.has_error(function()
      c:pages("images", { start_time = "2024-13-01" })
    end)
  end)

  it("poll() tells, without blocking, whether a prefetch has landed", function()
    srv:faults { { latency_ms = 400 } }
    local h = protocol.of(c)
    local token = assert(h:prefetch("images", params))
    local t0 = wall()
    assert.is_false(h:poll(token)) -- still on the wire: answered at once
    assert.is_true(wall() - t0 < 0.2, "poll waited for the transfer")
    local polls = 1
    while not h:poll(token) do
      polls = polls + 1
      os.execute "sleep 0.05"
    end
    assert.is_true(polls > 2, ("the 400 ms transfer was done after %d polls"):format(polls))
    local page = assert(h:collect(token))
    assert.are.equal("page", page.object)
    assert.is_true(h:poll(token)) -- a collected token reads as finished
    assert.is_false(h:collect(token)) -- and collect says it is gone
  end)

  it("cancel() stops a prefetch at once, on the wire or waiting to retry", function()
    -- on the wire: the server would answer in 5 s
    srv:faults { { latency_ms = 5000 } }
    local token = assert(protocol.of(c):prefetch("images", params))
    srv:await_requests(1)
    local t0 = wall()
    c:cancel()
    local took = wall() - t0
    assert.is_true(took < 0.3 * SLOW, ("cancelling took %.3f s"):format(took))
    assert.is_false(protocol.of(c):collect(token)) -- the page is gone, not half-read
    -- between attempts: a 500, then a backoff of 3.75..5 s
    local slow = assert(usage.new { api_key = KEY, base_url = srv.url, retry_backoff = 5, retry_backoff_max = 5 })
    srv:reset()
    srv:faults { { status = 500 } }
    token = assert(protocol.of(slow):prefetch("images", params))
    srv:await_requests(1)
    os.execute "sleep 0.1" -- its answer is in: the thread now sleeps
    t0 = wall()
    slow:cancel()
    took = wall() - t0
    assert.is_true(took < 0.3 * SLOW, ("cancelling the backoff took %.3f s"):format(took))
    assert.is_false(protocol.of(slow):collect(token))
    assert.are.equal(1, #srv:requests(), "no attempt after the cancel")
    -- both clients go on as new
    assert.are.equal("page", assert(c:images(params)).object)
    assert.are.equal("page", assert(slow:images(params)).object)
    slow:close()
  end)

  it("close() of a client with a prefetch on the wire does not wait for it", function()
    srv:faults { { latency_ms = 5000 } }
    local other = assert(usage.new { api_key = KEY, base_url = srv.url })
    assert(protocol.of(other):prefetch("images", params))
    os.execute "sleep 0.1"
    local t0 = wall()
    other:close()
    local took = wall() - t0
    assert.is_true(took < 0.3 * SLOW, ("closing took %.3f s"):format(took))
  end)

  it("collects a client whose prefetch is still in flight", function()
    srv:faults { { latency_ms = 0 }, { latency_ms = 3000 } }
    local t0 = wall()
    do
      local other = assert(usage.new { api_key = KEY, base_url = srv.url })
      local next_page = other:pages("images", params)
      assert.is_table(next_page())
    end
    collectgarbage()
    collectgarbage()
    local took = wall() - t0
    assert.is_true(took < 1.6, ("collecting the client took %.2f s"):format(took))
  end)

  it("buckets() yields every bucket once, in order, across pages", function()
    local expect = START
    local n = 0
    for bucket in c:buckets("images", params) do
      assert.are.equal(expect, bucket.start_time)
      assert.are.equal(expect + 3600, bucket.end_time)
      expect = bucket.end_time
      n = n + 1
    end
    assert.are.equal(72, n)
    assert.are.equal(NOW, expect)
  end)

  it("results() yields rows carrying their bucket's start_time and end_time", function()
    local rows, hourly = 0, 0
    for row, bucket in c:results("images", params) do
      rows = rows + 1
      hourly = hourly + row.images
      assert.are.equal(bucket.start_time, row.start_time)
      assert.are.equal(bucket.end_time, row.end_time)
      assert.is_string(row.model)
    end
    assert.is_true(rows > 0)
    -- the same usage summed by day in one page agrees with the hourly walk
    local daily = 0
    for row in c:results("images", { start_time = START, end_time = NOW }) do
      daily = daily + row.images
    end
    assert.are.equal(daily, hourly)
  end)

  it("does not change the caller's params", function()
    local mine = { start_time = START, end_time = NOW, bucket_width = "1h", limit = 24 }
    for _ in c:pages("images", mine) do
    end
    assert.is_nil(mine.page)
  end)

  it("starts from a given page cursor", function()
    local first = c:images(params)
    local n = 0
    for _ in c:pages("images", { start_time = START, end_time = NOW, bucket_width = "1h", limit = 24,
      group_by = "model", page = first.next_page }) do
      n = n + 1
    end
    assert.are.equal(2, n)
  end)

  it("raises the error table when a page fails", function()
    srv:faults { { status = 401 } }
    local ok, err = pcall(function()
      for _ in c:pages("images", params) do
      end
    end)
    assert.is_false(ok)
    assert.are.equal("http", err.kind)
    assert.are.equal(401, err.status)
  end)

  it("raises for invalid parameters before sending anything", function()
    local ok, err = pcall(function()
      for _ in c:results("images", { start_time = START, limit = 500 }) do
      end
    end)
    assert.is_false(ok)
    assert.are.equal("invalid_argument", err.kind)
    assert.are.equal("limit", err.param)
    assert.are.same({}, srv:requests())
  end)

  it("raises when the API repeats a cursor instead of looping forever", function()
    srv:settings { cursor_loop = true }
    local pages = 0
    local ok, err = pcall(function()
      for _ in c:pages("images", params) do
        pages = pages + 1
        assert(pages < 10, "the walk did not stop")
      end
    end)
    assert.is_false(ok)
    assert.are.equal("api", err.kind)
    assert.matches("repeated the cursor", err.message, 1, true)
    assert.are.equal(2, pages)
  end)

  describe("every walk ends", function()
    -- every page of a walk, and its error; fails the spec past limit pages
    local function walk_all(client, walk_params, options, limit)
      local pages = 0
      local ok, err = pcall(function()
        for _ in client:pages("images", walk_params, options) do
          pages = pages + 1
          assert(pages <= limit, "the walk did not end")
        end
      end)
      return pages, not ok and err or nil
    end

    it("a server handing out a fresh cursor forever: an api error once past the range's buckets + 2 pages", function()
      srv:settings { cursor_fresh = true }
      local pages, err = walk_all(c, params, nil, 200)
      -- 3 days of hours hold 72 buckets, and a page holds at least one
      assert.are.equal(72 + 2, pages)
      assert.are.equal("api", err.kind)
      assert.matches("handed out 74 pages for a range of at most 72 buckets", err.message, 1, true)
      assert.are.equal(74, #srv:requests())
      -- days: 3 buckets, 5 pages; an unaligned range counts each bucket it touches
      srv:reset()
      srv:settings { cursor_fresh = true }
      pages, err = walk_all(c, { start_time = START + 5, end_time = NOW - 5, bucket_width = "1d" }, nil, 200)
      assert.are.equal(3 + 2, pages, tostring(err))
      assert.are.equal("api", err.kind)
    end)

    it("a range with no end_time is bounded by now", function()
      local live = standin.start { key = KEY }
      local client = assert(usage.new { api_key = KEY, base_url = live.url })
      live:settings { cursor_fresh = true }
      local day = os.time() - os.time() % 86400
      local pages, err = walk_all(client, { start_time = day - 2 * 86400, bucket_width = "1d" }, nil, 200)
      client:close()
      live:stop()
      assert.are.equal(3 + 2, pages) -- two days and today
      assert.are.equal("api", err.kind)
    end)

    it("max_pages (client or walk option) ends a longer walk with an api error after that many pages", function()
      local pages, err = walk_all(c, params, { max_pages = 2 }, 10)
      assert.are.equal(2, pages)
      assert.are.equal("api", err.kind)
      assert.matches("max_pages (2)", err.message, 1, true)
      assert.are.equal(2, #srv:requests())
      pages, err = walk_all(c, params, { max_pages = 3 }, 10)
      assert.are.equal(3, pages)
      assert.is_nil(err)
      local capped = assert(usage.new { api_key = KEY, base_url = srv.url, max_pages = 1 })
      pages, err = walk_all(capped, params, nil, 10)
      assert.are.equal(1, pages)
      assert.matches("max_pages (1)", tostring(err), 1, true)
      pages, err = walk_all(capped, params, { max_pages = 5 }, 10) -- the walk's own wins
      assert.are.equal(3, pages)
      assert.is_nil(err)
      capped:close()
      for _, bad in ipairs { 0, -1, 1.5, "3", true } do
        local client, cerr = usage.new { api_key = KEY, base_url = srv.url, max_pages = bad }
        assert.is_nil(client)
        assert.are.equal("max_pages", cerr.param)
        srv:reset()
        pages, err = walk_all(c, params, { max_pages = bad }, 10)
        assert.are.equal(0, pages)
        assert.are.equal("invalid_argument", err.kind)
        assert.are.same({}, srv:requests())
      end
    end)
  end)

  it("raises when a page says has_more but gives no cursor", function()
    srv:faults { { status = 200, body = '{"object":"page","data":[],"has_more":true,"next_page":null}' } }
    local pages = 0
    local ok, err = pcall(function()
      for _ in c:pages("images", params) do
        pages = pages + 1
      end
    end)
    assert.is_false(ok)
    assert.are.equal(1, pages)
    assert.matches("has_more but gives no next_page", tostring(err), 1, true)
  end)

  describe("memory", function()
    -- A walk in a fresh Lua process (a small heap, as in a script): prints
    -- the size of one decoded page and the most the heap grew over the
    -- walk's start, sampled after each page, in KiB.
    local function walk_in_child(setup_gc, client_gc, walk_gc)
      local script = os.tmpname()
      local f = assert(io.open(script, "w"))
      f:write(([[
        local usage = require "openai_usage"
        local c = assert(usage.new { api_key = %q, base_url = %q, gc = %s })
        local params = { start_time = %d, end_time = %d, bucket_width = "1m", limit = 60,
          group_by = { "model", "size" } }
        %s -- the host's collector settings
        local function full()
          collectgarbage()
          collectgarbage()
          return collectgarbage "count"
        end
        local base = full()
        local one = assert(c:images(params))
        local page = full() - base
        one = nil
        full()
        %s -- again: on LuaJIT a full collection restarts a stopped collector
        local start, most, pages = collectgarbage "count", 0, 0
        for _ in c:pages("images", params, { gc = %s }) do
          pages = pages + 1
          most = math.max(most, collectgarbage "count" - start)
        end
        io.write(page, " ", most, " ", pages)
      ]]):format(KEY, srv.url, tostring(client_gc), NOW - 30 * 3600, NOW, setup_gc, setup_gc,
        tostring(walk_gc)))
      f:close()
      local p = io.popen(util.suite_lua() .. " " .. script .. " 2>&1")
      local out = p:read "*a"
      p:close()
      os.remove(script)
      local page, most, pages = out:match "^(%S+) (%S+) (%d+)$"
      assert(page, out)
      assert.are.equal(30, tonumber(pages))
      return tonumber(page), tonumber(most)
    end

    -- a host whose own collector is lazy: a cycle only when the heap has
    -- grown tenfold, so what keeps the walk small is the walk itself
    local LAZY = 'collectgarbage("setpause", 1000)'

    it("a walk keeps its garbage under half a page (gc on by default)", function()
      local page, most = walk_in_child(LAZY, nil, nil)
      -- the loop's page, the one it replaces while that is built, and less
      -- than half a page of garbage
      assert.is_true(most < 2.6 * page, ("grew %.0f KiB, pages of %.0f KiB"):format(most, page))
    end)

    it("gc = false on the client or the walk leaves garbage to the host's collector", function()
      for _, case in ipairs { { false, nil }, { true, false } } do
        local page, most = walk_in_child(LAZY, case[1], case[2])
        assert.is_true(most > 5 * page, ("grew %.0f KiB, pages of %.0f KiB"):format(most, page))
      end
    end)

    it("a stopped collector is left alone (Lua 5.2 on)", function()
      if not pcall(collectgarbage, "isrunning") then
        return pending "this Lua cannot tell whether the collector is stopped: such a host passes gc = false"
      end
      local page, most = walk_in_child('collectgarbage("stop")', nil, nil)
      assert.is_true(most > 5 * page, ("grew %.0f KiB, pages of %.0f KiB"):format(most, page))
    end)

    it("gc must be a boolean", function()
      local none, err = usage.new { api_key = KEY, base_url = srv.url, gc = "yes" }
      assert.is_nil(none)
      assert.are.equal("invalid_argument", err.kind)
      assert.are.equal("gc", err.param)
      local ok, raised = pcall(c.pages, c, "images", params, { gc = 1 })
      assert.is_false(ok)
      assert.are.equal("invalid_argument", raised.kind)
      assert.matches("gc: expected a boolean, got a number", tostring(raised), 1, true)
    end)
  end)

  describe("one walk engine", function()
    local engine = require "openai_usage.walk"

    -- A driver of its own, as another event loop would write one: each
    -- page it is asked for is requested with client:usage; every page
    -- fed, and the walk's error.
    local function drive(client, walk_params, options, displace)
      local walk = assert(engine.new(client, "images", walk_params, options))
      local pages, displaced = {}, false
      while true do
        local need, x = walk:want()
        if need == "done" then
          return pages, x, walk
        end
        local page, err = x, nil
        if need == "request" then
          if displace and not displaced then
            page, displaced = false, true -- as a transfer another request took over
          else
            page, err = client:usage("images", x)
          end
        end
        page = walk:feed(page, err)
        pages[#pages + 1] = page
      end
    end

    local function blocking(client, walk_params, options)
      local pages = {}
      local ok, err = pcall(function()
        for page in client:pages("images", walk_params, options) do
          pages[#pages + 1] = page
        end
      end)
      return pages, not ok and err or nil
    end

    it("a driver stepping walk:want and walk:feed gets client:pages's pages, then done", function()
      local expected = blocking(c, params)
      assert.are.equal(3, #expected)
      srv:reset()
      local pages, err, walk = drive(c, params)
      assert.is_nil(err)
      assert.are.same(expected, pages)
      assert.are.equal(3, walk.pages)
      assert.are.equal(3, #srv:requests())
      -- a fed false (the transfer was displaced) changes nothing: the page is asked for again
      srv:reset()
      pages = drive(c, params, nil, true)
      assert.are.same(expected, pages)
      assert.are.equal(3, #srv:requests())
    end)

    local function shape(pages)
      local out = {}
      for i, page in ipairs(pages) do
        out[i] = { #page.data, page.data[1] and page.data[1].start_time, page.has_more }
      end
      return out
    end

    it("ends with client:pages's errors: a repeated cursor, the page budget, max_pages", function()
      for _, case in ipairs {
        { settings = { cursor_loop = true }, pages = 2 },
        { settings = { cursor_fresh = true }, pages = 74 },
        { settings = {}, options = { max_pages = 2 }, pages = 2 },
      } do
        srv:reset()
        srv:settings(case.settings)
        local expected, blocking_err = blocking(c, params, case.options)
        srv:reset()
        srv:settings(case.settings)
        local pages, err = drive(c, params, case.options)
        assert.are.equal(case.pages, #expected)
        -- the same buckets page by page (a fresh cursor differs from run to run)
        assert.are.same(shape(expected), shape(pages))
        assert.are.equal("api", err.kind)
        assert.are.equal(tostring(blocking_err), tostring(err))
        assert.are.equal(getmetatable(usage.error { kind = "api", message = "x" }), getmetatable(err))
      end
      srv:reset()
      srv:settings { cursor_loop = false, cursor_fresh = false }
    end)

    it("stamps rows with their bucket's times in one place: client:results and walk.rows agree", function()
      local expected = {}
      for row in c:results("images", params) do
        expected[#expected + 1] = row
      end
      local rows = {}
      for _, page in ipairs((drive(c, params))) do
        engine.rows(page, rows)
      end
      assert.is_true(#rows > 0)
      assert.are.same(expected, rows)
      assert.are.equal(START, rows[1].start_time)
      assert.are.equal(START + 3600, rows[1].end_time)
    end)

    it("refuses bad arguments before anything is sent, as client:pages does", function()
      for _, bad in ipairs {
        { "images", { start_time = START, bucket_width = "2d" }, nil, "bucket_width" },
        { "images", "start_time=1", nil, nil },
        { "images", { start_time = "yesterday" }, nil, "start_time" },
        { "images", params, { max_pages = 0 }, "max_pages" },
      } do
        local walk, err = engine.new(c, bad[1], bad[2], bad[3])
        if walk then -- a bad query is refused when its first page is asked for
          local need, query = walk:want()
          assert.are.equal("request", need)
          walk, err = c:usage("images", query)
        end
        assert.is_nil(walk)
        assert.are.equal("invalid_argument", err.kind)
        assert.are.equal(bad[4], err.param)
      end
      assert.are.same({}, srv:requests())
    end)
  end)

  it("walks a whole range with one connection", function()
    local fresh = assert(usage.new { api_key = KEY, base_url = srv.url })
    for _ in fresh:pages("images", params) do
    end
    fresh:close()
    local ids = {}
    for _, r in ipairs(srv:requests()) do
      ids[r.connection] = true
    end
    local n = 0
    for _ in pairs(ids) do
      n = n + 1
    end
    assert.are.equal(1, n)
  end)
end)
