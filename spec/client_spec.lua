-- The client against the real stand-in server over real libcurl: what is
-- sent, what comes back, every error kind, retries and their delays.
local usage = require "openai_usage"
local standin = require "spec.support.standin"
local util = require "spec.support.util"

local KEY = "sk-admin-spec-0123456789abcdefSECRET"
local NOW = 1732406400 -- 2024-11-24T00:00:00Z, frozen in the stand-in
local START = NOW - 3 * 86400

describe("client", function()
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

  -- A client with fast retries, so the suite does not sleep for seconds.
  local function client(options)
    local c, err = usage.new(srv:client_options({ retry_backoff = 0.01, retry_backoff_max = 0.04 }, options))
    assert.is_nil(err)
    return c
  end

  local function assert_no_key(value)
    util.assert_no_key(KEY, value)
  end

  describe("a request", function()
    it("returns one UsageResponse page as a table", function()
      local page, err = client():images { start_time = START, end_time = NOW }
      assert.is_nil(err)
      assert.are.equal("page", page.object)
      assert.are.equal(3, #page.data)
      assert.is_false(page.has_more)
      assert.is_nil(page.next_page)
      for i, bucket in ipairs(page.data) do
        assert.are.equal("bucket", bucket.object)
        assert.are.equal(START + (i - 1) * 86400, bucket.start_time)
        assert.are.equal(START + i * 86400, bucket.end_time)
        assert.is_table(bucket.results)
        for _, row in ipairs(bucket.results) do
          assert.are.equal("organization.usage.images.result", row.object)
          assert.is_true(row.images >= row.num_model_requests)
          if math.type then
            assert.are.equal("integer", math.type(row.images))
          end
        end
      end
    end)

    it("sends exactly the encoded query, with the SDKs' bracket arrays", function()
      local params = { start_time = START, bucket_width = "1h", group_by = { "model", "size" }, limit = 5 }
      client():images(params)
      local sent = srv:last_request()
      assert.are.equal("GET", sent.method)
      assert.are.equal("/v1/organization/usage/images", sent.path)
      assert.are.equal(usage.encode_query("images", params), sent.query)
      assert.are.equal("start_time=1732147200&bucket_width=1h&group_by[]=model&group_by[]=size&limit=5", sent.query)
    end)

    it("sends repeated names with array_format = repeat", function()
      client({ array_format = "repeat" }):images { start_time = START, group_by = { "model", "size" } }
      assert.are.equal("start_time=1732147200&group_by=model&group_by=size", srv:last_request().query)
    end)

    it("sends the key as a Bearer token, gzip, JSON and a User-Agent naming the library", function()
      client():images { start_time = START }
      local h = srv:last_request().headers
      assert.are.equal("Bearer " .. KEY, h["authorization"])
      assert.matches("gzip", h["accept-encoding"], 1, true)
      assert.are.equal("application/json", h["accept"])
      assert.matches("^openai%-usage%-lua/" .. usage.version:gsub("%.", "%%.") .. " libcurl/", h["user-agent"])
      assert.is_nil(h["openai-organization"])
      assert.is_nil(h["openai-project"])
    end)

    it("sends OpenAI-Organization, OpenAI-Project and a custom User-Agent when given", function()
      client({ organization = "org-123", project = "proj_9", user_agent = "report/1.0" }):images { start_time = START }
      local h = srv:last_request().headers
      assert.are.equal("org-123", h["openai-organization"])
      assert.are.equal("proj_9", h["openai-project"])
      assert.are.equal("report/1.0", h["user-agent"])
    end)

    it("reuses one connection across requests (keep-alive)", function()
      local c = client()
      c:images { start_time = START }
      assert.are.equal(1, c:last_transfer().connections)
      c:images { start_time = START, bucket_width = "1h" }
      assert.are.equal(0, c:last_transfer().connections)
      local records = srv:requests()
      assert.are.equal(2, #records)
      assert.are.equal(records[1].connection, records[2].connection)
    end)

    it("receives gzip and decodes it: fewer bytes on the wire than in the JSON", function()
      local c = client()
      local page = c:images {
        start_time = START, bucket_width = "1h", limit = 72, group_by = { "model", "size", "source" },
      }
      assert.is_table(page)
      local t = c:last_transfer()
      assert.is_true(t.body_bytes > 10000)
      assert.is_true(t.wire_bytes < t.body_bytes / 2, ("wire %d, body %d"):format(t.wire_bytes, t.body_bytes))
    end)

    it("sends nothing when the parameters are invalid", function()
      local page, err = client():images { start_time = START, bucket_width = "2d" }
      assert.is_nil(page)
      assert.are.equal("invalid_argument", err.kind)
      assert.are.equal("bucket_width", err.param)
      assert.are.same({}, srv:requests())
    end)

    it("gives the URL it would request without sending it", function()
      local url = client():url("images", { start_time = START, models = "dall-e-3" })
      assert.are.equal(srv.url .. "/organization/usage/images?start_time=1732147200&models[]=dall-e-3", url)
      assert.are.same({}, srv:requests())
    end)

    it("accepts usage(endpoint, params) as the general form of images(params)", function()
      local page = client():usage("images", { start_time = START, end_time = NOW })
      assert.are.equal(3, #page.data)
    end)
  end)

  describe("errors", function()
    it("401: kind http with the API's envelope, request id, no key", function()
      local c = client { api_key = "sk-admin-wrong-key-000000000000" }
      local page, err = c:images { start_time = START }
      assert.is_nil(page)
      assert.are.equal("http", err.kind)
      assert.are.equal(401, err.status)
      assert.are.equal("invalid_api_key", err.code)
      assert.are.equal("invalid_request_error", err.type)
      assert.matches("^req_", err.request_id)
      assert.are.equal(1, err.attempts)
      assert.matches("Incorrect API key", err.message, 1, true)
      assert.is_nil(tostring(err):find("\n"))
      assert.matches("^openai_usage: http 401 %(invalid_api_key%): ", tostring(err))
      assert.is_nil(err.message:find("sk-admin-wrong-key-000000000000", 1, true))
    end)

    it("400 from the server: param named, not retried", function()
      local _, err = client():images { start_time = START, page = "not-a-cursor" }
      assert.are.equal("http", err.kind)
      assert.are.equal(400, err.status)
      assert.are.equal("page", err.param)
      assert.are.equal(1, #srv:requests())
    end)

    it("a server message that echoes the key is scrubbed", function()
      srv:faults { { status = 403, error_message = "key " .. KEY .. " is not an admin key", error_code = "forbidden" } }
      local _, err = client():images { start_time = START }
      assert.are.equal(403, err.status)
      assert.matches("key [redacted] is not an admin key", err.message, 1, true)
      assert_no_key(err)
    end)

    it("a timeout: kind timeout", function()
      srv:faults { { latency_ms = 1500 } }
      local _, err = client({ timeout = 0.3, max_retries = 0 }):images { start_time = START }
      assert.are.equal("timeout", err.kind)
      assert.matches("timed out", err.message, 1, true)
    end)

    it("a refused connection: kind network, after the retries", function()
      local c = client { base_url = "http://127.0.0.1:1/v1", max_retries = 1 }
      local _, err = c:images { start_time = START }
      assert.are.equal("network", err.kind)
      assert.are.equal(2, c:last_transfer().attempts)
      assert.matches("after 2 attempts", err.message, 1, true)
    end)

    it("a reset connection: kind network", function()
      srv:faults { { reset = true } }
      local _, err = client({ max_retries = 0 }):images { start_time = START }
      assert.are.equal("network", err.kind)
    end)

    it("a truncated body: kind network, never a partial page", function()
      srv:faults { { truncate = 100 } }
      local page, err = client({ max_retries = 0 }):images { start_time = START }
      assert.is_nil(page)
      assert.are.equal("network", err.kind)
    end)

    it("a body over max_response_bytes: a clear error", function()
      local c = client { max_response_bytes = 2000 }
      local _, err = c:images { start_time = START, bucket_width = "1h", limit = 48 }
      assert.are.equal("network", err.kind)
      assert.matches("exceeds max_response_bytes (2000 bytes, decompressed)", err.message, 1, true)
    end)

    it("a 2xx body the cap refused is not read for an error message", function()
      -- an envelope first, then padding past the cap: what arrived before
      -- the cap stopped the transfer is a whole JSON text
      local padding = (" "):rep(60000)
      srv:faults { { status = 200, body = '{"error":{"message":"read after the cap","type":"t"}}' .. padding } }
      local c = client { max_response_bytes = 20000, max_retries = 0 }
      local _, err = c:images { start_time = START }
      assert.are.equal("network", err.kind)
      assert.matches("exceeds max_response_bytes (20000 bytes", err.message, 1, true)
      assert.is_nil(err.type)
      assert.is_true(c:last_transfer().body_bytes > 0, "part of the body had arrived")
      -- nor is any 2xx answer: an envelope in a 200 is not the server's error
      srv:faults { { status = 200, body = '{"error":{"message":"not an error status"}}' } }
      _, err = c:images { start_time = START }
      assert.are.equal("api", err.kind)
      assert.matches("not a usage page", err.message, 1, true)
    end)

    it("an error body is read for its envelope within its first 64 KiB", function()
      local c = client { max_retries = 0 }
      local near = ("n"):rep(60 * 1024)
      srv:faults { { status = 500, error_message = near } }
      local _, err = c:images { start_time = START }
      assert.are.equal(500, err.status)
      assert.is_true(err.message == near, err.message:sub(1, 80))
      assert.are.equal("server_error", err.type)
      -- a 1 MiB envelope is not decoded: the status speaks for it
      srv:faults { { status = 500, error_message = ("f"):rep(1024 * 1024) } }
      _, err = c:images { start_time = START }
      assert.are.equal(500, err.status)
      assert.is_true(err.message == "HTTP status 500", err.message:sub(1, 80))
      assert.is_nil(err.type)
      assert.is_true(c:last_transfer().body_bytes > 1024 * 1024)
    end)

    it("a gzip bomb is stopped by the decompressed cap", function()
      srv:faults { { gzip_bomb = 50 * 1024 * 1024 } }
      local _, err = client({ max_response_bytes = 1024 * 1024 }):images { start_time = START }
      assert.matches("exceeds max_response_bytes", err.message, 1, true)
    end)

    it("malformed JSON: kind decode with the byte offset, not retried", function()
      srv:faults { { status = 200, body = '{"object":"page","data":[{"object":"bucket",]}' } }
      local c = client()
      local _, err = c:images { start_time = START }
      assert.are.equal("decode", err.kind)
      assert.are.equal(44, err.offset)
      assert.matches("at byte 44 of 46", err.message, 1, true)
      assert.are.equal(1, c:last_transfer().attempts)
    end)

    it("an HTML body: the decode error names the Content-Type", function()
      srv:faults { { status = 200, body = "<html>maintenance</html>", content_type = "text/html" } }
      local _, err = client():images { start_time = START }
      assert.are.equal("decode", err.kind)
      assert.matches("Content-Type was text/html", err.message, 1, true)
    end)

    it("JSON that is not a page: kind api", function()
      srv:faults { { status = 200, body = '{"object":"list","items":[]}' } }
      local _, err = client():images { start_time = START }
      assert.are.equal("api", err.kind)
      assert.matches("not a usage page", err.message, 1, true)
    end)

    it("a redirect is not followed (the key would go with it)", function()
      srv:faults { { status = 302, headers = { Location = "http://127.0.0.1:1/elsewhere" }, body = "" } }
      local _, err = client():images { start_time = START }
      assert.are.equal("http", err.kind)
      assert.are.equal(302, err.status)
      assert.are.equal(1, #srv:requests())
    end)
  end)

  describe("retries", function()
    it("retry 500s with the SDKs' backoff: 0.5 s doubling, times 0.75..1.0", function()
      srv:faults { { status = 500, times = 2 } }
      local c = client { retry_backoff = 0.02, retry_backoff_max = 1 }
      local page = c:images { start_time = START }
      assert.is_table(page)
      local t = c:last_transfer()
      assert.are.equal(3, t.attempts)
      assert.are.equal(2, #t.delays)
      assert.is_true(t.delays[1] >= 0.015 and t.delays[1] <= 0.02, tostring(t.delays[1]))
      assert.is_true(t.delays[2] >= 0.03 and t.delays[2] <= 0.04, tostring(t.delays[2]))
      assert.are.equal(3, #srv:requests())
    end)

    it("caps the backoff at retry_backoff_max", function()
      srv:faults { { status = 503, times = 3 } }
      local c = client { retry_backoff = 0.01, retry_backoff_max = 0.015, max_retries = 3 }
      c:images { start_time = START }
      local d = c:last_transfer().delays
      assert.are.equal(3, #d)
      assert.is_true(d[3] <= 0.015 and d[3] >= 0.015 * 0.75)
    end)

    for _, status in ipairs { 408, 409, 429, 500, 502, 503, 504 } do
      it("retries status " .. status, function()
        srv:faults { { status = status } }
        local c = client()
        assert.is_table(c:images { start_time = START })
        assert.are.equal(2, c:last_transfer().attempts)
      end)
    end

    for _, status in ipairs { 400, 401, 403, 404, 422 } do
      it("never retries status " .. status, function()
        srv:faults { { status = status, times = 3 } }
        local c = client()
        local _, err = c:images { start_time = START }
        assert.are.equal(status, err.status)
        assert.are.equal(1, err.attempts)
        assert.are.equal(1, #srv:requests())
      end)
    end

    it("gives up after max_retries, returning the last status", function()
      srv:faults { { status = 502, times = 10 } }
      local c = client { max_retries = 3 }
      local _, err = c:images { start_time = START }
      assert.are.equal(502, err.status)
      assert.are.equal(4, err.attempts)
      assert.are.equal(4, #srv:requests())
      assert.matches("after 4 attempts", err.message, 1, true)
    end)

    it("max_retries = 0 sends exactly one request", function()
      srv:faults { { status = 500, times = 2 } }
      local _, err = client({ max_retries = 0 }):images { start_time = START }
      assert.are.equal(500, err.status)
      assert.are.equal(1, #srv:requests())
    end)

    it("honours retry-after-ms", function()
      srv:faults { { status = 429, retry_after_ms = "120", retry_after = "30" } }
      local c = client()
      assert.is_table(c:images { start_time = START })
      assert.are.same({ 0.12 }, c:last_transfer().delays)
      local records = srv:requests()
      assert.is_true(records[2].time - records[1].time >= 0.11)
    end)

    it("honours Retry-After in seconds", function()
      srv:faults { { status = 429, retry_after = "1" } }
      local c = client()
      assert.is_table(c:images { start_time = START })
      assert.are.same({ 1 }, c:last_transfer().delays)
      local records = srv:requests()
      assert.is_true(records[2].time - records[1].time >= 0.95)
    end)

    it("honours Retry-After as an HTTP date", function()
      srv:faults { { status = 503, retry_after = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 2) } }
      local c = client()
      assert.is_table(c:images { start_time = START })
      local d = c:last_transfer().delays[1]
      assert.is_true(d >= 0 and d <= 2, tostring(d))
    end)

    it("gives up at once when asked to wait longer than retry_after_max", function()
      srv:faults { { status = 429, retry_after = "121" } }
      local c = client()
      local _, err = c:images { start_time = START }
      assert.are.equal("http", err.kind)
      assert.are.equal(429, err.status)
      assert.are.equal(121, err.retry_after)
      assert.are.equal(1, err.attempts)
      assert.matches("retry after 121 s, more than the 120 s allowed", err.message, 1, true)
      assert.are.equal(1, #srv:requests())
    end)

    it("follows x-should-retry over the status", function()
      srv:faults { { status = 500, headers = { ["x-should-retry"] = "false" } } }
      local _, err = client():images { start_time = START }
      assert.are.equal(1, err.attempts)
      srv:reset()
      srv:faults { { status = 400, headers = { ["x-should-retry"] = "true" } } }
      local c = client()
      assert.is_table(c:images { start_time = START })
      assert.are.equal(2, c:last_transfer().attempts)
    end)

    it("retries a reset connection", function()
      srv:faults { { reset = true } }
      local c = client()
      assert.is_table(c:images { start_time = START })
      assert.are.equal(2, c:last_transfer().attempts)
    end)

    it("reconnects when the server closed the keep-alive connection", function()
      srv:faults { { close_after = true } }
      local c = client()
      assert.is_table(c:images { start_time = START })
      assert.is_table(c:images { start_time = START })
      local records = srv:requests()
      assert.are_not.equal(records[1].connection, records[2].connection)
    end)
  end)

  describe("options", function()
    it("refuses an unknown option, suggesting the close one", function()
      local c, err = usage.new { api_key = KEY, timout = 5 }
      assert.is_nil(c)
      assert.are.equal("invalid_argument", err.kind)
      assert.are.equal('unknown option "timout"; did you mean "timeout"?', err.message)
    end)

    it("refuses bad values, naming the option", function()
      local cases = {
        { { timeout = 0 }, "timeout" },
        { { timeout = "5" }, "timeout" },
        { { max_retries = 11 }, "max_retries" },
        { { max_retries = 1.5 }, "max_retries" },
        { { base_url = "ftp://x" }, "base_url" },
        { { base_url = "http://x/v1?y=1" }, "base_url" },
        { { array_format = "comma" }, "array_format" },
        { { max_response_bytes = 0 }, "max_response_bytes" },
      }
      for _, case in ipairs(cases) do
        local opts = { api_key = KEY }
        for k, v in pairs(case[1]) do
          opts[k] = v
        end
        local c, err = usage.new(opts)
        assert.is_nil(c)
        assert.are.equal(case[2], err.param)
        assert.matches(case[2], err.message, 1, true)
      end
    end)

    it("requires a key, and says where to put it", function()
      local c, err = usage.new { api_key = "" }
      assert.is_nil(c)
      assert.are.equal("api_key", err.param)
      assert.matches("OPENAI_ADMIN_KEY", err.message, 1, true)
    end)

    it("refuses CR, LF or NUL in any header value, without echoing it", function()
      for _, name in ipairs { "api_key", "base_url", "organization", "project", "user_agent" } do
        for _, bad in ipairs { "\r", "\n", "\0" } do
          local opts = { api_key = KEY }
          opts[name] = (opts[name] or "x") .. bad .. "X-Injected: 1"
          local c, err = usage.new(opts)
          assert.is_nil(c)
          assert.are.equal(name, err.param)
          assert.matches("must not contain CR, LF or NUL", err.message, 1, true)
          assert.is_nil(err.message:find("Injected", 1, true))
        end
      end
    end)

    it("a core without its Lua half (a broken install) refuses to load, naming what is missing", function()
      -- the C core's error values take openai_usage.errors' metatable, so it needs that module
      local cpath = (os.getenv "LUA_CPATH" or package.cpath):match "^[^;]*"
      local script = os.tmpname()
      util.write(script, 'print(pcall(require, "openai_usage.core"))\n')
      local out = util.capture(("env LUA_PATH='/nonexistent/?.lua' LUA_CPATH=%s %s %s 2>&1"):format(
        util.q(cpath), util.suite_lua(), util.q(script)))
      os.remove(script)
      assert.matches("^false\t.*module 'openai_usage.errors' not found", out)
    end)

    it("reads OPENAI_ADMIN_KEY, OPENAI_BASE_URL, OPENAI_ORG_ID and OPENAI_PROJECT_ID", function()
      local lua = util.suite_lua()
      local script = os.tmpname()
      local f = assert(io.open(script, "w"))
      f:write([[
        local usage = require "openai_usage"
        local c = assert(usage.new())
        local page, err = c:images { start_time = ]] .. START .. [[ }
        io.write(page and "ok" or tostring(err))
      ]])
      f:close()
      local cmd = ("env OPENAI_ADMIN_KEY=%s OPENAI_BASE_URL=%s OPENAI_ORG_ID=org-env OPENAI_PROJECT_ID=proj_env %s %s")
        :format(KEY, srv.url, lua, script)
      local p = io.popen(cmd)
      local out = p:read "*a"
      p:close()
      os.remove(script)
      assert.are.equal("ok", out)
      local h = srv:last_request().headers
      assert.are.equal("Bearer " .. KEY, h["authorization"])
      assert.are.equal("org-env", h["openai-organization"])
      assert.are.equal("proj_env", h["openai-project"])
    end)
  end)

  describe("resources", function()
    it("is a Lua object: its settings are fields, the protocol is not part of it", function()
      local c = client { settle_after = "2h", max_pages = 5, gc = false }
      assert.are.equal("table", type(c))
      assert.are.same({ true, false, 7200, 5 }, { c.prefetch, c.gc, c.settle_after, c.max_pages })
      assert.is_nil(c.transport)
      assert.is_nil(c.cache)
      -- the background thread's and the Lua transport's calls belong to the walks
      for _, name in ipairs { "prefetch", "poll", "collect", "request", "transport_request", "transport_answer",
        "_walk_plan" } do
        assert.are_not.equal("function", type(c[name]), name)
      end
      for _, name in ipairs { "images", "usage", "costs", "pages", "buckets", "results", "url", "last_transfer",
        "cancel", "close" } do
        assert.are.equal("function", type(c[name]), name)
      end
      -- the C handle's method table is not patched with the Lua layer's
      local methods = getmetatable(require("openai_usage.protocol").of(c)).__index
      for _, name in ipairs { "images", "usage", "pages", "buckets", "results" } do
        assert.is_nil(methods[name], name)
      end
      -- a setting read back as given, and a transport client never prefetches
      local t = client { transport = function()
        return 200, {}, '{"object":"page","data":[],"has_more":false}'
      end }
      assert.is_false(t.prefetch)
      assert.are.equal("function", type(t.transport))
      assert.are.same({}, assert(t:images { start_time = START }).data)
      assert.is_string(usage.version)
      t:close()
      c:close()
    end)

    it("a method called with a dot is refused clearly", function()
      local c = client()
      local ok, err = pcall(c.images, { start_time = START })
      assert.is_false(ok)
      assert.matches("expected a client (call its methods with a colon), got a table", tostring(err), 1, true)
      assert.are.same({}, srv:requests())
      c:close()
    end)

    it("tostring(client) never shows the key", function()
      local c = client()
      assert.matches("^openai_usage.client %(http://127.0.0.1:%d+/v1, api_key=<redacted>%)$", tostring(c))
      assert_no_key(tostring(c))
    end)

    it("close() releases the handle, is safe twice, and later calls fail clearly", function()
      local c = client()
      c:close()
      c:close()
      assert.are.equal("openai_usage.client (closed)", tostring(c))
      assert.has_error(function()
        c:images { start_time = START }
      end, "openai_usage: the client is closed")
    end)

    it("garbage collection releases handles and their connections", function()
      -- /proc/self read by this Lua process itself names it, not a shell
      local stat = assert(io.open("/proc/self/stat")):read("*l")
      local pid = stat:match("^(%d+)")
      local function open_fds()
        local n = 0
        local ls = io.popen("ls /proc/" .. pid .. "/fd")
        for _ in ls:lines() do
          n = n + 1
        end
        ls:close()
        return n
      end
      collectgarbage()
      collectgarbage()
      local before = open_fds()
      for _ = 1, 30 do
        local c = client()
        assert.is_table(c:images { start_time = START })
      end
      collectgarbage()
      collectgarbage()
      local after = open_fds()
      assert.is_true(after <= before + 1, ("fds before %d, after %d"):format(before, after))
    end)

    it("a to-be-closed client is released at the end of its scope (Lua 5.4)", function()
      if _VERSION ~= "Lua 5.4" then
        return pending "needs Lua 5.4"
      end
      local chunk = assert(load [[
        local usage, opts, start = ...
        local c <close> = assert(usage.new(opts))
        assert(c:images { start_time = start })
        return c
      ]])
      local c = chunk(usage, { api_key = KEY, base_url = srv.url }, START)
      assert.are.equal("openai_usage.client (closed)", tostring(c))
    end)
  end)
end)
