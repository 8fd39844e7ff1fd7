-- Neovim, proven headless: a real `nvim --headless` (Debian's, LuaJIT) with
-- this repository on its runtimepath runs :OpenAIUsage against the stand-in
-- serving slow pages, while a libuv timer of its own counts ticks. The
-- editor must keep ticking while the pages arrive, and the report buffer
-- must hold what the plain client and the CLI's renderer make of the same
-- rows. Errors end as one message, with no buffer and no hang.
local cjson = require "cjson"
local usage = require "openai_usage"
local cli = require "openai_usage.cli"
local standin = require "spec.support.standin"
local util = require "spec.support.util"

local KEY = "sk-admin-neovim-spec"
local NOW = 1732406400 -- 2024-11-24T00:00:00Z, the stand-in's frozen clock
local LATENCY = 0.5 -- seconds the stand-in waits before each answer
-- four pages of 168 hourly buckets
local ARGS = { "images", "--since", "2024-10-27", "--until", "2024-11-24", "--bucket", "1h", "--group-by", "model" }
local EXAMPLE = "examples/neovim/init.lua"

local read_file, shell_quote, run = util.read_if, util.q, util.popen_run

local ROOT = assert(io.popen "pwd"):read "*l"

-- What the headless editor runs after startup: it starts a 10 ms libuv
-- timer that records every tick, records every vim.notify, runs the
-- commands of OU_PROBE_STEPS at their times, and as soon as a report
-- buffer appears (unless OU_PROBE_ALL_THE_TIME), an error is notified, a
-- message matches OU_PROBE_UNTIL or OU_PROBE_SECONDS pass, writes what it
-- saw to OU_PROBE_OUT as JSON and quits.
local PROBE = [==[
local uv = vim.uv or vim.loop
local steps = vim.fn.json_decode(os.getenv "OU_PROBE_STEPS")
local seconds = tonumber(os.getenv "OU_PROBE_SECONDS")
local untl = os.getenv "OU_PROBE_UNTIL"
local result = { ticks = 0, max_gap = 0, errors = {}, warnings = {}, messages = {} }
local t0 = uv.hrtime()
local last, finished = t0, false

local notify = vim.notify
vim.notify = function(msg, level, opts)
  local list = level == vim.log.levels.ERROR and result.errors
    or level == vim.log.levels.WARN and result.warnings or result.messages
  list[#list + 1] = msg
  return notify(msg, level, opts)
end

local function report_buffers()
  local found = {}
  for _, b in ipairs(vim.api.nvim_list_bufs()) do
    local name = vim.api.nvim_buf_get_name(b)
    if name:find("openai-usage://", 1, true) == 1 and vim.api.nvim_buf_is_loaded(b) then
      found[#found + 1] = {
        name = name,
        lines = vim.api.nvim_buf_get_lines(b, 0, -1, false),
        buftype = vim.bo[b].buftype,
        bufhidden = vim.bo[b].bufhidden,
        swapfile = vim.bo[b].swapfile,
        filetype = vim.bo[b].filetype,
        shown = vim.fn.bufwinid(b) ~= -1,
      }
    end
  end
  return found
end

local timer = uv.new_timer()
local function finish(why)
  if finished then
    return
  end
  finished = true
  timer:stop()
  result.why = why
  result.seconds = (uv.hrtime() - t0) / 1e9
  result.buffers = report_buffers()
  result.extra = _G.OU_EXTRA
  result.layout = vim.fn.winlayout()
  local f = assert(io.open(os.getenv "OU_PROBE_OUT", "wb"))
  f:write(vim.fn.json_encode(result))
  f:close()
  vim.cmd "qall!"
end

local function check()
  if finished then
    return
  end
  local elapsed = (uv.hrtime() - t0) / 1e9
  while steps[1] and steps[1].at <= elapsed do
    vim.cmd(table.remove(steps, 1).cmd)
  end
  if #result.errors > 0 then
    return finish "error"
  end
  if untl then
    for _, m in ipairs(result.messages) do
      if m:find(untl) then
        return finish "message"
      end
    end
  end
  if #report_buffers() > 0 and not os.getenv "OU_PROBE_ALL_THE_TIME" then
    return finish "buffer"
  end
  if elapsed > seconds then
    return finish "time"
  end
end

-- the tick itself is a plain timer callback; the checks need the main loop
timer:start(10, 10, function()
  local now = uv.hrtime()
  result.ticks = result.ticks + 1
  result.max_gap = math.max(result.max_gap, (now - last) / 1e9)
  last = now
  vim.schedule(check)
end)
check()
]==]

describe("Neovim", function()
  local srv, client, probe_file
  local job, rows, pages

  -- Runs the headless editor: options.init (a file, or "NONE": then the
  -- plugin is put on the runtimepath and sourced by hand), env (variables),
  -- steps ({at = seconds, cmd = Ex command}), seconds (the probe's limit),
  -- untl (a message pattern that ends the probe), cwd.
  -- Returns the probe's result, nvim's exit code and everything it printed.
  local function nvim(options)
    local out, log = os.tmpname(), os.tmpname()
    local env = {
      OPENAI_USAGE_DIR = ROOT,
      OPENAI_BASE_URL = srv.url,
      OU_PROBE_OUT = out,
      OU_PROBE_STEPS = cjson.encode(options.steps),
      OU_PROBE_SECONDS = tostring(options.seconds or 20),
    }
    env.OPENAI_ADMIN_KEY = KEY
    for k, v in pairs(options.env or {}) do
      env[k] = v
    end
    if options.untl then
      env.OU_PROBE_UNTIL = options.untl
    end
    local vars = {}
    for k, v in pairs(env) do
      if v ~= false then
        vars[#vars + 1] = k .. "=" .. shell_quote(v)
      end
    end
    local unset = "-u LD_PRELOAD -u LUA_PATH -u LUA_CPATH -u OPENAI_ORG_ID -u OPENAI_PROJECT_ID -u OPENAI_ADMIN_KEY"
    local startup
    if options.init == "NONE" then
      startup = ("-u NONE --cmd %s -c %s"):format(shell_quote("set rtp^=" .. (options.rtp or ROOT)),
        shell_quote "runtime plugin/openai_usage.lua")
    else
      startup = "-u " .. shell_quote(options.init or EXAMPLE)
    end
    local cmd = ("cd %s && env %s %s timeout 60 nvim --headless --clean %s -c %s >%s 2>&1; echo $?")
      :format(shell_quote(options.cwd or ROOT), unset, table.concat(vars, " "), startup,
        shell_quote("luafile " .. probe_file), shell_quote(log))
    local p = assert(io.popen(cmd))
    local code = tonumber(p:read "*a")
    p:close()
    local text = read_file(out)
    local printed = read_file(log) or ""
    os.remove(out)
    os.remove(log)
    local result = text and text ~= "" and cjson.decode(text) or nil
    assert(result, ("nvim (exit %s) wrote no probe result; it printed:\n%s"):format(tostring(code), printed))
    return result, code, printed
  end

  local cli_args = util.words

  local function run_args(args)
    return { { at = 0, cmd = "OpenAIUsage " .. table.concat(args, " ") } }
  end

  setup(function()
    local _, has_nvim = run "command -v nvim"
    assert(has_nvim, "nvim is not installed (make deps installs Debian's neovim)")
    -- the module for Neovim's LuaJIT (Lua 5.1 ABI)
    local out, ok = util.make "LUA_VERSION=5.1 LUA=luajit LUA_PKG=luajit OUTDIR=build/luajit"
    assert(ok, "building the LuaJIT module failed:\n" .. out)
    probe_file = os.tmpname()
    local f = assert(io.open(probe_file, "wb"))
    f:write(PROBE)
    f:close()
    srv = standin.start { key = KEY, now = NOW }
    client = assert(usage.new(srv:client_options()))
    -- the report computed here, through the plain client, independently of Neovim
    job = assert(cli.parse(ARGS))
    rows, pages = {}, 0
    for _ in client:pages(job.endpoint, job.params) do
      pages = pages + 1
    end
    for row in client:results(job.endpoint, job.params) do
      rows[#rows + 1] = row
    end
  end)

  teardown(function()
    if client then
      client:close()
    end
    if srv then
      srv:stop()
    end
    if probe_file then
      os.remove(probe_file)
    end
  end)

  before_each(function()
    srv:reset()
  end)

  it("keeps ticking while slow pages arrive, then shows the report in a scratch buffer", function()
    assert.is_true(pages >= 3, "the walk should take several pages")
    srv:settings { latency_ms = math.floor(LATENCY * 1000) }
    local result, code, printed = nvim { steps = run_args(ARGS) }
    assert.are.equal(0, code)
    assert.are.same({}, result.errors)
    assert.are.equal("buffer", result.why)
    -- the stand-in made every page wait, and the editor's timer kept firing
    assert.are.equal(pages, #srv:requests())
    assert.is_true(result.seconds >= pages * LATENCY,
      ("%d pages of %.1f s arrived in %.2f s"):format(pages, LATENCY, result.seconds))
    assert.is_true(result.ticks >= 30, ("only %d ticks in %.2f s"):format(result.ticks, result.seconds))
    assert.is_true(result.max_gap < LATENCY / 2,
      ("the timer stalled for %.3f s (pages take %.1f s)"):format(result.max_gap, LATENCY))
    print(("\n# neovim: %d pages of %.0f ms: %d ticks of 10 ms in %.2f s, largest gap %.0f ms"):format(
      pages, LATENCY * 1000, result.ticks, result.seconds, result.max_gap * 1000))
    -- the buffer: a scratch buffer named after the endpoint, on screen
    assert.are.equal(1, #result.buffers)
    local buf = result.buffers[1]
    assert.are.equal("openai-usage://images", buf.name)
    assert.are.equal("nofile", buf.buftype)
    assert.are.equal("wipe", buf.bufhidden)
    assert.is_false(buf.swapfile)
    assert.is_true(buf.shown)
    -- it holds the report the CLI renders from the rows the plain client read
    local expected = cli.render(job, rows):gsub("\n$", "")
    assert.are.equal(expected, table.concat(buf.lines, "\n"))
    -- and its figures are the rows' sums, added up here
    local by_model, total = {}, 0
    for _, row in ipairs(rows) do
      by_model[row.model] = (by_model[row.model] or 0) + row.images
      total = total + row.images
    end
    local seen = 0
    for _, line in ipairs(buf.lines) do
      local name, images = line:match "^(%S+)%s+([%d,]+)%s+[%d,]+$"
      if name then
        images = tonumber((images:gsub(",", "")))
        if name == "Total" then
          assert.are.equal(total, images)
        else
          assert.are.equal(by_model[name], images)
        end
        seen = seen + 1
      end
    end
    local models = 0
    for _ in pairs(by_model) do
      models = models + 1
    end
    assert.are.equal(models + 1, seen)
    assert.is_true(total > 0)
    -- progress went to the echo area, the key nowhere
    assert.matches("pages " .. pages, printed, 1, true)
    assert.is_nil(printed:find(KEY, 1, true))
  end)

  it("the probe sees a walk that blocks: the same pages through client:pages stall the timer", function()
    srv:settings { latency_ms = math.floor(LATENCY * 1000) }
    local argv = {}
    for i, a in ipairs(ARGS) do
      argv[i] = ("%q"):format(a)
    end
    local blocking = ("lua local job = require('openai_usage.cli').parse({%s}); "
      .. "for _ in require('openai_usage').new():pages(job.endpoint, job.params) do end")
      :format(table.concat(argv, ","))
    local result = nvim { steps = { { at = 0, cmd = blocking } }, seconds = pages * LATENCY + 1 }
    assert.are.equal("time", result.why)
    assert.are.equal(pages, #srv:requests())
    assert.is_true(result.max_gap >= pages * LATENCY - 0.05,
      ("the blocking walk left a gap of only %.3f s"):format(result.max_gap))
  end)

  it("a refused key: one error line with the 401, no buffer, no hang, the key nowhere", function()
    local wrong = "sk-admin-wrong-neovim-key"
    local result, code, printed = nvim {
      init = "NONE", -- nothing but the plugin on the runtimepath
      env = { OPENAI_ADMIN_KEY = wrong },
      steps = run_args(ARGS),
    }
    assert.are.equal(0, code)
    assert.are.equal("error", result.why)
    assert.are.equal(1, #result.errors)
    assert.matches("^openai%-usage: ", result.errors[1])
    assert.matches("401", result.errors[1], 1, true)
    assert.is_nil(result.errors[1]:find("\n", 1, true))
    assert.are.same({}, result.buffers)
    assert.is_nil(result.errors[1]:find(wrong, 1, true))
    assert.is_nil(printed:find(wrong, 1, true))
    assert.are.equal(1, #srv:requests())
  end)

  it("setup { profile = NAME }: the profile's key and base URL, its label for --group-by organization", function()
    local dir = util.tmpdir()
    local file = dir .. "/profiles.lua"
    util.write(file, ("return { work = { key_command = { 'cat', %q }, base_url = %q, organization = 'Work Org' } }")
      :format(dir .. "/key", srv.url))
    util.write(dir .. "/key", KEY .. "\n")
    assert(util.execute("chmod 600 " .. shell_quote(file)))
    local setup = ("lua require('openai_usage.nvim').setup { profile = 'work', profiles = %q }"):format(file)
    -- neither the environment's key nor its base URL would work
    local env = { OPENAI_ADMIN_KEY = "sk-admin-neovim-not-the-profile", OPENAI_BASE_URL = "http://127.0.0.1:9/v1" }
    local result, code, printed = nvim { init = "NONE", env = env,
      steps = { { at = 0, cmd = setup }, run_args(ARGS)[1] } }
    assert.are.equal(0, code)
    assert.are.same({}, result.errors)
    assert.are.equal("buffer", result.why)
    assert.are.equal(cli.render(job, rows):gsub("\n$", ""), table.concat(result.buffers[1].lines, "\n"))
    for _, r in ipairs(srv:requests()) do
      assert.are.equal("Bearer " .. KEY, r.headers.authorization)
    end
    assert.is_nil(printed:find(KEY, 1, true))
    -- grouped by organization: one row, the profile's label, the rows' total
    srv:reset()
    local by_org = { "images", "--since", "2024-10-27", "--until", "2024-11-24", "--group-by", "organization" }
    result = nvim { init = "NONE", env = env, steps = { { at = 0, cmd = setup }, run_args(by_org)[1] } }
    assert.are.same({}, result.errors)
    local total = 0
    for _, row in ipairs(rows) do
      total = total + row.images
    end
    local shown
    for _, line in ipairs(result.buffers[1].lines) do
      shown = shown or line:match "^Work Org%s+([%d,]+)"
    end
    assert.are.equal(total, tonumber(((shown or ""):gsub(",", ""))))
    -- a profile file others may read is refused there too, nothing sent
    srv:reset()
    assert(util.execute("chmod 644 " .. shell_quote(file)))
    result = nvim { init = "NONE", env = env, steps = { { at = 0, cmd = setup }, run_args(ARGS)[1] } }
    assert.are.equal(1, #result.errors)
    assert.truthy(result.errors[1]:find("chmod 600 " .. file, 1, true), result.errors[1])
    assert.are.same({}, srv:requests())
    util.rm_rf(dir)
  end)

  it("--profile a,b: one report over both organizations by organization; a failing one fails it, named", function()
    local key_b = "sk-admin-neovim-beta-2f81"
    local two = standin.start { key = KEY, now = NOW, orgs = { beta = key_b } }
    local dir = util.tmpdir()
    local file = dir .. "/profiles.lua"
    util.write(file, ("return { a = { key = %q, base_url = %q, organization = 'Alpha' }, "
      .. "b = { key = %q, base_url = %q, organization = 'Beta', options = { max_retries = 0 } } }")
      :format(KEY, two.url, key_b, two.url))
    assert(util.execute("chmod 600 " .. shell_quote(file)))
    local by_org = { "images", "--since", "2024-10-27", "--until", "2024-11-24", "--bucket", "1h", "--group-by",
      "organization", "--profiles", file, "--profile", "a,b" }
    -- each organization's images, through the plain client
    local expected = {}
    for label, key in pairs { Alpha = KEY, Beta = key_b } do
      local c = assert(usage.new { api_key = key, base_url = two.url })
      expected[label] = 0
      for row in c:results(job.endpoint, job.params) do
        expected[label] = expected[label] + row.images
      end
      c:close()
    end
    assert.are_not.equal(expected.Alpha, expected.Beta)
    local result, code, printed = nvim { init = "NONE", steps = run_args(by_org) }
    assert.are.equal(0, code)
    assert.are.same({}, result.errors)
    local shown = {}
    for _, line in ipairs(result.buffers[1].lines) do
      local label, images = line:match "^(%a+)%s+([%d,]+)%s+[%d,]+$"
      if label then
        shown[label] = tonumber((images:gsub(",", "")))
      end
    end
    assert.are.same({ Alpha = expected.Alpha, Beta = expected.Beta, Total = expected.Alpha + expected.Beta }, shown)
    assert.is_nil(printed:find(key_b, 1, true))
    -- the second organization fails: one error naming it, no buffer
    two:reset()
    two:faults { { org = "beta", status = 500, times = 20 } }
    result = nvim { init = "NONE", steps = run_args(by_org) }
    assert.are.equal(1, #result.errors)
    assert.truthy(result.errors[1]:find('profile "b" (Beta)', 1, true), result.errors[1])
    assert.are.same({}, result.buffers)
    two:stop()
    util.rm_rf(dir)
  end)

  it("a server message with terminal escapes is shown as text, never as escapes", function()
    -- OSC (the window title), a bell, clear-screen, CR/LF and the C1 CSI
    local json = '{"error":{"message":"\\u001b]0;owned\\u0007\\u001b[2J\\r\\nnext \\u009b end","type":"t"}}'
    srv:faults { { status = 400, body_hex = (json:gsub(".", function(ch) return ("%02x"):format(ch:byte()) end)) } }
    local result, code = nvim { init = "NONE", steps = run_args(ARGS) }
    assert.are.equal(0, code)
    assert.are.equal(1, #result.errors)
    local shown = result.errors[1]
    assert.truthy(shown:find("\\x1b]0;owned\\x07\\x1b[2J\\x0d\\x0anext \\u009b end", 1, true), shown)
    assert.is_nil(shown:find "[%c\127]", usage.printable(shown))
    assert.is_nil(shown:find("\194\155", 1, true))
  end)

  it("a base URL with user information is refused without showing it, nothing sent", function()
    local url = srv.url:gsub("^http://", "http://ou-user:hunter2-pass@")
    local result, code, printed = nvim { init = "NONE", env = { OPENAI_BASE_URL = url }, steps = run_args(ARGS) }
    assert.are.equal(0, code)
    assert.are.equal(1, #result.errors)
    assert.matches("user information", result.errors[1], 1, true)
    assert.is_nil(result.errors[1]:find("hunter2", 1, true))
    assert.is_nil(printed:find("hunter2", 1, true))
    assert.are.same({}, srv:requests())
  end)

  it("bad arguments: the CLI's message at once, nothing sent", function()
    local bad = { "images", "--bucket", "2d" }
    local _, err = cli.parse(bad)
    assert.is_not_nil(err)
    local result, code = nvim { steps = run_args(bad) }
    assert.are.equal(0, code)
    assert.are.equal("error", result.why)
    assert.are.same({ "openai-usage: " .. tostring(err) }, result.errors)
    assert.are.same({}, result.buffers)
    assert.are.same({}, srv:requests())
    assert.is_true(result.seconds < 10)
  end)

  it("no admin key: says where to put one, nothing sent", function()
    local result = nvim { env = { OPENAI_ADMIN_KEY = false }, steps = run_args(ARGS) }
    assert.are.equal("error", result.why)
    assert.matches("OPENAI_ADMIN_KEY", result.errors[1], 1, true)
    assert.matches("vim.g.openai_usage_api_key", result.errors[1], 1, true)
    assert.are.same({}, srv:requests())
  end)

  it("takes the key from vim.g.openai_usage_api_key, a function, over the environment", function()
    local steps = {
      { at = 0, cmd = "lua vim.g.openai_usage_api_key = function() return os.getenv 'OU_SPEC_KEY' end" },
      { at = 0, cmd = "OpenAIUsage " .. table.concat(ARGS, " ") },
    }
    local result = nvim { env = { OPENAI_ADMIN_KEY = "sk-admin-not-this-one", OU_SPEC_KEY = KEY }, steps = steps }
    assert.are.same({}, result.errors)
    assert.are.equal("buffer", result.why)
    -- compared here, not by assert.are.equal, which would print the key on failure
    assert.is_true(srv:requests()[1].headers.authorization == "Bearer " .. KEY, "the request did not carry vim.g's key")
  end)

  it(":OpenAIUsage! cancels a report still loading: no buffer, no further page", function()
    srv:settings { latency_ms = 500 }
    local steps = run_args(ARGS)
    steps[2] = { at = 0.8, cmd = "OpenAIUsage!" }
    steps[3] = { at = 2.0, cmd = "OpenAIUsage!" } -- by then nothing is left to cancel
    local result = nvim { steps = steps, seconds = 2.5 }
    assert.are.equal("time", result.why)
    assert.are.same({}, result.errors)
    assert.are.same({}, result.buffers)
    assert.are.equal(1, #result.warnings)
    assert.matches("^openai%-usage: images: cancelled after %d+ pages$", result.warnings[1])
    assert.are.same({ "openai-usage: no report is loading" }, result.messages)
    os.execute "sleep 0.6"
    assert.is_true(#srv:requests() < pages, ("%d requests after cancelling"):format(#srv:requests()))
    assert.is_true(result.max_gap < 0.25, ("the timer stalled for %.3f s"):format(result.max_gap))
  end)

  it("--cost: the Costs walk also runs without blocking, and the buffer holds the CLI's cost report", function()
    local args = { "images", "--since", "2024-11-10", "--until", "2024-11-24", "--group-by", "project_id", "--cost" }
    local cost_job = assert(cli.parse(args))
    local cost_rows = {}
    for row in client:results(cost_job.endpoint, cost_job.params) do
      cost_rows[#cost_rows + 1] = row
    end
    -- the blocking job over the same rows: its Costs walk through the client
    local jobs = require "openai_usage.job"
    local fold = jobs.fold_rows(cost_job, cost_rows)
    local meta = jobs.cost(client, cost_job, fold, cli.figures "images")
    local expected = cli.render(cost_job, cost_rows, meta):gsub("\n$", "")
    assert.matches("actual amounts", expected, 1, true) -- from the Costs endpoint, not the estimate
    srv:reset()
    srv:settings { latency_ms = math.floor(LATENCY * 1000) }
    local result, code = nvim { steps = run_args(args) }
    assert.are.equal(0, code)
    assert.are.same({}, result.errors)
    assert.are.equal("buffer", result.why)
    assert.are.equal(expected, table.concat(result.buffers[1].lines, "\n"))
    local costs = 0
    for _, r in ipairs(srv:requests()) do
      if r.path:find("/costs", 1, true) then
        costs = costs + 1
      end
    end
    assert.is_true(costs >= 1, "the Costs endpoint was not asked")
    assert.is_true(result.seconds >= 2 * LATENCY)
    assert.is_true(result.max_gap < LATENCY / 2,
      ("the timer stalled for %.3f s (pages take %.1f s)"):format(result.max_gap, LATENCY))
  end)

  it(":OpenAIUsage check shows every budget line, those at risk first, without blocking", function()
    local budget = require "openai_usage.budget"
    local prices_file = os.tmpname()
    util.write(prices_file, srv:image_price_table())
    -- a budget per project that two projects are over (the same walk as openai-usage check's)
    local plain = budget.evaluate(client, assert(budget.check { { amount = 1e9, scope = "project_id" } }),
      { at = NOW, prices = assert(require("openai_usage.cost").load(prices_file)) })
    local spends = {}
    for _, line in ipairs(plain.lines) do
      spends[#spends + 1] = line.spend
    end
    table.sort(spends)
    local amount = ("%.2f"):format((spends[2] + spends[3]) / 2)
    local args = { "check", "--budget", amount, "--scope", "project_id", "--threshold", "10", "--at", tostring(NOW),
      "--prices", prices_file }
    local expected_result = budget.evaluate(client, assert(budget.check { { amount = tonumber(amount),
      scope = "project_id", threshold = 10 } }), { at = NOW, prices = assert(require("openai_usage.cost").load(
      prices_file)) })
    local risky, under = {}, {}
    for _, line in ipairs(expected_result.lines) do
      local list = line.status == "over" and risky or under
      list[#list + 1] = budget.describe(line)
    end
    assert.are.same({ 2, 2 }, { #risky, #under })
    for _, line in ipairs(under) do
      risky[#risky + 1] = line
    end
    risky[#risky + 1] = budget.estimate_note(expected_result)
    srv:reset()
    srv:settings { latency_ms = math.floor(LATENCY * 1000) }
    local result, code = nvim { steps = run_args(args) }
    os.remove(prices_file)
    assert.are.equal(0, code)
    assert.are.same({}, result.errors)
    assert.are.equal("buffer", result.why)
    local buf = result.buffers[1]
    assert.are.equal("openai-usage://check", buf.name)
    assert.are.equal("nofile", buf.buftype)
    assert.are.same(risky, buf.lines)
    assert.matches("^OVER: project_id proj_", buf.lines[1])
    assert.truthy(table.concat(result.warnings, "\n"):find("check: 2 of 4 budget lines at risk", 1, true))
    -- its walks (costs, the images of the tail, the weeks of costs before) ran on the timer
    assert.are.equal(3, #srv:requests())
    assert.is_true(result.seconds >= 2 * LATENCY)
    assert.is_true(result.max_gap < LATENCY / 2,
      ("the timer stalled for %.3f s (pages take %.1f s)"):format(result.max_gap, LATENCY))
    -- a bad argument: check's message at once, nothing sent
    srv:reset()
    local bad = nvim { steps = run_args { "check", "--budget", "-1" } }
    assert.truthy(table.concat(bad.errors, "\n"):find("--budget: -1 is not an amount", 1, true))
    assert.are.same({}, srv:requests())
  end)

  it("--forecast: its daily walk runs in the same task, and the buffer holds the CLI's forecast table", function()
    local args = { "images", "--since", "2024-11-10", "--until", "2024-11-24", "--group-by", "model", "--forecast" }
    local forecast_job = assert(cli.parse(args))
    local jobs = require "openai_usage.job"
    local fold = jobs.walk(client, forecast_job)
    local meta = jobs.analysis(client, forecast_job, {}, cli.figures "images")
    local expected = jobs.text(forecast_job, fold, meta, cli.figures "images", "/organization/usage/images")
    assert.matches("Forecast of images to the month's end", expected, 1, true)
    srv:reset()
    local result, code = nvim { steps = run_args(args) }
    assert.are.equal(0, code)
    assert.are.same({}, result.errors)
    assert.are.equal("buffer", result.why)
    assert.are.equal(expected:gsub("\n$", ""), table.concat(result.buffers[1].lines, "\n"))
    local daily = 0
    for _, r in ipairs(srv:requests()) do
      daily = daily + (r.query:find("bucket_width=1d", 1, true) and 1 or 0)
    end
    assert.is_true(daily >= 2, "the forecast's daily walk was not asked")
  end)

  it("--cache DIR: a second run reads the settled pages from disk, sends nothing, shows the same report", function()
    local dir = os.tmpname()
    os.remove(dir)
    dir = dir .. ".d"
    local args = { (table.unpack or unpack)(ARGS) }
    args[#args + 1] = "--cache"
    args[#args + 1] = dir
    local first = nvim { steps = run_args(args) }
    assert.are.same({}, first.errors)
    assert.are.same({}, first.warnings)
    assert.are.equal("buffer", first.why)
    assert.are.equal(pages, #srv:requests())
    srv:reset()
    local second = nvim { steps = run_args(args) }
    util.rm_rf(dir)
    assert.are.same({}, second.errors)
    assert.are.equal("buffer", second.why)
    assert.are.equal(0, #srv:requests())
    assert.are.same(first.buffers[1].lines, second.buffers[1].lines)
    assert.are.equal(cli.render(job, rows):gsub("\n$", ""), table.concat(second.buffers[1].lines, "\n"))
    assert.matches((": %d pages %%(%d from the cache%%), %d rows"):format(pages, pages, #rows),
      table.concat(second.messages, "\n"))
  end)

  it("--names: the buffer shows \"Name (id)\" for each project, as the CLI's report does", function()
    local args = { "images", "--since", "2024-11-01", "--until", "2024-11-21", "--group-by", "project_id", "--names" }
    local result = nvim { steps = run_args(args) }
    assert.are.same({}, result.errors)
    assert.are.equal("buffer", result.why)
    local text = table.concat(result.buffers[1].lines, "\n")
    local dir = client:directory()
    for _, p in ipairs(dir.projects) do
      assert.truthy(text:find(p.name .. " (" .. p.id .. ")", 1, true), p.id)
    end
    -- the same text as the command line's report of the same job
    local out = os.tmpname()
    local cmd = ("env OPENAI_ADMIN_KEY=%s OPENAI_BASE_URL=%s %s bin/openai-usage %s > %s"):format(KEY, srv.url,
      util.LUA, table.concat(args, " "), out)
    assert.are.equal(0, util.exit_code(os.execute(cmd)))
    assert.are.equal((read_file(out):gsub("\n$", "")), text)
    os.remove(out)
  end)

  it("--settle-after and --max-pages reach the editor's walk as the command line's", function()
    assert.is_true(pages >= 2)
    local args = { (table.unpack or unpack)(ARGS) }
    args[#args + 1] = "--max-pages"
    args[#args + 1] = "1"
    local capped = nvim { steps = run_args(args) }
    assert.are.equal("error", capped.why)
    assert.matches("max_pages (1)", capped.errors[1] or "", 1, true)
    assert.are.same({}, capped.buffers)
    assert.are.equal(1, #srv:requests())
    -- a window reaching back past the range: nothing settled, every page asked again
    local dir = os.tmpname()
    os.remove(dir)
    dir = dir .. ".d"
    args = { (table.unpack or unpack)(ARGS) }
    for _, a in ipairs { "--cache", dir, "--settle-after", math.ceil((os.time() - NOW) / 86400 + 30) .. "d" } do
      args[#args + 1] = a
    end
    nvim { steps = run_args(args) }
    srv:reset()
    local second = nvim { steps = run_args(args) }
    util.rm_rf(dir)
    assert.are.same({}, second.errors)
    assert.are.equal("buffer", second.why)
    assert.are.equal(pages, #srv:requests())
  end)

  it("--out writes the report to a file instead of a buffer", function()
    local path = os.tmpname()
    local args = { "images", "--since", "2024-11-17", "--until", "2024-11-24", "--group-by", "model,size",
      "--format", "csv", "--out", path }
    local result = nvim { steps = run_args(args), untl = "written to" }
    local written = read_file(path)
    os.remove(path)
    assert.are.equal("message", result.why)
    assert.are.same({}, result.errors)
    assert.are.same({}, result.buffers)
    local out_job = assert(cli.parse(args))
    local out_rows = {}
    for row in client:results(out_job.endpoint, out_job.params) do
      out_rows[#out_rows + 1] = row
    end
    assert.are.equal(cli.render(out_job, out_rows), written)
    assert.matches("model,size", written, 1, true)
  end)

  it("a second report opens beside the first (:vertical), the same one again reuses its buffer", function()
    local range = " --since 2024-11-20 --until 2024-11-24"
    local steps = {
      { at = 0, cmd = "lua require('openai_usage.nvim').run('images" .. range .. " --group-by model', "
        .. "{ on_done = function(buf, err) OU_EXTRA = { name = vim.api.nvim_buf_get_name(buf), err = err } end })" },
      { at = 1.5, cmd = "vertical OpenAIUsage completions" .. range },
      { at = 3, cmd = "OpenAIUsage images" .. range .. " --format md" },
    }
    local result = nvim { steps = steps, seconds = 4.5, env = { OU_PROBE_ALL_THE_TIME = "1" } }
    assert.are.equal("time", result.why)
    assert.are.same({}, result.errors)
    -- on_done heard of the first one
    assert.are.same({ name = "openai-usage://images" }, result.extra)
    -- two buffers side by side: the fresh editor's window took the first
    assert.are.equal(2, #result.buffers)
    assert.are.equal("row", result.layout[1])
    assert.are.equal(2, #result.layout[2])
    local by_name = {}
    for _, b in ipairs(result.buffers) do
      by_name[b.name] = b
      assert.is_true(b.shown)
    end
    -- the images buffer now holds the third report, as Markdown
    local md_job = assert(cli.parse(cli_args("images" .. range .. " --format md")))
    local md_rows = {}
    for row in client:results(md_job.endpoint, md_job.params) do
      md_rows[#md_rows + 1] = row
    end
    local images = by_name["openai-usage://images"]
    assert.are.equal((cli.render(md_job, md_rows):gsub("\n$", "")), table.concat(images.lines, "\n"))
    assert.are.equal("markdown", images.filetype)
    assert.are.equal("", by_name["openai-usage://completions"].filetype)
    assert.matches("completions", by_name["openai-usage://completions"].lines[1], 1, true)
  end)

  it("--help opens the CLI's help; --version and completion come from the same module", function()
    local steps = {
      { at = 0, cmd = "lua OU_EXTRA = { endpoints = vim.fn.getcompletion('OpenAIUsage ', 'cmdline'), "
        .. "options = vim.fn.getcompletion('OpenAIUsage images --group', 'cmdline'), "
        .. "filters = vim.fn.getcompletion('OpenAIUsage images --mod', 'cmdline'), "
        .. "check = vim.fn.getcompletion('OpenAIUsage check --thr', 'cmdline') }" },
      { at = 0, cmd = "OpenAIUsage --version" },
      { at = 0, cmd = "OpenAIUsage images --help" },
    }
    local result = nvim { steps = steps }
    assert.are.equal("buffer", result.why)
    local endpoints = usage.rules()
    endpoints[#endpoints + 1] = "check" -- :OpenAIUsage check, beside the endpoints
    table.sort(endpoints)
    assert.are.same(endpoints, result.extra.endpoints)
    assert.are.same({ "--group-by" }, result.extra.options)
    assert.are.same({ "--threshold" }, result.extra.check)
    assert.are.same({ "--models" }, result.extra.filters)
    assert.matches(usage.version, result.messages[1], 1, true)
    assert.are.equal("openai-usage://help", result.buffers[1].name)
    assert.are.equal(cli.help("images"):gsub("\n$", ""), table.concat(result.buffers[1].lines, "\n"))
    assert.are.same({}, srv:requests())
  end)

  it("without the C module built for LuaJIT, says how to build it", function()
    local bare = os.tmpname()
    os.remove(bare)
    assert(os.execute(("mkdir -p %s && cp -r plugin lua %s/"):format(shell_quote(bare), shell_quote(bare))))
    local result = nvim { init = "NONE", rtp = bare, cwd = bare, steps = run_args(ARGS) }
    util.rm_rf(bare)
    assert.are.equal("error", result.why)
    assert.matches("make LUA_VERSION=5.1", result.errors[1], 1, true)
    assert.matches(bare, result.errors[1], 1, true) -- where to run it
    assert.are.same({}, srv:requests())
  end)

  it("uses vim.uv where Neovim has it (0.10+), vim.loop before", function()
    -- a vim.uv that records what is taken from it, as Neovim 0.10 would have
    local steps = {
      { at = 0, cmd = "lua OU_EXTRA = {}; vim.uv = setmetatable({}, { __index = function(_, k) "
        .. "OU_EXTRA[k] = true; return vim.loop[k] end })" },
      { at = 0, cmd = "OpenAIUsage images --since 2024-11-20 --until 2024-11-24" },
    }
    local result = nvim { steps = steps }
    assert.are.same({}, result.errors)
    assert.are.equal("buffer", result.why)
    assert.is_true(result.extra.new_timer, "the report's timer did not come from vim.uv")
    assert.is_true(result.extra.hrtime, "the report's clock did not come from vim.uv")
  end)

  -- :checkhealth openai_usage, then what its buffer shows, as
  -- {status = "OK"|"WARNING"|"ERROR", text = ...} entries (Neovim 0.7 writes
  -- "  - OK: text", 0.10 "- ✅ OK text") and every line as it is.
  local function checkhealth(options)
    options.steps = {
      { at = 0, cmd = "checkhealth openai_usage" },
      { at = 0, cmd = "lua OU_EXTRA = { lines = vim.api.nvim_buf_get_lines(0, 0, -1, false), "
        .. "filetype = vim.bo.filetype }" },
      { at = 0, cmd = "lua vim.notify 'probe: health read'" },
    }
    options.untl = "probe: health read"
    local result, code, printed = nvim(options)
    assert.are.equal(0, code)
    assert.are.equal("message", result.why)
    assert.are.equal("checkhealth", result.extra.filetype)
    local entries = {}
    for _, l in ipairs(result.extra.lines) do
      local status, text = l:match "^%s*%- [^%w]*(%u+):? (.*)$"
      if status == "OK" or status == "WARNING" or status == "ERROR" then
        entries[#entries + 1] = { status = status, text = text }
      end
    end
    return entries, result.extra.lines, printed
  end

  it(":checkhealth openai_usage: the module loads, the key is found (not shown), the API answers", function()
    local entries, lines, printed = checkhealth {}
    assert.truthy(table.concat(lines, "\n"):find("openai-usage", 1, true))
    assert.are.equal(3, #entries, table.concat(lines, "\n"))
    assert.are.same({ "OK", "OK", "OK" }, { entries[1].status, entries[2].status, entries[3].status }, entries[3].text)
    assert.matches("openai_usage.core " .. usage.version .. " loads in LuaJIT", entries[1].text, 1, true)
    assert.matches(ROOT .. "/build/luajit/openai_usage/core.so", entries[1].text, 1, true)
    assert.are.equal("admin key found in $OPENAI_ADMIN_KEY", entries[2].text)
    assert.matches("^the API answered " .. srv.url:gsub("%p", "%%%0") .. "/organization/usage/images in %d+ ms$",
      entries[3].text)
    -- one cheap request: one bucket of images, with the key
    local requests = srv:requests()
    assert.are.equal(1, #requests)
    assert.are.equal("/v1/organization/usage/images", requests[1].path)
    assert.matches("limit=1", requests[1].query, 1, true)
    assert.is_true(requests[1].headers.authorization == "Bearer " .. KEY, "the check did not send the key")
    assert.is_nil(table.concat(lines, "\n"):find(KEY, 1, true))
    assert.is_nil(printed:find(KEY, 1, true))
  end)

  it(":checkhealth openai_usage: a refused key, an unreachable API: errors that say which, the key nowhere", function()
    local wrong = "sk-admin-wrong-health-key"
    local entries, lines, printed = checkhealth { env = { OPENAI_ADMIN_KEY = wrong } }
    assert.are.equal("ERROR", entries[3].status)
    assert.matches("the API refused the key", entries[3].text, 1, true)
    assert.matches("401", entries[3].text, 1, true)
    assert.are.equal(1, #srv:requests()) -- asked once, no retry
    assert.is_nil(table.concat(lines, "\n"):find(wrong, 1, true))
    assert.is_nil(printed:find(wrong, 1, true))
    -- a key that is not an admin key is said to be one, still unshown
    srv:reset()
    local project_key = "sk-proj-health-spec"
    entries, lines = checkhealth { env = { OPENAI_ADMIN_KEY = project_key } }
    assert.are.equal("WARNING", entries[2].status)
    assert.matches("does not start with sk-admin-", entries[2].text, 1, true)
    assert.is_nil(table.concat(lines, "\n"):find(project_key, 1, true))
    -- nothing listens on port 1
    srv:reset()
    local unreachable = "http://127.0.0.1:1/v1"
    entries = checkhealth { env = { OPENAI_BASE_URL = unreachable } }
    assert.are.equal("ERROR", entries[3].status)
    assert.matches("the API is not reachable at " .. unreachable .. "/organization/usage/images", entries[3].text,
      1, true)
    assert.are.same({}, srv:requests())
    -- no key: nothing is sent
    entries = checkhealth { env = { OPENAI_ADMIN_KEY = false } }
    assert.are.equal("ERROR", entries[2].status)
    assert.matches("no admin key", entries[2].text, 1, true)
    assert.are.equal("WARNING", entries[3].status)
    assert.are.same({}, srv:requests())
  end)

  it("reports through vim.health's start, ok, warn and error where Neovim has them (0.9+)", function()
    -- vim.health as Neovim 0.10 has it, recording what the check reports
    local steps = {
      { at = 0, cmd = "lua OU_EXTRA = {}; local function rec(status) return function(msg, advice) "
        .. "OU_EXTRA[#OU_EXTRA + 1] = { status = status, msg = msg, advice = advice } end end; "
        .. "vim.health = { start = rec 'start', ok = rec 'ok', warn = rec 'warn', error = rec 'error', "
        .. "info = rec 'info' }; "
        .. "require('openai_usage.health').check(); vim.notify 'probe: health read'" },
    }
    local result = nvim { steps = steps, untl = "probe: health read", env = { OPENAI_ADMIN_KEY = "sk-proj-health" } }
    assert.are.same({}, result.errors)
    local statuses = {}
    for i, r in ipairs(result.extra) do
      statuses[i] = r.status
    end
    assert.are.same({ "start", "ok", "warn", "error" }, statuses)
    assert.are.equal("openai-usage", result.extra[1].msg)
    assert.matches("does not start with sk-admin-", result.extra[3].msg, 1, true)
    assert.matches("admin key", result.extra[3].advice[1], 1, true)
    assert.matches("the API refused the key", result.extra[4].msg, 1, true)
    assert.matches("admin key is needed", result.extra[4].advice[1], 1, true)
  end)

  it(":checkhealth openai_usage: without the C module built for LuaJIT, says how to build it", function()
    local bare = os.tmpname()
    os.remove(bare)
    assert(os.execute(("mkdir -p %s && cp -r plugin lua %s/"):format(shell_quote(bare), shell_quote(bare))))
    local entries, lines = checkhealth { init = "NONE", rtp = bare, cwd = bare }
    util.rm_rf(bare)
    assert.are.equal("ERROR", entries[1].status)
    assert.matches("openai_usage.core does not load in LuaJIT", entries[1].text, 1, true)
    local text = table.concat(lines, "\n")
    assert.matches("make LUA_VERSION=5.1 LUA=luajit", text, 1, true)
    assert.matches(bare, text, 1, true) -- where to run it
    assert.are.equal("WARNING", entries[2].status)
    assert.are.equal(2, #entries)
    assert.are.same({}, srv:requests())
  end)

  it(":help openai-usage opens the help file after :helptags, and every tag in it leads to its place", function()
    local doc = assert(read_file "doc/openai-usage.txt")
    local tags = {}
    for tag in doc:gmatch "%*([^%s*|]+)%*" do
      tags[#tags + 1] = tag
    end
    for _, expected in ipairs { "openai-usage.txt", "openai-usage", ":OpenAIUsage", "openai-usage-health",
      "g:openai_usage_api_key" } do
      assert.truthy(doc:find("*" .. expected .. "*", 1, true), expected .. " is not a tag of the help file")
    end
    -- a copy, so :helptags writes its tags file outside the checkout
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute(("mkdir -p %s && cp -r doc %s/"):format(shell_quote(dir), shell_quote(dir))))
    local visit = ("lua OU_EXTRA = { seen = {} }; for _, tag in ipairs(vim.fn.json_decode(%q)) do "
      .. "vim.cmd('help ' .. vim.fn.escape(tag, ' ')); OU_EXTRA.seen[#OU_EXTRA.seen + 1] = "
      .. "{ tag = tag, file = vim.fn.expand('%%:t'), buftype = vim.bo.buftype, line = vim.fn.getline('.') } end")
      :format(cjson.encode(tags))
    local steps = {
      { at = 0, cmd = "set rtp+=" .. dir },
      { at = 0, cmd = "helptags " .. dir .. "/doc" },
      { at = 0, cmd = "help openai-usage" },
      { at = 0, cmd = "lua OU_FIRST = { file = vim.fn.expand('%:p'), buftype = vim.bo.buftype, "
        .. "filetype = vim.bo.filetype, line = vim.fn.getline('.'), top = vim.fn.getline(1) }" },
      { at = 0, cmd = visit },
      { at = 0, cmd = "lua OU_EXTRA.first = OU_FIRST; vim.notify 'probe: help read'" },
    }
    local result, code = nvim { steps = steps, untl = "probe: help read" }
    local tags_file = read_file(dir .. "/doc/tags")
    util.rm_rf(dir)
    assert.are.equal(0, code)
    assert.are.equal("message", result.why)
    assert.are.same({}, result.errors)
    assert.truthy(tags_file and tags_file:find("openai-usage\topenai-usage.txt\t", 1, true), tags_file)
    local first = result.extra.first
    assert.are.equal(dir .. "/doc/openai-usage.txt", first.file)
    assert.are.equal("help", first.buftype)
    assert.are.equal("help", first.filetype)
    assert.matches("*openai-usage*", first.line, 1, true)
    assert.are.equal(doc:match "^[^\n]*", first.top)
    assert.are.equal(#tags, #result.extra.seen)
    for i, seen in ipairs(result.extra.seen) do
      assert.are.equal(tags[i], seen.tag)
      assert.are.equal("openai-usage.txt", seen.file, seen.tag)
      assert.are.equal("help", seen.buftype)
      assert.matches("*" .. seen.tag .. "*", seen.line, 1, true)
    end
  end)
end)
