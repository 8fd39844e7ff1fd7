-- A Lua transport (usage.new{transport = ...}) in plain Lua: what it is
-- given, what it may return, and that validation, retries, the size cap and
-- decoding stay the client's. The transport here fetches from the real
-- stand-in with the curl command-line tool (plain Lua has no sockets).
local usage = require "openai_usage"
local standin = require "spec.support.standin"
local util = require "spec.support.util"

local KEY = "sk-admin-transport-0123456789abcdefSECRET"
local NOW = 1732406400 -- 2024-11-24T00:00:00Z, frozen in the stand-in
local START = NOW - 3 * 86400

local curl_transport = require("spec.support.curl_transport").new

-- A sleep that records instead of waiting.
local function recorder()
  local slept = {}
  return slept, function(seconds)
    slept[#slept + 1] = seconds
  end
end

describe("transport", function()
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

  local function client(transport, options)
    local opts = srv:client_options({ transport = transport, retry_backoff = 0.01, retry_backoff_max = 0.04 }, options)
    opts.ca_file = nil
    local c, err = usage.new(opts)
    assert.is_nil(err)
    return c
  end

  -- A transport answering fixed values, counting its calls.
  local function canned(...)
    local answer = table.pack and table.pack(...) or { n = select("#", ...), ... }
    local t = { calls = 0 }
    t.fn = function()
      t.calls = t.calls + 1
      return (table.unpack or unpack)(answer, 1, answer.n)
    end
    return t
  end

  local function assert_no_key(value)
    util.assert_no_key(KEY, value)
  end

  it("a page with a null where a bucket belongs is the same api error as over libcurl", function()
    srv:faults { { null_bucket = 2 } }
    local page, err = client(curl_transport(), { max_retries = 0 }):images { start_time = START, bucket_width = "1h" }
    assert.is_nil(page)
    assert.are.equal("api", err.kind, tostring(err))
    assert.matches("data[2] is null;", err.message, 1, true)
    assert.are.equal(1, #srv:requests())
  end)

  describe("what the transport is given", function()
    it("a GET of the URL libcurl would request, with the headers libcurl sends (but gzip)", function()
      local calls = {}
      local params = { start_time = START, group_by = { "model", "size" } }
      local opts = { organization = "org-123", project = "proj_9" }
      local via = client(curl_transport { calls = calls }, opts)
      local page, err = via:images(params)
      assert.is_nil(err)
      local sent_by_transport = srv:last_request()
      srv:reset()
      local direct = assert(usage.new(srv:client_options(opts, { prefetch = false })))
      local expected = assert(direct:images(params))
      local sent_by_libcurl = srv:last_request()
      assert.are.same(expected, page)
      assert.are.equal(1, #calls)
      local req = calls[1]
      assert.are.equal("GET", req.method)
      assert.are.equal(direct:url("images", params), req.url)
      for _, name in ipairs { "authorization", "accept", "openai-organization", "openai-project" } do
        assert.are.equal(sent_by_libcurl.headers[name], sent_by_transport.headers[name])
      end
      assert.are.same({
        Authorization = "Bearer " .. KEY,
        Accept = "application/json",
        ["OpenAI-Organization"] = "org-123",
        ["OpenAI-Project"] = "proj_9",
        ["User-Agent"] = req.headers["User-Agent"],
      }, req.headers)
      -- the library and the Lua, not libcurl, which a transport client never loads
      assert.matches("^openai%-usage%-lua/" .. usage.version:gsub("%.", "%%.") .. " Lua 5%.%d",
        req.headers["User-Agent"])
      assert.is_nil(sent_by_transport.headers["accept-encoding"])
      direct:close()
    end)

    it("a custom User-Agent, and the client's timeouts and size cap", function()
      local calls = {}
      client(curl_transport { calls = calls }, { user_agent = "report/1.0", timeout = 7.5, connect_timeout = 2,
        max_response_bytes = 123456 }):images { start_time = START }
      assert.are.equal("report/1.0", calls[1].headers["User-Agent"])
      assert.are.equal("report/1.0", srv:last_request().headers["user-agent"])
      assert.are.equal(7.5, calls[1].timeout)
      assert.are.equal(2, calls[1].connect_timeout)
      assert.are.equal(123456, calls[1].max_response_bytes)
    end)

    it("nothing when the parameters are invalid: the client validates first", function()
      local t = canned(200, {}, "{}")
      local page, err = client(t.fn):images { start_time = START, bucket_width = "2d" }
      assert.is_nil(page)
      assert.are.equal("invalid_argument", err.kind)
      assert.are.equal("bucket_width", err.param)
      assert.are.equal(0, t.calls)
    end)

    it("Accept-Encoding: gzip when the transport says it inflates (gzip = true)", function()
      local calls = {}
      local c = client { request = curl_transport { calls = calls, compressed = true }, gzip = true }
      local page = c:images {
        start_time = START, bucket_width = "1h", limit = 72, group_by = { "model", "size", "source" },
      }
      assert.is_table(page)
      assert.are.equal("gzip", calls[1].headers["Accept-Encoding"])
      assert.are.equal("gzip", srv:last_request().headers["accept-encoding"])
      assert.are.equal(72, #page.data)
    end)
  end)

  describe("retries", function()
    it("500s with the client's backoff: delays in last_transfer, slept through transport.sleep", function()
      srv:faults { { status = 500, times = 2 } }
      local slept, sleep = recorder()
      local c = client({ request = curl_transport(), sleep = sleep }, { retry_backoff = 0.02, retry_backoff_max = 1 })
      assert.is_table(c:images { start_time = START })
      local t = c:last_transfer()
      assert.are.equal(3, t.attempts)
      assert.are.same(slept, t.delays)
      assert.is_true(t.delays[1] >= 0.015 and t.delays[1] <= 0.02, tostring(t.delays[1]))
      assert.is_true(t.delays[2] >= 0.03 and t.delays[2] <= 0.04, tostring(t.delays[2]))
      assert.are.equal(3, #srv:requests())
      assert.are.equal(200, t.status)
      assert.are.equal(srv:last_request().headers["x-request-id"] or t.request_id, t.request_id)
      assert.is_nil(t.connections) -- a transport does not say
    end)

    for _, status in ipairs { 408, 409, 429, 502, 503, 504 } do
      it("retries status " .. status, function()
        srv:faults { { status = status } }
        local c = client { request = curl_transport(), sleep = select(2, recorder()) }
        assert.is_table(c:images { start_time = START })
        assert.are.equal(2, c:last_transfer().attempts)
      end)
    end

    it("never retries a 400, and reports the API's envelope", function()
      srv:faults { { status = 400, error_param = "limit", error_message = "bad limit", times = 3 } }
      local _, err = client(curl_transport()):images { start_time = START }
      assert.are.equal("http", err.kind)
      assert.are.equal(400, err.status)
      assert.are.equal(1, err.attempts)
      assert.are.equal("limit", err.param)
      assert.are.equal("bad limit", err.message)
      assert.are.equal(1, #srv:requests())
    end)

    it("honours retry-after-ms over Retry-After", function()
      srv:faults { { status = 429, retry_after_ms = "120", retry_after = "30" } }
      local slept, sleep = recorder()
      local c = client { request = curl_transport(), sleep = sleep }
      assert.is_table(c:images { start_time = START })
      assert.are.same({ 0.12 }, slept)
      assert.are.same({ 0.12 }, c:last_transfer().delays)
    end)

    it("honours Retry-After in seconds and as an HTTP date", function()
      srv:faults { { status = 503, retry_after = "3" } }
      local slept, sleep = recorder()
      local c = client { request = curl_transport(), sleep = sleep }
      assert.is_table(c:images { start_time = START })
      assert.are.same({ 3 }, slept)
      srv:faults { { status = 503, retry_after = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 5) } }
      assert.is_table(c:images { start_time = START })
      assert.is_true(slept[2] >= 3 and slept[2] <= 5, tostring(slept[2]))
    end)

    it("gives up at once when Retry-After exceeds retry_after_max", function()
      srv:faults { { status = 429, retry_after = "121" } }
      local slept, sleep = recorder()
      local _, err = client({ request = curl_transport(), sleep = sleep }):images { start_time = START }
      assert.are.equal("http", err.kind)
      assert.are.equal(121, err.retry_after)
      assert.are.equal(1, err.attempts)
      assert.matches("more than the 120 s allowed", err.message, 1, true)
      assert.are.same({}, slept)
    end)

    it("follows x-should-retry over the status", function()
      srv:faults { { status = 500, headers = { ["x-should-retry"] = "false" } } }
      local _, err = client(curl_transport()):images { start_time = START }
      assert.are.equal(1, err.attempts)
      srv:faults { { status = 400, headers = { ["x-should-retry"] = "true" } } }
      local c = client { request = curl_transport(), sleep = select(2, recorder()) }
      assert.is_table(c:images { start_time = START })
      assert.are.equal(2, c:last_transfer().attempts)
    end)

    it("a plain function transport sleeps (blocking) for the delay", function()
      srv:faults { { status = 429, retry_after_ms = "250" } }
      local c = client(curl_transport())
      local t0 = usage.clock()
      assert.is_table(c:images { start_time = START })
      assert.is_true(usage.clock() - t0 >= 0.25)
      local records = srv:requests()
      assert.is_true(records[2].time - records[1].time >= 0.24)
    end)

    it("nil, err from the transport: kind network, retried like a refused connection", function()
      local c = client({ request = curl_transport(), sleep = select(2, recorder()) },
        { base_url = "http://127.0.0.1:1/v1" })
      local page, err = c:images { start_time = START }
      assert.is_nil(page)
      assert.are.equal("network", err.kind)
      assert.are.equal(3, err.attempts)
      assert.matches("transfer failed after 3 attempts: (7) Failed to connect to 127.0.0.1 port 1", err.message, 1,
        true)
      assert.are.equal(2, #c:last_transfer().delays)
    end)

    it("nil, {retry = false}: a failure that will not pass is not retried", function()
      local t = canned(nil, { kind = "network", retry = false, message = "certificate verify failed" })
      local _, err = client({ request = t.fn, sleep = select(2, recorder()) }):images { start_time = START }
      assert.are.equal("network", err.kind)
      assert.are.equal(1, err.attempts)
      assert.are.equal(1, t.calls)
      assert.are.equal("transfer failed: certificate verify failed", err.message)
    end)

    it("nil, {kind = \"timeout\"}: kind timeout, retried", function()
      srv:faults { { latency_ms = 3000, times = 2 } }
      local _, err = client({ request = curl_transport(), sleep = select(2, recorder()) },
        { timeout = 0.3, max_retries = 1 })
        :images { start_time = START }
      assert.are.equal("timeout", err.kind)
      assert.are.equal(2, err.attempts)
      assert.matches("timed out after 2 attempts: (28)", err.message, 1, true)
    end)
  end)

  describe("failures of the transport itself (kind transport, not retried)", function()
    it("an error raised inside it comes back as nil, err", function()
      local calls = 0
      local page, err = client(function()
        calls = calls + 1
        error("socket library exploded", 0)
      end):images { start_time = START }
      assert.is_nil(page)
      assert.are.equal("transport", err.kind)
      assert.are.equal("the transport raised an error: socket library exploded", err.message)
      assert.are.equal(1, err.attempts)
      assert.are.equal(1, calls)
      assert.are.equal("openai_usage: transport: the transport raised an error: socket library exploded", tostring(err))
    end)

    it("an error value that is a table or nil is named", function()
      local _, err = client(function()
        error { message = "table error" }
      end):images { start_time = START }
      assert.are.equal("the transport raised an error: table error", err.message)
      _, err = client(function()
        error()
      end):images { start_time = START }
      assert.are.equal("the transport raised an error: (a nil)", err.message)
    end)

    local bad = {
      { "a status that is not a number", { "200", {}, "{}" },
        "the transport returned a string as the status; expected a number" },
      { "a status out of range", { 42, {}, "{}" },
        "the transport returned status 42; expected an HTTP status 100..599" },
      { "a fractional status", { 200.5, {}, "{}" },
        "the transport returned status 200.5; expected an HTTP status 100..599" },
      { "headers that are not a table", { 200, "x: y", "{}" },
        "the transport returned a string as the headers; expected a table" },
      { "a body that is not a string", { 200, {}, { data = {} } },
        "the transport returned a table as the body; expected a string" },
      { "no body", { 200, {} }, "the transport returned a nil as the body; expected a string" },
      { "a header value of the wrong type", { 200, { ["x-request-id"] = true }, "{}" },
        "the transport returned a header value that is a boolean; expected a string" },
      { "a header list holding a non-string", { 200, { ["retry-after"] = { "1", 2 } }, "{}" },
        "the transport returned a header value list holding a number; expected strings" },
      { "a header name that is not a string", { 200, { "x" }, "{}" },
        "the transport returned a header name that is a number; expected strings" },
      { "nothing at all", {}, "the transport returned nil without an error" },
    }
    for _, case in ipairs(bad) do
      it("a bad return: " .. case[1], function()
        local t = canned((table.unpack or unpack)(case[2], 1, 3))
        local page, err = client({ request = t.fn, sleep = select(2, recorder()) }):images { start_time = START }
        assert.is_nil(page)
        assert.are.equal("transport", err.kind)
        assert.are.equal(case[3], err.message)
        assert.are.equal(1, t.calls)
      end)
    end

    it("a sleep function that raises", function()
      local t = canned(503, { ["retry-after"] = "0" }, "{}")
      local no_sleep = function()
        error("no sleeping here", 0)
      end
      local _, err = client({ request = t.fn, sleep = no_sleep }):images { start_time = START }
      assert.are.equal("transport", err.kind)
      assert.are.equal("the transport's sleep function raised an error: no sleeping here", err.message)
      assert.are.equal(1, t.calls)
    end)

    it("a gzip body from a transport that does not inflate: named, not decoded as garbage", function()
      local gzipping = curl_transport { extra_headers = { ["Accept-Encoding"] = "gzip" } }
      local _, err = client(gzipping):images { start_time = START }
      assert.are.equal("transport", err.kind)
      assert.matches("gzip-compressed body", err.message, 1, true)
      assert.are.equal("gzip", srv:last_request().headers["accept-encoding"])
    end)
  end)

  describe("the client's rules, whatever the transport", function()
    it("the size cap: a body over max_response_bytes, not retried", function()
      local c = client(curl_transport(), { max_response_bytes = 1000 })
      local _, err = c:images { start_time = START, bucket_width = "1h", group_by = "model" }
      assert.are.equal("network", err.kind)
      assert.matches("exceeds max_response_bytes (1000 bytes", err.message, 1, true)
      assert.are.equal(1, #srv:requests())
      assert.is_true(c:last_transfer().wire_bytes > 1000)
    end)

    it("decode errors and non-pages, as with libcurl", function()
      local truncated = canned(200, { ["Content-Type"] = "application/json" }, '{"data": [{},')
      local _, err = client(truncated.fn):images { start_time = START }
      assert.are.equal("decode", err.kind)
      assert.are.equal(13, err.offset)
      _, err = client(canned(200, {}, '{"object": "list"}').fn):images { start_time = START }
      assert.are.equal("api", err.kind)
    end)

    it("the key never appears in an error, whatever the transport says", function()
      local says = "refused for Bearer " .. KEY .. " at " .. KEY
      local errs = {}
      local cases = {
        function()
          error(says, 0)
        end,
        function()
          return nil, says
        end,
        function()
          return nil, { kind = "timeout", message = says }
        end,
        function()
          return 500, { ["x-request-id"] = "req_1" }, '{"error": {"message": "' .. says .. '", "type": "server_error"}}'
        end,
        function()
          return nil, says .. string.rep("x", 300) -- longer than the reason is kept
        end,
      }
      for i, fn in ipairs(cases) do
        local _, err = client({ request = fn, sleep = select(2, recorder()) }):images { start_time = START }
        errs[i] = err
        assert_no_key(err)
        assert.matches("[redacted]", err.message, 1, true)
      end
      assert.are.equal("transport", errs[1].kind)
      assert.are.equal("network", errs[2].kind)
      assert.are.equal("timeout", errs[3].kind)
      assert.are.equal("http", errs[4].kind)
      -- a key cut by a truncation is still caught: it was scrubbed before
      assert.is_nil(errs[5].message:find(KEY:sub(1, 12), 1, true))
    end)

    it("iterators fetch sequentially: every page through the transport, even with prefetch asked for", function()
      local calls = {}
      local c = client(curl_transport { calls = calls })
      local pages, buckets = 0, 0
      for page in c:pages("images", { start_time = START, end_time = NOW, limit = 1 }, { prefetch = true }) do
        pages = pages + 1
        buckets = buckets + #page.data
      end
      assert.are.equal(3, pages)
      assert.are.equal(3, buckets)
      assert.are.equal(3, #calls)
      assert.are.equal(3, #srv:requests())
      -- nor does an event-loop walk, which would need the background thread
      local walk, err = require("openai_usage.async").pages(c, "images", { start_time = START })
      assert.is_nil(walk)
      assert.are.equal("invalid_argument", err.kind)
      assert.matches("cannot run on a background thread", err.message, 1, true)
    end)

    it("a transport may yield (a coroutine event loop): the request and its retry sleep", function()
      local t = canned(503, { ["retry-after-ms"] = "10" }, "{}")
      local answers = 0
      local transport = {
        request = function(req)
          coroutine.yield("request", req.url)
          answers = answers + 1
          if answers == 1 then
            return t.fn()
          end
          return 200, {}, '{"object": "page", "data": [], "has_more": false}'
        end,
        sleep = function(seconds)
          coroutine.yield("sleep", seconds)
        end,
      }
      local c = client(transport)
      local co = coroutine.create(function()
        return c:images { start_time = START }
      end)
      local events = {}
      while true do
        local ok, what, value = coroutine.resume(co)
        assert.is_true(ok, tostring(what))
        if coroutine.status(co) == "dead" then
          if _VERSION == "Lua 5.1" and not jit then
            -- PUC Lua 5.1 cannot yield across pcall: the transport's yield fails, and says so
            assert.is_nil(what)
            assert.are.equal("transport", value.kind)
            assert.matches("yield across", value.message, 1, true)
          else
            assert.are.equal("page", what.object)
            assert.are.same({ "request", "sleep", "request" }, events)
          end
          break
        end
        events[#events + 1] = what
      end
    end)
  end)

  describe("options", function()
    it("refuses a transport that is neither a function nor a table with a request function", function()
      local cases = {
        { 42, "transport: expected a function, or a table {request = fn, sleep = fn, gzip = boolean}, got a number" },
        { {}, "transport.request: expected a function, got a nil" },
        { { request = print, sleep = 1 }, "transport.sleep: expected a function, got a number" },
        { { request = print, gzip = "yes" }, "transport.gzip: expected a boolean, got a string" },
      }
      for _, case in ipairs(cases) do
        local c, err = usage.new { api_key = KEY, transport = case[1] }
        assert.is_nil(c)
        assert.are.equal("invalid_argument", err.kind)
        assert.are.equal("transport", err.param)
        assert.are.equal(case[2], err.message)
      end
    end)

    it("refuses libcurl's own options with a transport instead of ignoring them", function()
      for _, name in ipairs { "ca_file", "low_speed_limit", "low_speed_time" } do
        local c, err = usage.new { api_key = KEY, transport = print, [name] = name == "ca_file" and "/x" or 1 }
        assert.is_nil(c)
        assert.are.equal(name, err.param)
        assert.matches("not used with a transport", err.message, 1, true)
      end
    end)

    it("a client with a transport never loads libcurl", function()
      local lua = util.suite_lua()
      local p = io.popen(("%s -e 'local u = require \"openai_usage\"; "
        .. "local c = assert(u.new { api_key = \"sk-x-123456\", transport = function() return 200, {}, "
        .. "[[{\"data\": []}]] end }); assert(c:images { start_time = 1 }); "
        .. "local maps = io.open(\"/proc/self/maps\"):read(\"*a\"); "
        .. "io.write(maps:find(\"libcurl\", 1, true) and \"loaded\" or \"not loaded\")' 2>&1"):format(lua))
      local out = p:read "*a"
      p:close()
      assert.are.equal("not loaded", out)
    end)
  end)
end)

-- transport/resty.lua outside nginx, its cosocket replaced by a stub: the
-- TLS failures nginx produces only by timing (openresty_spec runs the real one).
describe("transport.resty's TLS handshake (a stubbed ngx)", function()
  local saved_ngx

  -- A cosocket whose handshake does what handshake() says; records calls.
  local function stub(handshake)
    local calls = {}
    local sock = {}
    function sock.settimeouts() end
    function sock.connect(_, host, port)
      calls[#calls + 1] = "connect " .. host .. ":" .. port
      return true
    end
    function sock.getreusedtimes()
      return 0
    end
    function sock.sslhandshake(_, reused, name, verify)
      calls[#calls + 1] = ("sslhandshake %s %s %s"):format(tostring(reused), name, tostring(verify))
      return handshake()
    end
    function sock.send()
      calls[#calls + 1] = "send"
      return nil, "closed"
    end
    function sock.close()
      calls[#calls + 1] = "close"
      return true
    end
    _G.ngx = {
      now = os.time,
      sleep = function() end,
      socket = { tcp = function() return sock end },
    }
    return calls
  end

  local function request()
    package.loaded["openai_usage.transport.resty"] = nil
    local resty = require "openai_usage.transport.resty"
    return resty.request {
      method = "GET",
      url = "https://api.example.test/v1/organization/usage/images?start_time=1",
      headers = { Authorization = "Bearer " .. KEY },
      timeout = 5,
      connect_timeout = 1,
      max_response_bytes = 1024,
    }
  end

  before_each(function()
    saved_ngx = rawget(_G, "ngx")
  end)

  after_each(function()
    _G.ngx = saved_ngx
    package.loaded["openai_usage.transport.resty"] = nil
  end)

  it("a handshake that fails verification is a network failure, not retried, nothing sent", function()
    local calls = stub(function()
      return nil, "certificate host mismatch"
    end)
    local status, err = request()
    assert.is_nil(status)
    assert.are.same({ kind = "network", retry = false,
      message = "TLS handshake with api.example.test:443: certificate host mismatch" }, err)
    assert.are.same({ "connect api.example.test:443", "sslhandshake nil api.example.test true", "close" }, calls)
  end)

  it("a handshake that raises (lua-resty-core's assertion) is caught as a failed handshake", function()
    local calls = stub(function()
      error "/usr/share/lua/5.1/resty/core/socket.lua:244: assertion failed!"
    end)
    local status, err = request()
    assert.is_nil(status)
    assert.are.equal("network", err.kind)
    assert.is_false(err.retry)
    -- outside nginx the reason cannot be read back: the raised error is reported
    assert.matches("TLS handshake with api.example.test:443: handshake failed (", err.message, 1, true)
    assert.matches("assertion failed!", err.message, 1, true)
    assert.are.same({ "connect api.example.test:443", "sslhandshake nil api.example.test true", "close" }, calls)
    assert.is_nil(err.message:find(KEY, 1, true))
  end)
end)
