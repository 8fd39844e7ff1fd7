--- openai-usage anomalies: the days on which a key or a project used far
-- more than its trailing 28 days would have it (analysis.anomalies: median
-- and MAD against the same weekdays), listed with the day, the scope,
-- the figure, what was expected and the score.
local analysis = require "openai_usage.analysis"
local daily = require "openai_usage.daily"
local text = require "openai_usage.text"
local time = require "openai_usage.time"

local M = {}

local DAY = analysis.DAY
local WINDOW = 28
local SCOPES = { "api_key_id", "project_id" }

local OWN = {
  { name = "--threshold", arg = "Z", key = "threshold", help = "flag a day scoring above Z (default 3.5)" },
  { name = "--scope", arg = "FIELD", key = "scope",
    help = "api_key_id or project_id (default: both, keys first)" },
  { name = "--since", arg = "TIME", key = "since", help = "the first day scored (default 60d)" },
  { name = "--until", arg = "TIME", key = "until", help = "score the whole days before it (default: today, UTC)" },
  { name = "--min-change", arg = "PCT", key = "min_change",
    help = "and only when the day is at least PCT % off what was expected (default 25)" },
  { name = "--both", key = "both", help = "flag drops too (default: rises only)" },
}

local USAGE = "openai-usage anomalies [ENDPOINT] [--threshold 3.5] [--scope api_key_id|project_id] [--since 60d]"
local WHAT = "Scores each complete UTC day of each key and project against its trailing 28 days (median and\n"
  .. "MAD, each day against the same weekdays) and lists the days above the threshold."

-- The job's options checked: threshold, scopes, the days scored.
local function check(job, now)
  local threshold = tonumber(job.threshold or "3.5")
  if not threshold or threshold <= 0 or threshold ~= threshold then
    return daily.fail(('--threshold: "%s" is not a number above 0'):format(tostring(job.threshold)))
  end
  job.threshold = threshold
  local min_change = tonumber(job.min_change or "25")
  if not min_change or min_change < 0 or min_change ~= min_change then
    return daily.fail(('--min-change: "%s" is not a percentage, 0 or more'):format(tostring(job.min_change)))
  end
  job.min_change = min_change / 100
  local fields = daily.group_fields(job.endpoint)
  job.scopes = {}
  for _, f in ipairs(job.scope and { job.scope } or SCOPES) do
    if daily.has(SCOPES, f) and daily.has(fields, f) then
      job.scopes[#job.scopes + 1] = f
    elseif job.scope then
      return daily.fail(('--scope: "%s" is not one of %s that %s groups by'):format(f,
        table.concat(SCOPES, ", "), job.endpoint))
    end
  end
  if #job.scopes == 0 then
    return daily.fail(("%s groups by none of %s"):format(job.endpoint, table.concat(SCOPES, ", ")))
  end
  local since, err = daily.time_option("--since", job.since or "60d", now)
  if not since then
    return nil, err
  end
  local stop = analysis.day_of(now)
  if job["until"] then
    stop, err = daily.time_option("--until", job["until"], now)
    if not stop then
      return nil, err
    end
    stop = analysis.day_of(stop) -- the whole days before it
  end
  job.first, job.stop = analysis.day_of(since), math.min(stop, analysis.day_of(now))
  if job.stop <= job.first then
    return daily.fail "--until must be at least a day after --since"
  end
  return job
end

-- The flagged days of every scope, as report rows.
local function find(client, job)
  local start = job.first - WINDOW * DAY
  local pages = daily.pages(client, job.endpoint, job.scopes, start, job.stop)
  local rows = {}
  for _, field in ipairs(job.scopes) do
    local series = analysis.daily(daily.each(pages), { field }, job.figure, start, job.stop)
    for _, scope in ipairs(series.scopes) do
      local flagged = analysis.anomalies({ start = start, values = scope.values },
        { window = WINDOW, threshold = job.threshold, min_change = job.min_change, both = job.both })
      local id = scope.fields[field]
      -- costs without a key (storage, sessions) are no key's: their project scores them
      if id == nil and field == "api_key_id" then
        flagged = {}
      end
      for _, a in ipairs(flagged) do
        rows[#rows + 1] = {
          start_time = a.start_time, scope = field, id = id == nil and text.NONE or id, [job.figure] = a.figure,
          expected = a.expected, score = a.score, basis = a.basis,
        }
      end
    end
  end
  table.sort(rows, function(a, b)
    if a.start_time ~= b.start_time then
      return a.start_time < b.start_time
    end
    if a.scope ~= b.scope then
      return a.scope < b.scope
    end
    return a.id < b.id
  end)
  return rows
end

function M.run(argv, options, cli)
  local stderr = options.stderr or io.stderr
  local now = options.now or os.time()
  local job, err = daily.parse(argv, OWN)
  if job and not job.help then
    job, err = check(job, now)
  end
  if not job then
    stderr:write("openai-usage anomalies: ", tostring(err.message), "\n")
    return cli.EXIT.usage
  end
  if job.help then
    return daily.output(cli, job, options, daily.help(USAGE, WHAT, OWN))
  end
  local rows, code = daily.with_client(cli, job, options, function(client)
    return find(client, job)
  end)
  if not rows then
    return code
  end
  local title = ("Anomalies: %s %s per day, %s to %s, above %s (median and MAD of the %d days before)"):format(
    job.endpoint, job.figure, time.label(job.first, DAY), time.label(job.stop - DAY, DAY),
    text.number(job.threshold, 1), WINDOW)
  local columns = { "start_time", "scope", "id", job.figure, "expected", "score", "basis" }
  return daily.output(cli, job, options, daily.render(rows, job, title, columns, { start_time = "day" }))
end

return M
