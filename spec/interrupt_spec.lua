-- bin/openai-usage as a real process against a server that is slow or
-- stalls: Ctrl-C (SIGINT) stops the transfer at once and exits 130 without
-- writing --out; --timeout bounds each attempt.
local standin = require "spec.support.standin"
local util = require "spec.support.util"

local KEY = "sk-admin-interrupt-5d1c0b"
local NOW = 1732406400 -- 2024-11-24T00:00:00Z, the stand-in's now
local LUA = util.suite_lua() -- make check-tsan runs its own interpreter
local q, read = util.q, util.read_if

describe("openai-usage CLI, interrupted", function()
  local srv, tmp

  setup(function()
    srv = standin.start { key = KEY, now = NOW }
    tmp = os.tmpname()
  end)

  teardown(function()
    srv:stop()
    for _, suffix in ipairs { "", ".out", ".err", ".pid", ".code", ".report" } do
      os.remove(tmp .. suffix)
    end
  end)

  before_each(function()
    srv:reset()
    for _, suffix in ipairs { ".out", ".err", ".pid", ".code", ".report" } do
      os.remove(tmp .. suffix)
    end
  end)

  -- Starts the CLI in the background; returns its pid. Its exit code lands
  -- in tmp.code once it has exited.
  local function start(args)
    local quoted = {}
    for i, a in ipairs(args) do
      quoted[i] = q(a)
    end
    local cmd = ("( env OPENAI_ADMIN_KEY=%s OPENAI_BASE_URL=%s %s bin/openai-usage %s >%s 2>%s & echo $! >%s; "
      .. "wait $!; echo $? >%s ) >/dev/null 2>&1 &"):format(q(srv.key), q(srv.url), LUA, table.concat(quoted, " "),
      q(tmp .. ".out"), q(tmp .. ".err"), q(tmp .. ".pid"), q(tmp .. ".code"))
    assert(util.execute(cmd))
    for _ = 1, 250 do
      local pid = read(tmp .. ".pid")
      if pid and pid:match "%d+\n" then
        return pid:match "%d+"
      end
      os.execute "sleep 0.02"
    end
    error "the CLI did not start"
  end

  -- Waits up to limit seconds for the exit code; nil if it never came (the
  -- process is then killed).
  local function wait_exit(pid, limit)
    local t0 = util.wall()
    while util.wall() - t0 < limit do
      local code = read(tmp .. ".code")
      if code and code:match "%d+\n" then
        return tonumber(code:match "%d+"), util.wall() - t0
      end
      os.execute "sleep 0.02"
    end
    os.execute("kill -9 " .. pid .. " 2>/dev/null")
    return nil, util.wall() - t0
  end

  -- A page dripped at 40 bytes/s takes minutes: the CLI is mid-transfer.
  local function await_drip()
    for _ = 1, 250 do
      if srv:status().active_drips > 0 then
        return
      end
      os.execute "sleep 0.02"
    end
    error "the stand-in never started the drip"
  end

  local function interrupt_during(faults, args)
    srv:faults(faults)
    local pid = start(args)
    await_drip()
    os.execute "sleep 0.2" -- well inside the transfer
    local t0 = util.wall()
    os.execute("kill -INT " .. pid)
    local code = wait_exit(pid, 10)
    return code, util.wall() - t0
  end

  it("Ctrl-C during the first page: the transfer stops within half a second, exit 130, no --out file", function()
    local code, seconds = interrupt_during({ { drip_bytes_per_sec = 40 } },
      { "images", "--since", "2024-11-20", "--until", "2024-11-23", "--out", tmp .. ".report" })
    print(("\n# SIGINT during a dripped page: exit %s after %.3f s"):format(tostring(code), seconds))
    assert.are.equal(130, code)
    assert.is_true(seconds < 0.5, "took " .. seconds .. " s")
    assert.is_nil(read(tmp .. ".report"))
    assert.matches("interrupted", read(tmp .. ".err"))
    -- nothing left beside it either (no temporary file)
    local dir, base = tmp:match "^(.*)/([^/]*)$"
    local left = util.capture(("ls -a %s | grep -F %s || true"):format(q(dir), q(base .. ".report")))
    assert.are.equal("", left)
    -- the stand-in saw the client go: the drip ended with the connection
    for _ = 1, 100 do
      if srv:status().active_drips == 0 then
        break
      end
      os.execute "sleep 0.02"
    end
    assert.are.equal(0, srv:status().active_drips)
  end)

  it("Ctrl-C while the next page is prefetched on the background thread: exit 130 within half a second", function()
    -- 10 days of hours: two pages; the second drips
    local code, seconds = interrupt_during({ { latency_ms = 0 }, { drip_bytes_per_sec = 40 } },
      { "images", "--bucket", "1h", "--since", "2024-11-10", "--until", "2024-11-20", "--out", tmp .. ".report" })
    print(("\n# SIGINT during a prefetched page: exit %s after %.3f s"):format(tostring(code), seconds))
    assert.are.equal(130, code)
    assert.is_true(seconds < 0.5, "took " .. seconds .. " s")
    assert.is_nil(read(tmp .. ".report"))
    assert.are.equal(2, srv:status().requests)
  end)

  it("--timeout bounds each attempt of a stalled server", function()
    srv:faults { { stall_after = 5, times = 3 } }
    local pid = start { "images", "--since", "2024-11-20", "--until", "2024-11-23", "--timeout", "0.5" }
    local code, seconds = wait_exit(pid, 20)
    print(("\n# --timeout 0.5 against a stall: exit %s after %.2f s, %d attempts"):format(tostring(code), seconds,
      srv:status().requests))
    assert.are.equal(1, code)
    assert.matches("timed out after 3 attempts", read(tmp .. ".err"))
    assert.are.equal(3, srv:status().requests)
    assert.is_true(seconds < 10, "took " .. seconds .. " s")
  end)

  it("--timeout refuses what is not a number of seconds, before sending", function()
    for _, bad in ipairs { "soon", "0", "-1" } do
      local pid = start { "images", "--timeout", bad }
      local code = wait_exit(pid, 10)
      assert.are.equal(2, code)
      assert.matches("%-%-timeout: \"" .. bad:gsub("%-", "%%-") .. "\" is not a number of seconds", read(tmp .. ".err"))
      os.remove(tmp .. ".code")
      os.remove(tmp .. ".pid")
    end
    assert.are.equal(0, srv:status().requests)
  end)
end)
