-- Each request owns its record (URL, answer, attempts, delays, bytes):
-- client:url() is pure computation while a prefetch is on the wire, and
-- requests sharing one client through a yielding transport (as cosockets
-- do in nginx) each read their own last_transfer().
local usage = require "openai_usage"
local core = require "openai_usage.core"
local protocol = require "openai_usage.protocol"
local standin = require "spec.support.standin"
local util = require "spec.support.util"
local curl_transport = require("spec.support.curl_transport").new

local KEY = "sk-admin-request-0123456789abcdefSECRET"
local NOW = 1732406400 -- 2024-11-24T00:00:00Z, frozen in the stand-in
local START = NOW - 3 * 86400

describe("a request's own record", function()
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

  it("client:url() returns at once while a prefetch is held on the wire", function()
    local latency = 1.5
    srv:settings { latency_ms = latency * 1000 }
    local client = assert(usage.new(srv:client_options()))
    local handle = protocol.of(client)
    local token = assert(handle:prefetch("images", { start_time = START }))
    local began = core.clock()
    local url = assert(client:url("images", { start_time = START, limit = 3 }))
    local took = core.clock() - began
    -- the prefetch is still on the wire when url() has returned
    assert.is_false(handle:poll(token))
    assert.matches("/organization/usage/images?start_time=" .. START .. "&limit=3", url, 1, true)
    assert.is_true(took < latency / 10, ("url() took %.3f s beside a %.1f s latency"):format(took, latency))
    -- and last_transfer() does not wait either: the prefetch is not over yet
    began = core.clock()
    assert.are.equal(0, client:last_transfer().attempts)
    assert.is_true(core.clock() - began < latency / 10)
    local page = assert(handle:collect(token))
    assert.is_table(page.data)
    assert.are.equal(1, client:last_transfer().attempts)
    assert.are.equal(200, client:last_transfer().status)
  end)

  -- Two coroutines share one client whose transport yields before every
  -- attempt and every sleep, the way cosockets and ngx.sleep suspend a
  -- request in nginx: a scheduler resumes them in turns.
  -- (PUC Lua 5.1 cannot yield across pcall, so a transport cannot yield there)
  local it_yielding = (_VERSION == "Lua 5.1" and not jit) and pending or it
  it_yielding("two coroutines with a yielding transport keep their own last_transfer()", function()
    local seen = {} -- per coroutine: what its transport's last answer was
    local fetch = curl_transport()
    local transport = {
      request = function(req)
        coroutine.yield()
        local status, headers, body = fetch(req)
        seen[coroutine.running()] = { status = status, request_id = headers and headers["x-request-id"], bytes = #(body or "") }
        return status, headers, body
      end,
      sleep = function()
        coroutine.yield()
      end,
    }
    local opts = srv:client_options({ transport = transport, retry_backoff = 0.01, retry_backoff_max = 0.02 })
    opts.ca_file = nil
    local client = assert(usage.new(opts))
    -- the first request to reach the server is answered 500: coroutine a's
    srv:faults { { status = 500 } }
    local results = {}
    local function task(name, limit)
      return coroutine.create(function()
        local page, err = client:images { start_time = START, limit = limit }
        assert(page, err)
        coroutine.yield "done"
        -- read only after the other coroutine has finished a request of its own
        results[name] = { transfer = client:last_transfer(), seen = seen[coroutine.running()], rows = #page.data }
      end)
    end
    local a, b = task("a", 1), task("b", 3)
    local order = { a, b, a, b, a, a, b, b, a, b, a, b }
    for _, co in ipairs(order) do
      if coroutine.status(co) == "suspended" then
        assert(coroutine.resume(co))
      end
    end
    for _ = 1, 20 do
      for _, co in ipairs { a, b } do
        if coroutine.status(co) == "suspended" then
          assert(coroutine.resume(co))
        end
      end
    end
    assert.are.equal("dead", coroutine.status(a))
    assert.are.equal("dead", coroutine.status(b))
    local ra, rb = results.a, results.b
    assert.are.equal(2, ra.transfer.attempts) -- the 500, then its answer
    assert.are.equal(1, #ra.transfer.delays)
    assert.are.equal(1, rb.transfer.attempts)
    assert.are.same({}, rb.transfer.delays)
    for _, r in ipairs { ra, rb } do
      assert.are.equal(200, r.transfer.status)
      assert.are.equal(r.seen.request_id, r.transfer.request_id)
      assert.are.equal(r.seen.bytes, r.transfer.body_bytes)
    end
    assert.are_not.equal(ra.transfer.request_id, rb.transfer.request_id)
    assert.are_not.equal(ra.transfer.body_bytes, rb.transfer.body_bytes)
    -- the main coroutine made no request: it sees the client's latest
    local latest = client:last_transfer().request_id
    assert.is_true(latest == ra.transfer.request_id or latest == rb.transfer.request_id)
  end)

  it("a transport client never loads libcurl, even for retries waiting on an HTTP-date Retry-After", function()
    local date = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 1)
    srv:faults { { status = 503, retry_after = date }, { status = 429, retry_after = "0" } }
    local opts = srv:client_options()
    local script = os.tmpname()
    util.write(script, ([[
      local usage = require "openai_usage"
      local slept = {}
      local c = assert(usage.new { api_key = %q, base_url = %q, max_retries = 3,
        transport = { request = require("spec.support.curl_transport").new(),
                      sleep = function(s) slept[#slept + 1] = s end } })
      assert(c:images { start_time = %d })
      local maps = io.open("/proc/self/maps"):read("*a")
      io.write(c:last_transfer().attempts, " ", slept[1], " ", slept[2], " ",
        maps:find("libcurl", 1, true) and "libcurl" or "none", "\n")
    ]]):format(opts.api_key, opts.base_url, START))
    local out, ok = util.popen_run(("%s %s"):format(util.LUA, util.q(script)))
    os.remove(script)
    assert.is_true(ok, out)
    local attempts, first, second, mapped = out:match "^(%d+) (%S+) (%S+) (%a+)\n$"
    assert.are.equal("3", attempts, out)
    -- the date was read without libcurl: a wait of at most 1 s, not a backoff
    assert.is_true(tonumber(first) >= 0 and tonumber(first) <= 1, out)
    assert.are.equal(0, tonumber(second), out)
    assert.are.equal("none", mapped, out)
  end)
end)

describe("HTTP dates in Retry-After", function()
  local srv

  setup(function()
    srv = standin.start { key = KEY, now = NOW }
  end)

  teardown(function()
    srv:stop()
  end)

  -- The three forms RFC 9110 asks a recipient to read, each a date in the
  -- past (a wait of 0) or two seconds ahead; anything else is no date,
  -- and the client falls back to its backoff.
  it("reads IMF-fixdate, RFC 850 and asctime dates, and nothing else", function()
    local ahead = os.time() + 2
    local cases = {
      { os.date("!%a, %d %b %Y %H:%M:%S GMT", ahead), "ahead" },
      { os.date("!%A, %d-%b-%y %H:%M:%S GMT", ahead), "ahead" },
      { (os.date("!%a %b %d %H:%M:%S %Y", ahead):gsub("^(%a+ %a+ )0", "%1 ")), "ahead" },
      { "Sun, 06 Nov 1994 08:49:37 GMT", 0 },
      { "Sunday, 06-Nov-94 08:49:37 GMT", 0 },
      { "Sun Nov  6 08:49:37 1994", 0 },
      { "Sun, 06 Nov 1994 08:49:37 PST", "backoff" },
      { "Sun, 06 Nov 1994 08:49:37 GMT trailing", "backoff" },
      { "Sun, 31 Foo 1994 08:49:37 GMT", "backoff" },
      { "tomorrow", "backoff" },
    }
    for _, case in ipairs(cases) do
      srv:reset()
      srv:faults { { status = 503, retry_after = case[1] } }
      local slept = {}
      local opts = srv:client_options({
        transport = { request = curl_transport(), sleep = function(s)
          slept[#slept + 1] = s
        end },
        retry_backoff = 0.5,
        retry_backoff_max = 0.5,
      })
      opts.ca_file = nil
      assert(assert(usage.new(opts)):images { start_time = START })
      local what = case[1] .. " -> " .. tostring(slept[1])
      if case[2] == "ahead" then
        assert.is_true(slept[1] >= 0.5 and slept[1] <= 2, what)
      elseif case[2] == "backoff" then
        assert.is_true(slept[1] >= 0.375 and slept[1] <= 0.5 and slept[1] ~= 0, what)
      else
        assert.are.equal(0, slept[1], what)
      end
    end
  end)
end)
