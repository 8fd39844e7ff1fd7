-- openai_usage.async: a walk an event loop drives. Here the loop is a plain
-- Lua loop calling walk:step(); the walk must give the same pages as
-- client:pages, never make a step wait for the network, stop on cancel, and
-- end with the same errors as client:pages.
local usage = require "openai_usage"
local async = require "openai_usage.async"
local standin = require "spec.support.standin"

local KEY = "sk-admin-async"
local NOW = 1732406400 -- 2024-11-24T00:00:00Z
local START = NOW - 3 * 86400
local PARAMS = { start_time = START, end_time = NOW, bucket_width = "1h", limit = 24, group_by = "model" }

-- Deadlines stretch under valgrind (make check-memory), which runs the
-- transfer thread many times slower.
local SLOW = os.getenv "OPENAI_USAGE_VALGRIND" and 10 or 1

-- One idle tick of the loop between steps, as an event loop has: a busy
-- loop would starve the transfer thread where threads take turns
-- (valgrind runs one at a time).
local function idle()
  require("openai_usage.core").sleep(0.001)
end

-- Runs a walk to its end as an event loop would, timing every step.
-- Returns the pages, the number of steps and the slowest step's seconds.
local function drive(walk, limit)
  local pages, steps, slowest = {}, 0, 0
  local deadline = usage.clock() + (limit or 20) * SLOW
  while not walk.done do
    local t0 = usage.clock()
    local page = walk:step()
    local took = usage.clock() - t0
    steps = steps + 1
    if took > slowest then
      slowest = took
    end
    if page then
      pages[#pages + 1] = page
    else
      idle()
    end
    assert(usage.clock() < deadline, "the walk did not finish within " .. (limit or 20) * SLOW .. " s")
  end
  return pages, steps, slowest
end

-- Every page of a walk through client:pages, and the error it raised.
local function blocking_pages(client, params)
  local pages = {}
  local ok, err = pcall(function()
    for page in client:pages("images", params) do
      pages[#pages + 1] = page
    end
  end)
  return pages, not ok and err or nil
end

describe("async walk", function()
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

  it("yields the same pages as client:pages, in order, then is done without error", function()
    local expected = blocking_pages(c, PARAMS)
    assert.are.equal(3, #expected)
    srv:reset()
    local walk = assert(async.pages(c, "images", PARAMS))
    local pages = drive(walk)
    assert.are.same(expected, pages)
    assert.is_true(walk.done)
    assert.is_nil(walk.err)
    assert.are.equal(3, walk.pages)
    assert.are.equal(3, #srv:requests())
    -- a finished walk stays finished
    assert.is_nil(walk:step())
  end)

  it("starts from a given page cursor like client:pages", function()
    local first = assert(c:images(PARAMS))
    local from = { page = first.next_page }
    for k, v in pairs(PARAMS) do
      from[k] = v
    end
    local expected = blocking_pages(c, from)
    local pages = drive(assert(async.pages(c, "images", from)))
    assert.are.equal(2, #pages)
    assert.are.same(expected, pages)
  end)

  it("never waits for the network: steps answer at once while 500 ms pages arrive", function()
    srv:settings { latency_ms = 500 }
    local t0 = usage.clock()
    local walk = assert(async.pages(c, "images", PARAMS))
    local started = usage.clock() - t0
    local pages, steps, slowest = drive(walk)
    local total = usage.clock() - t0
    assert.are.equal(3, #pages)
    assert.is_true(total >= 1.5, ("three 500 ms pages took only %.3f s"):format(total))
    -- generous margins for a loaded 2-core machine; a blocking step would take >= 0.5 s
    assert.is_true(started < 0.25, ("async.pages took %.3f s"):format(started))
    assert.is_true(slowest < 0.25, ("the slowest step took %.3f s"):format(slowest))
    assert.is_true(steps > 30, ("only %d steps while three pages arrived"):format(steps))
  end)

  it("rows() stamps each result row with its bucket's times, as client:results does", function()
    local expected = {}
    for row in c:results("images", PARAMS) do
      expected[#expected + 1] = row
    end
    assert.is_true(#expected > 0)
    local rows = {}
    for _, page in ipairs(drive(assert(async.pages(c, "images", PARAMS)))) do
      async.rows(page, rows)
    end
    assert.are.same(expected, rows)
    assert.are.equal(START, rows[1].start_time)
    assert.are.equal(START + 3600, rows[1].end_time)
    assert.are.same({}, async.rows { data = { { start_time = 1, end_time = 2, results = {} } } })
  end)

  it("cancel() with a page on the wire aborts its transfer at once; the client is free", function()
    srv:faults { { latency_ms = 5000 } }
    local walk = assert(async.pages(c, "images", PARAMS))
    assert.is_nil(walk:step())
    srv:await_requests(1)
    local t0 = usage.clock()
    walk:cancel()
    local took = usage.clock() - t0
    -- the transfer's thread is woken, not left to notice within a second
    assert.is_true(took < 0.25 * SLOW, ("cancel took %.3f s"):format(took))
    assert.is_true(walk.done)
    assert.is_true(walk.cancelled)
    assert.is_nil(walk.err)
    assert.are.same({ nil, nil }, { walk:step() })
    walk:cancel() -- twice is harmless
    assert.are.equal(1, #srv:requests())
    -- the next request does not wait for the aborted one's 5 s answer
    t0 = usage.clock()
    assert.are.equal("page", assert(c:images(PARAMS)).object)
    assert.is_true(usage.clock() - t0 < 1 * SLOW)
    assert.are.equal(1, c:last_transfer().connections, "the aborted connection is not reused")
  end)

  it("cancel() of a walk whose page has landed drops it at once", function()
    local walk = assert(async.pages(c, "images", PARAMS))
    local deadline = usage.clock() + 10 * SLOW
    while not require("openai_usage.protocol").of(c):poll(walk.token) do -- the walk's own poll
      idle()
      assert(usage.clock() < deadline, "the first page did not arrive")
    end
    walk:cancel()
    assert.is_true(walk.cancelled)
    assert.is_nil(walk.busy)
    assert.is_nil(walk:step())
    assert.are.equal(0, walk.pages)
  end)

  it("cancel() between pages: no further page is handed out", function()
    srv:settings { latency_ms = 200 }
    local walk = assert(async.pages(c, "images", PARAMS))
    local deadline = usage.clock() + 10 * SLOW
    local first
    repeat
      first = walk:step()
      if not first then
        idle()
      end
      assert(usage.clock() < deadline, "the first page did not arrive")
    until first
    assert.is_false(walk.done)
    walk:cancel()
    assert.is_nil(walk:step())
    assert.are.equal(1, walk.pages)
    -- the second page's transfer was aborted (whether the server logged it
    -- depends on how far it got); the third was never asked for
    os.execute "sleep 0.5"
    assert.is_true(#srv:requests() <= 2)
  end)

  it("asks again for a page whose transfer another request on the client displaced", function()
    local expected = blocking_pages(c, PARAMS)
    srv:reset()
    local walk = assert(async.pages(c, "images", PARAMS))
    assert.are.equal("page", assert(c:images { start_time = START }).object)
    assert.are.same(expected, drive(walk))
    -- the walk's 3 pages, the other request, and the displaced first page again
    assert.are.equal(5, #srv:requests())
  end)

  it("a repeated cursor ends the walk with client:pages's error after the second page", function()
    srv:settings { cursor_loop = true }
    local expected, blocking_err = blocking_pages(c, PARAMS)
    assert.are.equal(2, #expected)
    local walk = assert(async.pages(c, "images", PARAMS))
    local pages = drive(walk)
    assert.are.equal(2, #pages)
    assert.are.equal("api", walk.err.kind)
    assert.matches("repeated the cursor", walk.err.message, 1, true)
    assert.are.equal(tostring(blocking_err), tostring(walk.err))
    local page, err = walk:step()
    assert.is_nil(page)
    assert.are.equal(walk.err, err)
  end)

  it("a server handing out a fresh cursor forever: the walk ends as client:pages's does, after 74 pages", function()
    srv:settings { cursor_fresh = true }
    local expected, blocking_err = blocking_pages(c, PARAMS)
    assert.are.equal(72 + 2, #expected) -- 72 hours, a page holds at least one
    local walk = assert(async.pages(c, "images", PARAMS))
    local pages = drive(walk)
    assert.are.equal(74, #pages)
    assert.are.equal("api", walk.err.kind)
    assert.are.equal(tostring(blocking_err), tostring(walk.err))
  end)

  it("max_pages: the walk ends with an api error after that many pages", function()
    local walk = assert(async.pages(c, "images", PARAMS, { max_pages = 2 }))
    local pages = drive(walk)
    assert.are.equal(2, #pages)
    assert.are.equal("api", walk.err.kind)
    assert.matches("max_pages (2)", walk.err.message, 1, true)
    local _, err = async.pages(c, "images", PARAMS, { max_pages = 0 })
    assert.are.equal("max_pages", err.param)
    if async.tasks_supported then
      local task = assert(async.task(c, function(client)
        local n = 0
        for _ in client:pages("images", PARAMS, { max_pages = 1 }) do
          n = n + 1
        end
        return n
      end))
      local deadline = usage.clock() + 20 * SLOW
      while not task.done and usage.clock() < deadline do
        task:step()
        idle()
      end
      assert.matches("max_pages (1)", tostring(task.err), 1, true)
    end
  end)

  it("a page with has_more and no cursor is handed out, then the walk fails", function()
    local body = '{"object":"page","data":[{"object":"bucket","start_time":1,"end_time":2,"results":[]}],'
      .. '"has_more":true,"next_page":null}'
    srv:faults { { status = 200, body = body } }
    local _, blocking_err = blocking_pages(c, PARAMS)
    srv:faults { { status = 200, body = body } }
    local walk = assert(async.pages(c, "images", PARAMS))
    local pages = drive(walk)
    assert.are.equal(1, #pages)
    assert.are.equal(1, pages[1].data[1].start_time)
    assert.are.equal("api", walk.err.kind)
    assert.are.equal(tostring(blocking_err), tostring(walk.err))
  end)

  it("an error page ends the walk with the error: a 500 after the first page", function()
    local once = assert(usage.new { api_key = KEY, base_url = srv.url, max_retries = 0 })
    srv:faults { { latency_ms = 0 }, { status = 500 } }
    local walk = assert(async.pages(once, "images", PARAMS))
    local pages = drive(walk)
    once:close()
    assert.are.equal(1, #pages)
    assert.are.equal("http", walk.err.kind)
    assert.are.equal(500, walk.err.status)
    assert.are.equal(2, #srv:requests())
  end)

  it("a refused key ends the walk with the 401, and the key is in no message", function()
    local wrong = "sk-admin-wrong-key-async"
    local other = assert(usage.new { api_key = wrong, base_url = srv.url })
    local walk = assert(async.pages(other, "images", PARAMS))
    local pages = drive(walk)
    other:close()
    assert.are.same({}, pages)
    assert.are.equal("http", walk.err.kind)
    assert.are.equal(401, walk.err.status)
    assert.is_nil(tostring(walk.err):find(wrong, 1, true))
  end)

  it("bad arguments: nil and the error at once, nothing sent", function()
    local walk, err = async.pages(c, "images", { start_time = START, bucket_width = "2d" })
    assert.is_nil(walk)
    assert.are.equal("invalid_argument", err.kind)
    assert.matches("bucket_width", tostring(err), 1, true)
    walk, err = async.pages(c, "images", "start_time=1")
    assert.is_nil(walk)
    assert.are.equal("invalid_argument", err.kind)
    walk, err = async.pages(c, "no_such_endpoint", PARAMS)
    assert.is_nil(walk)
    assert.is_not_nil(err)
    assert.are.same({}, srv:requests())
  end)
end)

if not async.tasks_supported then
  describe("async task on PUC Lua 5.1", function()
    it("is refused with a clear error: 5.1 cannot yield from a for loop's iterator", function()
      assert.are.equal("Lua 5.1", _VERSION)
      local task, err = async.task({}, function() end)
      assert.is_nil(task)
      assert.are.equal("invalid_argument", err.kind)
      assert.matches("needs Lua 5.2+ or LuaJIT", err.message, 1, true)
    end)
  end)
  return
end

describe("async task", function()
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

  -- Steps a task to its end; returns the number of steps and the slowest one.
  local function run_task(task)
    local steps, slowest = 0, 0
    local deadline = usage.clock() + 20 * SLOW
    while not task.done do
      local t0 = usage.clock()
      task:step()
      slowest = math.max(slowest, usage.clock() - t0)
      steps = steps + 1
      idle()
      assert(usage.clock() < deadline, "the task did not finish")
    end
    return steps, slowest
  end

  local function all_rows(client)
    local rows = {}
    for row in client:results("images", PARAMS) do
      rows[#rows + 1] = row
    end
    return rows
  end

  it("runs code written for the client unchanged, its walks never blocking a step", function()
    local expected = all_rows(c)
    srv:reset()
    srv:settings { latency_ms = 500 }
    local task = async.task(c, all_rows)
    local steps, slowest = run_task(task)
    assert.is_nil(task.err)
    assert.are.same(expected, task.result)
    assert.are.equal(3, task.pages)
    assert.are.equal(3, #srv:requests())
    assert.is_true(slowest < 0.25, ("the slowest step took %.3f s"):format(slowest))
    assert.is_true(steps > 30, ("only %d steps while three 500 ms pages arrived"):format(steps))
  end)

  it("walks pages and buckets too, one walk after another, and other calls reach the client", function()
    local task = async.task(c, function(client)
      local pages, buckets = 0, 0
      for _ in client:pages("images", PARAMS) do
        pages = pages + 1
      end
      for _ in client:buckets("images", PARAMS) do
        buckets = buckets + 1
      end
      return { pages = pages, buckets = buckets, url = client:url("images", PARAMS) }
    end)
    run_task(task)
    assert.is_nil(task.err)
    assert.are.same({ pages = 3, buckets = 72, url = c:url("images", PARAMS) }, task.result)
    assert.are.equal(6, task.pages)
  end)

  it("a failed walk raises in the task, which ends with that error", function()
    local wrong = assert(usage.new { api_key = "sk-admin-wrong-task-key", base_url = srv.url })
    local task = async.task(wrong, all_rows)
    run_task(task)
    wrong:close()
    assert.is_nil(task.result)
    assert.are.equal("http", task.err.kind)
    assert.are.equal(401, task.err.status)
  end)

  it("a nil, err return ends the task with err; bad arguments raise before anything is sent", function()
    local task = async.task(c, function(client)
      for _ in client:pages("images", { start_time = START, bucket_width = "2d" }) do
      end
    end)
    run_task(task)
    assert.are.equal("invalid_argument", task.err.kind)
    task = async.task(c, function()
      return nil, usage.error { kind = "api", message = "no such thing" }
    end)
    run_task(task)
    assert.are.equal("no such thing", task.err.message)
    assert.are.same({}, srv:requests())
  end)

  it("a pcall inside the task catches a failed walk", function()
    srv:faults { { status = 400, error_message = "nope" } }
    local task = async.task(c, function(client)
      local ok, err = pcall(all_rows, client)
      return { ok = ok, err = err }
    end)
    run_task(task)
    assert.is_false(task.result.ok)
    assert.are.equal(400, task.result.err.status)
  end)

  it("cancel() aborts the page on the wire at once", function()
    srv:faults { { latency_ms = 5000 } }
    local task = async.task(c, all_rows)
    task:step()
    assert.is_false(task.done)
    srv:await_requests(1)
    local t0 = usage.clock()
    task:cancel()
    assert.is_true(usage.clock() - t0 < 0.25 * SLOW)
    assert.is_true(task.done)
    assert.is_true(task.cancelled)
    task:step() -- harmless once done
    assert.is_nil(task.result)
    assert.is_nil(task.err)
    assert.are.equal(0, task.pages)
    assert.are.equal(1, #srv:requests())
    t0 = usage.clock()
    assert.are.equal("page", assert(c:images(PARAMS)).object)
    assert.is_true(usage.clock() - t0 < 1 * SLOW)
  end)
end)
