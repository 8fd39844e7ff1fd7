-- The period-end forecast: analysis.forecast on a series worked out by
-- hand, then --forecast on reports against the stand-in (whose synthetic
-- organization has quiet weekends, 0.35 of a weekday's requests an hour: the
-- projection must follow it), in table, JSON and CSV, and the HTML report's chart with the
-- projection dashed over its band, seen in a headless Chromium screenshot.
local analysis = require "openai_usage.analysis"
local time = require "openai_usage.time"
local standin = require "spec.support.standin"
local commands = require "spec.support.commands"
local browser = require "spec.support.browser"
local util = require "spec.support.util"
local cjson = require "cjson"

local DAY = 86400
local NOW = 1732406400 -- 2024-11-24T00:00:00Z, a Sunday: the stand-in's now

describe("analysis.forecast", function()
  -- 2024-01-01 was a Monday. Sixteen complete days, Monday 1 to Tuesday 16:
  --   week 1: 10 10 10 10 10 4 4   week 2: 12 8 10 10 10 4 4   Mon 11, Tue 9
  -- today is Wednesday 17, the period the week of Monday 15 to Monday 22.
  -- Two whole weeks before today (W = 2): days 3..16. Weekday means:
  --   Mon (12, 11) 11.5, Tue (8, 9) 8.5, Wed..Fri 10, Sat 4, Sun 4.
  -- Residuals: Mon +-0.5, Tue -+0.5, the rest 0: sum of squares 1, over
  -- 7W - 7 = 7 degrees of freedom: sigma^2 = 1/7.
  -- So far (Mon 15, Tue 16): 11 + 9 = 20. Ahead, Wed..Sun: 10+10+10+4+4 = 38.
  -- Projected: 58. Variance of the 5 days ahead, one of each weekday:
  --   sigma^2 (h + sum c^2 / W) = (1/7)(5 + 5/2) = 7.5/7 = 1.0714286,
  --   root 1.0350983, times 1.96 = 2.0287927: low 55.9712073, high 60.0287927.
  -- One day's band: 1.96 * sqrt(1/7) * sqrt(1 + 1/2) = 0.9073037.
  local monday = time.days_from_civil(2024, 1, 1) * DAY
  local values = { 10, 10, 10, 10, 10, 4, 4, 12, 8, 10, 10, 10, 4, 4, 11, 9 }
  local series = { start = monday, values = values }
  local today = monday + 16 * DAY

  it("projects the period's end from the weekday means, with the interval worked out by hand", function()
    local fc = assert(analysis.forecast(series, { today = today, period_start = monday + 14 * DAY,
      period_end = monday + 21 * DAY, weeks = 2 }))
    util.near(20, fc.to_date, "so far")
    util.near(58, fc.projected, "projected")
    assert.is_true(math.abs(fc.low - 55.9712073) < 1e-6, tostring(fc.low))
    assert.is_true(math.abs(fc.high - 60.0287927) < 1e-6, tostring(fc.high))
    assert.is_true(math.abs(fc.sigma - math.sqrt(1 / 7)) < 1e-12)
    assert.equal(5, #fc.days)
    local expected = { 10, 10, 10, 4, 4 }
    for i, d in ipairs(fc.days) do
      assert.equal(today + (i - 1) * DAY, d.start_time)
      util.near(expected[i], d.expected, "day " .. i)
      assert.is_true(math.abs(d.high - expected[i] - 0.9073037) < 1e-6)
    end
    -- the weekly pattern as factors of the level, 116/14... of days 3..16: 116 / 14
    util.near(116 / 14, fc.level, "level")
    util.near(4 / (116 / 14), fc.factors[5], "Saturday's factor")
  end)

  it("never puts the low end under what the period has already seen", function()
    -- a noisy history: the band is wider than what is left to come
    local noisy = { start = monday, values = { 0, 40, 0, 40, 0, 40, 0, 40, 0, 40, 0, 40, 0, 40 } }
    local fc = assert(analysis.forecast(noisy, { today = monday + 14 * DAY, period_start = monday,
      period_end = monday + 15 * DAY, weeks = 2 }))
    util.near(280, fc.to_date, "so far")
    assert.is_true(fc.low >= fc.to_date)
    assert.is_true(fc.high > fc.projected)
  end)

  it("refuses a history shorter than two weeks, or with an unknown day, instead of guessing", function()
    local short = { start = monday, values = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 } }
    local fc, why = analysis.forecast(short, { today = monday + 10 * DAY, period_start = monday,
      period_end = monday + 14 * DAY })
    assert.is_nil(fc)
    assert.matches("two whole weeks", why)
    local holed = { start = monday, values = { 10, 10, 10, 10, 10, 4, 4, 12, 8, 10, 10, 10, 4, 4 } }
    holed.values[9] = nil
    fc, why = analysis.forecast(holed, { today = monday + 14 * DAY, period_start = monday,
      period_end = monday + 21 * DAY })
    assert.is_nil(fc)
    assert.matches("2024%-01%-09 is unknown", why)
  end)
end)

describe("--forecast against the stand-in", function()
  local srv

  setup(function()
    srv = standin.start { now = NOW }
  end)

  teardown(function()
    srv:stop()
  end)

  -- The organization's images per day, by a plain walk of the library.
  local function images_per_day(start, stop)
    local usage = require "openai_usage"
    local c = assert(usage.new(srv:client_options()))
    local per_day = {}
    for row in c:results("images", { start_time = start, end_time = stop, bucket_width = "1d", limit = 31 }) do
      per_day[row.start_time] = (per_day[row.start_time] or 0) + row.images
    end
    c:close()
    return per_day
  end

  it("follows the stand-in's weekly rhythm: weekends at 0.35 of weekdays", function()
    local out, err, code = commands.run(srv, { "images", "--forecast", "--by-time", "--format", "json" }, NOW)
    assert.equal(0, code, err)
    local rows = cjson.decode(out)
    local days, actual = {}, 0
    for _, row in ipairs(rows) do
      if row.kind == "forecast_total" then
        days[#days + 1] = row
      elseif row.kind == "actual" then
        actual = actual + 1
      end
    end
    assert.is_true(actual > 0)
    -- today (Sunday 24) to the month's end (Saturday 30): 7 days
    assert.equal(7, #days)
    assert.equal(NOW, days[1].start_time)
    local weekday, weekend = {}, {}
    for _, d in ipairs(days) do
      local list = analysis.weekday(d.start_time) >= 5 and weekend or weekday
      list[#list + 1] = d.images
      assert.is_true(d.images_low <= d.images and d.images <= d.images_high)
    end
    assert.equal(2, #weekend)
    local mean = 0
    for _, v in ipairs(weekday) do
      mean = mean + v / #weekday
    end
    -- the stand-in's weekends ask 0.35 of a weekday's requests an hour; its
    -- hourly counts are whole (truncated), which takes small streams' weekends
    -- lower still: in its images the weekend runs at ~0.30 of weekdays
    local per_day = images_per_day(NOW - 28 * DAY, NOW)
    local raw = { [true] = 0, [false] = 0 }
    for t, v in pairs(per_day) do
      raw[analysis.weekday(t) >= 5] = raw[analysis.weekday(t) >= 5] + v
    end
    local raw_ratio = (raw[true] / 8) / (raw[false] / 20)
    assert.is_true(raw_ratio > 0.25 and raw_ratio < 0.38, ("the data's weekend at %.3f"):format(raw_ratio))
    for _, v in ipairs(weekend) do
      local ratio = v / mean
      assert.is_true(math.abs(ratio - raw_ratio) < 0.01, ("weekend at %.3f of weekdays, the data's %.3f"):format(
        ratio, raw_ratio))
    end
    -- and each day is its weekday's mean over the four weeks before today, from the raw data
    for _, d in ipairs(days) do
      local sum = 0
      for w = 1, 4 do
        sum = sum + per_day[d.start_time - 7 * w * DAY]
      end
      util.near(sum / 4, d.images, time.label(d.start_time, DAY))
    end
  end)

  it("adds the month-end line per group and for the whole to table, JSON and CSV", function()
    local out, err, code = commands.run(srv, { "images", "--group-by", "model", "--forecast", "--format", "json" },
      NOW)
    assert.equal(0, code, err)
    local rows = cjson.decode(out)
    local per_day = images_per_day(time.days_from_civil(2024, 11, 1) * DAY, NOW)
    local so_far = 0
    for _, v in pairs(per_day) do
      so_far = so_far + v
    end
    local models, whole = {}, nil
    for _, row in ipairs(rows) do
      if row.kind == "forecast" then
        models[#models + 1] = row
        assert.equal(time.days_from_civil(2024, 11, 1) * DAY, row.start_time)
        assert.equal(time.days_from_civil(2024, 12, 1) * DAY, row.end_time)
      elseif row.kind == "forecast_total" then
        whole = row
      else
        assert.equal("actual", row.kind)
      end
    end
    assert.equal(3, #models)
    assert.equal(so_far, whole.images_to_date)
    local sum = 0
    for _, row in ipairs(models) do
      sum = sum + row.images
    end
    util.near(whole.images, sum, "the groups' projections add up to the whole's")
    assert.is_true(whole.images_low < whole.images and whole.images < whole.images_high)

    local csv = assert((commands.run(srv, { "images", "--group-by", "model", "--forecast", "--format", "csv" },
      NOW)))
    assert.matches("^kind,start_time,end_time,model,images,num_model_requests,images_to_date,images_low,"
      .. "images_high\r\n", csv)
    assert.matches("\r\nforecast_total,2024%-11%-01T00:00:00Z,2024%-12%-01T00:00:00Z,,", csv)

    local table_text = assert((commands.run(srv, { "images", "--group-by", "model", "--forecast" }, NOW)))
    assert.matches("Forecast of images to the month's end %(2024%-11%-30%), 95 %% interval", table_text)
    assert.matches("\n2024%-11%-01%s+2024%-12%-01%s+Total%s+" .. require("openai_usage.text").number(so_far, 0),
      table_text)
  end)

  it("projects the costs endpoint's amount, so far from the amounts billed", function()
    local out, err, code = commands.run(srv, { "costs", "--group-by", "project_id", "--forecast", "--format",
      "json" }, NOW)
    assert.equal(0, code, err)
    local usage = require "openai_usage"
    local c = assert(usage.new(srv:client_options()))
    local billed, per_project = 0, {}
    for row in c:results("costs", { start_time = time.days_from_civil(2024, 11, 1) * DAY, end_time = NOW,
      group_by = { "project_id" }, limit = 31 }) do
      billed = billed + row.amount.value
      per_project[row.project_id] = (per_project[row.project_id] or 0) + row.amount.value
    end
    c:close()
    local projects = 0
    for _, row in ipairs(cjson.decode(out)) do
      if row.kind == "forecast_total" then
        util.near(billed, row.amount_to_date, "the month so far")
        assert.is_true(row.amount > billed and row.amount_low >= billed and row.amount_high > row.amount)
      elseif row.kind == "forecast" then
        projects = projects + 1
        util.near(per_project[row.project_id], row.amount_to_date, row.project_id)
      end
    end
    assert.equal(4, projects)
  end)

  it("refuses --forecast with buckets that are not days, before any request", function()
    local before = #srv:requests()
    local _, err, code = commands.run(srv, { "images", "--forecast", "--bucket", "1h" }, NOW)
    assert.equal(2, code)
    assert.matches("%-%-forecast: projects whole days; use %-%-bucket 1d", err)
    _, err, code = commands.run(srv, { "images", "--forecast-to", "year" }, NOW)
    assert.equal(2, code)
    assert.matches("only with %-%-forecast", err)
    _, err, code = commands.run(srv, { "images", "--forecast", "--forecast-to", "year" }, NOW)
    assert.equal(2, code)
    assert.matches('%-%-forecast%-to: "year" is not one of day, week, month', err)
    _, err, code = commands.run(srv, { "vector_stores", "--forecast" }, NOW)
    assert.equal(2, code)
    assert.matches("usage_bytes is a level", err)
    _, err, code = commands.run(srv, { "images", "--movers" }, NOW)
    assert.equal(2, code)
    assert.matches("%-%-movers: a table of the HTML report", err)
    assert.equal(before, #srv:requests())
  end)

  it("draws the projection dashed over its band in the HTML report, and shows the movers table", function()
    local dir = util.tmpdir()
    local with, without = dir .. "/with.html", dir .. "/without.html"
    local _, err, code = commands.run(srv, { "images", "--group-by", "model", "--since", "21d", "--forecast",
      "--movers", "--format", "html", "--out", with }, NOW)
    assert.equal(0, code, err)
    _, err, code = commands.run(srv, { "images", "--group-by", "model", "--since", "21d", "--format", "html",
      "--out", without }, NOW)
    assert.equal(0, code, err)
    local page = util.read(with)
    assert.matches('<polyline class="projected"[^>]* stroke%-dasharray="6 4"', page)
    assert.matches('<path class="band"', page)
    -- the dashed line (#D55E00) and its band (#D55E00 at 22 % on white: #F6DCC7)
    local shot = browser.pixels(browser.screenshot(with, 1000, 1400, dir), { "#D55E00", "#F6DCC7" }, nil, 6)
    local plain = browser.pixels(browser.screenshot(without, 1000, 1400, dir), { "#D55E00", "#F6DCC7" }, nil, 6)
    assert.is_true(shot.counts.D55E00 > 300, "dashed line pixels: " .. shot.counts.D55E00)
    assert.is_true(shot.counts.F6DCC7 > 300, "band pixels: " .. shot.counts.F6DCC7)
    assert.equal(0, plain.counts.D55E00)
    assert.equal(0, plain.counts.F6DCC7)
    -- the movers table, as Chromium reads the page, holds compare's figures
    local out = assert((commands.run(srv, { "compare", "images", "--by", "model", "--top", "5", "--format", "json" },
      NOW)))
    local movers = cjson.decode(out)
    assert.equal(3, #movers)
    local dom = browser.dom(with, dir)
    assert.matches("Movers: images, the week of 2024%-11%-11 against the week before", dom)
    local text = require "openai_usage.text"
    for _, m in ipairs(movers) do
      assert.matches("<td>" .. m.id .. "</td><td class=\"num\">" .. text.number(m.previous, 0) .. "</td>"
        .. "<td class=\"num\">" .. text.number(m.current, 0) .. "</td>", dom, 1, true)
    end
    util.rm_rf(dir)
  end)
end)
