-- Anomalies: analysis.anomalies on small series (a spike in a quiet
-- window, a window whose MAD is 0, a flat one, a spike that must not make
-- the days after it look low), then `openai-usage anomalies` against the
-- stand-in: nothing over its normal data, and exactly the leaked key's
-- spike (the stand-in's spike setting: one key, one day) when injected.
local analysis = require "openai_usage.analysis"
local time = require "openai_usage.time"
local standin = require "spec.support.standin"
local commands = require "spec.support.commands"
local cjson = require "cjson"

local DAY = 86400
local NOW = 1732406400 -- 2024-11-24T00:00:00Z: the stand-in's now
local MONDAY = time.days_from_civil(2024, 1, 1) * DAY

-- A series of days from MONDAY: weekdays at `weekday`, weekends at `weekend`.
local function weekly(days, weekday, weekend)
  local values = {}
  for i = 1, days do
    values[i] = (i - 1) % 7 >= 5 and weekend or weekday
  end
  return { start = MONDAY, values = values }
end

describe("analysis.anomalies", function()
  it("flags a rise against the median of the same weekdays, scored by the MAD of the window", function()
    local s = weekly(35, 100, 35)
    -- a little noise, so the MAD is not 0: -2 % to +2 %
    for i = 1, 35 do
      s.values[i] = s.values[i] * (1 + ((i * 37) % 11 - 5) / 250)
    end
    s.values[31] = 400 -- Wednesday of week 5
    local flagged = analysis.anomalies(s, { threshold = 3.5 })
    assert.equal(1, #flagged)
    assert.equal(31, flagged[1].index)
    assert.equal(MONDAY + 30 * DAY, flagged[1].start_time)
    assert.equal(400, flagged[1].figure)
    assert.equal("mad", flagged[1].basis)
    assert.is_true(flagged[1].expected >= 98 and flagged[1].expected <= 102)
    assert.is_true(flagged[1].score > 3.5)
  end)

  it("takes the weekly pattern out: a quiet weekend is not a drop, a weekday-sized Saturday is a rise", function()
    local s = weekly(35, 100, 35)
    for i = 1, 35, 4 do
      s.values[i] = s.values[i] * 1.03
    end
    assert.same({}, analysis.anomalies(s, { both = true }))
    s.values[34] = 100 -- Saturday of week 5, a weekday's figure
    local flagged = analysis.anomalies(s, {})
    assert.equal(1, #flagged)
    assert.equal(34, flagged[1].index)
    assert.is_true(math.abs(flagged[1].expected - 35) < 2)
  end)

  it("handles a MAD of 0 by the mean absolute deviation, worked out by hand", function()
    -- 28 days of 10 but the first Monday at 12, then a Monday at 20. Each
    -- window day against the median of the other days of its weekday:
    -- the first Monday 12/10 - 1 = 0.2, the other 27 days 0; the MAD is 0,
    -- the mean absolute deviation 0.2 / 28. The Monday: expected the
    -- median of 12, 10, 10, 10 = 10, residual 20/10 - 1 = 1, score
    -- 1 / (1.2533 * 0.2 / 28) = 28 / 0.25066 = 111.7051...
    local s = weekly(29, 10, 10)
    s.values[1], s.values[29] = 12, 20
    local flagged = analysis.anomalies(s, {})
    assert.equal(1, #flagged)
    assert.equal("meanad", flagged[1].basis)
    assert.equal(10, flagged[1].expected)
    assert.is_true(math.abs(flagged[1].score - 28 / (1.2533 * 0.2)) < 1e-9, tostring(flagged[1].score))
  end)

  it("gives no score, dividing by nothing, when the window is flat, and flags a change from it", function()
    local s = weekly(30, 0, 0)
    assert.same({}, analysis.anomalies(s, { both = true }))
    s.values[30] = 5 -- a key unused for four weeks starts spending
    local flagged = analysis.anomalies(s, {})
    assert.equal(1, #flagged)
    assert.equal("flat", flagged[1].basis)
    assert.is_nil(flagged[1].score)
    assert.equal(0, flagged[1].expected)
  end)

  it("is robust to the spike itself: the days after it are not drops", function()
    local s = weekly(70, 100, 35)
    for i = 1, 70, 3 do
      s.values[i] = s.values[i] * 1.04
    end
    s.values[40] = 2000
    local flagged = analysis.anomalies(s, { both = true })
    assert.equal(1, #flagged)
    assert.equal(40, flagged[1].index)
  end)

  it("skips days whose window has an unknown figure, and unknown days", function()
    local s = weekly(40, 100, 35)
    s.values[5] = nil
    s.values[40] = 1000
    s.values[31] = nil
    local flagged = analysis.anomalies(s, {})
    assert.same({}, flagged) -- day 40's window (12..39) holds day 31, unknown
  end)
end)

describe("openai-usage anomalies against the stand-in", function()
  local srv, key, project
  local spike_day = NOW - 20 * DAY -- Monday 2024-11-04

  setup(function()
    srv = standin.start { now = NOW }
    local usage = require "openai_usage"
    local c = assert(usage.new(srv:client_options()))
    local keys = {}
    for row in c:results("costs", { start_time = NOW - 7 * DAY, end_time = NOW, group_by = { "api_key_id",
      "project_id" }, limit = 7 }) do
      if row.api_key_id then
        keys[row.api_key_id] = row.project_id
      end
    end
    c:close()
    local names = {}
    for k in pairs(keys) do
      names[#names + 1] = k
    end
    table.sort(names)
    key = names[3]
    project = keys[key]
  end)

  teardown(function()
    srv:stop()
  end)

  local function anomalies(args)
    local argv = { "anomalies" }
    for _, a in ipairs(args) do
      argv[#argv + 1] = a
    end
    local out, err, code = commands.run(srv, argv, NOW)
    assert.equal(0, code, err)
    return out
  end

  -- (completions has a day of a small key 27 % up scoring 3.7 in the
  -- stand-in's noise, on 2024-11-13: flagged by the rule as it stands)
  it("finds nothing in the stand-in's normal data, on costs and on images, rises or drops", function()
    assert.same({}, cjson.decode(anomalies { "--format", "json", "--both" }))
    assert.same({}, cjson.decode(anomalies { "images", "--format", "json", "--both" }))
  end)

  it("finds exactly the leaked key's spike, and its project on that day", function()
    srv:settings { spike = { api_key_id = key, day = spike_day, factor = 6 } }
    finally(function()
      srv:reset()
    end)
    local rows = cjson.decode(anomalies { "--format", "json", "--both" })
    assert.equal(2, #rows, cjson.encode(rows))
    local by_scope = {}
    for _, row in ipairs(rows) do
      assert.equal(spike_day, row.start_time)
      by_scope[row.scope] = row
    end
    assert.equal(key, by_scope.api_key_id.id)
    assert.equal(project, by_scope.project_id.id)
    -- the key's figure is its cost that day, as the Costs endpoint has it
    local usage = require "openai_usage"
    local c = assert(usage.new(srv:client_options()))
    local billed = 0
    for row in c:results("costs", { start_time = spike_day, end_time = spike_day + DAY, group_by = { "api_key_id" },
      api_key_ids = nil, limit = 1 }) do
      if row.api_key_id == key then
        billed = billed + row.amount.value
      end
    end
    c:close()
    assert.is_true(math.abs(by_scope.api_key_id.amount - billed) < 1e-9 * billed)
    -- six times the normal day, against an expected normal day
    local ratio = by_scope.api_key_id.amount / by_scope.api_key_id.expected
    assert.is_true(ratio > 5 and ratio < 7, tostring(ratio))
    assert.is_true(by_scope.api_key_id.score > 3.5)

    local keys_only = cjson.decode(anomalies { "--format", "json", "--scope", "api_key_id" })
    assert.equal(1, #keys_only)
    assert.equal(key, keys_only[1].id)
    local images = cjson.decode(anomalies { "images", "--format", "json", "--scope", "api_key_id" })
    assert.equal(1, #images)
    assert.equal(key, images[1].id)
    assert.equal(spike_day, images[1].start_time)

    local text = anomalies { "--scope", "api_key_id" }
    assert.matches("\n2024%-11%-04%s+api_key_id%s+" .. key .. "%s", text)
    local csv = anomalies { "--scope", "api_key_id", "--format", "csv" }
    assert.matches("^day,scope,id,amount,expected,score,basis\r\n2024%-11%-04T00:00:00Z,api_key_id," .. key .. ",", csv)
  end)

  it("refuses bad options before any request", function()
    local before = #srv:requests()
    for _, case in ipairs {
      { { "anomalies", "--threshold", "x" }, "%-%-threshold: \"x\" is not a number above 0" },
      { { "anomalies", "--scope", "model" }, "%-%-scope: \"model\" is not one of api_key_id, project_id" },
      { { "anomalies", "vector_stores", "--scope", "api_key_id" }, "is not one of api_key_id, project_id that" },
      { { "anomalies", "imagez" }, "\"imagez\" is not an endpoint" },
      { { "anomalies", "--figure", "tokens" }, "%-%-figure: \"tokens\" is not a figure of costs" },
      { { "anomalies", "--since", "soon" }, "%-%-since: " },
      { { "anomalies", "--format", "svg" }, "%-%-format: \"svg\" is not one of table, md, csv, json, jsonl" },
    } do
      local _, err, code = commands.run(srv, case[1], NOW)
      assert.equal(2, code, err)
      assert.matches(case[2], err)
    end
    assert.equal(before, #srv:requests())
  end)
end)
