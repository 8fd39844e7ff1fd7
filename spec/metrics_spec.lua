-- openai_usage.metrics and `openai-usage metrics`: the exposition of today's
-- and this month's figures, read back by an independent parser
-- (spec/support/exposition.lua) and checked by `promtool check metrics`
-- (Debian's prometheus package), against figures the stand-in serves,
-- summed here from another query (hourly buckets, or costs split by key).
local usage = require "openai_usage"
local metrics = require "openai_usage.metrics"
local cli = require "openai_usage.cli"
local standin = require "spec.support.standin"
local exposition = require "spec.support.exposition"
local util = require "spec.support.util"

local KEY = "sk-admin-metrics-5b1e0c77"
local DAY = 86400
-- the 15th of last month, 13:25 UTC: today and this month differ
local NOW = metrics.periods(metrics.periods(os.time()).month - DAY).month + 14 * DAY + 13 * 3600 + 1500
local HOSTILE = 'proj_"evil"\\x\nnext_line{a="b"} 1'
local q, read, write = util.q, util.read, util.write

-- Sums of fields per "project|model" (or by) over [start, now), from rows
-- of query params: month and today (rows from today's midnight on).
local function expected(srv, endpoint, params, by, fields, now)
  local periods = metrics.periods(now)
  local client = assert(usage.new(srv:client_options()))
  local sums = { month = {}, today = {} }
  params.start_time = periods.month
  for row in client:results(endpoint, params) do
    local key = tostring(row[by[1]]) .. "|" .. tostring(row[by[2]])
    for _, period in ipairs { "month", "today" } do
      if period == "month" or row.start_time >= periods.today then
        local s = sums[period][key] or {}
        sums[period][key] = s
        for _, f in ipairs(fields) do
          local v = f == "amount" and row.amount.value or row[f]
          s[f] = (s[f] or 0) + v
        end
      end
    end
  end
  client:close()
  return sums
end

local function promtool(path)
  local out, ok = util.popen_run("env -u LD_PRELOAD promtool check metrics < " .. q(path))
  return ok, out
end

-- Runs the command in this process with a frozen now: exit code, stdout, stderr.
local function run_metrics(srv, args, now)
  local out_path, err_path = os.tmpname(), os.tmpname()
  local out, err = assert(io.open(out_path, "w")), assert(io.open(err_path, "w"))
  local argv = { "metrics" }
  for _, a in ipairs(args or {}) do
    argv[#argv + 1] = a
  end
  local code = cli.run(argv, { stdout = out, stderr = err, now = now, client = srv:client_options() })
  out:close()
  err:close()
  local stdout, stderr = read(out_path), read(err_path)
  os.remove(out_path)
  os.remove(err_path)
  return code, stdout, stderr
end

describe("metrics", function()
  local srv, tmp

  setup(function()
    srv = standin.start { key = KEY, now = NOW }
    tmp = util.tmpdir()
  end)

  teardown(function()
    srv:stop()
    util.rm_rf(tmp)
  end)

  before_each(function()
    srv:reset()
  end)

  it("gauges today's and this month's images, requests and tokens per project and model: the API's sums", function()
    local code, out, err = run_metrics(srv, {}, NOW)
    assert.are.equal(0, code, err)
    assert.are.equal("", err)
    local parsed = exposition.parse(out)
    local by = { "project_id", "model" }
    for _, case in ipairs {
      { "images", { "images", "num_model_requests" } },
      { "completions", { "input_tokens", "input_cached_tokens", "output_tokens", "num_model_requests" } },
    } do
      local endpoint, fields = case[1], case[2]
      local sums = expected(srv, endpoint, { bucket_width = "1h", limit = 168, group_by = by }, by, fields, NOW)
      local groups = 0
      for key, month in pairs(sums.month) do
        groups = groups + 1
        local project, model = key:match "^(.-)|(.*)$"
        for _, f in ipairs(fields) do
          local name = "openai_usage_" .. (f == "num_model_requests" and "requests" or f)
          for _, period in ipairs { "month", "today" } do
            local want = period == "month" and month[f] or (sums.today[key] or {})[f] or 0
            local got = exposition.value(parsed, name,
              { period = period, endpoint = endpoint, project_id = project, model = model })
            assert.are.equal(want, got, ("%s %s %s %s"):format(name, period, project, model))
          end
        end
      end
      assert.is_true(groups >= 4, endpoint .. ": too few groups to mean anything")
      -- one series per group and period, no more
      assert.are.equal(2 * groups, #exposition.find(parsed, "openai_usage_" .. fields[1], { endpoint = endpoint }))
    end
    -- today is not the month: the split is real
    local month = exposition.value(parsed, "openai_usage_period_start_timestamp_seconds", { period = "month" })
    local today = exposition.value(parsed, "openai_usage_period_start_timestamp_seconds", { period = "today" })
    assert.are.equal(metrics.periods(NOW).month, month)
    assert.are.equal(NOW - NOW % DAY, today)
    assert.are.equal(14 * DAY, today - month)
  end)

  it("gauges the cost per project and line item from the Costs endpoint, in openai_usage_cost_usd", function()
    local code, out = run_metrics(srv, {}, NOW)
    assert.are.equal(0, code)
    local parsed = exposition.parse(out)
    -- the same costs split by key as well, summed back here
    local by = { "project_id", "line_item" }
    local sums = expected(srv, "costs", { bucket_width = "1d", limit = 31,
      group_by = { "project_id", "line_item", "api_key_id" } }, by, { "amount" }, NOW)
    local groups = 0
    for key, month in pairs(sums.month) do
      groups = groups + 1
      local project, item = key:match "^(.-)|(.*)$"
      for _, period in ipairs { "month", "today" } do
        local want = period == "month" and month.amount or (sums.today[key] or {}).amount or 0
        util.near(want, exposition.value(parsed, "openai_usage_cost_usd",
          { period = period, project_id = project, line_item = item }), key)
      end
    end
    assert.is_true(groups > 10, "too few line items: " .. groups)
    assert.are.equal(2 * groups, #exposition.find(parsed, "openai_usage_cost_usd"))
    assert.are.equal("usd", parsed.families.openai_usage_cost_usd.unit or "usd")
    assert.are.equal("gauge", parsed.families.openai_usage_cost_usd.type)
  end)

  it("passes promtool check metrics, names gauges by Prometheus' conventions, no _total, HELP and TYPE each", function()
    local code, out = run_metrics(srv, {}, NOW)
    assert.are.equal(0, code)
    local path = tmp .. "/all.prom"
    write(path, out)
    local ok, lint = promtool(path)
    assert.is_true(ok, lint)
    assert.are.equal("", lint)
    local parsed = exposition.parse(out)
    assert.is_true(#parsed.order >= 12)
    local previous = ""
    for _, name in ipairs(parsed.order) do
      local f = parsed.families[name]
      assert.matches("^openai_usage_[a-z_]+$", name)
      assert.is_nil(name:find "_total$", name) -- no counters invented from gauges
      assert.are.equal("gauge", f.type, name)
      assert.is_true(#f.help > 10, name)
      assert.is_true(name > previous, "families in name order: " .. name)
      previous = name
    end
    for _, s in ipairs(parsed.samples) do
      assert.is_not_nil(parsed.families[s.name], s.line)
    end
    -- the timestamps are seconds, the units base units
    for _, s in ipairs(exposition.find(parsed, "openai_usage_refresh_timestamp_seconds")) do
      assert.is_true(math.abs(s.value - os.time()) < 600, s.line)
    end
  end)

  it("writes OpenMetrics 1.0 when asked: # UNIT only where the name ends in it, # EOF last", function()
    local code, out = run_metrics(srv, { "--format", "openmetrics" }, NOW)
    assert.are.equal(0, code)
    assert.are.equal("# EOF\n", out:sub(-6))
    local parsed = exposition.parse(out)
    assert.is_true(parsed.eof)
    local units = 0
    for _, name in ipairs(parsed.order) do
      local unit = parsed.families[name].unit
      if unit then
        units = units + 1
        assert.are.equal("_" .. unit, name:sub(-#unit - 1), name)
      end
    end
    assert.is_true(units >= 4)
    assert.are.equal("usd", parsed.families.openai_usage_cost_usd.unit)
    -- the same samples as the text format
    local _, text_out = run_metrics(srv, {}, NOW)
    local a, b = {}, {}
    for _, s in ipairs(exposition.parse(text_out).samples) do
      if not s.name:find "refresh_duration" and not s.name:find "timestamp" then
        a[#a + 1] = s.line
      end
    end
    for _, s in ipairs(parsed.samples) do
      if not s.name:find "refresh_duration" and not s.name:find "timestamp" then
        b[#b + 1] = s.line
      end
    end
    assert.are.same(a, b)
    assert.are.equal("application/openmetrics-text; version=1.0.0; charset=utf-8", metrics.CONTENT_TYPE.openmetrics)
    assert.are.equal("text/plain; version=0.0.4; charset=utf-8", metrics.CONTENT_TYPE.prometheus)
  end)

  it("escapes hostile label values (quotes, backslash, line feed): promtool passes, the value reads back", function()
    srv:settings { rename = { proj_atlas = HOSTILE } }
    local code, out = run_metrics(srv, {}, NOW)
    assert.are.equal(0, code)
    local path = tmp .. "/hostile.prom"
    write(path, out)
    local ok, lint = promtool(path)
    assert.is_true(ok, lint)
    local parsed = exposition.parse(out)
    local hostile = exposition.find(parsed, "openai_usage_images", { project_id = HOSTILE })
    assert.is_true(#hostile >= 2)
    assert.are.equal(0, #exposition.find(parsed, "openai_usage_images", { project_id = "proj_atlas" }))
    assert.is_true(#exposition.find(parsed, "openai_usage_cost_usd", { project_id = HOSTILE }) >= 2)
    -- no line was injected: every line is a comment or one sample of a known family
    for line in out:gmatch "[^\n]+" do
      assert.is_truthy(line:match "^# " or parsed.families[line:match "^[%w_]+"], line)
    end
    assert.truthy(out:find('project_id="proj_\\"evil\\"\\\\x\\nnext_line{a=\\"b\\"} 1"', 1, true))
    assert.are.equal('\\\\ \\" \\n \239\191\189 \r\t', metrics.escape_label('\\ " \n \255 \r\t'))
  end)

  it("a source whose request fails has no figures and refresh_success 0, never zeros; exit 1, others kept", function()
    -- images, completions, costs are walked in that order: the costs request fails
    srv:faults { {}, {}, { status = 400, error_message = "costs refused" } }
    local code, out, err = run_metrics(srv, {}, NOW)
    assert.are.equal(1, code)
    assert.matches("^openai%-usage: metrics: costs: openai_usage: http 400: costs refused [^\n]*\n$", err)
    local parsed = exposition.parse(out)
    assert.are.equal(0, #exposition.find(parsed, "openai_usage_cost_usd"))
    assert.is_nil(parsed.families.openai_usage_cost_usd)
    assert.are.equal(0, exposition.value(parsed, "openai_usage_refresh_success", { endpoint = "costs" }))
    assert.are.equal(1, exposition.value(parsed, "openai_usage_refresh_success", { endpoint = "images" }))
    assert.are.equal(0, #exposition.find(parsed, "openai_usage_last_success_timestamp_seconds", { endpoint = "costs" }))
    assert.are.equal(0, #exposition.find(parsed, "openai_usage_unknown_figures", { endpoint = "costs" }))
    assert.is_true(#exposition.find(parsed, "openai_usage_images") > 0)
    -- a page with a hole (a null result) fails its source too: no partial sums
    srv:reset()
    srv:faults { { null_result = { 0, 0 } } }
    code, out = run_metrics(srv, { "--endpoints", "images" }, NOW)
    assert.are.equal(1, code)
    parsed = exposition.parse(out)
    assert.are.equal(0, #exposition.find(parsed, "openai_usage_images"))
    assert.are.equal(0, exposition.value(parsed, "openai_usage_refresh_success", { endpoint = "images" }))
  end)

  it("a group whose rows lack a figure is left out and counted unknown; a group with no row today reads 0", function()
    local periods = metrics.periods(NOW)
    local function bucket(start, results)
      for _, r in ipairs(results) do
        r.object = "organization.usage.images.result"
      end
      return { object = "bucket", start_time = start, end_time = start + DAY, results = results }
    end
    local data = {}
    for t = periods.month, periods.today, DAY do
      local results = setmetatable({}, require("openai_usage.json").array)
      if t == periods.month then
        results = {
          { project_id = "p_a", model = "m_a", images = 3, num_model_requests = 1 },
          { project_id = "p_a", model = "m_a", num_model_requests = 2 }, -- images missing
          { project_id = "p_b", model = "m_b", images = 7, num_model_requests = 7 },
        }
      elseif t == periods.today then
        results = { { project_id = "p_a", model = "m_a", images = 5, num_model_requests = 4 } }
      end
      data[#data + 1] = bucket(t, results)
    end
    local fixture = tmp .. "/page.json"
    write(fixture, require("openai_usage.json").encode({ object = "page", data = data, has_more = false },
      { "object", "data", "has_more" }))
    srv:settings { fixture_page = fixture }
    local code, out, err = run_metrics(srv, { "--endpoints", "images" }, NOW)
    assert.are.equal(0, code, err)
    local parsed = exposition.parse(out)
    local a = { endpoint = "images", project_id = "p_a", model = "m_a" }
    local function value(name, period, labels)
      local want = { period = period }
      for k, v in pairs(labels) do
        want[k] = v
      end
      local found = exposition.find(parsed, name, want)
      return found[1] and found[1].value
    end
    assert.is_nil(value("openai_usage_images", "month", a)) -- unknown, not 3
    assert.are.equal(5, value("openai_usage_images", "today", a))
    assert.are.equal(7, value("openai_usage_requests", "month", a))
    assert.are.equal(4, value("openai_usage_requests", "today", a))
    local b = { endpoint = "images", project_id = "p_b", model = "m_b" }
    assert.are.equal(7, value("openai_usage_images", "month", b))
    assert.are.equal(0, value("openai_usage_images", "today", b)) -- today's bucket came, without p_b
    assert.are.equal(1, exposition.value(parsed, "openai_usage_unknown_figures", { endpoint = "images" }))
  end)

  it("renders the same snapshot to the same bytes, in the same order whatever order the rows came in", function()
    local client = assert(usage.new(srv:client_options()))
    local snapshot = assert(metrics.gather(client, { now = NOW, sources = { "images" } }))
    client:close()
    local first = metrics.render(snapshot)
    assert.are.equal(first, (metrics.render(snapshot)))
    -- reversed series (and families) give the same text
    local series = snapshot.sources[1].series
    for i = 1, math.floor(#series / 2) do
      series[i], series[#series + 1 - i] = series[#series + 1 - i], series[i]
    end
    assert.are.equal(first, (metrics.render(snapshot)))
    local lines = {}
    for line in first:gmatch "openai_usage_images{[^\n]+" do
      lines[#lines + 1] = line
    end
    assert.is_true(#lines > 4)
    local sorted = { (table.unpack or unpack)(lines) }
    table.sort(sorted)
    assert.are.same(sorted, lines)
  end)

  it("negotiates the format from Accept as Prometheus sends it", function()
    assert.are.equal("openmetrics", metrics.negotiate("application/openmetrics-text;version=1.0.0,"
      .. "application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"))
    assert.are.equal("prometheus", metrics.negotiate "*/*")
    assert.are.equal("prometheus", metrics.negotiate(nil))
    assert.are.equal("prometheus", metrics.negotiate "text/plain;version=0.0.4")
    assert.are.equal("prometheus", metrics.negotiate "application/openmetrics-text;q=0.2, text/plain")
    assert.are.equal("prometheus", metrics.negotiate "application/openmetrics-text;version=2.0.0")
  end)

  it("refuses bad options before any request: endpoints, fields, group_by, format", function()
    assert.matches('"nope" is not an endpoint', tostring(select(2, metrics.sources { sources = { "nope" } })))
    assert.matches('"size" is not a figure of images',
      tostring(select(2, metrics.sources { sources = { "images" }, fields = { images = { "size" } } })))
    assert.matches('images cannot group by "line_item"',
      tostring(select(2, metrics.sources { sources = { "images" }, group_by = { images = { "line_item" } } })))
    assert.has_error(function()
      metrics.render({ sources = {}, periods = {} }, "json")
    end)
    for _, args in ipairs { { "--endpoints", "images,nope" }, { "--format", "json" }, { "--timeout", "0" },
      { "--bogus" } } do
      local code, out, err = run_metrics(srv, args, NOW)
      assert.are.equal(2, code, table.concat(args, " "))
      assert.are.equal("", out)
      assert.matches("^openai%-usage: metrics: ", err)
    end
    assert.are.equal(0, srv:status().requests)
  end)

  it("metrics --db reads the history store: the figures a sync stored, the live exposition's, nothing sent", function()
    local store_module = require "openai_usage.store"
    local db = tmp .. "/metrics.db"
    local client = assert(usage.new(srv:client_options()))
    local s = assert(store_module.open(db))
    assert(s:sync(client, { endpoints = "all", width = "1d", since = metrics.periods(NOW).month, now = NOW }))
    s:close()
    client:close()
    -- series -> value, health lines aside (their times differ)
    local function figures(text)
      local out, n = {}, 0
      for line in text:gmatch "[^\n]+" do
        if not line:find("refresh", 1, true) and not line:find("timestamp", 1, true) then
          local series, value = line:match "^([^#].-) (%S+)$"
          if series then
            out[series], n = tonumber(value), n + 1
          end
        end
      end
      return out, n
    end
    local code, live = run_metrics(srv, {}, NOW)
    assert.are.equal(0, code)
    srv:reset()
    local dcode, stored, derr = run_metrics(srv, { "--db", db }, NOW)
    assert.are.equal(0, dcode, derr)
    assert.are.equal(0, srv:status().requests)
    assert.truthy(stored:find("openai_usage_images{", 1, true), stored)
    -- costs' float amounts, summed over the keys by the store, agree to 1e-12
    local a, n = figures(live)
    local b, m = figures(stored)
    assert.are.equal(n, m)
    assert.is_true(n > 10)
    for series, value in pairs(a) do
      assert.is_truthy(b[series], series)
      assert.is_true(math.abs(value - b[series]) <= 1e-12 * math.max(1, math.abs(value)), series)
    end
    -- a store that does not exist is refused, nothing sent
    local mcode, mout, merr = run_metrics(srv, { "--db", tmp .. "/missing.db" }, NOW)
    assert.are_not.equal(0, mcode)
    assert.are.equal("", mout)
    assert.truthy(merr:find("missing.db", 1, true), merr)
    assert.are.equal(0, srv:status().requests)
  end)

  describe("as a process", function()
    local live

    setup(function()
      live = standin.start { key = KEY, now = os.time() }
    end)

    teardown(function()
      live:stop()
    end)

    local function run(args)
      local cmd = ("env OPENAI_ADMIN_KEY=%s OPENAI_BASE_URL=%s %s bin/openai-usage metrics %s >%s 2>%s"):format(
        q(KEY), q(live.url), util.LUA, args, q(tmp .. "/out"), q(tmp .. "/err"))
      local code = util.exit_code(os.execute(cmd))
      return code, read(tmp .. "/out"), read(tmp .. "/err")
    end

    it("prints an exposition promtool passes; --out writes it atomically for the textfile collector", function()
      local code, out, err = run ""
      assert.are.equal(0, code, err)
      write(tmp .. "/stdout.prom", out)
      local ok, lint = promtool(tmp .. "/stdout.prom")
      assert.is_true(ok, lint)
      local target = tmp .. "/textfile/openai_usage.prom"
      assert.is_true(util.execute("mkdir -p " .. q(tmp .. "/textfile")))
      write(target, "stale\n")
      code, out, err = run("--out " .. q(target))
      assert.are.equal(0, code, err)
      assert.are.equal("", out)
      ok, lint = promtool(target)
      assert.is_true(ok, lint)
      local parsed = exposition.parse(read(target))
      assert.is_true(#exposition.find(parsed, "openai_usage_images", { period = "today" }) > 0)
      -- no temporary file left beside it
      assert.are.equal("openai_usage.prom\n", util.capture("ls " .. q(tmp .. "/textfile")))
      assert.is_nil(read(target):find(KEY, 1, true))
    end)

    it("a failed endpoint: exit 1, one line on stderr, the exposition still written with it flagged", function()
      live:faults { { status = 401, error_message = "bad key" } }
      local code, out, err = run "--endpoints images,costs"
      assert.are.equal(1, code)
      assert.matches("^openai%-usage: metrics: images: openai_usage: http 401: bad key [^\n]*\n$", err)
      local parsed = exposition.parse(out)
      assert.are.equal(0, exposition.value(parsed, "openai_usage_refresh_success", { endpoint = "images" }))
      assert.are.equal(1, exposition.value(parsed, "openai_usage_refresh_success", { endpoint = "costs" }))
      assert.are.equal(0, #exposition.find(parsed, "openai_usage_images"))
    end)
  end)
end)
