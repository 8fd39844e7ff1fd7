--- Analysis of daily series (pure Lua): period-end forecasts with the
-- weekly pattern, anomalies by median and MAD, and movers period over
-- period. A series is the figure of one scope (a project, a key, a model)
-- per UTC day: { start = Unix seconds of its first day, values = { v1, v2,
-- ... } }, one value a day, oldest first; M.daily builds them from pages.
-- The commands (cmd/anomalies.lua, cmd/compare.lua) and the reports'
-- --forecast (job.lua) walk the pages through a client and call these.
local report = require "openai_usage.report"
local text = require "openai_usage.text"
local time = require "openai_usage.time"
local walk = require "openai_usage.walk"

local M = {}

local DAY = 86400
M.DAY = DAY

local floor, abs, sqrt = math.floor, math.abs, math.sqrt
local sort = table.sort

--- The z of the forecast's interval: 1.96, a two-sided 95 % normal interval.
M.Z = 1.96
--- Weeks of history the forecast and the anomaly window read.
M.WEEKS = 4

--- Monday 0 .. Sunday 6 of the UTC day holding t (1970-01-01 was a Thursday).
function M.weekday(t)
  return (floor(t / DAY) + 3) % 7
end

--- The UTC day holding t, as the Unix seconds of its midnight.
function M.day_of(t)
  return floor(t / DAY) * DAY
end

--- The period holding t: its start and end (exclusive), in Unix seconds.
-- kind: "day", "week" (Monday to Monday, UTC) or "month" (calendar, UTC).
function M.period(kind, t)
  local day = M.day_of(t)
  if kind == "day" then
    return day, day + DAY
  elseif kind == "week" then
    local start = day - M.weekday(t) * DAY
    return start, start + 7 * DAY
  elseif kind == "month" then
    local y, m = time.civil_from_days(floor(t / DAY))
    local ny, nm = y, m + 1
    if nm == 13 then
      ny, nm = y + 1, 1
    end
    return time.days_from_civil(y, m, 1) * DAY, time.days_from_civil(ny, nm, 1) * DAY
  end
  error(('period: "%s" is not one of day, week, month'):format(tostring(kind)), 2)
end

M.PERIODS = { "day", "week", "month" }

-- The key of a row's scope: its values of the fields, "\0"-joined, a nil
-- as text.NONE (so a key-less cost row is a scope of its own, named so).
local function scope_key(row, by)
  local parts = {}
  for i, f in ipairs(by) do
    local v = row[f]
    parts[i] = v == nil and text.NONE or tostring(v)
  end
  return table.concat(parts, "\0")
end

--- Daily series by scope from pages of 1d buckets (client:pages(...), or
-- any iterator of pages): by, the grouping fields; figure, the one summed
-- (costs' amount is read as its value). start, stop: the days wanted (Unix
-- seconds, day-aligned; stop exclusive). A day whose bucket came back with
-- no row for a scope is 0 for it (the API leaves out groups without usage);
-- a day whose bucket never came is nil (unknown), and so is a day where a
-- row lacked the figure. Returns { start, days = count, scopes = { { key,
-- fields = { field = value }, values = { ... } } ... } sorted by key }.
function M.daily(pages, by, figure, start, stop)
  local count = floor((stop - start) / DAY)
  local seen, scopes, list = {}, {}, {}
  local unknown = {}
  for page in pages do
    for _, bucket in ipairs(page.data or {}) do
      local i = floor(((bucket.start_time or 0) - start) / DAY) + 1
      if i >= 1 and i <= count then
        seen[i] = true
      end
    end
    for _, row in ipairs(report.rows(walk.rows(page))) do
      local i = floor(((row.start_time or 0) - start) / DAY) + 1
      if i >= 1 and i <= count then
        local key = scope_key(row, by)
        local scope = scopes[key]
        if not scope then
          local fields = {}
          for _, f in ipairs(by) do
            fields[f] = row[f]
          end
          scope = { key = key, fields = fields, values = {} }
          scopes[key], list[#list + 1] = scope, scope
        end
        local v = row[figure]
        if type(v) ~= "number" then
          unknown[key .. "\0" .. i] = true
        else
          scope.values[i] = (scope.values[i] or 0) + v
        end
      end
    end
  end
  for _, scope in ipairs(list) do
    for i = 1, count do
      if not seen[i] or unknown[scope.key .. "\0" .. i] then
        scope.values[i] = nil
      elseif scope.values[i] == nil then
        scope.values[i] = 0
      end
    end
  end
  sort(list, function(a, b)
    return a.key < b.key
  end)
  return { start = start, days = count, scopes = list }
end

--- The sum of several series of the same days, day by day (nil where any
-- is nil): the organization's series from its scopes'.
function M.sum(series_list, start, count)
  local values = {}
  for i = 1, count do
    local total = 0
    for _, s in ipairs(series_list) do
      local v = s.values[i]
      if v == nil then
        total = nil
        break
      end
      total = total + v
    end
    values[i] = total
  end
  return { start = start, values = values }
end

local function mean(list)
  local s = 0
  for _, v in ipairs(list) do
    s = s + v
  end
  return s / #list
end

--- The projection of a series to a period's end. series: complete days
-- up to the day before opts.today (its last value is that day's).
-- opts: today (Unix seconds, the first day not yet seen: today's partial
-- figures are not counted), period_start, period_end (the period, period_end
-- exclusive), weeks (of history, default M.WEEKS, at least 2), z (default
-- M.Z).
-- The model: the last W whole weeks before today give each weekday its mean
-- (the run-rate with the weekly pattern: level = the mean of all W*7 days,
-- factor of a weekday = its mean / level); a day ahead is expected at its
-- weekday's mean. The residuals (day - its weekday's mean) over those weeks
-- give sigma^2 = sum(r^2) / (7W - 7) (7 means fitted); the total of the h
-- days ahead, c_k of them on weekday k, has the variance
-- sigma^2 * (h + sum(c_k^2) / W) (each day's own error plus the error of its
-- weekday's mean), and the interval is projected -/+ z * its root, the low
-- end never under what the period has already seen.
-- Returns { to_date, projected, low, high, sigma, level, factors, days =
-- { { start_time, expected, low, high } ... ahead } } or nil, message when
-- the history is short or has unknown days.
function M.forecast(series, opts)
  local today = M.day_of(opts.today)
  local weeks = opts.weeks or M.WEEKS
  local z = opts.z or M.Z
  local last = floor((today - series.start) / DAY) -- index of the day before today
  local available = floor(last / 7)
  if available < 2 then
    return nil, ("needs two whole weeks of complete days before %s"):format(time.label(today, DAY))
  end
  weeks = math.min(weeks, available)
  local first = last - 7 * weeks + 1
  local by_weekday = {}
  for k = 0, 6 do
    by_weekday[k] = {}
  end
  local all = {}
  for i = first, last do
    local v = series.values[i]
    if v == nil then
      return nil, ("the figure of %s is unknown"):format(time.label(series.start + (i - 1) * DAY, DAY))
    end
    local k = M.weekday(series.start + (i - 1) * DAY)
    by_weekday[k][#by_weekday[k] + 1] = v
    all[#all + 1] = v
  end
  local expected_of, level = {}, mean(all)
  local factors = {}
  for k = 0, 6 do
    expected_of[k] = mean(by_weekday[k])
    factors[k] = level > 0 and expected_of[k] / level or nil
  end
  local squares = 0
  for k = 0, 6 do
    for _, v in ipairs(by_weekday[k]) do
      squares = squares + (v - expected_of[k]) ^ 2
    end
  end
  local sigma = sqrt(squares / (7 * weeks - 7))
  local to_date = 0
  local from = floor((opts.period_start - series.start) / DAY) + 1
  for i = math.max(from, 1), last do
    local v = series.values[i]
    if v == nil then
      return nil, ("the figure of %s is unknown"):format(time.label(series.start + (i - 1) * DAY, DAY))
    end
    to_date = to_date + v
  end
  local days, count, ahead = {}, {}, 0
  local day_band = z * sigma * sqrt(1 + 1 / weeks)
  local t = math.max(today, opts.period_start)
  while t < opts.period_end do
    local k = M.weekday(t)
    local e = expected_of[k]
    days[#days + 1] = { start_time = t, end_time = t + DAY, expected = e, low = math.max(0, e - day_band),
      high = e + day_band }
    count[k] = (count[k] or 0) + 1
    ahead = ahead + e
    t = t + DAY
  end
  local c2 = 0
  for _, c in pairs(count) do
    c2 = c2 + c * c
  end
  local band = z * sigma * sqrt(#days + c2 / weeks)
  local projected = to_date + ahead
  return {
    to_date = to_date, projected = projected, low = math.max(to_date, projected - band), high = projected + band,
    sigma = sigma, level = level, factors = factors, days = days, weeks = weeks,
  }
end

local function median(list)
  local s = {}
  for i, v in ipairs(list) do
    s[i] = v
  end
  sort(s)
  local n = #s
  if n % 2 == 1 then
    return s[(n + 1) / 2]
  end
  return (s[n / 2] + s[n / 2 + 1]) / 2
end
M.median = median

-- What a day of weekday k is expected at, from the window's days of that
-- weekday other than skip (an index into the window): their median.
local function weekday_median(window, k, skip)
  local same = {}
  for n, d in ipairs(window) do
    if d.k == k and n ~= skip then
      same[#same + 1] = d.v
    end
  end
  return #same > 0 and median(same) or nil
end

--- Each day of a series against the `window` days before it (default 28),
-- by median and MAD with the weekly pattern kept: a day is expected at the
-- median of the window's days of its weekday (4 of 28), and its residual
-- is figure / expected - 1 (figure - expected when some median is 0). The scale comes from the same residuals of the
-- window's own days, each against the median of the other days of its
-- weekday (leave one out, so a day does not vouch for itself and a spike
-- in the window moves neither the medians nor the MAD much): the score is
-- 0.6745 * residual / MAD, the modified z-score of Iglewicz and Hoaglin. A
-- MAD of 0 (more than half the residuals 0) falls back to 1.2533 times
-- their mean absolute value (the same scale of a normal sigma); when that
-- is 0 too (a flat window) the score is unknown (nil) and the day is
-- flagged when it differs from its expected figure at all (basis "flat").
-- A flagged day must also differ from its expected figure by at least
-- min_change of it (default 0.25: 25 %). Only days with a whole window of
-- known figures are scored. opts: window, threshold (default 3.5),
-- min_change, both (flag drops too; default: rises only, as a leaked key
-- shows). Returns the flagged days: { { index,
-- start_time, figure, expected, score, basis } ... }.
function M.anomalies(series, opts)
  opts = opts or {}
  local window_days = opts.window or 28
  local threshold = opts.threshold or 3.5
  local min_change = opts.min_change or 0.25
  local out = {}
  for i = window_days + 1, #series.values do
    local x = series.values[i]
    local window = {}
    for j = i - window_days, i - 1 do
      local v = series.values[j]
      if v == nil then
        window = nil
        break
      end
      window[#window + 1] = { v = v, k = M.weekday(series.start + (j - 1) * DAY) }
    end
    local expected = x ~= nil and window and weekday_median(window, M.weekday(series.start + (i - 1) * DAY))
    if expected then
      -- residuals relative to what was expected when nothing expected is
      -- 0 (usage's noise grows with its level: a quiet weekend must not
      -- set the scale of a busy Tuesday), else in the figure's units
      local pairs_of, relative = {}, expected > 0
      for n, d in ipairs(window) do
        local others = weekday_median(window, d.k, n)
        if others then
          pairs_of[#pairs_of + 1] = { v = d.v, e = others }
          relative = relative and others > 0
        end
      end
      local function residual(v, e)
        return relative and v / e - 1 or v - e
      end
      local deviations, sum = {}, 0
      for n, p in ipairs(pairs_of) do
        deviations[n] = abs(residual(p.v, p.e))
        sum = sum + deviations[n]
      end
      local mad = #deviations > 0 and median(deviations) or 0
      local r = residual(x, expected)
      local score, basis, flagged
      if mad > 0 then
        score, basis = 0.6745 * r / mad, "mad"
      elseif sum > 0 then
        score, basis = r / (1.2533 * (sum / #deviations)), "meanad"
      else
        basis = "flat"
        flagged = x ~= expected and (opts.both or x > expected)
      end
      if score then
        flagged = score > threshold or (opts.both and score < -threshold)
      end
      -- and the change must matter: a smooth series finds a 5 % wiggle
      -- "significant" now and then, which no one wants to be woken for
      flagged = flagged and abs(x - expected) >= min_change * abs(expected)
      if flagged then
        out[#out + 1] = {
          index = i, start_time = series.start + (i - 1) * DAY, figure = x, expected = expected, score = score,
          basis = basis,
        }
      end
    end
  end
  return out
end

--- Movers between two periods: previous and current are maps scope key
-- -> { fields, value } (value nil when unknown). Gives one row per scope
-- seen in either: { fields, previous, current, change, change_pct, status }
-- with status "new" (nothing before, so no percentage: not inf), "vanished"
-- (nothing now), "up", "down", "same", or "unknown" when either side is
-- unknown (then no change is computed); sorted by the size of the change,
-- largest first (opts.relative: by the percentage, new ones first).
function M.movers(previous, current, opts)
  opts = opts or {}
  local keys, seen = {}, {}
  for _, map in ipairs { previous, current } do
    for key in pairs(map) do
      if not seen[key] then
        seen[key] = true
        keys[#keys + 1] = key
      end
    end
  end
  local rows = {}
  for _, key in ipairs(keys) do
    local p, c = previous[key], current[key]
    local fields = (c or p).fields
    local pv = p and p.value or (p == nil and 0 or nil)
    local cv = c and c.value or (c == nil and 0 or nil)
    local row = { key = key, fields = fields, previous = pv, current = cv }
    if pv == nil or cv == nil then
      row.status = "unknown"
    else
      row.change = cv - pv
      if pv == 0 and cv == 0 then
        row.status = "same"
      elseif pv == 0 then
        row.status = "new"
      elseif cv == 0 then
        row.status, row.change_pct = "vanished", -100.0
      else
        row.change_pct = (cv - pv) / abs(pv) * 100
        row.status = cv > pv and "up" or (cv < pv and "down" or "same")
      end
    end
    rows[#rows + 1] = row
  end
  local function size(r)
    if opts.relative then
      if r.status == "new" then
        return math.huge
      end
      return r.change_pct and abs(r.change_pct) or -1
    end
    return r.change and abs(r.change) or -1
  end
  sort(rows, function(a, b)
    local sa, sb = size(a), size(b)
    if sa ~= sb then
      return sa > sb
    end
    return a.key < b.key
  end)
  return rows
end

--- The total of a scope's series over days [from, to] (indices), nil when
-- a day is unknown.
function M.total(values, from, to)
  local s = 0
  for i = from, to do
    if values[i] == nil then
      return nil
    end
    s = s + values[i]
  end
  return s
end

return M
