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
    local c = assert(usage.new { api_key = KEY, base_url = srv.url:gsub("127%.0%.0%.1", "localhost"), ca_file = srv.ca_file })
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
    _, err = usage.new { api_key = KEY, base_url = "http://127.0.0.1:1/v1", max_retries = 0 }:images { start_time = START }
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
    local p = io.popen(("env -u LD_PRELOAD %s spec/support/scan_secrets.lua %s 2>&1; echo \"exit $?\""):format(lua, path))
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
