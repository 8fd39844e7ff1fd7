-- A client across fork(): nginx forks its workers from a master that may
-- have made one, and scripts and editors fork too. Parent and child each
-- get their own pages over their own connections; the child never joins a
-- thread that exists only in the parent.
local usage = require "openai_usage"
local standin = require "spec.support.standin"
local process = require "spec.support.process"
local util = require "spec.support.util"

local KEY = "sk-admin-spec-fork-0123456789"
local NOW = 1732406400 -- 2024-11-24T00:00:00Z, frozen in the stand-in
local DAY = 86400
local PARENT_START = NOW - 30 * DAY
local CHILD_START = NOW - 60 * DAY

describe("a client across fork()", function()
  local srv, fork, tmp

  setup(function()
    srv = standin.start { key = KEY, now = NOW }
    fork = process.load()
    tmp = os.tmpname()
  end)

  teardown(function()
    srv:stop()
    os.remove(tmp)
  end)

  before_each(function()
    srv:reset()
    os.remove(tmp)
  end)

  local function params(start)
    return { start_time = start, end_time = start + 10 * DAY, bucket_width = "1d", limit = 2 }
  end

  -- Walks 10 days, 2 a page: the problems found, one line each (none is
  -- right), each page's buckets checked against the times it asked for.
  local function walk(client, start)
    local problems, n = {}, 0
    local ok, err = pcall(function()
      for page in client:pages("images", params(start)) do
        n = n + 1
        local want = start + (n - 1) * 2 * DAY
        if #page.data ~= 2 or page.data[1].start_time ~= want or page.data[2].start_time ~= want + DAY then
          problems[#problems + 1] = ("page %d: asked for start_time %d, got %s"):format(n, want,
            tostring(page.data[1] and page.data[1].start_time))
        end
      end
    end)
    if not ok then
      problems[#problems + 1] = "the walk raised: " .. tostring(err)
    end
    if n ~= 5 then
      problems[#problems + 1] = ("%d pages instead of 5"):format(n)
    end
    return problems
  end

  -- Runs fn in a child of fork(); the child writes what fn returns (a list
  -- of problems) to tmp and leaves with _exit, so nothing of the suite runs
  -- there. Returns the child's pid.
  local function in_child(fn)
    local pid = fork.fork()
    if pid == 0 then
      local ok, problems = pcall(fn)
      if not ok then
        problems = { "the child raised: " .. tostring(problems) }
      end
      local f = io.open(tmp, "wb")
      if f then
        f:write(table.concat(problems, "\n"))
        f:close()
      end
      fork._exit(#problems == 0 and 0 or 1)
    end
    return pid
  end

  -- The connections the requests whose start_time is in [first, last] came on.
  local function connections_of(first, last)
    local seen = {}
    for _, r in ipairs(srv:requests()) do
      local start = tonumber(r.query:match "start_time=(%d+)")
      if start and start >= first and start <= last then
        seen[r.connection] = true
      end
    end
    return seen
  end

  it("parent and child walk pages at the same time, each getting exactly its own pages", function()
    local client = assert(usage.new(srv:client_options { max_retries = 0 }))
    -- the connection is open and kept alive when the process forks
    assert(client:images { start_time = NOW - DAY, end_time = NOW })
    srv:settings { latency_ms = 20 } -- so the two walks overlap on the wire
    local pid = in_child(function()
      local problems = walk(client, CHILD_START)
      client:close()
      return problems
    end)
    local problems = walk(client, PARENT_START)
    local code, why = fork.wait(pid, 60)
    local child_problems = util.read_if(tmp) or "(the child wrote nothing)"
    client:close()
    assert.are.same({}, problems)
    assert.are.equal(0, code, "the child: " .. tostring(why) .. "\n" .. child_problems)
    assert.are.equal("", child_problems)
    -- and on separate connections: the child opened its own
    local parent = connections_of(PARENT_START, PARENT_START + 10 * DAY)
    local child = connections_of(CHILD_START, CHILD_START + 10 * DAY)
    for id in pairs(child) do
      assert.is_nil(parent[id], "parent and child shared connection " .. tostring(id))
    end
    assert.is_not_nil(next(child))
  end)

  it("a prefetch in flight at the fork: the parent collects it, the child neither joins nor sees it", function()
    local client = assert(usage.new(srv:client_options { max_retries = 0 }))
    assert(client:images { start_time = NOW - DAY, end_time = NOW })
    -- the walk drivers' private protocol: a prefetch on the client's thread
    local handle = require("openai_usage.protocol").of(client)
    srv:faults { { latency_ms = 400 } } -- the prefetch is on the wire at the fork
    local token = assert(handle:prefetch("images", params(PARENT_START)))
    srv:await_requests(2)
    local pid = in_child(function()
      local problems = {}
      if handle:poll(token) ~= true then
        problems[#problems + 1] = "poll: the parent's prefetch looked unfinished in the child"
      end
      local got = handle:collect(token)
      if got ~= false then
        problems[#problems + 1] = "collect: expected false (gone), got " .. tostring(got)
      end
      local page, err = client:images(params(CHILD_START))
      if not page then
        problems[#problems + 1] = "a request in the child failed: " .. tostring(err)
      elseif page.data[1].start_time ~= CHILD_START then
        problems[#problems + 1] = ("the child asked for %d and got %d"):format(CHILD_START, page.data[1].start_time)
      end
      local token2 = handle:prefetch("images", params(CHILD_START + 2 * DAY))
      local page2 = token2 and handle:collect(token2)
      if not page2 or page2.data[1].start_time ~= CHILD_START + 2 * DAY then
        problems[#problems + 1] = "a prefetch of the child's own failed"
      end
      client:close()
      return problems
    end)
    local page, err = handle:collect(token)
    local code, why = fork.wait(pid, 30)
    local child_problems = util.read_if(tmp) or "(the child wrote nothing)"
    assert.is_nil(err)
    assert.are.equal(PARENT_START, page.data[1].start_time)
    -- the parent's connection still works after the child went
    local again = assert(client:images(params(PARENT_START + 2 * DAY)))
    assert.are.equal(PARENT_START + 2 * DAY, again.data[1].start_time)
    client:close()
    assert.are.equal(0, code, "the child: " .. tostring(why) .. "\n" .. child_problems)
    assert.are.equal("", child_problems)
  end)

  -- over TLS, libcurl's own cleanup in the child would send close_notify on
  -- the socket it shares with the parent, and the server would hang up on it
  it("a child that only closes (or collects) the inherited client leaves the parent's TLS connection alone", function()
    local tls = standin.start { key = KEY, now = NOW, tls = true }
    finally(function()
      tls:stop()
    end)
    local client = assert(usage.new(tls:client_options { max_retries = 0 }))
    assert(client:images { start_time = NOW - DAY, end_time = NOW })
    local pid = in_child(function()
      client:close()
      collectgarbage()
      return {}
    end)
    assert.are.equal(0, (fork.wait(pid, 30)))
    -- the same connection as before the fork: the child's close sent nothing on it
    assert(client:images { start_time = NOW - 2 * DAY, end_time = NOW })
    assert.are.equal(0, client:last_transfer().connections)
    client:close()
    local ids = {}
    for _, r in ipairs(tls:requests()) do
      ids[#ids + 1] = r.connection
    end
    assert.are.same({ ids[1], ids[1] }, ids)
  end)
end)
