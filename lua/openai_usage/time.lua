--- Times for reports: parsing what people type, formatting UTC, widths.
-- Everything is UTC and computed arithmetically, so no result depends on
-- the machine's time zone or locale (os.date would).
local M = {}

local floor = math.floor

-- Seconds per unit of a relative time ("90m") or a bucket width ("1h").
local UNIT = { s = 1, m = 60, h = 3600, d = 86400, w = 604800 }
M.UNIT = UNIT

local function integer(x)
  return math.tointeger and math.tointeger(x) or x
end

-- Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
-- days_from_civil, valid for every year of the Usage API and far beyond).
function M.days_from_civil(y, m, d)
  if m <= 2 then
    y = y - 1
  end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return integer(era * 146097 + doe - 719468)
end

--- The date of a day number: year, month, day.
function M.civil_from_days(z)
  z = z + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local d = doy - floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then
    y = y + 1
  end
  return integer(y), integer(m), integer(d)
end

local function days_in_month(y, m)
  local next_y, next_m = y, m + 1
  if next_m == 13 then
    next_y, next_m = y + 1, 1
  end
  return M.days_from_civil(next_y, next_m, 1) - M.days_from_civil(y, m, 1)
end

local ACCEPTED = 'Unix seconds, "2024-11-01", "2024-11-01T12:00:00Z", or a relative "90m", "24h", "7d"'

--- Unix seconds from a number, "1730419200", "2024-11-01",
-- "2024-11-01T12:00[:00]Z" (also with a space for the T) or a relative time
-- before now ("45s", "90m", "24h", "7d", "2w"). now defaults to os.time().
-- Returns seconds or nil, message.
function M.parse(value, now)
  if type(value) == "number" then
    if value ~= value or value == math.huge or value == -math.huge or value < 0 or value ~= floor(value) then
      return nil, ("time %s: must be a whole, non-negative number of Unix seconds"):format(tostring(value))
    end
    return integer(value)
  end
  if type(value) ~= "string" then
    return nil, ("time: expected %s, got a %s"):format(ACCEPTED, type(value))
  end
  local text = value:match "^%s*(.-)%s*$"
  if text:match "^%d+$" then
    return M.parse(tonumber(text))
  end
  local amount, unit = text:match "^(%d+)([smhdw])$"
  if amount then
    now = now or os.time()
    local t = now - tonumber(amount) * UNIT[unit]
    if t < 0 then
      return nil, ('time "%s": reaches before 1970'):format(text)
    end
    return integer(t)
  end
  local y, mo, d, rest = text:match "^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$"
  if not y then
    return nil, ('time "%s": expected %s'):format(text, ACCEPTED)
  end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo < 1 or mo > 12 or d < 1 or d > days_in_month(y, mo) then
    return nil, ('time "%s": no such date'):format(text)
  end
  local h, mi, s = 0, 0, 0
  if rest ~= "" then
    local hh, mm, tail = rest:match "^[T ](%d%d):(%d%d)(.*)$"
    if not hh then
      return nil, ('time "%s": expected %s'):format(text, ACCEPTED)
    end
    local ss, zone = tail:match "^:(%d%d)(.*)$"
    if ss then
      tail = zone
    end
    if tail ~= "Z" and tail ~= "+00:00" and tail ~= "" then
      return nil, ('time "%s": only UTC is accepted (end it with Z)'):format(text)
    end
    h, mi, s = tonumber(hh), tonumber(mm), tonumber(ss or "0")
    if h > 23 or mi > 59 or s > 59 then
      return nil, ('time "%s": no such time of day'):format(text)
    end
  end
  local t = M.days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s
  if t < 0 then
    return nil, ('time "%s": before 1970'):format(text)
  end
  return integer(t)
end

--- Seconds of a width: 60, "1m", "1h", "1d", "15m"... Returns nil, message
-- for anything else.
function M.width(value)
  if type(value) == "number" and value > 0 and value == floor(value) then
    return integer(value)
  end
  local n, unit = tostring(value):match "^(%d+)([smhdw])$"
  if n and tonumber(n) > 0 then
    return integer(tonumber(n) * UNIT[unit])
  end
  return nil, ('width "%s": expected a number of seconds or "1m", "1h", "1d"'):format(tostring(value))
end

--- Seconds of a span such as a settle window: a whole number of seconds
-- (3600, "3600", 0) or an amount of a unit as in relative times ("90m",
-- "2d", "1w"). Returns seconds or nil, message.
function M.duration(value)
  if type(value) == "number" then
    if value >= 0 and value == floor(value) and value < 2 ^ 53 then
      return integer(value)
    end
  elseif type(value) == "string" then
    local n, unit = value:match "^%s*(%d+)([smhdw]?)%s*$"
    if n and #n <= 15 then
      return integer(tonumber(n) * UNIT[unit ~= "" and unit or "s"])
    end
  end
  return nil, ('"%s" is not a duration: expected whole seconds (3600) or "90m", "24h", "2d", "1w"')
    :format(tostring(value))
end

--- UTC "2024-11-01T12:00:00Z".
function M.iso(t)
  local days = floor(t / 86400)
  local s = t - days * 86400
  local y, m, d = M.civil_from_days(days)
  return ("%04d-%02d-%02dT%02d:%02d:%02dZ"):format(y, m, d, floor(s / 3600), floor(s % 3600 / 60), s % 60)
end

-- A UTC label of t: the date alone when t is midnight and the width (if
-- any) a whole number of days, else month-day hour:minute, after the year
-- when with_year.
local function label_of(t, width, with_year)
  local days = floor(t / 86400)
  local s = t - days * 86400
  local y, m, d = M.civil_from_days(days)
  if s == 0 and (width == nil or width % 86400 == 0) then
    return ("%04d-%02d-%02d"):format(y, m, d)
  end
  local clock = ("%02d-%02d %02d:%02d"):format(m, d, floor(s / 3600), floor(s % 3600 / 60))
  return with_year and ("%04d-"):format(y) .. clock or clock
end

--- A short UTC label: "2024-11-01" when t is midnight and the width a
-- whole number of days, "2024-11-01 13:00" otherwise.
function M.label(t, width)
  return label_of(t, width, true)
end

--- The label under a chart's column, where room is short: "2024-11-01"
-- as label gives it, else without the year, "11-01 13:00".
function M.axis_label(t, width)
  return label_of(t, width, false)
end

return M
