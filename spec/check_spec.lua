-- openai-usage check run as a real process against the stand-in: budgets
-- per scope and period, spend from the Costs endpoint with the unsettled
-- tail estimated from images usage x a price table, the run-rate forecast,
-- fixed-offset periods, JSON for cron, unpriced usage never counted as $0,
-- budgets files loaded as data. The expected figures are worked out here
-- from the stand-in's own rows through the plain client.
local usage = require "openai_usage"
local budget = require "openai_usage.budget"
local cost = require "openai_usage.cost"
local standin = require "spec.support.standin"
local cjson = require "cjson"
local util = require "spec.support.util"

local KEY = "sk-admin-check-51d0"
local NOW = 1732406400 -- 2024-11-24T00:00:00Z (a Sunday), the stand-in's now
local NOV, DAY = 1730419200, 86400 -- 2024-11-01T00:00:00Z
local q, read, exit_code = util.q, util.read_if, util.exit_code

describe("openai-usage check", function()
  local srv, tmp, client, prices_file

  -- Runs the CLI; returns stdout, stderr, exit code.
  local function run(args)
    local quoted = {}
    for i, a in ipairs(args) do
      quoted[i] = q(a)
    end
    local cmd = ("env OPENAI_ADMIN_KEY=%s OPENAI_BASE_URL=%s %s bin/openai-usage check %s >%s 2>%s"):format(
      q(srv.key), q(srv.url), util.LUA, table.concat(quoted, " "), q(tmp .. ".out"), q(tmp .. ".err"))
    local code = exit_code(os.execute(cmd))
    return read(tmp .. ".out"), read(tmp .. ".err"), code
  end

  local function run_json(args)
    local list = { "--format", "json" }
    for _, a in ipairs(args) do
      list[#list + 1] = a
    end
    local out, err, code = run(list)
    assert(out and out ~= "", "no JSON; stderr: " .. tostring(err))
    return cjson.decode(out), code, err
  end

  -- What Costs billed over [start, stop), rows kept by keep(row) (all when nil).
  local function billed(start, stop, keep)
    local sum = 0
    for row in client:results("costs", { start_time = start, end_time = stop, bucket_width = "1d",
      group_by = { "project_id", "line_item", "api_key_id" }, limit = 180 }) do
      if not keep or keep(row) then
        sum = sum + row.amount.value
      end
    end
    return sum
  end

  local function is_image(row)
    return row.line_item == "Image models"
  end

  setup(function()
    srv = standin.start { key = KEY, now = NOW }
    client = assert(usage.new(srv:client_options()))
    tmp = os.tmpname()
    prices_file = tmp .. ".prices.lua"
    util.write(prices_file, srv:image_price_table())
  end)

  teardown(function()
    if client then
      client:close()
    end
    if srv then
      srv:stop()
    end
    for _, suffix in ipairs { "", ".out", ".err", ".prices.lua", ".budgets.lua" } do
      os.remove(tmp .. suffix)
    end
  end)

  before_each(function()
    srv:reset()
  end)

  -- The weekly-pattern forecast (openai_usage.analysis) of the organization's
  -- daily costs to a UTC period's end, never under what is spent.
  local function weekly(start, stop, at, spent)
    local analysis = require "openai_usage.analysis"
    local today = analysis.day_of(at)
    local from = math.min(today - 28 * DAY, start)
    local pages = {}
    for page in client:pages("costs", { start_time = from, end_time = today, bucket_width = "1d", limit = 180 }) do
      pages[#pages + 1] = page
    end
    local i = 0
    local daily = analysis.daily(function()
      i = i + 1
      return pages[i]
    end, {}, "amount", from, today)
    local series = daily.scopes[1]
    series.start = daily.start
    local fc = assert(analysis.forecast(series, { today = at, period_start = start, period_end = stop }))
    return math.max(fc.projected, spent), fc
  end

  -- November up to NOW, with a price table that prices every image as the
  -- stand-in bills it: the spend is what Costs billed, to float rounding.
  local function november()
    local spent = billed(NOV, NOW)
    assert.is_true(spent > 0)
    return spent, weekly(NOV, NOV + 30 * DAY, NOW, spent)
  end

  it("every scope under budget: exit 0 and nothing printed", function()
    local _, forecast = november()
    local out, err, code = run { "--budget", ("%.2f"):format(forecast * 1.5), "--at", tostring(NOW),
      "--prices", prices_file }
    assert.are.equal("", err)
    assert.are.equal("", out)
    assert.are.equal(0, code)
  end)

  it("a scope over budget: exit 4 and its line, with the spend and the budget", function()
    local spent = november()
    local amount = math.floor(spent / 2)
    local out, err, code = run { "--budget", tostring(amount), "--at", tostring(NOW), "--prices", prices_file }
    assert.are.equal("", err)
    assert.are.equal(4, code)
    local _, lines = out:gsub("[^\n]+\n", "")
    assert.are.equal(4, lines) -- the line, what its estimate assumed, the platform's limit and alerts
    assert.truthy(out:find("\nestimate: images usage x prices of stand-in from " .. prices_file
      .. " at standard quality", 1, true), out)
    local expected = ("OVER: organization, month 2024-11 (UTC): spent %s of %s"):format(budget.usd(spent),
      budget.usd(amount))
    assert.are.equal(expected, out:sub(1, #expected))
  end)

  it("forecast over: under budget so far, but the run-rate reaches the threshold", function()
    local spent, forecast = november()
    -- between what is spent and what the month is forecast to reach
    local amount = (spent + forecast) / 2
    local out, _, code = run { "--budget", ("%.2f"):format(amount), "--at", tostring(NOW), "--prices", prices_file }
    assert.are.equal(4, code)
    assert.matches("^FORECAST OVER: organization, month 2024%-11", out)
    assert.truthy(out:find(("forecast %s by 2024-12-01T00:00:00Z"):format(budget.usd(forecast)), 1, true), out)
    -- a budget the forecast reaches 90% of: at risk at a threshold of 0.8, not at 1
    amount = ("%.2f"):format(forecast / 0.9)
    local json, code2 = run_json { "--budget", amount, "--threshold", "0.8", "--at", tostring(NOW), "--prices",
      prices_file }
    assert.are.equal(4, code2)
    assert.are.equal("forecast_over", json.lines[1].status)
    util.near(forecast, json.lines[1].forecast, "forecast")
    assert.are.equal("weekly", json.lines[1].forecast_model)
    assert.is_true(json.lines[1].forecast_low <= forecast and forecast <= json.lines[1].forecast_high)
    local out3, _, code3 = run { "--budget", amount, "--at", tostring(NOW), "--prices", prices_file }
    assert.are.equal(0, code3)
    assert.are.equal("", out3)
  end)

  it("a month in a fixed offset starts at its local midnight", function()
    -- 2024-10-31T23:00Z is already November at +02:00, still October in UTC and at -05:00
    local at = NOV - 3600
    local json = run_json { "--budget", "1e6", "--offset", "+02:00", "--at", tostring(at), "--prices", prices_file }
    local line = json.lines[1]
    assert.are.same({ "2024-11", "+02:00", "2024-10-31T22:00:00Z", "2024-11-30T22:00:00Z" },
      { line.label, line.offset, line.start, line.stop })
    util.near(billed(NOV - 2 * 3600, at), line.spend, "the one hour of November at +02:00")
    -- a period in another offset than UTC is forecast by the run-rate: the API's days are UTC's
    util.near(line.spend * 30 * 24, line.forecast, "an hour's run-rate over a 30-day month")
    assert.are.equal("run-rate", line.forecast_model)
    local utc = run_json { "--budget", "1e6", "--at", tostring(at), "--prices", prices_file }.lines[1]
    assert.are.same({ "2024-10", "UTC", "2024-10-01T00:00:00Z", "2024-11-01T00:00:00Z" },
      { utc.label, utc.offset, utc.start, utc.stop })
    util.near(billed(NOV - 31 * DAY, at), utc.spend, "October up to 23:00 UTC")
    local west = run_json { "--budget", "1e6", "--offset", "-05:00", "--at", tostring(at), "--prices", prices_file }
    assert.are.same({ "2024-10", "2024-10-01T05:00:00Z" }, { west.lines[1].label, west.lines[1].start })
    -- weeks start on Monday, days at midnight, in the offset too
    local week = run_json { "--budget", "1e6", "--period", "week", "--offset", "+02:00", "--at", tostring(NOW),
      "--prices", prices_file }.lines[1]
    assert.are.same({ "week of 2024-11-18", "2024-11-17T22:00:00Z", "2024-11-24T22:00:00Z" },
      { week.label, week.start, week.stop })
    local day = run_json { "--budget", "1e6", "--period", "day", "--offset", "-05:30", "--at", tostring(NOW),
      "--prices", prices_file }.lines[1]
    assert.are.same({ "2024-11-23", "2024-11-23T05:30:00Z", "2024-11-24T05:30:00Z" },
      { day.label, day.start, day.stop })
  end)

  it("--format json: every scope with its status, the project lines adding up to the organization", function()
    local spent = november()
    local by_project = {}
    for row in client:results("costs", { start_time = NOV, end_time = NOW, bucket_width = "1d",
      group_by = { "project_id" }, limit = 180 }) do
      by_project[row.project_id] = (by_project[row.project_id] or 0) + row.amount.value
    end
    local amounts = {}
    for _, v in pairs(by_project) do
      amounts[#amounts + 1] = v
    end
    table.sort(amounts)
    assert.are.equal(4, #amounts)
    -- a budget between the second and third project's spend: two over, two under
    local amount = (amounts[2] + amounts[3]) / 2
    local json, code = run_json { "--budget", ("%.4f"):format(amount), "--scope", "project_id", "--at", tostring(NOW),
      "--threshold", "10", "--prices", prices_file }
    assert.are.equal(4, code)
    assert.are.equal(2, json.at_risk)
    assert.are.equal(4, #json.lines)
    local sum = 0
    for _, line in ipairs(json.lines) do
      assert.are.equal("project_id", line.scope)
      util.near(by_project[line.id], line.spend, line.id)
      assert.are.equal(line.spend > amount and "over" or "under", line.status)
      sum = sum + line.spend
    end
    util.near(spent, sum, "the projects' spend")
    -- one project alone, by id; and a line item
    local one = run_json { "--budget", "1e6", "--scope", "project_id=proj_cinder", "--at", tostring(NOW), "--prices",
      prices_file }
    assert.are.equal(1, #one.lines)
    util.near(by_project.proj_cinder, one.lines[1].spend, "proj_cinder")
    local images = run_json { "--budget", "1e6", "--scope", "line_item=Image models", "--at", tostring(NOW),
      "--prices", prices_file }
    util.near(billed(NOV, NOW, is_image), images.lines[1].spend, "Image models")
  end)

  it("marks the unsettled tail: billed up to two days ago, images estimated from usage since", function()
    local json = run_json { "--budget", "1e6", "--at", tostring(NOW), "--prices", prices_file }
    local line = json.lines[1]
    local tail = NOW - 2 * DAY
    assert.are.equal("2024-11-22T00:00:00Z", line.tail)
    util.near(billed(NOV, tail), line.billed, "settled")
    -- the stand-in bills images at the table's prices: the estimate is its image costs
    util.near(billed(tail, NOW, is_image), line.estimate, "estimated")
    util.near(billed(tail, NOW, function(r)
      return not is_image(r)
    end), line.unsettled, "billed, not settled")
    util.near(line.billed + line.estimate + line.unsettled, line.spend, "spend")
    assert.is_true(line.estimate > 0)
    local out = run { "--budget", "1e6", "--at", tostring(NOW), "--prices", prices_file, "--all" }
    assert.truthy(out:find(("of it since 2024-11-22T00:00:00Z: %s estimated from usage x prices"):format(
      budget.usd(line.estimate)), 1, true), out)
    -- a longer settle window moves the tail back; 0 leaves only today
    local week = run_json { "--budget", "1e6", "--at", tostring(NOW), "--settle-after", "7d", "--prices", prices_file }
    assert.are.equal("2024-11-17T00:00:00Z", week.lines[1].tail)
    local past = run_json { "--budget", "1e6", "--at", tostring(NOW - 1), "--settle-after", "0", "--prices",
      prices_file }
    assert.are.equal("2024-11-23T00:00:00Z", past.lines[1].tail)
  end)

  it("images the table does not price are reported as unpriced, never as $0: status unknown, exit 4", function()
    local bundled = assert(cost.load())
    local unpriced, kinds = 0, {}
    for row in client:results("images", { start_time = NOW - 2 * DAY, end_time = NOW, bucket_width = "1d",
      group_by = { "model", "size" }, limit = 31 }) do
      if not cost.price(bundled, row.model, row.size, bundled.default_quality) then
        unpriced = unpriced + row.images
        kinds[row.model .. " " .. row.size] = true
      end
    end
    assert.is_true(unpriced > 0 and kinds["gpt-image-1 auto"], "the stand-in makes gpt-image-1 'auto' images")
    local json, code = run_json { "--budget", "1e9", "--at", tostring(NOW) }
    assert.are.equal(4, code)
    local line = json.lines[1]
    assert.are.equal("unknown", line.status)
    assert.are.equal(unpriced, line.unpriced_images)
    for _, k in ipairs(line.unpriced) do
      assert.is_true(kinds[k], k)
      kinds[k] = nil
    end
    assert.is_nil(next(kinds))
    local out = run { "--budget", "1e9", "--at", tostring(NOW) }
    assert.matches("^UNKNOWN: organization", out)
    assert.truthy(out:find(("%s images in the tail have no price"):format(
      require("openai_usage.text").thousands(tostring(unpriced))), 1, true), out)
  end)

  it("a budgets file is data: several budgets; io, os and endless loops refused before any request", function()
    local file = tmp .. ".budgets.lua"
    util.write(file, [[return {
      { name = "team", amount = 1e6, scope = "project_id", id = "proj_atlas", period = "week", offset = "+02:00" },
      { amount = 1e6, scope = "api_key_id", period = "week", threshold = 0.5 },
    }]])
    local json, code = run_json { "--budgets", file, "--at", tostring(NOW), "--prices", prices_file }
    assert.are.equal(0, code)
    assert.are.same({ "team", "proj_atlas", "week" }, { json.lines[1].name, json.lines[1].id, json.lines[1].period })
    local keys = 0
    for i = 2, #json.lines do
      assert.are.same({ "api_key_id", "week", 0.5 }, { json.lines[i].scope, json.lines[i].period,
        json.lines[i].threshold })
      keys = keys + 1
    end
    assert.is_true(keys >= 8, "every key, and the line items without one")
    srv:reset()
    for _, case in ipairs {
      { "return os.exit(0)", "'os'" },
      { "io.open('/tmp/x', 'w') return {}", "'io'" },
      { "while true do end", "runs too long" },
      { "return { { amount = 5, scope = 'team' } }", 'scope: "team" is not one of' },
      { "return { { amount = 5, colour = 'red' } }", "unknown field colour" },
      { "return 42", "expected a list of budgets" },
    } do
      util.write(file, case[1])
      local out, err, c = run { "--budgets", file }
      assert.are.equal(2, c, case[1])
      assert.are.equal("", out)
      assert.truthy(err:find(case[2], 1, true), err)
    end
    assert.are.same({}, srv:requests())
  end)

  it("examples/budgets.lua (the README's) checks against the stand-in", function()
    local json, code = run_json { "--budgets", "examples/budgets.lua", "--at", tostring(NOW - 3600), "--prices",
      prices_file }
    assert.are.equal(4, code) -- the stand-in's organization spends more than $500 a month
    assert.are.same({ "organization", "over" }, { json.lines[1].scope, json.lines[1].status })
    assert.are.same({ "team atlas", "proj_atlas", "+02:00" }, { json.lines[2].name, json.lines[2].id,
      json.lines[2].offset })
    assert.are.equal("api_key_id", json.lines[#json.lines].scope)
  end)

  it("budget.spend on hand-made rows: settled billed, the tail's estimate and billed-so-far, unknowns", function()
    local prices = { date = "test", images = { ["dall-e-2"] = { standard = { ["256x256"] = 0.25 } } } }
    local T = 1000 * DAY
    local rows = { tail = T, costs = {
      { start_time = T - DAY, line_item = "Image models", project_id = "p", amount = { value = 3.0 } },
      { start_time = T - DAY, line_item = "gpt-4o, input", project_id = "p", amount = { value = 1.5 } },
      { start_time = T, line_item = "Image models", project_id = "p", amount = { value = 99.0 } }, -- estimated instead
      { start_time = T, line_item = "gpt-4o, input", project_id = "p", amount = { value = 0.5 } },
      { start_time = T, line_item = "gpt-4o, output", project_id = "p", amount = {} },
    }, images = {
      { project_id = "p", model = "dall-e-2", size = "256x256", images = 8 },
      { project_id = "p", model = "dall-e-2", size = "512x512", images = 3 },
    } }
    local spend = budget.spend({ scope = "project_id" }, rows, prices, "standard").p
    assert.are.same({ 4.5, 0.5, 2.0, 3, 1 }, { spend.billed, spend.unsettled, spend.estimate, spend.unpriced_images,
      spend.no_amount })
    assert.are.same({ ["dall-e-2 512x512"] = true }, spend.unpriced)
    local line = { spend = 7.0, amount = 100, threshold = 1, forecast = 20, unpriced_images = 0, no_amount = 1 }
    assert.are.equal("unknown", budget.status(line)) -- a row without an amount: only a lower bound
    line.no_amount = 0
    assert.are.equal("under", budget.status(line))
    rows.costs[1].amount.currency = "eur"
    local ok, err = pcall(budget.spend, { scope = "organization" }, rows, prices, "standard")
    assert.is_false(ok)
    assert.are.equal("budgets are in US dollars, but the Costs endpoint billed in eur", err.message)
  end)

  it("bad arguments are refused with exit 2 before any request", function()
    for _, case in ipairs {
      { { "--budget", "-5" }, "--budget: -5 is not an amount of US dollars above 0" },
      { { "--budget", "abc" }, '--budget: "abc" is not an amount' },
      { { "--budget", "5", "--scope", "team" }, '--scope: "team" is not one of organization, project_id' },
      { { "--budget", "5", "--period", "year" }, '--period: "year" is not one of day, week, month' },
      { { "--budget", "5", "--offset", "+25:00" }, '--offset: offset "+25:00": expected UTC or a fixed offset' },
      { { "--budget", "5", "--threshold", "0" }, "--threshold: 0 is not a share" },
      { { "--budget", "5", "--at", "tomorrow" }, "--at: " },
      { { "--budget", "5", "--format", "xml" }, '--format: "xml" is not one of text, json' },
      { { "--scope", "project_id" }, "go with --budget" },
      { {}, "name a budget" },
      { { "--budget", "5", "--nope" }, 'unknown option "--nope"' },
    } do
      local out, err, code = run(case[1])
      assert.are.equal(2, code, table.concat(case[1], " "))
      assert.are.equal("", out)
      assert.truthy(err:find(case[2], 1, true), err)
    end
    assert.are.same({}, srv:requests())
  end)

  it("lists the organization's own spend limit and alerts beside the budgets, read-only", function()
    local directory = require "openai_usage.directory"
    local alerts = directory.all(client, "spend_alerts")
    local limit = assert(client:usage "spend_limit")
    assert.is_true(#alerts > 0)
    srv:reset()
    local json = run_json { "--budget", "1e9", "--at", tostring(NOW), "--prices", prices_file }
    local org = json.organization
    assert.are.same({ limit.threshold_amount / 100, limit.currency, limit.interval, limit.enforcement.status },
      { org.spend_limit.amount, org.spend_limit.currency, org.spend_limit.interval, org.spend_limit.enforcement })
    assert.are.equal(#alerts, #org.spend_alerts)
    for i, a in ipairs(alerts) do
      assert.are.same({ a.threshold_amount / 100, a.interval }, { org.spend_alerts[i].amount,
        org.spend_alerts[i].interval })
    end
    assert.are.equal(cjson.null, org.error)
    for _, r in ipairs(srv:requests()) do
      assert.are.equal("GET", r.method) -- read-only
    end
    -- with the lines printed: one line each, the amounts in dollars
    local out = run { "--budget", "1", "--at", tostring(NOW), "--prices", prices_file }
    assert.truthy(out:find(("organization spend limit (set on the platform, read-only): %s a %s, %s"):format(
      budget.usd(limit.threshold_amount / 100), limit.interval, limit.enforcement.status), 1, true), out)
    assert.truthy(out:find("organization spend alerts (set on the platform, read-only): "
      .. budget.usd(alerts[1].threshold_amount / 100), 1, true), out)
    -- a key that may not read them: said so, and the budgets are still checked
    srv:faults { { status = 403, error_message = "missing scope: api.organization.read" } }
    local denied, code = run_json { "--budget", "1e9", "--at", tostring(NOW), "--prices", prices_file }
    assert.are.equal(0, code)
    assert.are.equal(cjson.null, denied.organization.spend_alerts)
    assert.are.equal(limit.threshold_amount / 100, denied.organization.spend_limit.amount)
    assert.truthy(denied.organization.error:find("missing scope: api.organization.read", 1, true))
    assert.are.equal("under", denied.lines[1].status)
  end)

  it("a failed request: exit 1, one line naming it, nothing on stdout", function()
    -- (the spend alerts and limit, asked first, fail too: said in the output, which is not written)
    srv:faults { { status = 400, error_message = "costs are down for maintenance", times = 3 } }
    local out, err, code = run { "--budget", "5", "--at", tostring(NOW) }
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.truthy(err:find("costs are down for maintenance", 1, true), err)
    local _, lines = err:gsub("\n", "")
    assert.are.equal(1, lines)
  end)

  it("--help names the options and exit 4; the main help lists the command and exit 4", function()
    local out, _, code = run { "--help" }
    assert.are.equal(0, code)
    for _, word in ipairs { "--budget USD", "--scope", "--period", "--offset", "--threshold", "--budgets FILE",
      "--format", "4 a line is at risk" } do
      assert.truthy(out:find(word, 1, true), word)
    end
    local main = util.capture(util.LUA .. " bin/openai-usage --help")
    assert.truthy(main:match "\ncommands: [^\n]*check", main)
    assert.truthy(main:find("4  check: a budget is over", 1, true), main)
  end)

  it("budget.evaluate is the library's: the same lines through a client, the period's figures walked once", function()
    local budgets = assert(budget.check { { amount = 100, scope = "project_id" }, { amount = 1000 } })
    local prices = assert(cost.load(prices_file))
    local result = budget.evaluate(client, budgets, { at = NOW, prices = prices })
    assert.are.equal(5, #result.lines)
    -- one Costs walk and one images walk serve both budgets of the month, and one of the weeks before
    local paths = {}
    for _, r in ipairs(srv:requests()) do
      paths[#paths + 1] = r.path
    end
    assert.are.same({ "/v1/organization/costs", "/v1/organization/usage/images", "/v1/organization/costs" }, paths)
    local spent = billed(NOV, NOW)
    util.near(spent, result.lines[5].spend, "organization")
    util.near(weekly(NOV, NOV + 30 * DAY, NOW, spent), result.lines[5].forecast, "forecast")
    -- a day (at +02:00) that starts at the time checked: nothing spent, no run-rate yet (null, not 0),
    -- nothing sent
    srv:reset()
    local at = NOW - 7200
    local today = budget.evaluate(client, assert(budget.check { { amount = 1, period = "day", offset = "+02:00" } }),
      { at = at })
    assert.are.same({ 0, "under", "run-rate" }, { today.lines[1].spend, today.lines[1].status,
      today.lines[1].forecast_model })
    assert.is_nil(today.lines[1].forecast)
    assert.are.same({}, srv:requests())
    local json = run_json { "--budget", "1", "--period", "day", "--offset", "+02:00", "--at", tostring(at) }
    assert.are.equal(cjson.null, json.lines[1].forecast)
    -- the same in UTC: the weekly pattern forecasts the day ahead from the weeks before
    local utc = run_json { "--budget", "1", "--period", "day", "--at", tostring(NOW) }.lines[1]
    assert.are.equal("weekly", utc.forecast_model)
    util.near(weekly(NOW, NOW + DAY, NOW, 0), utc.forecast, "a day ahead")
  end)
end)
