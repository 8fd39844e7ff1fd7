-- openai_usage.report: every step against answers worked out by hand, on
-- rows of images, completions and costs.
local report = require "openai_usage.report"
local format = require "openai_usage.format"
local time = require "openai_usage.time"
local txt = require "openai_usage.text"
local util = require "spec.support.util"

local D = 86400
local T0 = 1730419200 -- 2024-11-01T00:00:00Z

local function images()
  return {
    { model = "gpt-image-1", size = "1024x1024", images = 10, num_model_requests = 4,
      start_time = T0, end_time = T0 + D },
    { model = "dall-e-3", size = "1024x1792", images = 3, num_model_requests = 3, start_time = T0, end_time = T0 + D },
    { model = "gpt-image-1", size = "1024x1536", images = 5, num_model_requests = 5,
      start_time = T0 + D, end_time = T0 + 2 * D },
    { size = "256x256", images = 2, num_model_requests = 1, start_time = T0 + 2 * D, end_time = T0 + 3 * D },
    { model = "gpt-image-1", size = "1024x1024", images = 1, num_model_requests = 1,
      start_time = T0 + 2 * D, end_time = T0 + 3 * D },
  }
end

local function by_key(rows, field)
  local out = {}
  for _, row in ipairs(rows) do
    out[row[field]] = row
  end
  return out
end

describe("report steps", function()
  it("group sums numeric fields per group, in first-seen order, with (none) for nil", function()
    local g = report.group(images(), "model")
    assert.are.same({ "model", "images", "num_model_requests" }, g.columns)
    assert.are.same({
      { model = "gpt-image-1", images = 16, num_model_requests = 10 },
      { model = "dall-e-3", images = 3, num_model_requests = 3 },
      { model = "(none)", images = 2, num_model_requests = 1 },
    }, { g[1], g[2], g[3] })
    assert.are.equal(3, #g)
  end)

  it("group keeps integers integers, takes a chosen none label and counts rows", function()
    local g = report.group(images(), { "model", "size" }, { "images" }, { none = "unknown", count = "rows" })
    local rows = by_key(g, "size")
    assert.are.equal("unknown", rows["256x256"].model)
    assert.are.equal(11, rows["1024x1024"].images)
    assert.are.equal(2, rows["1024x1024"].rows)
    if math.type then
      assert.are.equal("integer", math.type(rows["1024x1024"].images))
    end
    assert.are.same({ "model", "size", "images", "rows" }, g.columns)
  end)

  it("group keeps a level (vector store bytes) at its latest bucket instead of adding days", function()
    local rows = {
      { project_id = "a", usage_bytes = 100, start_time = T0 },
      { project_id = "a", usage_bytes = 150, start_time = T0 + D },
      { project_id = "b", usage_bytes = 7, start_time = T0 + D },
      { project_id = "b", usage_bytes = 5, start_time = T0 },
    }
    local by_project = by_key(report.group(rows, "project_id"), "project_id")
    assert.are.equal(150, by_project.a.usage_bytes)
    assert.are.equal(7, by_project.b.usage_bytes)
    local all = report.group(rows, {})
    assert.are.equal(157, all[1].usage_bytes) -- both projects' latest day
    local per_day = report.group(rows, "start_time")
    assert.are.same({ 105, 157 }, { per_day[1].usage_bytes, per_day[2].usage_bytes })
    local summed = report.group(rows, "project_id", nil, { levels = {} })
    assert.are.equal(250, by_key(summed, "project_id").a.usage_bytes)
  end)

  it("folds of group, totals and series, fed a row at a time, give what the list steps give", function()
    local levels = {
      { project_id = "a", usage_bytes = 100, start_time = T0 },
      { project_id = "a", usage_bytes = 150, start_time = T0 + D },
      { project_id = "b", usage_bytes = 7, start_time = T0 + D },
      { project_id = "b", usage_bytes = 5, start_time = T0 },
    }
    local costs = report.rows {
      { amount = { value = 0.06, currency = "usd" }, line_item = "Image models", project_id = "p", start_time = T0 },
      { amount = { value = 0.5, currency = "usd" }, line_item = "Image models", start_time = T0 + D },
    }
    local cases = {
      { images(), "model" }, { images(), "model,size", { "images" }, { none = "unknown", count = "rows" } },
      { images(), {} }, { images(), "start_time" }, { levels, "project_id" }, { levels, {} },
      { levels, "start_time" }, { levels, "project_id", nil, { levels = {} } }, { costs, "project_id", { "amount" } },
      { {}, "model" },
    }
    local function fed(fold, rows)
      for _, row in ipairs(rows) do
        fold:add(row)
      end
      return fold
    end
    for i, case in ipairs(cases) do
      local rows, by, sums, opts = case[1], case[2], case[3], case[4]
      assert.are.same(report.group(rows, by, sums, opts), fed(report.group_fold(by, opts), rows):result(sums), i)
      assert.are.same(report.totals(rows, sums), fed(report.totals_fold(), rows):result(sums), i)
      for _, width in ipairs { "1d", 3600 } do
        local spec = { start = T0, stop = T0 + 3 * D, width = width, by = by, value = sums }
        assert.are.same(report.series(rows, spec), fed(report.series_fold(spec), rows):result(), i)
      end
    end
    assert.has_error(function()
      report.series_fold { width = "1d" } -- no range: a fold cannot wait for the last row
    end)
  end)

  it("group with no fields is the grand total", function()
    local g = report.group(images(), {})
    assert.are.same({ { images = 21, num_model_requests = 14 } }, { g[1] })
    assert.are.same(report.totals(images())[1], g[1])
  end)

  it("top keeps the n largest and sums the rest into (other)", function()
    local g = report.group(images(), "model,size")
    local t = report.top(g, 2, "images")
    assert.are.equal(3, #t)
    assert.are.equal(11, t[1].images)
    assert.are.equal(5, t[2].images)
    assert.are.same({ model = "(other)", size = "(other)", images = 5, num_model_requests = 4 }, t[3])
    local all = report.top(g, 10, "images")
    assert.are.equal(#g, #all) -- nothing left over: no other row
    local named = report.top(g, 1, "images", { other = "rest" })
    assert.are.equal("rest", named[2].model)
  end)

  it("share gives percent of the total, and 0 for a zero total", function()
    local s = report.share(report.group(images(), "model"), "images")
    local rows = by_key(s, "model")
    assert.are.equal(100 * 16 / 21, rows["gpt-image-1"].images_share)
    assert.are.equal(100 * 2 / 21, rows["(none)"].images_share)
    local zero = report.share({ { model = "a", images = 0 } }, "images", "pct")
    assert.are.equal(0, zero[1].pct)
  end)

  it("sort is stable, takes -desc and several keys, and puts nil last", function()
    local rows = report.sort(images(), "-images")
    assert.are.same({ 10, 5, 3, 2, 1 },
      { rows[1].images, rows[2].images, rows[3].images, rows[4].images, rows[5].images })
    local by_model = report.sort(images(), "model,-images")
    assert.are.same({ "dall-e-3", "gpt-image-1", "gpt-image-1", "gpt-image-1" },
      { by_model[1].model, by_model[2].model, by_model[3].model, by_model[4].model })
    assert.are.same({ 10, 5, 1 }, { by_model[2].images, by_model[3].images, by_model[4].images })
    assert.is_nil(by_model[5].model)
    local stable = report.sort({ { k = 1, n = "a" }, { k = 1, n = "b" }, { k = 0, n = "c" } }, "k")
    assert.are.same({ "c", "a", "b" }, { stable[1].n, stable[2].n, stable[3].n })
  end)

  it("filter takes a predicate or field = value / { values }", function()
    assert.are.equal(3, #report.filter(images(), { model = "gpt-image-1" }))
    assert.are.equal(4, #report.filter(images(), { model = { "gpt-image-1", "dall-e-3" } }))
    assert.are.equal(2, #report.filter(images(), function(r)
      return r.images >= 5
    end))
    assert.has_error(function()
      report.filter(images(), 42)
    end)
  end)

  it("pivot makes time x field with zeros for empty cells, columns by total", function()
    local p = report.pivot(images(), { column = "model", value = "images" })
    assert.are.same({ "start_time", "gpt-image-1", "dall-e-3", "(none)" }, p.columns)
    assert.are.same({ start_time = T0, ["gpt-image-1"] = 10, ["dall-e-3"] = 3, ["(none)"] = 0 }, p[1])
    assert.are.same({ start_time = T0 + D, ["gpt-image-1"] = 5, ["dall-e-3"] = 0, ["(none)"] = 0 }, p[2])
    assert.are.same({ start_time = T0 + 2 * D, ["gpt-image-1"] = 1, ["dall-e-3"] = 0, ["(none)"] = 2 }, p[3])
  end)

  it("series fills every bucket of the range with zeros per group", function()
    local s = report.series(images(), { start = T0, stop = T0 + 4 * D, width = "1d", by = "model", value = "images" })
    assert.are.equal(4 * 3, #s) -- 4 days x 3 groups
    local day3 = report.filter(s, { start_time = T0 + 3 * D })
    for _, row in ipairs(day3) do
      assert.are.equal(0, row.images)
      assert.are.equal(T0 + 4 * D, row.end_time)
    end
    local g1 = report.filter(s, { model = "gpt-image-1" })
    assert.are.same({ 10, 5, 1, 0 }, { g1[1].images, g1[2].images, g1[3].images, g1[4].images })
  end)

  it("series of hourly buckets out of daily rows counts each row once, and drops rows outside", function()
    local s = report.series(images(), { start = T0 + D, stop = T0 + D + 3 * 3600, width = 3600, value = "images" })
    assert.are.same({ 5, 0, 0 }, { s[1].images, s[2].images, s[3].images })
  end)

  it("rebucket sums minutes into hours and hours into UTC days", function()
    local minutes = {}
    for i = 0, 179 do -- three hours of one-minute buckets, 1 image each
      minutes[#minutes + 1] = { model = "m", images = 1,
        start_time = T0 + 23 * 3600 + i * 60, end_time = T0 + 23 * 3600 + (i + 1) * 60 }
    end
    local hours = report.rebucket(minutes, "1h")
    assert.are.equal(3, #hours)
    for i, h in ipairs(hours) do
      assert.are.equal(60, h.images)
      assert.are.equal(T0 + (22 + i) * 3600, h.start_time)
      assert.are.equal(h.start_time + 3600, h.end_time)
    end
    local days = report.rebucket(hours, "1d")
    assert.are.same({ T0, T0 + D }, { days[1].start_time, days[2].start_time })
    assert.are.same({ 60, 120 }, { days[1].images, days[2].images })
  end)

  it("rebucket on local days of a fixed offset", function()
    -- 23:00Z on Nov 1 is 00:00 on Nov 2 at UTC+1
    local rows = { { images = 7, start_time = T0 + 23 * 3600, end_time = T0 + D } }
    local utc = report.rebucket(rows, "1d")
    local plus1 = report.rebucket(rows, "1d", { offset = 3600 })
    assert.are.equal(T0, utc[1].start_time)
    assert.are.equal(T0 + D - 3600, plus1[1].start_time)
    assert.are.equal("2024-11-02", time.label(plus1[1].start_time + 3600))
    assert.has_error(function()
      report.rebucket({ { images = 1, start_time = T0, end_time = T0 + D } }, "1h") -- a day cannot be split
    end)
  end)

  it("works on completions rows and on costs rows (the amount is lifted)", function()
    local completions = report.rows {
      { object = "organization.usage.completions.result", input_tokens = 100, output_tokens = 20,
        input_cached_tokens = 0, num_model_requests = 2, model = "gpt-4o" },
      { object = "organization.usage.completions.result", input_tokens = 50, output_tokens = 5,
        input_cached_tokens = 10, num_model_requests = 1, model = "gpt-4o" },
    }
    local g = report.group(completions, "model")
    assert.are.same({ model = "gpt-4o", input_tokens = 150, output_tokens = 25, input_cached_tokens = 10,
      num_model_requests = 3 }, g[1])
    local costs = report.rows {
      { object = "organization.costs.result", amount = { value = 0.06, currency = "usd" },
        line_item = "Image models", project_id = "proj_a" },
      { object = "organization.costs.result", amount = { value = 0.5, currency = "usd" },
        line_item = "Image models", project_id = "proj_b" },
      { object = "organization.costs.result", amount = { value = 0.25, currency = "usd" },
        line_item = "input_tokens", project_id = "proj_a" },
    }
    assert.are.equal("usd", costs[1].currency)
    local by_project = by_key(report.group(costs, "project_id", { "amount" }), "project_id")
    assert.are.equal(0.06 + 0.25, by_project.proj_a.amount)
    assert.are.equal(0.5, by_project.proj_b.amount)
  end)

  it("rows() collects an iterator", function()
    local list = images()
    local i = 0
    local rows = report.rows(function()
      i = i + 1
      return list[i]
    end)
    assert.are.equal(5, #rows)
  end)

  it("refuses bad arguments with a message naming the step", function()
    local ok, err = pcall(report.top, images(), -1, "images")
    assert.is_false(ok)
    assert.matches("top: n must be", tostring(err))
    ok, err = pcall(report.series, images(), { width = "2x" })
    assert.is_false(ok)
    assert.matches("series: width", tostring(err))
    err = select(2, pcall(report.pivot, images(), {}))
    assert.matches("pivot: give spec.column", tostring(err))
    err = select(2, pcall(report.rebucket, images(), "1d", { offset = 90000 }))
    assert.matches("offset", tostring(err))
  end)

  it("raises one error value from steps, formats and charts: the core's fields and its one line", function()
    local chart = require "openai_usage.chart"
    local core_error = require("openai_usage").error
    local raised = {}
    for _, call in ipairs {
      { report.top, images(), -1, "images" },
      { report.series, images(), { width = "2x" } },
      { format.render, images(), "xlsx" },
      { chart.bars, images(), {} },
      { chart.stacked, images(), { value = "images", height = 5 } },
    } do
      local ok, err = pcall((unpack or table.unpack)(call))
      assert.is_false(ok)
      assert.are.equal("invalid_argument", err.kind)
      assert.are.equal("string", type(err.message))
      -- the same text the C core gives an error of the same fields
      assert.are.equal(tostring(core_error { kind = err.kind, message = err.message }), tostring(err))
      assert.are.equal("openai_usage: invalid_argument: " .. err.message, tostring(err))
      raised[#raised + 1] = getmetatable(err)
    end
    for i = 2, #raised do
      assert.are.equal(raised[1], raised[i])
    end
    local errors = require "openai_usage.errors"
    local fields = {
      kind = "http", status = 429, code = "rate_limit", request_id = "req_1",
      message = "slow\r\ndown \27[31m \194\155 \255 \195\169",
    }
    local copy = {}
    for k, v in pairs(fields) do
      copy[k] = v
    end
    assert.are.equal(tostring(core_error(copy)), tostring(errors.new(fields)))
    assert.are.equal("openai_usage: http 429 (rate_limit): slow\\x0d\\x0adown \\x1b[31m \\u009b \\xff \195\169"
      .. " [request_id req_1]", tostring(errors.new(fields)))
    -- one error value: the C core's errors take errors.lua's metatable, so
    -- there is one __tostring, and usage.printable is text.printable
    assert.are.equal(errors.metatable, getmetatable(core_error { kind = "x", message = "y" }))
    assert.are.equal(errors.metatable, getmetatable(select(2, require("openai_usage").new { api_key = 5 })))
    assert.are.equal(txt.printable, require("openai_usage").printable)
    local printable, seed = require("openai_usage").printable, 7
    for _ = 1, 300 do
      local bytes = {}
      for i = 1, 12 do
        seed = (seed * 1103515245 + 12345) % 2147483648
        bytes[i] = string.char(seed % 256)
      end
      local s = table.concat(bytes) .. "\226\130\172\240\159\152\128\237\160\128\194\133"
      assert.are.equal(printable(s), txt.printable(s))
    end
    -- a number as the message, a float status, no kind: as the core prints them
    for _, odd in ipairs { { message = 5, status = 500.0 }, { message = {}, status = 1.5 } } do
      local c = {}
      for k, v in pairs(odd) do
        c[k] = v
      end
      c.kind, odd.kind = "x", "x"
      assert.are.equal(tostring(core_error(c)), tostring(errors.new(odd)))
    end
  end)
end)

describe("report times", function()
  it("reads Unix seconds, dates, UTC date-times and relative times", function()
    assert.are.equal(1730419200, report.time(1730419200))
    assert.are.equal(1730419200, report.time "1730419200")
    assert.are.equal(1730419200, report.time "2024-11-01")
    assert.are.equal(1730419200 + 12 * 3600, report.time "2024-11-01T12:00:00Z")
    assert.are.equal(1730419200 + 12 * 3600 + 30 * 60, report.time "2024-11-01T12:30Z")
    assert.are.equal(1000000 - 90 * 60, report.time("90m", 1000000))
    assert.are.equal(1000000 - 24 * 3600, report.time("24h", 1000000))
    assert.are.equal(1000000 - 7 * 86400, report.time("7d", 1000000))
    assert.are.equal(951782400, report.time "2000-02-29") -- a leap day
    assert.are.equal(0, report.time "1970-01-01T00:00:00Z")
  end)

  it("refuses what is not a UTC time, saying what is accepted", function()
    for _, bad in ipairs { "2024-13-01", "2023-02-29", "2024-11-01T25:00Z", "2024-11-01T12:00+02:00",
      "yesterday", "7y", -1, 1.5, true } do
      local t, err = report.time(bad)
      assert.is_nil(t, tostring(bad))
      assert.is_string(err)
    end
    local _, err = report.time "tomorrow"
    assert.matches("2024%-11%-01", err)
    assert.matches("7d", err)
  end)

  it("agrees with os.date in UTC over 400 years of first days of months", function()
    for y = 1970, 2370, 7 do
      for m = 1, 12 do
        local t = time.days_from_civil(y, m, 1) * 86400
        assert.are.equal(("%04d-%02d-01T00:00:00Z"):format(y, m), time.iso(t))
        if t < 2 ^ 31 then
          assert.are.equal(os.date("!%Y-%m-%dT%H:%M:%SZ", t), time.iso(t))
        end
      end
    end
  end)
end)

describe("report output", function()
  local rows = report.group(images(), "model")

  it("table: aligned, numbers right-aligned with thousands separators, a total", function()
    local big = report.rows { { model = "a", images = 1234567 }, { model = "bb", images = 5 } }
    big.columns = { "model", "images" }
    local text = format.render(big, "table", { total = true })
    local lines = {}
    for line in text:gmatch "([^\n]*)\n" do
      lines[#lines + 1] = line
    end
    assert.are.same({
      "model     images",
      "-----  ---------",
      "a      1,234,567",
      "bb             5",
      "-----  ---------",
      "Total  1,234,572",
    }, lines)
  end)

  it("table: widths count terminal cells of UTF-8 (wide CJK, combining marks)", function()
    local r = { { name = "日本", n = 1 }, { name = "e\204\129t\195\169", n = 22 }, { name = "abcd", n = 333 } }
    r.columns = { "name", "n" }
    local out = format.render(r, "table", {})
    local lines = {}
    for line in out:gmatch "([^\n]*)\n" do
      lines[#lines + 1] = line
    end
    -- every line ends its number at the same terminal column
    local w = txt.width(lines[1])
    for i = 3, #lines do
      assert.are.equal(w, txt.width(lines[i]), lines[i])
    end
    assert.are.equal(4, txt.width "日本")
    assert.are.equal(3, txt.width "e\204\129t\195\169" - 0)
  end)

  it("table and md never pass a terminal control from the data: C0, DEL and C1 are spaces", function()
    -- an OSC retitle, a bell, a clear-screen, DEL and the C1 CSI (U+009B), as a hostile server could name a model
    local hostile = "m\27]0;pwned\7\27[2J\127x\194\155" .. "31mred\194\133end"
    local r = { { model = hostile, images = 1 } }
    r.columns = { "model", "images" }
    for _, fmt in ipairs { "table", "md" } do
      local out = format.render(r, fmt, { title = hostile })
      -- (no NUL in a pattern: Lua 5.1 cannot hold one there)
      assert.is_nil(out:find("[\1-\9\11-\31\127]") or out:find("\0", 1, true),
        fmt .. ": a C0 control or DEL was written")
      assert.is_nil(out:find("\194[\128-\159]"), fmt .. ": a C1 control was written")
      assert.truthy(out:find("m ]0;pwned  [2J x 31mred end", 1, true), out)
    end
    -- csv and json keep the data as it is (JSON escapes the C0 controls)
    assert.truthy(format.render(r, "csv", {}):find(hostile, 1, true))
    assert.truthy(format.render(r, "json", {}):find("\\u001b]0;pwned\\u0007", 1, false))
  end)

  it("table and chart read bytes that are not UTF-8 the same way: each is one U+FFFD, one cell", function()
    local chart = require "openai_usage.chart"
    -- a stray continuation byte, a surrogate, an overlong "/", a code past U+10FFFF
    local bad = "ok\133 \237\160\128 \192\175 \244\144\128\128 \195\169"
    local R = "\239\191\189"
    local expected = "ok" .. R .. " " .. R:rep(3) .. " " .. R:rep(2) .. " " .. R:rep(4) .. " \195\169"
    local r = { { name = bad, n = 1 }, { name = "plain", n = 22 } }
    r.columns = { "name", "n" }
    local lines = {}
    for line in format.render(r, "table", {}):gmatch "([^\n]*)\n" do
      lines[#lines + 1] = line
    end
    assert.are.equal(expected, lines[3]:match "^(.-)%s+1$")
    assert.are.equal(2 + 1 + 1 + 3 + 1 + 2 + 1 + 4 + 1 + 1, txt.width(expected))
    -- every line ends its number at the same terminal column, counted over what was written
    for i = 3, #lines do
      assert.are.equal(txt.width(lines[1]), txt.width(lines[i]), lines[i])
    end
    assert.are.equal("| name | n |\n| --- | ---: |\n| " .. expected .. " | 1 |\n| plain | 22 |\n",
      format.render(r, "md", {}))
    -- the chart shows the same characters in its label's tooltip
    local svg = chart.bars(r, { value = "n", label = "name" })
    assert.truthy(svg:find("<title>" .. expected .. ": 1</title>", 1, true), svg)
    -- and cuts them as whole characters
    local cut = txt.truncate(bad, 6)
    assert.are.equal("ok" .. R .. " " .. R .. "\226\128\166", cut)
  end)

  it("json, jsonl and csv read bytes that are not UTF-8 by the same rule: valid JSON, each one U+FFFD", function()
    local cjson = require "cjson"
    local bad = "ok\133 \237\160\128 \192\175 \244\144\128\128 \195\169"
    local R = "\239\191\189"
    local expected = "ok" .. R .. " " .. R:rep(3) .. " " .. R:rep(2) .. " " .. R:rep(4) .. " \195\169"
    local r = { { name = bad, n = 1 }, { name = "plain \195\169", n = 22 } }
    r.columns = { "name", "n" }
    local decoded = cjson.decode(format.render(r, "json", {}))
    assert.are.equal(expected, decoded[1].name)
    assert.are.equal("plain \195\169", decoded[2].name)
    local first = format.render(r, "jsonl", {}):match "^([^\n]*)\n"
    assert.are.equal(expected, cjson.decode(first).name)
    local csv = format.render(r, "csv", {})
    assert.truthy(csv:find(expected, 1, true), csv)
    assert.falsy(csv:find("\133", 1, true))
    -- a key that is not UTF-8 follows the rule too
    local json = require "openai_usage.json"
    assert.are.same({ ["k" .. R] = 1 }, cjson.decode(json.encode { ["k\255"] = 1 }))
  end)

  it("writes a number for people the same way in a table and in a chart, never as -0.00", function()
    local chart = require "openai_usage.chart"
    local r = { { name = "a", usd = -0.001 }, { name = "b", usd = 1234.5 } }
    r.columns = { "name", "usd" }
    local lines = {}
    for line in format.render(r, "table", {}):gmatch "([^\n]*)\n" do
      lines[#lines + 1] = line
    end
    assert.are.equal("a         0.00", lines[3])
    assert.are.equal("b     1,234.50", lines[4])
    local svg = chart.bars(r, { label = "name", value = "usd" })
    for i, row in ipairs(r) do
      local shown = lines[i + 2]:match "(%S+)$"
      assert.are.equal(txt.number(row.usd, 2), shown)
      assert.truthy(svg:find("<title>" .. row.name .. ": " .. shown .. "</title>", 1, true), svg)
    end
  end)

  it("md: a pipe table with numbers aligned right and pipes escaped", function()
    local r = { { model = "a|b", images = 1000 } }
    r.columns = { "model", "images" }
    local text = format.render(r, "md", { total = true })
    assert.are.equal("| model | images |\n| --- | ---: |\n| a\\|b | 1,000 |\n| **Total** | **1,000** |\n", text)
  end)

  it("csv: RFC 4180 quoting, CRLF, exact numbers and ISO times", function()
    local r = {
      { name = 'say "hi", then\nleave', v = 0.1, t = 5, start_time = T0 },
      { name = " padded", v = tonumber "9007199254740993", t = 6, start_time = T0 },
    }
    r.columns = { "start_time", "name", "v", "t" }
    local text = format.render(r, "csv", {})
    local expected_v2 = math.type and "9007199254740993" or "9007199254740992"
    assert.are.equal(
      "start_time,name,v,t\r\n"
        .. '2024-11-01T00:00:00Z,"say ""hi"", then\nleave",0.1,5\r\n'
        .. '2024-11-01T00:00:00Z," padded",' .. expected_v2 .. ",6\r\n",
      text)
  end)

  it("json and jsonl: columns in order, exact integers, null for missing, parsable by lua-cjson", function()
    local cjson = require "cjson"
    local r = { { model = "gpt-image-1", images = 3 }, { images = 4 } }
    r.columns = { "model", "images" }
    local text = format.render(r, "json", {})
    assert.are.equal('[\n{"model":"gpt-image-1","images":3},\n{"model":null,"images":4}\n]\n', text)
    local back = cjson.decode(text)
    assert.are.equal(3, back[1].images)
    local lines = format.render(r, "jsonl", {})
    assert.are.equal('{"model":"gpt-image-1","images":3}\n{"model":null,"images":4}\n', lines)
    assert.are.equal("[]\n", format.render({}, "json", {}))
    assert.are.equal("", format.render({}, "jsonl", {}))
  end)

  it("writes a decimal point whatever C locale a script set", function()
    local dir = os.tmpname()
    os.remove(dir)
    local built =
      util.execute("mkdir -p " .. dir .. " && localedef -i de_DE -f UTF-8 " .. dir .. "/de_DE.UTF-8 2>/dev/null")
    assert.is_truthy(built, "localedef (Debian package locales) built de_DE.UTF-8")
    local lua = util.LUA
    local script = [[
      local name = os.setlocale("de_DE.UTF-8", "numeric")
      local f = require "openai_usage.format"
      local rows = { { amount = 1234.5, share = 12.5 } }
      rows.columns = { "amount", "share" }
      io.write(tostring(name), "|", f.render(rows, "json", {}), "|", f.render(rows, "csv", {}), "|",
        f.render(rows, "table", {}))
    ]]
    local p = io.popen(("LOCPATH=%s %s -e %s 2>&1"):format(dir, lua, "'" .. script:gsub("'", "'\\''") .. "'"))
    local out = p:read "*a"
    p:close()
    util.rm_rf(dir)
    local name, json, csv, text = out:match "^(.-)|(.-)|(.-)|(.*)$"
    assert.are.equal("de_DE.UTF-8", name, out)
    assert.are.equal('[\n{"amount":1234.5,"share":12.5}\n]\n', json)
    assert.are.equal("amount,share\r\n1234.5,12.5\r\n", csv)
    assert.truthy(text:find("1,234.50", 1, true), text)
    assert.truthy(text:find("12.5%", 1, true), text)
  end)

  it("names the formats it knows when given another", function()
    local ok, err = pcall(format.render, rows, "xlsx")
    assert.is_false(ok)
    assert.matches('format "xlsx" is not one of table, md, csv, json, jsonl, svg, html', tostring(err))
  end)
end)
