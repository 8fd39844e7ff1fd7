--- Budgets: spend per scope (the organization, a project, an API key, a
-- line item) and period (a day, an ISO week, a calendar month, in UTC or a
-- fixed offset) against an amount in US dollars. The settled part of a
-- period is what the Costs endpoint billed; its unsettled tail (the last
-- days, which the API still revises) is estimated from the images usage and
-- a price table (openai_usage.cost), and marked so; the period's end is
-- forecast with the weekly pattern (openai_usage.analysis; the run-rate in
-- another offset than UTC). openai-usage check and :OpenAIUsage check
-- run this; budget.evaluate goes through a client, so a client reading a
-- history store serves it too.
local time = require "openai_usage.time"
local cost = require "openai_usage.cost"
local errors = require "openai_usage.errors"

local M = {}

local floor = math.floor

M.SCOPES = { "organization", "project_id", "api_key_id", "line_item" }
M.PERIODS = { "day", "week", "month" }
-- A costs bucket is settled this long after it ends (cache.lua's figure for costs).
M.SETTLE_AFTER = require("openai_usage.cache").SETTLE_AFTER.costs
-- The statuses that make a line "at risk": printed, and exit 4.
M.AT_RISK = { over = true, forecast_over = true, unknown = true }

local function invalid(message)
  return nil, errors.new { kind = "usage", message = message }
end

local function one_of(list, value)
  for _, v in ipairs(list) do
    if v == value then
      return true
    end
  end
  return false
end

--- Seconds east of UTC of an offset: "UTC", "Z", "+02:00", "-05:30",
-- "+0200"; or nil, message.
function M.offset(text)
  if text == nil or text == "UTC" or text == "Z" then
    return 0
  end
  local sign, hh, mm = tostring(text):match "^([+-])(%d%d):?(%d%d)$"
  if not sign or tonumber(hh) > 14 or tonumber(mm) > 59 then
    return nil, ('offset "%s": expected UTC or a fixed offset such as +02:00 or -05:30'):format(tostring(text))
  end
  local seconds = tonumber(hh) * 3600 + tonumber(mm) * 60
  seconds = math.tointeger and math.tointeger(seconds) or seconds
  return sign == "-" and -seconds or seconds
end

--- The offset as text: "UTC" or "+02:00".
function M.offset_label(seconds)
  if seconds == 0 then
    return "UTC"
  end
  local a = math.abs(seconds)
  return ("%s%02d:%02d"):format(seconds < 0 and "-" or "+", floor(a / 3600), floor(a % 3600 / 60))
end

--- The period of kind ("day", "week": ISO, from Monday, "month") that holds
-- Unix time t, its boundaries at local midnight in the offset (seconds east
-- of UTC): start, stop (Unix seconds, stop exclusive) and a label
-- ("2024-11-24", "week of 2024-11-18", "2024-11").
function M.period(kind, t, offset)
  offset = offset or 0
  local day = floor((t + offset) / 86400)
  local first, last, label
  if kind == "day" then
    first, last = day, day + 1
    label = ("%04d-%02d-%02d"):format(time.civil_from_days(day))
  elseif kind == "week" then
    first = day - (day + 3) % 7 -- 1970-01-01 was a Thursday
    last = first + 7
    label = ("week of %04d-%02d-%02d"):format(time.civil_from_days(first))
  elseif kind == "month" then
    local y, m = time.civil_from_days(day)
    first = time.days_from_civil(y, m, 1)
    last = m == 12 and time.days_from_civil(y + 1, 1, 1) or time.days_from_civil(y, m + 1, 1)
    label = ("%04d-%02d"):format(y, m)
  else
    error(("budget.period: %q is not one of %s"):format(tostring(kind), table.concat(M.PERIODS, ", ")), 2)
  end
  return first * 86400 - offset, last * 86400 - offset, label
end

local FIELDS = { amount = true, scope = true, id = true, period = true, offset = true, threshold = true, name = true }

--- A checked copy of a list of budgets, each { amount (USD > 0), scope
-- (default "organization"), id (one value of the scope; default: each value
-- gets the amount), period (default "month"), offset ("+02:00" or seconds,
-- default UTC), threshold (a share of the amount the forecast must stay
-- under, default 1), name }; or nil, err naming the entry and field.
function M.check(list)
  if type(list) ~= "table" or #list == 0 then
    return invalid "budgets: expected a list of budgets, e.g. { { amount = 500, scope = \"project_id\" } }"
  end
  local out = {}
  for i, b in ipairs(list) do
    local where = ("budgets[%d]"):format(i)
    if type(b) ~= "table" then
      return invalid(where .. ": expected a table { amount = ..., scope = ..., period = ... }")
    end
    for k in pairs(b) do
      if not FIELDS[k] then
        return invalid(("%s: unknown field %s (amount, scope, id, period, offset, threshold, name)")
          :format(where, tostring(k)))
      end
    end
    local amount = b.amount
    if type(amount) ~= "number" or amount ~= amount or amount <= 0 or amount == math.huge then
      return invalid(("%s.amount: %s is not an amount of US dollars above 0"):format(where, tostring(amount)))
    end
    local scope = b.scope or "organization"
    if not one_of(M.SCOPES, scope) then
      return invalid(('%s.scope: "%s" is not one of %s'):format(where, tostring(scope), table.concat(M.SCOPES, ", ")))
    end
    if b.id ~= nil and (type(b.id) ~= "string" or scope == "organization") then
      return invalid(("%s.id: a project, key or line item (a string), and only with a scope other than organization")
        :format(where))
    end
    local period = b.period or "month"
    if not one_of(M.PERIODS, period) then
      return invalid(('%s.period: "%s" is not one of %s'):format(where, tostring(period),
        table.concat(M.PERIODS, ", ")))
    end
    local offset, oerr = b.offset, nil
    if type(offset) ~= "number" then
      offset, oerr = M.offset(offset)
    elseif offset ~= floor(offset) or math.abs(offset) > 14 * 3600 then
      offset, oerr = nil, ("offset %s: whole seconds within 14 hours of UTC"):format(tostring(b.offset))
    end
    if not offset then
      return invalid(where .. ".offset: " .. oerr)
    end
    local threshold = b.threshold or 1
    if type(threshold) ~= "number" or threshold ~= threshold or threshold <= 0 or threshold > 10 then
      return invalid(("%s.threshold: %s is not a share of the amount above 0 (0.8 is 80%%)")
        :format(where, tostring(threshold)))
    end
    if b.name ~= nil and type(b.name) ~= "string" then
      return invalid(where .. ".name: expected a string")
    end
    out[i] = { amount = amount, scope = scope, id = b.id, period = period, offset = offset, threshold = threshold,
      name = b.name }
  end
  return out
end

-- Runs a chunk with no globals and an instruction budget, so a budgets
-- file is data: it can neither reach io or os nor loop for ever.
local function run_sandboxed(text, name)
  local env = {}
  local chunk, err
  if setfenv then -- 5.1, LuaJIT
    if text:byte(1) == 27 then
      return nil, name .. ": a precompiled chunk is not a budgets file"
    end
    chunk, err = loadstring(text, "=" .. name)
    if chunk then
      setfenv(chunk, env)
    end
  else
    chunk, err = load(text, "=" .. name, "t", env)
  end
  if not chunk then
    return nil, err
  end
  if jit then -- LuaJIT calls no hook from compiled code
    jit.off(chunk, true)
  end
  local co = coroutine.create(chunk)
  debug.sethook(co, function()
    error("runs too long for a data file", 0)
  end, "", 1e6)
  local ok, value = coroutine.resume(co)
  if not ok then
    return nil, name .. ": " .. tostring(value)
  end
  return value
end

--- The budgets of a file: Lua data returning a list of budgets (see
-- M.check), loaded without globals (no io, os, require). Returns the
-- checked list or nil, err.
function M.load(path)
  local f, ferr = io.open(path, "rb")
  if not f then
    return invalid("--budgets: " .. tostring(ferr))
  end
  local text = f:read "*a"
  f:close()
  local list, err = run_sandboxed(text, path)
  if err then
    return invalid("--budgets: " .. err)
  end
  local checked, cerr = M.check(list)
  if not checked then
    cerr.message = path .. ": " .. cerr.message
    return nil, cerr
  end
  return checked
end

-- The value a row has for a scope ("*" for the organization).
local function scope_value(scope, row)
  if scope == "organization" then
    return "*"
  end
  return row[scope]
end

--- Where a costs range [start, stop) stops being settled at time at: the
-- latest bucket boundary (start, or a UTC midnight after it) that ended
-- settle seconds or more before at; start when nothing is settled.
function M.settled_until(start, stop, at, settle)
  local boundary = floor((at - settle) / 86400) * 86400
  if boundary <= start then
    return start
  end
  return math.min(boundary, stop)
end

local function widest(endpoint)
  local rule = require("openai_usage").rules(endpoint)
  local best
  for _, w in ipairs(rule.widths) do
    if w.width == "1d" then
      best = w
    end
  end
  return best
end

--- The figures of one period range through client: the Costs rows of
-- [start, stop) by project, line item and key, and the images usage rows
-- of the unsettled tail [tail, stop) by project, key, model and size.
function M.fetch(client, start, stop, tail)
  local rows = { costs = {}, images = {}, start = start, stop = stop, tail = tail }
  local costs_width = widest "costs"
  for row in client:results("costs", { start_time = start, end_time = stop, bucket_width = "1d",
    group_by = { "project_id", "line_item", "api_key_id" }, limit = costs_width.max_limit }) do
    rows.costs[#rows.costs + 1] = row
  end
  if tail < stop then
    local images_width = widest "images"
    for row in client:results("images", { start_time = tail, end_time = stop, bucket_width = "1d",
      group_by = { "project_id", "api_key_id", "model", "size" }, limit = images_width.max_limit }) do
      rows.images[#rows.images + 1] = row
    end
  end
  return rows
end

-- A figure per scope value, made on first use.
local function entry(lines, key)
  local e = lines[key]
  if not e then
    e = { billed = 0.0, unsettled = 0.0, estimate = 0.0, unpriced_images = 0, unpriced = {}, no_amount = 0 }
    lines[key] = e
  end
  return e
end

--- The spend of one budget over the figures of M.fetch: { [scope value]
-- = { billed (settled, from Costs), unsettled (billed in the tail for line
-- items the estimate does not cover), estimate (images x prices in the
-- tail), unpriced_images, unpriced (set of "model size"), no_amount (Costs
-- rows without an amount) } }. prices: a table of cost.load, quality the
-- one the estimate assumes. Raises when Costs names a currency other than usd.
function M.spend(budget, rows, prices, quality)
  local lines = {}
  local image_item = cost.image_line_item(rows.costs, prices)
  local function wanted(value)
    return budget.id == nil or value == budget.id
  end
  for _, row in ipairs(rows.costs) do
    local value = scope_value(budget.scope, row)
    if wanted(value) then
      local e = entry(lines, value == nil and "" or value)
      local amount = type(row.amount) == "table" and row.amount or {}
      if amount.currency ~= nil and amount.currency ~= "usd" then
        error(errors.new { kind = "api", message = ("budgets are in US dollars, but the Costs endpoint billed in %s")
          :format(tostring(amount.currency)) })
      end
      local in_tail = row.start_time >= rows.tail
      if type(amount.value) ~= "number" then
        e.no_amount = e.no_amount + 1
      elseif not in_tail then
        e.billed = e.billed + amount.value
      elseif not cost.is_image_item(row.line_item, prices) then
        e.unsettled = e.unsettled + amount.value
      end
    end
  end
  for _, row in ipairs(rows.images) do
    local value = budget.scope == "line_item" and image_item or scope_value(budget.scope, row)
    if wanted(value) then
      local e = entry(lines, value == nil and "" or value)
      local images = tonumber(row.images) or 0
      local price = cost.price(prices, row.model, row.size, quality)
      if price then
        e.estimate = e.estimate + images * price
      elseif images > 0 then
        e.unpriced_images = e.unpriced_images + images
        e.unpriced[("%s %s"):format(tostring(row.model or "(none)"), tostring(row.size or "(none)"))] = true
      end
    end
  end
  if budget.id ~= nil or budget.scope == "organization" then
    entry(lines, budget.id or "*") -- the line exists even with no spend
  end
  return lines
end

--- The forecast of a line from the daily history of its scope (s5's
-- analysis.forecast: each weekday at its mean over the last whole weeks,
-- with a 95 % interval), for a period in UTC (the API's days; a period in
-- another offset takes the run-rate): history is M.history's, value the
-- scope's value ("*" for the organization). Returns { projected (never
-- under spent), low, high } or nil, why (no, short or unknown history).
function M.weekly_forecast(history, scope, value, start, stop, at, spent)
  local analysis = require "openai_usage.analysis"
  local by = scope == "organization" and {} or { scope }
  local daily = analysis.daily(history.each(), by, "amount", history.start, history.stop)
  local series
  for _, s in ipairs(daily.scopes) do
    if scope == "organization" or s.fields[scope] == value then
      series = s
    end
  end
  if not series then
    return nil, "no history"
  end
  series.start = daily.start
  local fc, err = analysis.forecast(series, { today = at, period_start = start, period_end = stop })
  if not fc then
    return nil, err
  end
  return { projected = math.max(fc.projected, spent), low = math.max(fc.low, spent), high = math.max(fc.high, spent) }
end

--- The daily Costs pages of the weeks before at (and of the period from
-- start, when it began earlier), for M.weekly_forecast: { start, stop,
-- each = fn giving an iterator over the pages }.
function M.history(client, start, at)
  local analysis = require "openai_usage.analysis"
  local today = analysis.day_of(at)
  local from = math.min(today - analysis.WEEKS * 7 * 86400, analysis.day_of(start))
  local daily = require "openai_usage.daily"
  local pages = from < today and daily.pages(client, "costs", { "project_id", "line_item", "api_key_id" }, from, today)
    or {}
  return { start = from, stop = today, each = function()
    return daily.each(pages)
  end }
end

--- The run-rate forecast of a period's spend: spent over [start, at),
-- scaled to [start, stop); the spend itself once the period is over, nil
-- when no time has passed.
function M.forecast(spent, start, stop, at)
  if at >= stop then
    return spent
  end
  if at <= start then
    return nil
  end
  return spent * (stop - start) / (at - start)
end

--- The status of a line: "over" (spent more than the amount), "forecast_over"
-- (the forecast reaches threshold x amount), "unknown" (neither, but part of
-- the tail has no price, or Costs gave a row without an amount: the spend
-- is only a lower bound), else "under".
function M.status(line)
  if line.spend > line.amount then
    return "over"
  end
  if line.forecast and line.forecast >= line.threshold * line.amount then
    return "forecast_over"
  end
  if line.unpriced_images > 0 or line.no_amount > 0 then
    return "unknown"
  end
  return "under"
end

local function sorted_keys(set)
  local out = {}
  for k in pairs(set) do
    out[#out + 1] = k
  end
  table.sort(out)
  return out
end

--- Every budget's lines at time at through client: options.at (Unix
-- seconds, default now), settle_after (seconds, default M.SETTLE_AFTER),
-- prices (a table of cost.load, default the bundled one), quality (default
-- the table's), organization (also read the platform's own spend alerts
-- and limit, M.organization_limits). Returns { at, lines = { { scope, id,
-- period, label, start, stop, offset, amount, threshold, billed,
-- unsettled, estimate, spend, forecast (forecast_low, forecast_high,
-- forecast_model), share, tail, unpriced_images, unpriced, no_amount,
-- status } }, at_risk (count), prices, organization }. Raises the walk's
-- error.
function M.evaluate(client, budgets, options)
  options = options or {}
  local at = options.at or os.time()
  local settle = options.settle_after or M.SETTLE_AFTER
  local prices = options.prices or assert(cost.load())
  local quality = options.quality or prices.default_quality or "medium"
  local fetched = {} -- one walk per period range
  local histories = {} -- and one of the daily history per period start
  local result = { at = at, lines = {}, at_risk = 0, prices = prices, quality = quality }
  if options.organization then -- the platform's own alerts and limit, listed beside the budgets
    result.organization = M.organization_limits(client)
  end
  for _, budget in ipairs(budgets) do
    local start, stop, label = M.period(budget.period, at, budget.offset)
    local stop_at = math.min(stop, at)
    local key = start .. ":" .. stop_at
    local rows = fetched[key]
    if not rows and stop_at <= start then -- the period starts at at: nothing to walk yet
      rows = { costs = {}, images = {}, tail = start }
    elseif not rows then
      rows = M.fetch(client, start, stop_at, M.settled_until(start, stop_at, at, settle))
      fetched[key] = rows
    end
    local spend = M.spend(budget, rows, prices, quality)
    for _, value in ipairs(sorted_keys(spend)) do
      local e = spend[value]
      local line = {
        name = budget.name, scope = budget.scope, id = budget.scope ~= "organization" and value or nil,
        period = budget.period, label = label, start = start, stop = stop, offset = budget.offset,
        amount = budget.amount, threshold = budget.threshold, billed = e.billed, unsettled = e.unsettled,
        estimate = e.estimate, tail = rows.tail < stop_at and rows.tail or nil,
        unpriced_images = e.unpriced_images, unpriced = sorted_keys(e.unpriced), no_amount = e.no_amount,
      }
      if line.id == "" then
        line.id = nil -- rows without the scope's field (a line item without a key)
      end
      line.spend = e.billed + e.unsettled + e.estimate
      local weekly, why
      if at < stop and budget.offset == 0 then
        histories[start] = histories[start] or M.history(client, start, at)
        weekly, why = M.weekly_forecast(histories[start], budget.scope, value, start, stop, at, line.spend)
      end
      if weekly then
        line.forecast, line.forecast_low, line.forecast_high = weekly.projected, weekly.low, weekly.high
        line.forecast_model = "weekly"
      else
        line.forecast = M.forecast(line.spend, start, stop, at)
        line.forecast_model, line.forecast_note = "run-rate", why
      end
      line.share = line.spend / budget.amount
      line.status = M.status(line)
      if M.AT_RISK[line.status] then
        result.at_risk = result.at_risk + 1
      end
      result.lines[#result.lines + 1] = line
    end
  end
  return result
end

--- An amount of US dollars for people: "$1,234.50", "-$0.25"; "n/a" for nil.
function M.usd(v)
  if v == nil then
    return "n/a"
  end
  local digits = require("openai_usage.text").number(v, 2)
  if digits:sub(1, 1) == "-" then
    return "-$" .. digits:sub(2)
  end
  return "$" .. digits
end
local dollars = M.usd

local function dollars_of(cents)
  return type(cents) == "number" and cents / 100 or nil
end

--- The organization's own spend alerts and spend limit, read-only, to
-- list beside the local budgets: { alerts = { { amount (USD, nil when
-- unknown), currency, interval } }, limit = { amount, currency, interval,
-- enforcement } } through client (the admin API's directory lists); the
-- fields the API could not give are nil and error says why (a key without
-- the permission), so the budgets are still checked.
function M.organization_limits(client)
  local out = {}
  local ok, alerts = pcall(require("openai_usage.directory").all, client, "spend_alerts")
  if ok then
    out.alerts = {}
    for _, a in ipairs(alerts) do
      out.alerts[#out.alerts + 1] = { amount = dollars_of(a.threshold_amount), currency = a.currency,
        interval = a.interval }
    end
  else
    out.error = "spend alerts: " .. tostring(alerts)
  end
  local limit, err = client:usage("spend_limit")
  if limit then
    out.limit = { amount = dollars_of(limit.threshold_amount), currency = limit.currency, interval = limit.interval,
      enforcement = type(limit.enforcement) == "table" and limit.enforcement.status or nil }
  else
    out.error = (out.error and out.error .. "; " or "") .. "spend limit: " .. tostring(err)
  end
  return out
end

--- The lines of text naming the organization's own limits (M.organization_limits').
function M.describe_organization(org)
  local lines = {}
  if org.limit then
    local l = org.limit
    lines[#lines + 1] = ("organization spend limit (set on the platform, read-only): %s a %s%s"):format(
      dollars(l.amount), tostring(l.interval or "period"), l.enforcement and (", " .. l.enforcement) or "")
  end
  if org.alerts then
    local amounts = {}
    for _, a in ipairs(org.alerts) do
      amounts[#amounts + 1] = dollars(a.amount) .. (a.interval and " a " .. a.interval or "")
    end
    lines[#lines + 1] = "organization spend alerts (set on the platform, read-only): "
      .. (#amounts > 0 and table.concat(amounts, ", ") or "none")
  end
  if org.error then
    lines[#lines + 1] = "organization spend alerts and limit not shown: " .. org.error
  end
  return lines
end

--- What the estimates of M.evaluate's result assumed: the price table
-- (its date and file) and the image quality.
function M.estimate_note(result)
  local prices = result.prices
  return ("estimate: images usage x prices of %s from %s at %s quality (the Usage API does not report quality)")
    :format(prices.date, prices.file or "the bundled table", result.quality)
end

--- One line of text for a budget line: status, scope, period, spend of the
-- amount, forecast, and what of the spend is an estimate or unpriced.
function M.describe(line)
  local text = require "openai_usage.text"
  local who = line.scope == "organization" and "organization"
    or ("%s %s"):format(line.scope, line.id or text.NONE)
  if line.name then
    who = line.name .. " (" .. who .. ")"
  end
  local parts = {
    ("%s: %s, %s %s (%s): spent %s of %s (%s)"):format(line.status:upper():gsub("_", " "), who, line.period,
      line.label, M.offset_label(line.offset), dollars(line.spend), dollars(line.amount),
      text.percent(100 * line.share)),
  }
  if line.forecast then
    local how = line.forecast_model == "weekly"
      and ("weekly pattern, 95%% %s to %s"):format(dollars(line.forecast_low), dollars(line.forecast_high))
      or "run-rate"
    parts[#parts + 1] = ("forecast %s by %s (%s; threshold %s)"):format(dollars(line.forecast),
      time.iso(line.stop), how, text.percent(100 * line.threshold, 0))
  else
    parts[#parts + 1] = "forecast n/a"
  end
  if line.tail then
    parts[#parts + 1] = ("of it since %s: %s estimated from usage x prices, %s billed but not settled"):format(
      time.iso(line.tail), dollars(line.estimate), dollars(line.unsettled))
  end
  if line.unpriced_images > 0 then
    parts[#parts + 1] = ("%s images in the tail have no price (%s): not counted"):format(
      text.thousands(("%d"):format(line.unpriced_images)), table.concat(line.unpriced, "; "))
  end
  if line.no_amount > 0 then
    parts[#parts + 1] = ("%d Costs rows had no amount: not counted"):format(line.no_amount)
  end
  return table.concat(parts, "; ")
end

return M
