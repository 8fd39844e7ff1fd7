-- The kept-alive connection over many requests: a server (or a load balancer
-- in front of it) that forgets idle connections must never turn into a
-- failure, however many times it happens over the life of one client.
local usage = require "openai_usage"
local core = require "openai_usage.core"
local standin = require "spec.support.standin"

local KEY = "sk-admin-spec-connection-0123456789"
local NOW = 1732406400 -- 2024-11-24T00:00:00Z, frozen in the stand-in
local START = NOW - 3 * 86400

describe("a kept-alive connection", function()
  local srv

  setup(function()
    srv = standin.start { key = KEY, now = NOW }
  end)

  teardown(function()
    srv:stop()
  end)

  before_each(function()
    srv:reset()
  end)

  -- libcurl 7.88 counts the connections that died on reuse over the life of
  -- an easy handle (curl PR #19066), not per request: the sixth such death
  -- used to fail with "Connection died, tried 5 times before giving up",
  -- even with max_retries = 0 and a server that answers every request.
  it("survives a server that forgets idle connections, on every one of 300 requests with max_retries = 0", function()
    local idle_ms, pause_every, requests = 60, 10, 300
    srv:settings { idle_close_ms = idle_ms }
    local client = assert(usage.new(srv:client_options { max_retries = 0 }))
    local failures, attempts, connections = {}, 0, 0
    for i = 1, requests do
      if i > 1 and i % pause_every == 1 then
        core.sleep(idle_ms * 2 / 1000) -- longer than the server's idle timeout
      end
      local page, err = client:images { start_time = START, end_time = NOW }
      local t = client:last_transfer()
      attempts = attempts + t.attempts
      connections = connections + t.connections
      if not page then
        failures[#failures + 1] = ("request %d: %s"):format(i, tostring(err))
      else
        assert.are.equal(START, page.data[1].start_time)
      end
    end
    local status = srv:status()
    client:close()
    print(("\n# %d requests, %d pauses of %d ms over a %d ms idle timeout: %d idle connections dropped by the "
      .. "server, %d connections opened, %d attempts, %d failed"):format(requests,
      math.floor((requests - 1) / pause_every), idle_ms * 2, idle_ms, status.idle_closes, connections, attempts,
      #failures))
    assert.are.same({}, failures)
    -- the switch really dropped a connection at every pause (and at any
    -- other gap a slow machine, valgrind, made longer than the timeout), and
    -- libcurl reconnected each time without our retry loop seeing a failure
    assert.is_true(status.idle_closes >= math.floor((requests - 1) / pause_every), status.idle_closes)
    assert.are.equal(1 + status.idle_closes, connections)
    -- no retry happened, so none is counted
    assert.are.equal(requests, attempts)
    assert.are.equal(requests, status.requests)
  end)

  it("still reuses one connection for back-to-back requests", function()
    local client = assert(usage.new(srv:client_options { max_retries = 0 }))
    local connections = 0
    for _ = 1, 20 do
      assert(client:images { start_time = START, end_time = NOW })
      connections = connections + client:last_transfer().connections
    end
    client:close()
    assert.are.equal(1, connections)
    local seen = {}
    for _, r in ipairs(srv:requests()) do
      seen[r.connection] = true
    end
    assert.are.same({ [srv:requests()[1].connection] = true }, seen)
  end)

  it("counts a real retry: a 500 then an answer is 2 attempts, after idle drops or not", function()
    srv:settings { idle_close_ms = 60 }
    local client = assert(usage.new(srv:client_options { max_retries = 1, retry_backoff = 0.01 }))
    for _ = 1, 7 do
      core.sleep(0.12)
      srv:faults { { status = 500 } }
      assert(client:images { start_time = START, end_time = NOW })
      assert.are.equal(2, client:last_transfer().attempts)
    end
    client:close()
  end)

  describe("a stalled server", function()
    it("ends the attempt after low_speed_time seconds without a byte, as a timeout", function()
      srv:faults { { stall_after = 10 } }
      local client = assert(usage.new(srv:client_options { max_retries = 0, low_speed_time = 1 }))
      local t0 = usage.clock()
      local page, err = client:images { start_time = START, end_time = NOW }
      local seconds = usage.clock() - t0
      client:close()
      print(("\n# a stall with low_speed_time = 1 ended the attempt after %.2f s"):format(seconds))
      assert.is_nil(page)
      assert.are.equal("timeout", err.kind)
      assert.is_truthy(tostring(err):find("Less than 1 bytes/sec", 1, true), tostring(err))
      assert.is_true(seconds >= 0.9 and seconds < 10, "took " .. seconds .. " s")
    end)

    it("is given up on by default too: 60 s without a byte, which a transport is told as stall_timeout", function()
      local client = assert(usage.new(srv:client_options { transport = function() end }))
      local req =
        assert(require("openai_usage.protocol").of(client):transport_request("images", { start_time = START }))
      assert.are.equal(60, req.stall_timeout)
      assert.are.equal(600, req.timeout)
    end)

    it("waits as long as told with low_speed_limit = 0 (the limit off)", function()
      srv:faults { { stall_after = 10 } }
      local client = assert(usage.new(srv:client_options { max_retries = 0, low_speed_limit = 0, timeout = 2 }))
      local t0 = usage.clock()
      local _, err = client:images { start_time = START, end_time = NOW }
      local seconds = usage.clock() - t0
      client:close()
      assert.are.equal("timeout", err.kind)
      assert.is_nil(tostring(err):find("bytes/sec", 1, true), tostring(err))
      assert.is_true(seconds >= 1.9, "took " .. seconds .. " s")
    end)
  end)
end)
