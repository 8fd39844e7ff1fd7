--- The reports' --forecast: the period-end projection (analysis.forecast)
-- of each group of a report and of the whole, from the 1d pages of the
-- report's endpoint walked through its client (the report's filters and
-- grouping, the four whole weeks before today and the period so far), as
-- rows the report's formats write: a row per group over the period
-- (start_time, end_time: the period; the figure: projected; <figure>_low,
-- <figure>_high: the 95 % interval; <figure>_to_date: what the complete
-- days of the period came to), kind "forecast", and the whole as kind
-- "forecast_total"; with --by-time, a row per day ahead instead.
local analysis = require "openai_usage.analysis"
local daily = require "openai_usage.daily"
local time = require "openai_usage.time"

local M = {}

local DAY = analysis.DAY

-- The query parameters of a report that are filters (the rest the daily
-- walk sets itself).
local NOT_FILTERS = { start_time = true, end_time = true, bucket_width = true, limit = true, group_by = true,
  page = true }

--- The figure a job's forecast projects: the first of --fields, else the
-- endpoint's first.
function M.figure(job, figures)
  return job.fields and job.fields[1] or figures[1]
end

-- A figure as the report shows it on every Lua: an integral float as an
-- integer (5.4 would show 58.0 with decimals where LuaJIT, without
-- integers, shows 58).
local function figure_of(v)
  return math.tointeger and math.tointeger(v) or v
end

local function group_fields(row, by, fields)
  for _, f in ipairs(by) do
    row[f] = fields[f]
  end
  return row
end

-- The rows of one forecast: the period's, or (by_time) the days ahead.
local function rows_of(out, job, figure, fc, fields, kind, period)
  if job.by_time then
    for _, d in ipairs(fc.days) do
      out[#out + 1] = group_fields({
        start_time = d.start_time, end_time = d.end_time, kind = kind, [figure] = figure_of(d.expected),
        [figure .. "_low"] = figure_of(d.low), [figure .. "_high"] = figure_of(d.high),
      }, job.group_by, fields)
    end
    return
  end
  out[#out + 1] = group_fields({
    start_time = period[1], end_time = period[2], kind = kind, [figure] = figure_of(fc.projected),
    [figure .. "_low"] = figure_of(fc.low), [figure .. "_high"] = figure_of(fc.high),
    [figure .. "_to_date"] = figure_of(fc.to_date),
  }, job.group_by, fields)
end

--- The forecast of a job (cli.parse's, with forecast_to), through client.
-- Returns { rows, figure, period = { start, stop }, days (the whole's days
-- ahead, for the chart), notes (scopes that could not be projected) }.
function M.of(client, job, figures)
  local figure = M.figure(job, figures)
  local today = analysis.day_of(job.now)
  local period_start, period_end = analysis.period(job.forecast_to, job.now)
  local start = math.min(period_start, today - analysis.WEEKS * 7 * DAY)
  local filters = {}
  for k, v in pairs(job.params or {}) do
    if not NOT_FILTERS[k] then
      filters[k] = v
    end
  end
  local pages = daily.pages(client, job.endpoint, job.group_by, start, today, filters)
  local series = analysis.daily(daily.each(pages), job.group_by, figure, start, today)
  local opts = { today = today, period_start = period_start, period_end = period_end }
  local period = { period_start, period_end }
  local rows, notes = {}, {}
  if #job.group_by > 0 then
    for _, scope in ipairs(series.scopes) do
      local fc, why = analysis.forecast({ start = start, values = scope.values }, opts)
      if fc then
        rows_of(rows, job, figure, fc, scope.fields, "forecast", period)
      else
        local names = {}
        for i, f in ipairs(job.group_by) do
          names[i] = tostring(scope.fields[f] == nil and "(none)" or scope.fields[f])
        end
        notes[#notes + 1] = table.concat(names, ", ") .. ": " .. why
      end
    end
  end
  local whole, why = analysis.forecast(analysis.sum(series.scopes, start, series.days), opts)
  if whole then
    rows_of(rows, job, figure, whole, {}, "forecast_total", period)
  else
    notes[#notes + 1] = "the whole: " .. why
  end
  return { rows = rows, figure = figure, period = period, whole = whole, notes = notes, to = job.forecast_to }
end

--- A line naming what a forecast is, for the table's title.
function M.title(fc)
  return ("Forecast of %s to the %s's end (%s), 95 %% interval; today and after projected"):format(fc.figure,
    fc.to, time.label(fc.period[2] - DAY, DAY))
end

return M
