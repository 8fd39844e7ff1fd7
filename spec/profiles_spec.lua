-- Profiles and several organizations, through bin/openai-usage as a real
-- process against a stand-in serving two organizations (each key sees its
-- own): the profiles file refused unless it is the user's own and private
-- (a symlink's target too), loaded as data, keys from a key_command run
-- without a shell, one report over both organizations grouped by
-- organization, and a failing organization failing the whole report.
local usage = require "openai_usage"
local profiles = require "openai_usage.profiles"
local standin = require "spec.support.standin"
local cjson = require "cjson"
local util = require "spec.support.util"

local KEY_A = "sk-admin-profiles-alpha-3c9f1e"
local KEY_B = "sk-admin-profiles-beta-7d20b4"
local NOW = 1732406400 -- 2024-11-24T00:00:00Z, the stand-in's now
local RANGE = { "--since", "2024-11-01", "--until", "2024-11-21" }
local T_SINCE, T_UNTIL = 1730419200, 1730419200 + 20 * 86400

local q, read, write, exit_code = util.q, util.read_if, util.write, util.exit_code

describe("profiles", function()
  local srv, dir, out

  -- Writes a profiles file of text at path with mode (octal text).
  local function profiles_file(path, text, mode)
    write(path, text)
    assert(util.execute(("chmod %s %s"):format(mode or "600", q(path))))
    return path
  end

  -- The usual two profiles: alpha by key, beta by a key command; extra is
  -- Lua text added inside the table.
  local function two_profiles(extra)
    local key_b = dir .. "/key_b"
    write(key_b, KEY_B .. "\n")
    return ([[
return {
  alpha = { key = %q, organization = "Alpha", base_url = %q, options = { max_retries = 0 } },
  beta = { key_command = { "cat", %q }, organization = "Beta", base_url = %q, options = { max_retries = 0 } },
  %s
}
]]):format(KEY_A, srv.url, key_b, srv.url, extra or "")
  end

  -- Runs the CLI with args; returns stdout, stderr, exit code. env: extra
  -- variables (false unsets one). OPENAI_ADMIN_KEY is some other key, so a
  -- profile that did not take effect shows.
  local function run(args, env)
    local vars = { OPENAI_ADMIN_KEY = "sk-admin-not-a-profile-000", OPENAI_BASE_URL = srv.url,
      OPENAI_USAGE_PROFILES = false, XDG_CONFIG_HOME = false }
    for k, v in pairs(env or {}) do
      vars[k] = v
    end
    local unset, set = {}, {}
    for k, v in pairs(vars) do
      if v == false then
        unset[#unset + 1] = "-u " .. k
      else
        set[#set + 1] = k .. "=" .. q(v)
      end
    end
    local quoted = {}
    for i, a in ipairs(args) do
      quoted[i] = q(a)
    end
    local cmd = ("env %s %s %s bin/openai-usage %s >%s 2>%s"):format(table.concat(unset, " "),
      table.concat(set, " "), util.LUA, table.concat(quoted, " "), q(out .. ".out"), q(out .. ".err"))
    local code = exit_code(os.execute(cmd))
    return read(out .. ".out") or "", read(out .. ".err") or "", code
  end

  local function args(...)
    local list = { "images" }
    for _, a in ipairs(RANGE) do
      list[#list + 1] = a
    end
    for _, a in ipairs { ... } do
      list[#list + 1] = a
    end
    return list
  end

  -- A refused run: exit 2, one line naming the problem, no key, nothing sent.
  local function assert_refused(stdout, stderr, code, ...)
    assert.are.equal(2, code, stderr)
    assert.are.equal("", stdout)
    for _, pattern in ipairs { ... } do
      assert.truthy(stderr:find(pattern, 1, true), ("%q not in: %s"):format(pattern, stderr))
    end
    assert.is_nil(stderr:find(KEY_A, 1, true))
    assert.is_nil(stderr:find(KEY_B, 1, true))
    assert.are.equal(0, srv:status().requests)
  end

  -- The images of [T_SINCE, T_UNTIL) one key sees, by group fields, added up here.
  local function totals_of(key, fields)
    local client = assert(usage.new { api_key = key, base_url = srv.url })
    local totals = {}
    for row in client:results("images", { start_time = T_SINCE, end_time = T_UNTIL, bucket_width = "1d",
      group_by = fields, limit = 31 }) do
      local group = {}
      for i, f in ipairs(fields or {}) do
        group[i] = tostring(row[f])
      end
      group = table.concat(group, "|")
      totals[group] = (totals[group] or 0) + row.images
    end
    client:close()
    return totals
  end

  setup(function()
    srv = standin.start { key = KEY_A, now = NOW, orgs = { beta = KEY_B } }
    dir = util.tmpdir()
    out = dir .. "/run"
  end)

  teardown(function()
    srv:stop()
    util.rm_rf(dir)
  end)

  before_each(function()
    srv:reset()
  end)

  describe("the file", function()
    for _, mode in ipairs { "644", "640", "604", "660" } do
      it("is refused at mode " .. mode .. ", naming the mode and chmod 600 FILE, before anything is sent", function()
        local path = profiles_file(dir .. "/public.lua", two_profiles(), mode)
        local stdout, stderr, code = run(args("--profiles", path, "--profile", "alpha"))
        assert_refused(stdout, stderr, code, "mode 0" .. mode, "chmod 600 " .. path)
      end)
    end

    it("behind a symlink is judged by its target: a link to a 0644 file is refused, to a 0600 one taken", function()
      local target = profiles_file(dir .. "/target.lua", two_profiles(), "644")
      local link = dir .. "/link.lua"
      os.remove(link)
      assert(util.execute(("ln -s %s %s"):format(q(target), q(link))))
      local stdout, stderr, code = run(args("--profiles", link, "--profile", "alpha"))
      assert_refused(stdout, stderr, code, "a symlink", "mode 0644", "chmod 600 " .. link)
      assert(util.execute("chmod 600 " .. q(target)))
      stdout, stderr, code = run(args("--profiles", link, "--profile", "alpha", "--format", "json"))
      assert.are.equal(0, code, stderr)
      assert.are.equal(totals_of(KEY_A)[""], cjson.decode(stdout)[1].images)
    end)

    it("owned by another user is refused, even at 0600", function()
      local path = profiles_file(dir .. "/foreign.lua", two_profiles(), "600")
      if not util.execute("chown nobody " .. q(path) .. " 2>/dev/null") then
        pending "chown needs root: no file of another owner can be made here"
        return
      end
      local stdout, stderr, code = run(args("--profiles", path, "--profile", "alpha"))
      assert_refused(stdout, stderr, code, "owned by uid", "not by you")
    end)

    it("at 0600 or 0400 gives the profile's key and base URL (OPENAI_ADMIN_KEY is not used)", function()
      for _, mode in ipairs { "600", "400" } do
        local path = profiles_file(dir .. "/private" .. mode .. ".lua", two_profiles(), mode)
        local stdout, stderr, code = run(args("--profiles", path, "--profile", "alpha", "--format", "json"),
          { OPENAI_BASE_URL = "http://127.0.0.1:9/v1" })
        assert.are.equal(0, code, stderr)
        assert.are.equal(totals_of(KEY_A)[""], cjson.decode(stdout)[1].images)
        for _, r in ipairs(srv:requests()) do
          assert.are.equal("Bearer " .. KEY_A, r.headers.authorization)
        end
        srv:reset()
      end
    end)

    it("is found at --profiles, else $OPENAI_USAGE_PROFILES, else $XDG_CONFIG_HOME/openai-usage/profiles.lua",
      function()
        local xdg = dir .. "/xdg"
        assert(util.execute("mkdir -p " .. q(xdg .. "/openai-usage")))
        profiles_file(xdg .. "/openai-usage/profiles.lua", two_profiles(), "600")
        local from_env = profiles_file(dir .. "/env.lua", "return { gamma = { key = 'sk-admin-gamma-unused' } }")
        local _, stderr, code = run(args("--profile", "alpha"), { XDG_CONFIG_HOME = xdg })
        assert.are.equal(0, code, stderr)
        -- the variable names another file, which has no alpha
        _, stderr, code = run(args("--profile", "alpha"), { XDG_CONFIG_HOME = xdg, OPENAI_USAGE_PROFILES = from_env })
        assert.are.equal(2, code)
        assert.truthy(stderr:find('no profile "alpha" in ' .. from_env .. " (its profiles: gamma)", 1, true), stderr)
        _, stderr, code = run(args("--profile", "alpha", "--profiles", xdg .. "/openai-usage/profiles.lua"),
          { OPENAI_USAGE_PROFILES = from_env })
        assert.are.equal(0, code, stderr)
        -- and HOME's ~/.config when XDG_CONFIG_HOME is unset
        local home = dir .. "/home"
        assert(util.execute("mkdir -p " .. q(home .. "/.config/openai-usage")))
        profiles_file(home .. "/.config/openai-usage/profiles.lua", two_profiles(), "600")
        _, stderr, code = run(args("--profile", "beta"), { HOME = home })
        assert.are.equal(0, code, stderr)
      end)

    it("is data: no globals (os, io, require), no functions, no bytecode, no endless loop", function()
      local marker = dir .. "/ran"
      os.remove(marker)
      local cases = {
        { ("os.execute('touch %s') return {}"):format(marker), "attempt to index" },
        { ("io.open(%q, 'w') return {}"):format(marker), "attempt to index" },
        { "local x = require 'os' return {}", "attempt to call" },
        { ("return { alpha = { key = %q, organization = function() end } }"):format(KEY_A), "is a function" },
        { "while true do end", "instructions" },
        { "return 42", "returns a number" },
        { "return false", "returns a boolean" },
        { "return", "returns nothing" },
      }
      for _, case in ipairs(cases) do
        local path = profiles_file(dir .. "/code.lua", case[1])
        local stdout, stderr, code = run(args("--profiles", path, "--profile", "alpha"))
        assert_refused(stdout, stderr, code, "profiles: " .. path, case[2])
      end
      assert.is_nil(read(marker), "the profiles file ran a command")
      -- bytecode of this very interpreter is refused, though it would load
      local bytecode = string.dump(assert((loadstring or load)(two_profiles())))
      local path = profiles_file(dir .. "/bytecode.lua", bytecode)
      local stdout, stderr, code = run(args("--profiles", path, "--profile", "alpha"))
      assert_refused(stdout, stderr, code, "bytecode")
    end)

    it("names what is wrong in a profile: an unknown field, key and key_command both, an unknown name", function()
      local cases = {
        { "return { alpha = { key = 'sk-admin-x-1', colour = 'red' } }", 'unknown field "colour"' },
        { "return { alpha = { key = 'sk-admin-x-1', key_command = 'pass x' } }", "either key or key_command" },
        { "return { alpha = { organization = 'A' } }", "either key or key_command" },
        { "return { alpha = { key = 'sk-admin-x-1', options = { api_key = 'sk-admin-x-2' } } }",
          "options.api_key: give it as the profile's key or key_command" },
        { "return { alpha = { key = 'sk-admin-x-1', options = { colour = 1 } } }", 'profile "alpha"' },
        { "return { beta = { key = 'sk-admin-x-1' } }", 'no profile "alpha"' },
      }
      for _, case in ipairs(cases) do
        local path = profiles_file(dir .. "/wrong.lua", case[1])
        local stdout, stderr, code = run(args("--profiles", path, "--profile", "alpha"))
        assert_refused(stdout, stderr, code, case[2])
      end
    end)
  end)

  describe("key_command", function()
    -- A script standing in for `pass`: logs its argv and what `ps` shows of
    -- every process, then does body (sh). ps without the sanitizer's
    -- preload (make check-asan), under which procps hangs.
    local function script(name, body)
      local path = dir .. "/" .. name
      write(path, ("#!/bin/sh\nfor a in \"$@\"; do printf '%%s\\n' \"$a\"; done > %s.argv\n"
        .. "env -u LD_PRELOAD ps -eo args > %s.ps\n%s\n")
        :format(path, path, body))
      assert(util.execute("chmod 700 " .. q(path)))
      return path
    end

    local function with_command(command)
      return profiles_file(dir .. "/kc.lua", ("return { alpha = { key_command = %s, base_url = %q } }")
        :format(command, srv.url))
    end

    it("runs without a shell: its words as written, nothing expanded; the key is its stdout's first line", function()
      local key_file = dir .. "/key_a"
      write(key_file, "  " .. KEY_A .. "  \r\nsecond line\n")
      local pass = script("pass", "cat " .. q(key_file))
      local path = with_command(("%q"):format(pass .. [[ openai/admin '$HOME' "a b" *]]))
      local stdout, stderr, code = run(args("--profiles", path, "--profile", "alpha", "--format", "json"))
      assert.are.equal(0, code, stderr)
      assert.are.equal(totals_of(KEY_A)[""], cjson.decode(stdout)[1].images)
      assert.are.equal("openai/admin\n$HOME\na b\n*\n", read(pass .. ".argv"))
      for _, r in ipairs(srv:requests()) do
        assert.are.equal("Bearer " .. KEY_A, r.headers.authorization)
      end
      -- no process's argv held the key while the command ran (but the
      -- stand-in's own, which is given the keys it accepts)
      local ps = read(pass .. ".ps")
      assert.truthy(ps:find(pass, 1, true), "ps saw the key command itself")
      for line in ps:gmatch "[^\n]+" do
        if not line:find("standin/server.py", 1, true) then
          assert.is_nil(line:find(KEY_A, 1, true), "the key was in a process's argv: " .. line)
        end
      end
    end)

    it("that fails is a clear error naming the profile, the command, its status and its last words", function()
      local pass = script("pass_fails", "echo 'gpg: decryption failed: No secret key' >&2; exit 3")
      local stdout, stderr, code = run(args("--profiles", with_command(("%q"):format(pass)), "--profile", "alpha"))
      assert_refused(stdout, stderr, code, 'profile "alpha": key_command "' .. pass .. '"', "exited with status 3",
        "gpg: decryption failed: No secret key")
    end)

    it("that prints nothing, or an empty first line, is refused", function()
      for _, body in ipairs { "exit 0", "printf '\\n%s\\n' " .. q(KEY_A) } do
        local pass = script("pass_quiet", body)
        local stdout, stderr, code = run(args("--profiles", with_command(("%q"):format(pass)), "--profile", "alpha"))
        assert_refused(stdout, stderr, code, 'profile "alpha": key_command', "the key is the first line")
      end
    end)

    it("that prints the key and then fails leaves the key out of the message, its stderr's copy too", function()
      local pass = script("pass_echo", ("echo %s; echo bad things with %s >&2; exit 1"):format(KEY_A, KEY_A))
      local stdout, stderr, code = run(args("--profiles", with_command(("%q"):format(pass)), "--profile", "alpha"))
      assert_refused(stdout, stderr, code, "exited with status 1", "bad things with [redacted]")
    end)

    it("that cannot be run (not found) says so", function()
      local stdout, stderr, code = run(args("--profiles", with_command('"openai-usage-no-such-pass x"'), "--profile",
        "alpha"))
      assert_refused(stdout, stderr, code, 'key_command "openai-usage-no-such-pass x"', "cannot run")
    end)

    it("that hangs is killed after profiles.KEY_TIMEOUT; one leaving a process that holds its stdout is not waited on",
      function()
        local saved = profiles.KEY_TIMEOUT
        profiles.KEY_TIMEOUT = 1
        local started = util.wall()
        local key, err = profiles.key("slow", { key_command = { "sleep", "30" } })
        local took = util.wall() - started
        profiles.KEY_TIMEOUT = saved
        assert.is_nil(key)
        assert.truthy(tostring(err):find('profile "slow": key_command "sleep 30" did not finish within 1 s', 1, true),
          tostring(err))
        assert.is_true(took < 20, ("the hanging command was waited for %.1f s"):format(took))
        -- the shell ends at once, its background sleep keeps the pipe open
        started = util.wall()
        key = profiles.key("bg", { key_command = { "sh", "-c", "echo " .. KEY_A .. "; sleep 30 &" } })
        took = util.wall() - started
        assert.are.equal(KEY_A, key)
        assert.is_true(took < 20, ("the background process was waited for %.1f s"):format(took))
      end)

    it("Ctrl-C while it runs: the command is killed and the CLI exits 130 at once, nothing sent", function()
      local marker, code_file, pid_file = dir .. "/started", dir .. "/code", dir .. "/pid"
      for _, f in ipairs { marker, code_file, pid_file } do
        os.remove(f)
      end
      local pass = script("pass_slow", "touch " .. q(marker) .. "; exec sleep 31.25")
      local path = with_command(("%q"):format(pass))
      assert(util.execute(("( env %s bin/openai-usage images --profiles %s --profile alpha >/dev/null 2>%s & "
        .. "echo $! >%s; wait $!; echo $? >%s ) >/dev/null 2>&1 &"):format(util.LUA, q(path), q(out .. ".err"),
        q(pid_file), q(code_file))))
      local t0 = util.wall()
      while not read(marker) and util.wall() - t0 < 20 do
        os.execute "sleep 0.05"
      end
      assert.truthy(read(marker), "the key command never started")
      local pid = read(pid_file):match "%d+"
      local started = util.wall()
      os.execute("kill -INT " .. pid)
      while not (read(code_file) or ""):match "%d" and util.wall() - started < 10 do
        os.execute "sleep 0.02"
      end
      local took = util.wall() - started
      assert.are.equal("130", (read(code_file) or ""):match "%d+", read(out .. ".err"))
      assert.is_true(took < 5, ("exit took %.1f s"):format(took))
      -- pgrep (procps) hangs under the sanitizer's preload: it runs without it
      assert.is_false(util.execute "env -u LD_PRELOAD pgrep -f 'sleep 31[.]25' >/dev/null",
        "the key command was left running")
      assert.are.equal(0, srv:status().requests)
    end)

    it("killed by a signal says so", function()
      local pass = script("pass_killed", "kill -9 $$")
      local stdout, stderr, code = run(args("--profiles", with_command(("%q"):format(pass)), "--profile", "alpha"))
      assert_refused(stdout, stderr, code, "killed by signal 9")
    end)
  end)

  describe("several organizations", function()
    it("the stand-in keeps them apart: each key sees its own projects and usage", function()
      local a, b = totals_of(KEY_A, { "project_id" }), totals_of(KEY_B, { "project_id" })
      local na, nb = 0, 0
      for project in pairs(a) do
        assert.is_nil(project:find "^proj_beta_", project)
        na = na + 1
      end
      for project in pairs(b) do
        assert.truthy(project:find "^proj_beta_", project)
        nb = nb + 1
      end
      assert.is_true(na > 0 and nb > 0)
      assert.are_not.equal(totals_of(KEY_A)[""], totals_of(KEY_B)[""])
    end)

    it("--profile a,b: one report grouped by organization, each org's figures and the total exact", function()
      local path = profiles_file(dir .. "/two.lua", two_profiles())
      local stdout, stderr, code = run(args("--profiles", path, "--profile", "alpha,beta", "--group-by",
        "organization", "--format", "json"))
      assert.are.equal(0, code, stderr)
      local rows, by_org = cjson.decode(stdout), {}
      for _, row in ipairs(rows) do
        by_org[row.organization] = row.images
      end
      local a, b = totals_of(KEY_A)[""], totals_of(KEY_B)[""]
      assert.are.same({ Alpha = a, Beta = b }, by_org)
      -- the table's total is both organizations' images
      stdout, stderr, code = run(args("--profiles", path, "--profile", "alpha,beta", "--group-by", "organization"))
      assert.are.equal(0, code, stderr)
      local total = stdout:match "\nTotal%s+([%d,]+)"
      assert.are.equal(a + b, tonumber((total:gsub(",", ""))))
      -- both keys were used, each for its own walk
      local seen = {}
      for _, r in ipairs(srv:requests()) do
        seen[r.org] = (seen[r.org] or 0) + 1
      end
      assert.is_true(seen.default > 0 and seen.beta > 0)
      assert.is_nil(stderr:find(KEY_A, 1, true))
      assert.is_nil(stdout:find(KEY_B, 1, true))
    end)

    it("--group-by organization,project_id: every project under its own organization only", function()
      local path = profiles_file(dir .. "/two.lua", two_profiles())
      local stdout, stderr, code = run(args("--profiles", path, "--profile", "alpha,beta", "--group-by",
        "organization,project_id", "--format", "json"))
      assert.are.equal(0, code, stderr)
      local got = {}
      for _, row in ipairs(cjson.decode(stdout)) do
        got[row.organization .. "|" .. row.project_id] = row.images
      end
      local expected = {}
      for project, images in pairs(totals_of(KEY_A, { "project_id" })) do
        expected["Alpha|" .. project] = images
      end
      for project, images in pairs(totals_of(KEY_B, { "project_id" })) do
        expected["Beta|" .. project] = images
      end
      assert.are.same(expected, got)
    end)

    it("an organization whose walk fails fails the whole report, naming the profile; nothing is printed", function()
      local path = profiles_file(dir .. "/two.lua", two_profiles())
      for _, order in ipairs { "alpha,beta", "beta,alpha" } do
        srv:reset()
        srv:faults { { org = "beta", status = 500, times = 50 } }
        local stdout, stderr, code = run(args("--profiles", path, "--profile", order, "--group-by", "organization"))
        assert.are.equal(1, code, stderr)
        assert.are.equal("", stdout)
        assert.truthy(stderr:find('profile "beta" (Beta)', 1, true), stderr)
        assert.truthy(stderr:find("500", 1, true), stderr)
        assert.is_nil(stderr:find(KEY_B, 1, true))
        -- the other organization was not the one refused
        for _, r in ipairs(srv:requests()) do
          if r.org == "default" then
            assert.are.equal("Bearer " .. KEY_A, r.headers.authorization)
          end
        end
      end
    end)

    it("refuses what would count an organization twice or merge two, and organization without --profile", function()
      local path = profiles_file(dir .. "/dupes.lua", two_profiles(([[
  alpha2 = { key = %q, organization = "Alpha 2" },
  alpha3 = { key = "sk-admin-profiles-other-1", organization = "Alpha" },
]]):format(KEY_A)))
      local cases = {
        { { "--profile", "alpha,alpha" }, '"alpha" is named twice' },
        { { "--profile", "alpha,alpha2" }, 'profiles "alpha" and "alpha2" have the same key' },
        { { "--profile", "alpha,alpha3" }, 'have one organization label, "Alpha"' },
      }
      for _, case in ipairs(cases) do
        local list = args("--profiles", path, case[1][1], case[1][2])
        local stdout, stderr, code = run(list)
        assert_refused(stdout, stderr, code, case[2])
      end
      local stdout, stderr, code = run(args("--group-by", "organization"))
      assert_refused(stdout, stderr, code, "--group-by organization: needs --profile")
      -- the store's client reads one organization: with a profile it would read the wrong one
      stdout, stderr, code = run(args("--db", dir .. "/none.db", "--profiles", path, "--profile", "alpha"))
      assert_refused(stdout, stderr, code, "--db with --profile: not supported yet")
    end)

    it("every command takes --profile: compare and metrics read the profile's organization; --forecast by it",
      function()
      -- these commands work on the days before now: a stand-in on the real clock
      local live = standin.start { key = KEY_A, orgs = { beta = KEY_B } }
      local path = profiles_file(dir .. "/live.lua", ("return { beta = { key = %q, base_url = %q } }")
        :format(KEY_B, live.url))
      for _, command in ipairs { { "compare", "images" }, { "metrics" } } do
        local list = {}
        for _, a in ipairs(command) do
          list[#list + 1] = a
        end
        for _, a in ipairs { "--profiles", path, "--profile", "beta" } do
          list[#list + 1] = a
        end
        local stdout, stderr, code = run(list, { OPENAI_BASE_URL = "http://127.0.0.1:9/v1" })
        assert.are.equal(0, code, stderr)
        assert.truthy(stdout:find("proj_beta_", 1, true), command[1] .. ": " .. stdout)
        assert.is_nil(stdout:find("proj_atlas", 1, true), command[1] .. " shows the other organization")
        for _, r in ipairs(live:requests()) do
          assert.are.equal("beta", r.org)
        end
        live:reset()
      end
      -- a forecast by organization projects each one as its own profile alone does
      local two = profiles_file(dir .. "/live2.lua", ("return { alpha = { key = %q, base_url = %q, "
        .. "organization = 'A' }, beta = { key = %q, base_url = %q, organization = 'B' } }")
        :format(KEY_A, live.url, KEY_B, live.url))
      local function projected(list)
        local stdout, stderr, code = run(list)
        assert.are.equal(0, code, stderr)
        local by = {}
        for _, row in ipairs(cjson.decode(stdout)) do
          if row.kind ~= "actual" then
            local org = row.organization ~= cjson.null and row.organization or nil
            by[org or row.kind] = row.images
          end
        end
        return by
      end
      local both = projected { "images", "--profiles", two, "--profile", "alpha,beta", "--group-by", "organization",
        "--forecast", "--format", "json" }
      local a = projected { "images", "--profiles", two, "--profile", "alpha", "--forecast", "--format", "json" }
      local b = projected { "images", "--profiles", two, "--profile", "beta", "--forecast", "--format", "json" }
      assert.are.equal(a.forecast_total, both.A)
      assert.are.equal(b.forecast_total, both.B)
      util.near(a.forecast_total + b.forecast_total, both.forecast_total, "the forecast's total")
      live:stop()
    end)

    it("sync --profile a,b fills one store, an organization column each; a failing one stops it, named", function()
      local store_module = require "openai_usage.store"
      local path = profiles_file(dir .. "/two.lua", two_profiles())
      local db = dir .. "/usage.db"
      os.remove(db)
      local sync = { "sync", "--db", db, "--endpoints", "images", "--since", "2024-11-01", "--until", "2024-11-21",
        "--profiles", path, "--profile", "alpha,beta" }
      local stdout, stderr, code = run(sync)
      assert.are.equal(0, code, stderr)
      assert.truthy(stdout:find("Alpha: images", 1, true), stdout)
      assert.truthy(stdout:find("Beta: images", 1, true), stdout)
      local s = assert(store_module.open(db, { readonly = true }))
      local page = assert(s:page("images", { bucket_width = "1d", start_time = T_SINCE, end_time = T_UNTIL,
        organization = { "Alpha", "Beta" }, group_by = { "organization", "project_id" } }))
      local stored = {}
      for _, bucket in ipairs(page.data) do
        for _, row in ipairs(bucket.results) do
          local group = row.organization .. "|" .. row.project_id
          stored[group] = (stored[group] or 0) + row.images
        end
      end
      s:close()
      local expected = {}
      for label, key in pairs { Alpha = KEY_A, Beta = KEY_B } do
        for project, images in pairs(totals_of(key, { "project_id" })) do
          expected[label .. "|" .. project] = images
        end
      end
      assert.are.same(expected, stored)
      -- beta's walk fails: the sync says which profile stopped, exit 1
      os.remove(db)
      srv:reset()
      srv:faults { { org = "beta", status = 500, times = 50 } }
      local _, failed_err, failed_code = run(sync)
      assert.are.equal(1, failed_code, failed_err)
      assert.truthy(failed_err:find('profile "beta" (Beta): sync images stopped', 1, true), failed_err)
      assert.is_nil(failed_err:find(KEY_B, 1, true))
    end)

    it("profiles.clients gives the sync one client per organization, each seeing its own", function()
      local path = profiles_file(dir .. "/two.lua", two_profiles())
      local members = assert(profiles.clients("alpha,beta", { path = path }))
      assert.are.equal(2, #members)
      local labels = {}
      for i, m in ipairs(members) do
        labels[i] = m.organization
        local n = 0
        for row in m.client:results("images", { start_time = T_SINCE, end_time = T_UNTIL, bucket_width = "1d",
          limit = 31 }) do
          n = n + row.images
        end
        assert.are.equal(totals_of(i == 1 and KEY_A or KEY_B)[""], n)
        m.client:close()
      end
      assert.are.same({ "Alpha", "Beta" }, labels)
      -- and the joined client stamps each row with its organization
      members = assert(profiles.clients({ "beta", "alpha" }, { path = path }))
      local joined = profiles.join(members)
      local sums = {}
      for row in joined:results("images", { start_time = T_SINCE, end_time = T_UNTIL, bucket_width = "1d",
        limit = 31 }) do
        sums[row.organization] = (sums[row.organization] or 0) + row.images
      end
      joined:close()
      assert.are.same({ Alpha = totals_of(KEY_A)[""], Beta = totals_of(KEY_B)[""] }, sums)
    end)
  end)
end)
