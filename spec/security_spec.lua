-- TLS is always verified; the key goes only into the Authorization header
-- of the configured host, and never into an error, a message or tostring.
local usage = require "openai_usage"
local standin = require "spec.support.standin"
local util = require "spec.support.util"

local KEY = "sk-admin-secret-7f3a9c2e41d8b6"
local NOW = 1732406400
local START = NOW - 86400

describe("TLS", function()
  local srv

  setup(function()
    srv = standin.start { key = KEY, now = NOW, tls = true }
  end)

  teardown(function()
    srv:stop()
  end)

  it("refuses a self-signed certificate by default, with a clear error", function()
    local c = assert(usage.new { api_key = KEY, base_url = srv.url, max_retries = 0 })
    local page, err = c:images { start_time = START }
    assert.is_nil(page)
    assert.are.equal("network", err.kind)
    assert.matches("certificate", err.message, 1, true)
    assert.are.same({}, srv:requests())
  end)

  it("accepts it when ca_file names it", function()
    local c = assert(usage.new { api_key = KEY, base_url = srv.url, ca_file = srv.ca_file })
    local page = assert(c:images { start_time = START })
    assert.are.equal("page", page.object)
    assert.are.equal("Bearer " .. KEY, srv:last_request().headers["authorization"])
  end)

  it("checks the host name against the certificate", function()
    local c = assert(usage.new {
      api_key = KEY, base_url = srv.url:gsub("127%.0%.0%.1", "localhost"), ca_file = srv.ca_file,
    })
    assert.is_table(c:images { start_time = START })
    local other_ca = standin.make_certificate(os.tmpname(), "someone else")
    local wrong = assert(usage.new { api_key = KEY, base_url = srv.url, ca_file = other_ca, max_retries = 0 })
    local _, err = wrong:images { start_time = START }
    os.remove(other_ca)
    assert.are.equal("network", err.kind)
    assert.matches("certificate", err.message, 1, true)
  end)

  it("has no option that turns verification off", function()
    for _, name in ipairs { "insecure", "verify", "ssl_verify", "verify_peer", "tls_verify" } do
      local c, err = usage.new { api_key = KEY, base_url = srv.url, [name] = false }
      assert.is_nil(c)
      assert.are.equal("invalid_argument", err.kind)
    end
  end)
end)

describe("secrets", function()
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

  local function scan(value, seen)
    seen = seen or {}
    if type(value) == "string" then
      assert.is_nil(value:find(KEY, 1, true), "the key leaked into: " .. value:gsub(KEY, "<KEY>"))
      assert.is_nil(value:find(KEY:sub(10), 1, true), "part of the key leaked")
    elseif type(value) == "table" and not seen[value] then
      seen[value] = true
      for k, v in pairs(value) do
        scan(k, seen)
        scan(v, seen)
      end
      scan(tostring(value), seen)
    end
  end

  it("stays out of every kind of error", function()
    local cases = {
      { { status = 401, error_message = "bad key " .. KEY } },
      { { status = 500, error_message = KEY, times = 5 } },
      { { status = 429, retry_after = "999", error_message = "slow down, " .. KEY } },
      { { status = 200, body = '{"object":"page","data":[' } },
      { { status = 200, body = '{"error":{"message":"' .. KEY .. '"}}' } },
      { { reset = true, times = 5 } },
    }
    for _, faults in ipairs(cases) do
      srv:reset()
      srv:faults(faults)
      local c = assert(usage.new { api_key = KEY, base_url = srv.url, retry_backoff = 0.001, max_retries = 1 })
      local page, err = c:images { start_time = START }
      assert.is_nil(page)
      scan(err)
      scan(tostring(err))
      scan(tostring(c))
      scan(c:last_transfer())
    end
    local _, err = usage.new { api_key = KEY .. "\n", base_url = srv.url }
    scan(err)
    _, err =
      usage.new { api_key = KEY, base_url = "http://127.0.0.1:1/v1", max_retries = 0 }:images { start_time = START }
    scan(err)
  end)

  it("goes only into the Authorization header, only to the configured host", function()
    local c = assert(usage.new { api_key = KEY, base_url = srv.url, organization = "org-1", project = "proj_1" })
    assert.is_table(c:images { start_time = START, models = "dall-e-3" })
    local r = srv:last_request()
    assert.is_nil(r.query:find(KEY, 1, true))
    for name, value in pairs(r.headers) do
      if name == "authorization" then
        assert.are.equal("Bearer " .. KEY, value)
      else
        assert.is_nil(value:find(KEY, 1, true), name)
      end
    end
  end)

  it("is refused with CR, LF or NUL before anything is sent, and not echoed", function()
    for _, bad in ipairs { KEY .. "\r\nX-Evil: 1", KEY .. "\n", "\0" .. KEY } do
      local c, err = usage.new { api_key = bad, base_url = srv.url }
      assert.is_nil(c)
      assert.are.equal("api_key", err.param)
      scan(err)
    end
    assert.are.same({}, srv:requests())
  end)
end)

describe("the secrets scan of the suite's output", function()
  local function scan_file(text)
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
    local lua = util.suite_lua()
    local p =
      io.popen(("env -u LD_PRELOAD %s spec/support/scan_secrets.lua %s 2>&1; echo \"exit $?\""):format(lua, path))
    local out = p:read "*a"
    p:close()
    os.remove(path)
    return out
  end

  it("fails when a key the specs use appears in the output, without printing it whole", function()
    local out = scan_file("ok 1 - fine\nnot ok 2 - leaked " .. KEY .. "\n")
    assert.matches("exit 1", out, 1, true)
    assert.matches("appears at line 2", out, 1, true)
    assert.is_nil(out:find(KEY, 1, true))
  end)

  it("passes output that holds no key", function()
    local out = scan_file "ok 1 - fine\nsk-admin-*** masked\n"
    assert.matches("none found\nexit 0", out, 1, true)
  end)
end)

-- A key longer than the 127 bytes a request id or a Content-Type keeps: a
-- server that echoes it leaves a cut key, which an exact match would miss.
local LONG_KEY = "sk-admin-" .. ("Zq7Lm2Xv9Rt4Kp8Wc3Nb6Hy1Jd5Gf0S-"):rep(5)

-- Asserts that no string reachable from value holds 12 bytes of key in a row.
local function assert_no_key_run(key, value, seen)
  seen = seen or {}
  if type(value) == "string" then
    local run = util.find_key_run(key, value)
    assert.is_nil(run, "a run of the key leaked into: " .. value:gsub("[%w]", "*"))
  elseif type(value) == "table" and not seen[value] then
    seen[value] = true
    for k, v in pairs(value) do
      assert_no_key_run(key, k, seen)
      assert_no_key_run(key, v, seen)
    end
    assert_no_key_run(key, tostring(value), seen)
  end
end

describe("strings from the response", function()
  local curl_transport = require("spec.support.curl_transport").new
  local srv

  setup(function()
    srv = standin.start { key = LONG_KEY, now = NOW }
  end)

  teardown(function()
    srv:stop()
  end)

  -- what the server sends back, and a string the error must then show
  local cases = {
    { "x-request-id", { status = 500, echo_key = { ["x-request-id"] = "req-{key}" } }, "req-[redacted]" },
    { "x-request-id, the key first", { status = 429, retry_after = "0", echo_key = { ["x-request-id"] = "{key}" } },
      "[redacted]" },
    { "the Content-Type of a body that is not JSON",
      { status = 200, body = "<html>down</html>", echo_key = { ["Content-Type"] = "text/html; charset={key}" } },
      "(Content-Type was text/html; charset=[redacted])" },
    { "the Content-Type of JSON that is not a page",
      { status = 200, body = '{"object":"list"}', echo_key = { ["Content-Type"] = "application/json; v={key}" } },
      "Content-Type application/json; v=[redacted]" },
    { "envelope fields holding parts of the key",
      { status = 401, error_message = "bad key " .. LONG_KEY:sub(1, 40) .. "...", error_type = LONG_KEY:sub(1, 30),
        error_code = "k" .. LONG_KEY:sub(5, 60), error_param = LONG_KEY:sub(20) },
      "bad key [redacted]..." },
  }

  for _, via in ipairs { "libcurl", "a Lua transport" } do
    for _, case in ipairs(cases) do
      it(("through %s: %s is scrubbed in err, tostring(err) and last_transfer()"):format(via, case[1]), function()
        srv:reset()
        srv:faults { case[2] }
        local c = assert(usage.new(srv:client_options {
          max_retries = 0,
          transport = via ~= "libcurl" and curl_transport() or nil,
        }))
        local page, err = c:images { start_time = START }
        assert.is_nil(page)
        assert.is_table(err)
        assert.are.equal(1, #srv:requests())
        -- the server did send the key back
        local sent = srv:requests()[1].headers.authorization
        assert.are.equal("Bearer " .. LONG_KEY, sent)
        assert_no_key_run(LONG_KEY, err)
        assert_no_key_run(LONG_KEY, tostring(err))
        assert_no_key_run(LONG_KEY, c:last_transfer())
        assert.truthy(tostring(err):find(case[3], 1, true), tostring(err))
        c:close()
      end)
    end
  end

  it("a repeated cursor holding the key is not repeated in the walk's error", function()
    srv:reset()
    local body = '{"object":"page","data":[],"has_more":true,"next_page":"' .. LONG_KEY .. '"}'
    srv:faults { { status = 200, body = body, times = 2 } }
    local c = assert(usage.new(srv:client_options { max_retries = 0 }))
    local ok, err = pcall(function()
      for _ in c:pages("images", { start_time = START }) do
      end
    end)
    assert.is_false(ok)
    assert.matches("repeated the cursor", err.message, 1, true)
    assert_no_key_run(LONG_KEY, err)
    c:close()
  end)

  it("scrubs any 12 bytes of the key in a row, and leaves shorter ones and masked keys alone", function()
    local masked = LONG_KEY:sub(1, 11) .. "****" .. LONG_KEY:sub(-4)
    srv:reset()
    srv:faults { { status = 401, error_message = "key " .. masked .. " / " .. LONG_KEY:sub(50, 61) .. " / "
      .. LONG_KEY:sub(-12) } }
    local _, err = usage.new(srv:client_options { max_retries = 0 }):images { start_time = START }
    assert.are.equal("key " .. masked .. " / [redacted] / [redacted]", err.message)
  end)
end)

describe("userinfo in base_url", function()
  local srv

  setup(function()
    srv = standin.start { key = KEY, now = NOW }
  end)

  teardown(function()
    srv:stop()
  end)

  local function urls()
    local hostport = srv.url:match "^http://([^/]+)"
    return {
      ("http://ou-user:hunter2-pass@%s/v1"):format(hostport),
      ("http://ou-user@%s/v1"):format(hostport),
      ("https://ou-user:hunter2-pass@%s/v1"):format(hostport),
      ("ou-user:hunter2-pass@%s/v1"):format(hostport), -- no scheme: refused for userinfo first, not echoed
      ("http://ou-user:hunter2-pass@%s"):format(hostport),
    }
  end

  it("is refused with invalid_argument, without repeating it, before anything is sent", function()
    for _, url in ipairs(urls()) do
      for _, transport in ipairs { false, true } do
        local dir = os.tmpname()
        os.remove(dir)
        local c, err = usage.new { api_key = KEY, base_url = url, cache_dir = dir,
          transport = transport and function() error "never called" end or nil }
        assert.is_nil(c, url)
        assert.is_nil(io.open(dir), "no cache directory is made")
        assert.are.equal("invalid_argument", err.kind)
        assert.are.equal("base_url", err.param)
        assert.matches("user information", err.message, 1, true)
        for _, part in ipairs { "ou-user", "hunter2" } do
          assert.is_nil(tostring(err):find(part, 1, true), tostring(err))
          util.assert_no_key(part, err)
        end
      end
    end
    -- from the environment too, as the CLI and Neovim take it
    local out = util.capture(("env OPENAI_ADMIN_KEY=%s OPENAI_BASE_URL=%s %s bin/openai-usage images --since 2024-11-01"
      .. " --until 2024-11-02 2>&1; echo \"exit $?\""):format(util.q(KEY), util.q(urls()[1]), util.LUA))
    assert.matches("user information", out, 1, true)
    assert.matches("exit 2", out, 1, true)
    assert.is_nil(out:find("hunter2", 1, true))
    out = util.capture(("env OPENAI_ADMIN_KEY=%s %s bin/openai-usage images --since 2024-11-01 --until 2024-11-02"
      .. " --base-url %s 2>&1; echo \"exit $?\""):format(util.q(KEY), util.LUA, util.q(urls()[2])))
    assert.matches("exit 2", out, 1, true)
    assert.is_nil(out:find("ou-user", 1, true))
    assert.are.same({}, srv:requests())
  end)

  it("an @ in the path is not userinfo", function()
    local c = assert(usage.new { api_key = KEY, base_url = srv.url .. "/@x", max_retries = 0 })
    assert.matches("/v1/@x/organization/usage/images", c:url("images", { start_time = START }), 1, true)
    c:close()
  end)
end)

describe("terminal escapes from the server", function()
  local srv

  setup(function()
    srv = standin.start { key = KEY, now = NOW }
  end)

  teardown(function()
    srv:stop()
  end)

  -- OSC (set the window title), a bell, clear-screen, CR/LF, DEL, the C1
  -- CSI as UTF-8 (U+009B) in the message; an ESC and a lone 0x9B byte (CSI
  -- on an 8-bit terminal) in the request id; é stays as it is
  local MESSAGE = "\27]0;owned\7\27[2J\r\nnext \194\155 \127 end \195\169"
  local SHOWN = "\\x1b]0;owned\\x07\\x1b[2J\\x0d\\x0anext \\u009b \\x7f end \195\169"
  local function hostile()
    local json = '{"error":{"message":"\\u001b]0;owned\\u0007\\u001b[2J\\r\\nnext \\u009b \\u007f end \\u00e9",'
      .. '"type":"invalid_request_error","code":"c\\u001bd"}}'
    return { status = 400, body_hex = (json:gsub(".", function(ch) return ("%02x"):format(ch:byte()) end)),
      -- JSON to the stand-in, latin-1 on the wire: U+009B goes out as the byte 0x9B
      headers = { ["x-request-id"] = "req-\27[31m-\194\155-1" } }
  end

  it("are shown as text in tostring(err); err.message keeps the server's bytes", function()
    srv:faults { hostile() }
    local _, err = usage.new { api_key = KEY, base_url = srv.url, max_retries = 0 }:images { start_time = START }
    assert.are.equal(MESSAGE, err.message)
    assert.are.equal("req-\27[31m-\155-1", err.request_id)
    assert.are.equal("openai_usage: http 400 (c\\x1bd): " .. SHOWN .. " [request_id req-\\x1b[31m-\\x9b-1]",
      tostring(err))
    assert.are.equal(SHOWN, usage.printable(MESSAGE))
  end)

  it("never reach the CLI's stderr raw", function()
    srv:faults { hostile() }
    local err_file = os.tmpname()
    local cmd = ("env OPENAI_ADMIN_KEY=%s OPENAI_BASE_URL=%s %s bin/openai-usage images --since 2024-11-01"
      .. " --until 2024-11-02 2>%s; echo $?"):format(util.q(KEY), util.q(srv.url), util.LUA, util.q(err_file))
    local code = tonumber(util.capture(cmd))
    local stderr = util.read(err_file)
    os.remove(err_file)
    assert.are.equal(1, code)
    assert.truthy(stderr:find(SHOWN, 1, true), stderr)
    -- one line, and its only control byte the final newline
    assert.are.equal("\n", stderr:sub(-1))
    assert.is_nil(stderr:sub(1, -2):find "[%c\127\155]")
    assert.is_nil(stderr:find("\194\155", 1, true))
  end)
end)

describe("the key in memory", function()
  local srv

  setup(function()
    srv = standin.start { now = NOW }
  end)

  teardown(function()
    srv:stop()
  end)

  it("after close() and a collection, no copy of it is left in the process's writable memory (Linux)", function()
    if not io.open "/proc/self/maps" then
      pending "needs /proc/self/maps and /proc/self/mem"
      return
    end
    -- a child makes a fresh key, uses it (a 401 here: any key will do),
    -- closes the client, collects, then searches its own writable memory
    local out = util.capture(("%s spec/support/key_in_memory.lua %s %d 2>&1"):format(util.LUA, util.q(srv.url), START))
    local bearer, raw = out:match "^bearer (%d+) raw (%d+)\n$"
    assert(bearer, out)
    assert.are.equal(1, #srv:requests(), "the child made its request")
    print(("\n# key in memory after close + collect: %s copies of 'Bearer <key>', %s of the key in all"):format(bearer,
      raw))
    -- every copy the C core or libcurl makes says "Bearer <key>": the client
    -- keeps it so, the header list and libcurl's request buffer hold it so
    assert.are.equal(0, tonumber(bearer), out)
    -- the key alone also counts a freed header list whose first bytes the
    -- allocator reused, and the Lua strings that held it, which the library
    -- cannot wipe: glibc's malloc has reused those blocks by then, ASan's
    -- quarantine keeps them (SECURITY.md says what is promised)
    if not (os.getenv "LD_PRELOAD" or ""):find "asan" then
      assert.are.equal(0, tonumber(raw), out)
    end
  end)
end)
