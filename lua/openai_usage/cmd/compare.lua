--- openai-usage compare: movers, the last complete period against the
-- one before (a week by default), by project, model and key (line item
-- for costs): the biggest changes first, absolute or relative
-- (analysis.movers). Something new shows as "new", not as an infinite rise.
local analysis = require "openai_usage.analysis"
local daily = require "openai_usage.daily"
local text = require "openai_usage.text"
local time = require "openai_usage.time"

local M = {}

local DAY = analysis.DAY
local DIMENSIONS = { "project_id", "model", "line_item", "api_key_id" }

local OWN = {
  { name = "--period", arg = "P", key = "period",
    help = "day, week (Monday to Monday) or month (default week), UTC" },
  { name = "--by", arg = "F,F", key = "by",
    help = "dimensions, each alone (default: project_id, model, line_item, api_key_id: those it has)" },
  { name = "--top", arg = "N", key = "top", help = "rows per dimension (default 10)" },
  { name = "--relative", key = "relative", help = "biggest relative changes first (default: absolute)" },
}

local USAGE = "openai-usage compare [ENDPOINT] [--period day|week|month] [--by F,F] [--top N] [--relative]"
local WHAT = "Compares the last complete period (UTC) with the one before it, per dimension, biggest change first."

local function check(job, now)
  if require("openai_usage.report").LEVEL[job.figure] then
    return daily.fail(("%s is a level (what is held each day), not a flow; no period adds it up"):format(
      job.figure))
  end
  job.period = job.period or "week"
  if not daily.has(analysis.PERIODS, job.period) then
    return daily.fail(('--period: "%s" is not one of %s'):format(job.period, table.concat(analysis.PERIODS, ", ")))
  end
  local fields = daily.group_fields(job.endpoint)
  job.dimensions = {}
  if job.by then
    for f in job.by:gmatch "[^,%s]+" do
      if not daily.has(fields, f) then
        return daily.fail(('--by: %s does not group by "%s" (it groups by %s)'):format(job.endpoint, f,
          table.concat(fields, ", ")))
      end
      job.dimensions[#job.dimensions + 1] = f
    end
  else
    for _, f in ipairs(DIMENSIONS) do
      if daily.has(fields, f) then
        job.dimensions[#job.dimensions + 1] = f
      end
    end
  end
  if #job.dimensions == 0 then
    return daily.fail "--by: name at least one field"
  end
  local top = tonumber(job.top or "10")
  if not top or top < 1 or top ~= math.floor(top) then
    return daily.fail(('--top: "%s" is not a whole number >= 1'):format(tostring(job.top)))
  end
  job.top = top
  local current_start = analysis.period(job.period, now) -- the period now is in: not complete
  job.cur_start = analysis.period(job.period, current_start - 1)
  job.cur_stop = current_start
  job.prev_start = analysis.period(job.period, job.cur_start - 1)
  return job
end

-- The movers of every dimension, as report rows.
local function compare(client, job)
  local pages = daily.pages(client, job.endpoint, job.dimensions, job.prev_start, job.cur_stop)
  local split = (job.cur_start - job.prev_start) / DAY
  local days = (job.cur_stop - job.prev_start) / DAY
  local rows = {}
  for _, field in ipairs(job.dimensions) do
    local series = analysis.daily(daily.each(pages), { field }, job.figure, job.prev_start, job.cur_stop)
    local previous, current = {}, {}
    for _, scope in ipairs(series.scopes) do
      previous[scope.key] = { fields = scope.fields, value = analysis.total(scope.values, 1, split) }
      current[scope.key] = { fields = scope.fields, value = analysis.total(scope.values, split + 1, days) }
    end
    for n, m in ipairs(analysis.movers(previous, current, { relative = job.relative })) do
      if n > job.top then
        break
      end
      local id = m.fields[field]
      rows[#rows + 1] = {
        dimension = field, id = id == nil and text.NONE or id, previous = m.previous, current = m.current,
        change = m.change, change_pct = m.change_pct, status = m.status,
      }
    end
  end
  return rows
end

local function label(job, start)
  if job.period == "month" then
    return time.label(start, DAY):sub(1, 7)
  end
  return (job.period == "week" and "week of " or "") .. time.label(start, DAY)
end

function M.run(argv, options, cli)
  local stderr = options.stderr or io.stderr
  local now = options.now or os.time()
  local job, err = daily.parse(argv, OWN)
  if job and not job.help then
    job, err = check(job, now)
  end
  if not job then
    stderr:write("openai-usage compare: ", tostring(err.message), "\n")
    return cli.EXIT.usage
  end
  if job.help then
    return daily.output(cli, job, options, daily.help(USAGE, WHAT, OWN))
  end
  local rows, code = daily.with_client(cli, job, options, function(client)
    return compare(client, job)
  end)
  if not rows then
    return code
  end
  local title = ("Movers: %s %s, %s against %s"):format(job.endpoint, job.figure, label(job, job.cur_start),
    label(job, job.prev_start))
  local columns = { "dimension", "id", "previous", "current", "change", "change_pct", "status" }
  return daily.output(cli, job, options, daily.render(rows, job, title, columns))
end

M.check = check
M.compare = compare

return M
