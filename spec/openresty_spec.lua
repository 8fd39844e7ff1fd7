-- OpenResty: the client inside a real nginx (Debian's nginx with
-- libnginx-mod-http-lua and lua-resty-core, one worker, LuaJIT), on the
-- cosocket transport, configured by examples/openresty/nginx.conf (only its
-- port is replaced). Requests to nginx go through the curl command-line
-- tool; the API is the stand-in server (and, for body framing, nginx itself).
local usage = require "openai_usage"
local cjson = require "cjson"
local standin = require "spec.support.standin"
local nginx = require "spec.support.nginx"

local KEY = "sk-admin-openresty-0123456789abcdefSECRET"
local DAY = 86400
local LATENCY_MS = 400 -- per page, in the non-blocking test
local EXAMPLE_CONF = nginx.read_file "examples/openresty/nginx.conf"
local SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"

-- Whole days up to today's UTC midnight: one bucket a day, one page a day at limit=1.
local function window(days)
  local midnight = os.time() - os.time() % DAY
  return { start_time = midnight - days * DAY, end_time = midnight, bucket_width = "1d", group_by = "model", limit = 1 }
end

local function query(params)
  return ("/usage/images?start_time=%d&end_time=%d&limit=%d"):format(params.start_time, params.end_time, params.limit)
end

-- Images per model as the libcurl client reads them: what nginx must report.
local function expected_images(srv, params)
  local client = assert(usage.new(srv:client_options { prefetch = false }))
  local images = {}
  for row in client:results("images", params) do
    images[row.model] = (images[row.model] or 0) + row.images
  end
  client:close()
  return images
end

local function decode(body)
  local ok, value = pcall(cjson.decode, body or "")
  assert(ok, "nginx did not answer JSON: " .. tostring(body))
  return value
end

local function assert_no_key(text)
  assert.is_nil(text:find(KEY, 1, true), "the API key leaked into: " .. text)
end

-- Keeps waiting until the stand-in has received n API requests.
describe("openresty", function()
  if not nginx.available() then
    it("needs nginx and libnginx-mod-http-lua (make deps installs them)", function()
      error("nginx or " .. nginx.LUA_MODULE .. " is missing: run make deps")
    end)
    return
  end

  local srv, web

  setup(function()
    nginx.build_module()
    srv = standin.start { key = KEY }
    web = nginx.start { conf = EXAMPLE_CONF, env = { OPENAI_ADMIN_KEY = KEY, OPENAI_BASE_URL = srv.url } }
  end)

  teardown(function()
    if web then
      assert_no_key(web:error_log())
      web:stop()
    end
    srv:stop()
  end)

  before_each(function()
    srv:reset()
  end)

  it("walks every page through cosockets: the totals libcurl reads, the headers libcurl sends", function()
    local params = window(4)
    local images = expected_images(srv, params)
    srv:reset()
    local status, body = web:get(query(params))
    assert.are.equal(200, status, body)
    local answer = decode(body)
    assert.are.equal(4, answer.pages)
    assert.are.same(images, answer.images)
    local records = srv:requests()
    assert.are.equal(4, #records)
    for i, r in ipairs(records) do
      assert.are.equal("/v1/organization/usage/images", r.path)
      assert.are.equal(i == 1, r.query:find("page=", 1, true) == nil)
      assert.are.equal("Bearer " .. KEY, r.headers.authorization)
      assert.are.equal("application/json", r.headers.accept)
      assert.matches("^openai%-usage%-lua/", r.headers["user-agent"])
      -- the decoder reads plain JSON and pure Lua cannot inflate: no gzip asked for
      assert.is_nil(r.headers["accept-encoding"])
    end
  end)

  it("keeps the connection alive across pages and across nginx requests (the cosocket pool)", function()
    local params = window(3)
    for _ = 1, 2 do
      local status, body = web:get(query(params))
      assert.are.equal(200, status, body)
    end
    local records = srv:requests()
    assert.are.equal(6, #records)
    for _, r in ipairs(records) do
      assert.are.equal(records[1].connection, r.connection)
    end
  end)

  it("answers a second request at once while the same worker walks slow pages", function()
    local params = window(5)
    srv:settings { latency_ms = LATENCY_MS }
    local walk = web:get_in_background(query(params))
    srv:await_requests(1) -- the walk is on the wire
    local ping_status, ping_body, ping_seconds = web:get "/ping"
    local status, body, walk_seconds = walk.wait()
    print(("\n# openresty: a walk of 5 pages (%d ms each) took %.3f s; /ping during it took %.3f s"):format(
      LATENCY_MS, walk_seconds, ping_seconds))
    assert.are.equal(200, status, body)
    assert.are.equal(200, ping_status)
    local answer, ping = decode(body), decode(ping_body)
    assert.are.equal(5, answer.pages)
    assert.are.equal(answer.worker, ping.worker) -- one worker served both
    assert.is_true(walk_seconds >= 5 * LATENCY_MS / 1000, "the walk was not slow: " .. walk_seconds)
    -- had the worker blocked, the ping would have waited for the rest of the walk (>= 1.6 s)
    assert.is_true(ping_seconds < 0.8 and ping_seconds < walk_seconds / 2,
      ("the ping waited for the walk: %.3f s of %.3f s"):format(ping_seconds, walk_seconds))
    local records = srv:requests()
    assert.are.equal(5, #records)
    assert.is_true(ping.now < records[#records].time,
      "the ping was answered only after the walk's last page was requested")
  end)

  it("a 500 from the API: retried with backoff (ngx.sleep, the worker free meanwhile), then an error JSON", function()
    srv:faults { { status = 500, times = 10 } }
    local params = window(2)
    local walk = web:get_in_background(query(params))
    srv:await_requests(1)
    local ping_status, _, ping_seconds = web:get "/ping"
    local status, body, seconds = walk.wait()
    print(("\n# openresty: 3 attempts with backoff took %.3f s; /ping during the retry sleep took %.3f s"):format(
      seconds, ping_seconds))
    assert.are.equal(502, status, body)
    assert.are.equal(200, ping_status)
    assert.is_true(ping_seconds < 0.3, "the ping waited for the retry sleep: " .. ping_seconds)
    assert_no_key(body)
    local err = decode(body).error
    assert.are.equal("http", err.kind)
    assert.are.equal(500, err.status)
    assert.are.equal(3, err.attempts)
    assert.matches("after 3 attempts", err.message, 1, true)
    -- the default backoff: 0.5 s then 1 s, each times 0.75..1.0
    assert.are.equal(2, #err.delays)
    assert.is_true(err.delays[1] >= 0.375 and err.delays[1] <= 0.5, tostring(err.delays[1]))
    assert.is_true(err.delays[2] >= 0.75 and err.delays[2] <= 1.0, tostring(err.delays[2]))
    assert.is_true(seconds >= err.delays[1] + err.delays[2])
    assert.are.equal(3, #srv:requests())
  end)

  it("a 429 with Retry-After: waits that long, then the page", function()
    srv:faults { { status = 429, retry_after_ms = "300" } }
    local params = window(1)
    local status, body = web:get(query(params))
    assert.are.equal(200, status, body)
    local records = srv:requests()
    assert.are.equal(2, #records)
    assert.is_true(records[2].time - records[1].time >= 0.29)
  end)

  it("an invalid parameter: 400 with the client's message, nothing sent", function()
    local status, body = web:get "/usage/images?start_time=1&limit=0"
    assert.are.equal(400, status)
    local err = decode(body).error
    assert.are.equal("invalid_argument", err.kind)
    assert.matches("limit: 0 is out of range 1..31", err.message, 1, true)
    assert.are.equal(0, #srv:requests())
  end)

  -- A conf of the spec's own, for what the example does not show: nginx
  -- also plays the API (a recorded page, framed as the path says), and
  -- /fetch requests one page twice through a resty transport built with
  -- options, from the base URL given. ca: lua_ssl_trusted_certificate.
  local function test_conf(ca)
    return ([[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1;
error_log logs/error.log warn;
pid logs/nginx.pid;
env OPENAI_ADMIN_KEY;
events { worker_connections 64; }
http {
    access_log off;
    lua_package_path "$prefix/lua/?.lua;$prefix/lua/?/init.lua;;";
    lua_package_cpath "$prefix/lib/?.so;;";
    lua_ssl_trusted_certificate %s;
    server {
        listen 127.0.0.1:8080;
        location /length/ { content_by_lua_file conf/page.lua; }
        location /chunked/ { content_by_lua_file conf/page.lua; }
        # no length and no chunks: the body ends when nginx closes the connection
        location /close/ { chunked_transfer_encoding off; content_by_lua_file conf/page.lua; }
        location = /fetch { content_by_lua_file conf/fetch.lua; }
        location = /handshake { content_by_lua_file conf/handshake.lua; }
    }
}
]]):format(ca)
  end

  local PAGE_LUA = [[
local f = assert(io.open(ngx.config.prefix() .. "conf/page.json", "rb"))
local body = f:read "*a"
f:close()
ngx.header["Content-Type"] = "application/json"
ngx.header["x-request-id"] = "connection-" .. ngx.var.connection
if ngx.var.uri:find "^/length/" then
  ngx.header["Content-Length"] = #body
  ngx.print(body)
else
  for i = 1, #body, 4096 do
    ngx.print(body:sub(i, i + 4095))
    ngx.flush(true)
  end
end
]]

  local FETCH_LUA = [[
local usage = require "openai_usage"
local cjson = require "cjson"
local resty = require "openai_usage.transport.resty"
local args = ngx.req.get_uri_args()
local transport = assert(resty.new { hosts = { localhost = "127.0.0.1" }, keepalive_timeout = 10 })
local client = assert(usage.new {
  transport = transport, base_url = args.base, max_response_bytes = tonumber(args.max),
  max_retries = tonumber(args.retries) or 0, retry_backoff = tonumber(args.backoff), timeout = tonumber(args.timeout),
})
local out = {}
for i = 1, 2 do
  local page, err = client:images { start_time = tonumber(args.start_time) }
  local t = client:last_transfer()
  out[i] = page and { buckets = #page.data, request_id = t.request_id or cjson.null, body_bytes = t.body_bytes,
      attempts = t.attempts }
    or { error = { kind = err.kind, message = err.message, attempts = err.attempts } }
end
ngx.say(cjson.encode(out))
]]

  local function fetch(server, base, extra)
    local status, body = server:get(("/fetch?base=%s&start_time=%d%s"):format(base, window(1).start_time, extra or ""))
    assert.are.equal(200, status, body)
    assert_no_key(body)
    return decode(body)
  end

  describe("reading answers", function()
    local server, page

    setup(function()
      -- a real page of the stand-in's, 31 daily buckets grouped by everything
      local c = assert(usage.new(srv:client_options { prefetch = false }))
      local params = window(31)
      params.limit, params.group_by = 31, { "model", "size", "source", "project_id" }
      local p = assert(io.popen(("env -u LD_PRELOAD curl -s -H 'Authorization: Bearer %s' '%s'"):format(KEY, c:url("images", params))))
      page = p:read "*a"
      p:close()
      c:close()
      server = nginx.start {
        conf = test_conf(SYSTEM_CA),
        env = { OPENAI_ADMIN_KEY = KEY },
        files = { ["page.json"] = page, ["page.lua"] = PAGE_LUA, ["fetch.lua"] = FETCH_LUA },
      }
    end)

    teardown(function()
      assert_no_key(server:error_log())
      server:stop()
    end)

    for _, framing in ipairs { "length", "chunked", "close" } do
      it("reads a body framed by " .. framing .. ", whole", function()
        local decoded = assert(usage.decode(page))
        assert.is_true(#page > 3 * 4096) -- several chunks
        local out = fetch(server, server.url .. "/" .. framing .. "/v1")
        for i = 1, 2 do
          assert.is_nil(out[i].error)
          assert.are.equal(#decoded.data, out[i].buckets)
          assert.are.equal(#page, out[i].body_bytes)
        end
        -- framed bodies leave the connection reusable; a body ended by closing cannot
        if framing == "close" then
          assert.are_not.equal(out[1].request_id, out[2].request_id)
        else
          assert.are.equal(out[1].request_id, out[2].request_id)
        end
      end)

      it("stops reading a " .. framing .. " body past max_response_bytes: the client's size cap", function()
        local out = fetch(server, server.url .. "/" .. framing .. "/v1", "&max=1000")
        for i = 1, 2 do
          assert.are.equal("network", out[i].error.kind)
          assert.matches("exceeds max_response_bytes (1000 bytes", out[i].error.message, 1, true)
        end
      end)
    end
  end)

  describe("the connection", function()
    local server

    setup(function()
      server = nginx.start { conf = test_conf(SYSTEM_CA), env = { OPENAI_ADMIN_KEY = KEY },
        files = { ["fetch.lua"] = FETCH_LUA, ["page.lua"] = PAGE_LUA } }
    end)

    teardown(function()
      assert_no_key(server:error_log())
      server:stop()
    end)

    it("refused: kind network, after the retries", function()
      local out = fetch(server, "http://127.0.0.1:1/v1", "&retries=2&backoff=0.01")
      assert.are.equal("network", out[1].error.kind)
      assert.are.equal(3, out[1].error.attempts)
      assert.matches("transfer failed after 3 attempts: connecting to 127.0.0.1:1: connection refused",
        out[1].error.message, 1, true)
    end)

    it("a slow answer: kind timeout at the client's timeout", function()
      srv:faults { { latency_ms = 3000, times = 2 } }
      local out = fetch(server, srv.url, "&timeout=0.3")
      for i = 1, 2 do
        assert.are.equal("timeout", out[i].error.kind)
        assert.matches("reading the status line from 127.0.0.1:" .. srv.port .. ": timeout", out[i].error.message, 1,
          true)
      end
    end)

    it("closed by the server after an answer: the next request opens another, with no failed attempt", function()
      srv:faults { { close_after = true } }
      local out = fetch(server, srv.url, "&retries=2")
      assert.are.equal(1, out[1].attempts, out[1].error and out[1].error.message)
      assert.are.equal(1, out[2].attempts, out[2].error and out[2].error.message)
      local records = srv:requests()
      assert.are.equal(2, #records)
      assert.are_not.equal(records[1].connection, records[2].connection)
    end)
  end)

  -- A failed handshake as nginx reports it, then the reason as the
  -- transport reads it back where lua-resty-core raises instead.
  -- lua-resty-core raises instead of returning when the handshake ended
  -- within its first call, which depends on scheduling (on some runs every
  -- time): then nginx's own report is not to be had from that socket.
  -- Another connection is tried, up to 20; the first line is nginx's report,
  -- or "(raised)" when every try raised, and the second the reason read back
  -- from the last socket.
  local HANDSHAKE_LUA = [[
local resty = require "openai_usage.transport.resty"
local reason
for _ = 1, 20 do
  local sock = ngx.socket.tcp()
  assert(sock:connect("127.0.0.1", tonumber(ngx.var.arg_port)))
  local returned, session, reported = pcall(sock.sslhandshake, sock, nil, ngx.var.arg_name, true)
  reason = resty._raised_handshake_error(sock, "raised")
  sock:close()
  if returned then
    ngx.say(session and "accepted" or reported)
    ngx.say(reason)
    return
  end
end
ngx.say("(raised)")
ngx.say(reason)
]]

  describe("over https", function()
    local tls

    setup(function()
      tls = standin.start { key = KEY, tls = true }
    end)

    teardown(function()
      tls:stop()
    end)

    local function tls_server(ca_text)
      return nginx.start {
        conf = test_conf(ca_text and "trusted.pem" or SYSTEM_CA),
        env = { OPENAI_ADMIN_KEY = KEY },
        files = { ["trusted.pem"] = ca_text, ["page.lua"] = PAGE_LUA, ["fetch.lua"] = FETCH_LUA,
          ["handshake.lua"] = HANDSHAKE_LUA },
      }
    end

    it("verifies the certificate against lua_ssl_trusted_certificate and the host name, then keeps the connection", function()
      local server = tls_server(nginx.read_file(tls.ca_file))
      tls:reset()
      local out = fetch(server, ("https://localhost:%d/v1"):format(tls.port))
      server:stop()
      assert.is_nil(out[1].error, out[1].error and out[1].error.message)
      assert.is_nil(out[2].error)
      assert.is_true(out[1].buckets >= 1)
      local records = tls:requests()
      assert.are.equal(2, #records)
      assert.are.equal(records[1].connection, records[2].connection) -- one handshake, then the pool
      assert.are.equal("Bearer " .. KEY, records[1].headers.authorization)
    end)

    it("refuses a certificate that does not chain to a trusted one: nothing is sent, no retry", function()
      local server = tls_server(nil)
      tls:reset()
      local out = fetch(server, ("https://localhost:%d/v1"):format(tls.port), "&retries=2")
      server:stop()
      assert.are.equal("network", out[1].error.kind, out[1].error.message)
      assert.are.equal(1, out[1].error.attempts) -- it would fail again, as with libcurl
      assert.matches("TLS handshake with localhost:" .. tls.port .. ": 18: self-signed certificate",
        out[1].error.message, 1, true)
      assert.are.equal(0, #tls:requests()) -- the key never left
    end)

    it("reads back the reason of a handshake lua-resty-core raised on, as nginx reports it", function()
      tls:reset()
      for _, case in ipairs {
        { ca = nginx.read_file(tls.ca_file), name = "127.0.0.1", reason = "certificate host mismatch" },
        { ca = nil, name = "localhost", reason = "18: self-signed certificate" },
      } do
        local server = tls_server(case.ca)
        local status, body = server:get(("/handshake?port=%d&name=%s"):format(tls.port, case.name))
        server:stop()
        assert.are.equal(200, status, body)
        local reported, read_back = body:match "^(.-)\n(.-)\n$"
        assert.are.equal(case.reason, read_back, body)
        if reported ~= "(raised)" then
          assert.are.equal(case.reason, reported, body)
        end
      end
      assert.are.equal(0, #tls:requests())
    end)

    it("refuses an https URL by IP address: nginx verifies host names only", function()
      local server = tls_server(nginx.read_file(tls.ca_file))
      tls:reset()
      local out = fetch(server, ("https://127.0.0.1:%d/v1"):format(tls.port), "&retries=2")
      server:stop()
      assert.are.equal("network", out[1].error.kind, out[1].error.message)
      assert.are.equal(1, out[1].error.attempts) -- not retried: it would fail again
      -- also where the handshake ended within its first call, which
      -- lua-resty-core answers by raising (see transport/resty.lua)
      assert.matches("TLS handshake with 127.0.0.1:" .. tls.port .. ": certificate host mismatch",
        out[1].error.message, 1, true)
      assert.are.equal(0, #tls:requests())
    end)
  end)
end)
