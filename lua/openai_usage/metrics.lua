--- Metrics for Prometheus: today's and this month's (UTC) usage and cost as
-- gauges. gather(client) walks each source's pages through the client (the
-- API, or whatever serves that client) into a snapshot, plain data;
-- render(snapshot, format) writes it as the Prometheus text exposition
-- format 0.0.4 or as OpenMetrics 1.0, pure and cheap, so a host that must
-- not wait (nginx) gathers on a timer and serves what it rendered.
--
-- A figure that is not known is never written as 0: a source whose walk
-- failed has no series (its openai_usage_refresh_success is 0), and a group
-- where a row lacked the figure is left out and counted in
-- openai_usage_unknown_figures.
local usage = require "openai_usage"
local json = require "openai_usage.json"
local text = require "openai_usage.text"
local time = require "openai_usage.time"
local report = require "openai_usage.report"
local errors = require "openai_usage.errors"

local M = {}

local DAY = 86400
local PREFIX = "openai_usage_"

--- The sources gathered when none are named: the endpoints walked.
M.SOURCES = { "images", "completions", "costs" }
M.FORMATS = { "prometheus", "openmetrics" }
M.CONTENT_TYPE = {
  prometheus = "text/plain; version=0.0.4; charset=utf-8",
  openmetrics = "application/openmetrics-text; version=1.0.0; charset=utf-8",
}
M.PERIODS = { "today", "month" }

-- A usage field's gauge: its name after the prefix, help, and unit (the
-- name's suffix, for OpenMetrics' # UNIT). A field not listed here is not
-- gathered unless asked for (opts.fields), under its own name.
local FIGURES = {
  images = { name = "images", help = "Images generated" },
  num_model_requests = { name = "requests", help = "Model requests" },
  input_tokens = { name = "input_tokens", help = "Input tokens, cached ones included" },
  input_cached_tokens = { name = "input_cached_tokens", help = "Input tokens read from the prompt cache" },
  output_tokens = { name = "output_tokens", help = "Output tokens" },
  characters = { name = "characters", help = "Characters turned into speech" },
  seconds = { name = "audio_seconds", help = "Seconds of audio transcribed", unit = "seconds" },
  num_requests = { name = "tool_calls", help = "Tool calls (web search, file search)" },
  num_sessions = { name = "sessions", help = "Code interpreter sessions" },
  usage_bytes = { name = "storage_bytes", help = "Bytes held in vector stores (a level: its latest bucket)",
    unit = "bytes" },
}

-- The labels a usage source groups by, those of them its endpoint has.
local DEFAULT_GROUP_BY = { "project_id", "model" }
local COSTS_GROUP_BY = { "project_id", "line_item" }

local function fail(message)
  return nil, errors.new { kind = "invalid_argument", message = "metrics: " .. message }
end

local function index_of(list)
  local set = {}
  for _, v in ipairs(list or {}) do
    set[v] = true
  end
  return set
end

--- The start of today and of this month (UTC) at now: { today, month }.
function M.periods(now)
  local today = now - now % DAY
  local y, m = time.civil_from_days(math.floor(today / DAY))
  return { today = today, month = time.days_from_civil(y, m, 1) * DAY }
end

-- The figure of a field: its gauge's name, help and unit.
local function figure_of(field)
  local known = FIGURES[field]
  if known then
    return { field = field, name = PREFIX .. known.name, help = known.help, unit = known.unit,
      level = report.LEVEL[field] }
  end
  local unit = field:match "_(seconds)$" or field:match "_(bytes)$"
  return { field = field, name = PREFIX .. field, help = field .. " (the API's field of that name)", unit = unit,
    level = report.LEVEL[field] }
end

-- One source checked against the rule table: endpoint, group_by, figures,
-- the page size of a 1d walk.
local function source_of(endpoint, opts)
  local names = index_of(usage.rules())
  if not names[endpoint] then
    local all = usage.rules()
    table.sort(all)
    return fail(('"%s" is not an endpoint: %s'):format(tostring(endpoint), table.concat(all, ", ")))
  end
  local rule = usage.rules(endpoint)
  local groups, numeric = {}, {}
  for _, p in ipairs(rule.params) do
    if p.name == "group_by" then
      groups = index_of(p.values)
    end
  end
  for _, f in ipairs(rule.fields) do
    if f.type == "integer" or f.type == "number" then
      numeric[#numeric + 1] = f.name
    end
  end
  local limit
  for _, w in ipairs(rule.widths) do
    if w.width == "1d" then
      limit = w.max_limit
    end
  end
  if not limit then
    return fail(endpoint .. " has no 1d buckets")
  end
  local source = { endpoint = endpoint, costs = endpoint == "costs", limit = limit, group_by = {}, figures = {} }
  local by = (opts.group_by or {})[endpoint] or (source.costs and COSTS_GROUP_BY or DEFAULT_GROUP_BY)
  for _, f in ipairs(by) do
    if groups[f] then
      source.group_by[#source.group_by + 1] = f
    elseif (opts.group_by or {})[endpoint] then
      return fail(('%s cannot group by "%s"'):format(endpoint, tostring(f)))
    end
  end
  if source.costs then
    return source
  end
  local wanted = (opts.fields or {})[endpoint]
  local numeric_set = index_of(numeric)
  for _, f in ipairs(wanted or numeric) do
    if not numeric_set[f] then
      return fail(('"%s" is not a figure of %s (%s)'):format(tostring(f), endpoint, table.concat(numeric, ", ")))
    end
    if wanted or FIGURES[f] then
      source.figures[#source.figures + 1] = figure_of(f)
    end
  end
  return source
end

--- The sources of opts (opts.sources, default M.SOURCES; opts.group_by and
-- opts.fields, per endpoint, change what each gathers), checked: a list, or
-- nil, err (kind invalid_argument).
function M.sources(opts)
  opts = opts or {}
  local out, seen = {}, {}
  for _, endpoint in ipairs(opts.sources or M.SOURCES) do
    if not seen[endpoint] then
      seen[endpoint] = true
      local source, err = source_of(endpoint, opts)
      if not source then
        return nil, err
      end
      out[#out + 1] = source
    end
  end
  if #out == 0 then
    return fail("no sources to gather")
  end
  return out
end

-- A row's group: its key and its labels ({name, value} pairs, values as
-- text; a missing value has no label, as Prometheus reads an empty one).
local function group_of(source, row)
  local parts, labels = {}, {}
  for i, f in ipairs(source.group_by) do
    local v = row[f]
    if v == nil then
      parts[i] = "\1"
    else
      v = tostring(v)
      parts[i] = "\2" .. v
      labels[#labels + 1] = { f, v }
    end
  end
  return table.concat(parts, "\0"), labels
end

-- Per period, the groups seen and their figures: a number, or false once a
-- row of the group lacked it (unknown from then on).
local function new_fold()
  return { groups = {}, order = {} }
end

local function fold_group(fold, key, labels)
  local g = fold.groups[key]
  if not g then
    g = { labels = labels, values = {}, at = {} }
    fold.groups[key] = g
    fold.order[#fold.order + 1] = key
  end
  return g
end

local function add_value(g, name, v, level, t)
  if g.values[name] == false then
    return
  end
  if type(v) ~= "number" or v ~= v then
    g.values[name] = false
  elseif level then -- the latest bucket's, summed over its rows
    local at = g.at[name]
    if at == nil or t > at then
      g.at[name], g.values[name] = t, v
    elseif t == at then
      g.values[name] = g.values[name] + v
    end
  else
    g.values[name] = (g.values[name] or 0) + v
  end
end

-- Folds one row of a bucket starting at t into fold.
local function add_row(source, fold, row, t)
  local key, labels = group_of(source, row)
  local g = fold_group(fold, key, labels)
  if source.costs then
    local amount = row.amount
    local value = type(amount) == "table" and amount.value or nil
    local currency = type(amount) == "table" and amount.currency or nil
    if type(currency) ~= "string" or not currency:lower():match "^[a-z][a-z0-9]*$" then
      value = nil -- without a currency the amount names no gauge
    else
      currency = currency:lower()
      if g.currency == nil then
        g.currency = currency
      elseif g.currency ~= currency then
        value = nil -- two currencies in one group: no sum means anything
      end
    end
    add_value(g, "amount", value, false, t)
  else
    for _, f in ipairs(source.figures) do
      add_value(g, f.field, row[f.field], f.level, t)
    end
  end
end

local function api_error(endpoint, message)
  return errors.new { kind = "api", message = endpoint .. ": " .. message }
end

-- The folds of a source's month: { today = fold, month = fold }, raising
-- the walk's error; a walk whose buckets do not start at the month's and at
-- today's first second is an api error (its figures would be short).
local function walk_source(client, source, periods)
  local params = { start_time = periods.month, bucket_width = "1d", limit = source.limit }
  if #source.group_by > 0 then
    params.group_by = source.group_by
  end
  local folds, covered = { today = new_fold(), month = new_fold() }, {}
  for page in client:pages(source.endpoint, params) do
    for _, bucket in ipairs(page.data or {}) do
      local t = bucket.start_time
      if type(t) ~= "number" then
        error(api_error(source.endpoint, "a bucket without a start_time"), 0)
      end
      covered[t] = true
      for _, row in ipairs(bucket.results or {}) do
        add_row(source, folds.month, row, t)
        if t >= periods.today then
          add_row(source, folds.today, row, t)
        end
      end
    end
  end
  for _, period in ipairs(M.PERIODS) do
    if not covered[periods[period]] then
      error(api_error(source.endpoint, ("no bucket starting at %s (%s)"):format(time.iso(periods[period]), period)), 0)
    end
  end
  return folds
end

-- The series of a source's folds: { name, labels, value } each, the
-- families they belong to, and how many figures were unknown. A group of
-- the month with no row today used none of it today: 0 (a level aside).
local function series_of(source, folds, families)
  local out, unknown = {}, 0
  local function emit(name, period, g_labels, value)
    local labels = { { "period", period } }
    if not source.costs then
      labels[2] = { "endpoint", source.endpoint }
    end
    for _, l in ipairs(g_labels) do
      labels[#labels + 1] = l
    end
    out[#out + 1] = { name = name, labels = labels, value = value }
  end
  for _, period in ipairs(M.PERIODS) do
    local fold = folds[period]
    for _, key in ipairs(folds.month.order) do
      local g, month_g = fold.groups[key], folds.month.groups[key]
      if source.costs then
        local value = g and g.values.amount
        if value == nil and month_g.values.amount ~= false then
          value = 0 -- known for the month, no row today
        end
        local currency = (g and g.currency) or month_g.currency
        if value and currency then
          local name = PREFIX .. "cost_" .. currency
          families[name] = families[name] or { help = "Cost billed (the Costs endpoint), in " .. currency:upper(),
            unit = currency }
          emit(name, period, month_g.labels, value)
        elseif value == false or g then
          unknown = unknown + 1
        end
      else
        for _, f in ipairs(source.figures) do
          local value = g and g.values[f.field]
          if value == nil and month_g.values[f.field] ~= false and not f.level then
            value = 0
          end
          if value then
            families[f.name] = families[f.name] or { help = f.help, unit = f.unit }
            emit(f.name, period, month_g.labels, value)
          elseif value == false or g then
            unknown = unknown + 1
          end
        end
      end
    end
  end
  return out, unknown
end

local function message_of(err)
  return text.printable(tostring(err))
end

--- Gathers the figures of each source through client: a snapshot (plain
-- data) for render. opts: sources, group_by, fields (see M.sources); now
-- (Unix seconds, default os.time(): which day and month); last_success
-- (endpoint -> Unix seconds of an earlier snapshot's last success, carried
-- over when a source fails now); stop() (asked after each source: true ends
-- the gathering, e.g. on Ctrl-C). A source whose walk fails has ok = false,
-- its error's message in error and no series. Returns snapshot, or nil, err
-- for bad opts.
function M.gather(client, opts)
  opts = opts or {}
  local sources, err = M.sources(opts)
  if not sources then
    return nil, err
  end
  local now = opts.now or os.time()
  local periods = M.periods(now)
  local snapshot = { time = now, periods = periods, sources = {}, families = {} }
  for _, source in ipairs(sources) do
    local started = usage.clock()
    local ok, folds = pcall(walk_source, client, source, periods)
    local entry = { endpoint = source.endpoint, ok = ok, time = os.time(), duration = usage.clock() - started,
      series = {}, unknown = 0 }
    if ok then
      entry.series, entry.unknown = series_of(source, folds, snapshot.families)
      entry.last_success = entry.time
    else
      entry.error = message_of(folds)
      entry.last_success = (opts.last_success or {})[source.endpoint]
    end
    snapshot.sources[#snapshot.sources + 1] = entry
    if opts.stop and opts.stop() then
      break
    end
  end
  return snapshot
end

--- endpoint -> Unix seconds of its last success, from a snapshot: what the
-- next gather takes as opts.last_success.
function M.last_success(snapshot)
  local out = {}
  for _, s in ipairs(snapshot and snapshot.sources or {}) do
    out[s.endpoint] = s.last_success
  end
  return out
end

-- The gauges every snapshot has, about the gathering itself.
local HEALTH = {
  { name = PREFIX .. "refresh_success", help = "1 when the last refresh of the endpoint's figures succeeded, 0 when "
    .. "it failed (its figures are then absent)" },
  { name = PREFIX .. "refresh_timestamp_seconds", unit = "seconds",
    help = "When the last refresh of the endpoint's figures ended (Unix time)" },
  { name = PREFIX .. "last_success_timestamp_seconds", unit = "seconds",
    help = "When the endpoint's figures were last refreshed successfully (Unix time)" },
  { name = PREFIX .. "refresh_duration_seconds", unit = "seconds",
    help = "How long the last refresh of the endpoint's figures took" },
  { name = PREFIX .. "unknown_figures", help = "Figures left out because a row of the API lacked them" },
  { name = PREFIX .. "period_start_timestamp_seconds", unit = "seconds",
    help = "Start of the period the figures cover: today and this month, UTC (Unix time)" },
}

local function health_series(snapshot)
  local out = {}
  local function add(name, labels, value)
    if value ~= nil then
      out[#out + 1] = { name = PREFIX .. name, labels = labels, value = value }
    end
  end
  for _, s in ipairs(snapshot.sources) do
    local labels = { { "endpoint", s.endpoint } }
    add("refresh_success", labels, s.ok and 1 or 0)
    add("refresh_timestamp_seconds", labels, s.time)
    add("last_success_timestamp_seconds", labels, s.last_success)
    add("refresh_duration_seconds", labels, s.duration)
    if s.ok then
      add("unknown_figures", labels, s.unknown)
    end
  end
  for _, period in ipairs(M.PERIODS) do
    add("period_start_timestamp_seconds", { { "period", period } }, snapshot.periods[period])
  end
  return out
end

--- A label value as the exposition formats quote it: backslash, double
-- quote and line feed escaped; a byte that is not UTF-8 read as U+FFFD
-- (both formats require UTF-8).
function M.escape_label(v)
  return (text.valid(v):gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

local function escape_help(s, openmetrics)
  return (s:gsub(openmetrics and '[\\"\n]' or "[\\\n]", { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

--- A sample value as both formats write it: integers exact, floats in
-- their shortest exact decimal form, NaN and the infinities by name.
function M.number(v)
  if v ~= v then
    return "NaN"
  elseif v == math.huge then
    return "+Inf"
  elseif v == -math.huge then
    return "-Inf"
  end
  return json.number(v)
end

local function sample_line(series)
  local parts = {}
  for i, l in ipairs(series.labels) do
    parts[i] = l[1] .. '="' .. M.escape_label(l[2]) .. '"'
  end
  local labels = #parts > 0 and "{" .. table.concat(parts, ",") .. "}" or ""
  return series.name .. labels, M.number(series.value)
end

--- The exposition of a snapshot: text in format ("prometheus", the text
-- format 0.0.4, default; or "openmetrics", OpenMetrics 1.0 with its # UNIT
-- lines and # EOF) and its Content-Type. Families in name order, each
-- family's series in label order: the same snapshot gives the same bytes.
function M.render(snapshot, format)
  format = format or "prometheus"
  if not M.CONTENT_TYPE[format] then
    errors.invalid(('metrics: format "%s" is not one of %s'):format(tostring(format), table.concat(M.FORMATS, ", ")))
  end
  local openmetrics = format == "openmetrics"
  local families = {}
  for name, f in pairs(snapshot.families or {}) do
    families[name] = { help = f.help, unit = f.unit, samples = {} }
  end
  for _, h in ipairs(HEALTH) do
    families[h.name] = { help = h.help, unit = h.unit, samples = {} }
  end
  local all = health_series(snapshot)
  for _, s in ipairs(snapshot.sources) do
    for _, series in ipairs(s.series or {}) do
      all[#all + 1] = series
    end
  end
  for _, series in ipairs(all) do
    local key, value = sample_line(series)
    local samples = families[series.name].samples
    samples[#samples + 1] = { key, value }
  end
  local names = {}
  for name, f in pairs(families) do
    if #f.samples > 0 then
      names[#names + 1] = name
    end
  end
  table.sort(names)
  local lines = {}
  for _, name in ipairs(names) do
    local f = families[name]
    lines[#lines + 1] = "# HELP " .. name .. " " .. escape_help(f.help, openmetrics)
    lines[#lines + 1] = "# TYPE " .. name .. " gauge"
    if openmetrics and f.unit then
      lines[#lines + 1] = "# UNIT " .. name .. " " .. f.unit
    end
    table.sort(f.samples, function(a, b)
      return a[1] < b[1]
    end)
    for _, sample in ipairs(f.samples) do
      lines[#lines + 1] = sample[1] .. " " .. sample[2]
    end
  end
  if openmetrics then
    lines[#lines + 1] = "# EOF"
  end
  return table.concat(lines, "\n") .. "\n", M.CONTENT_TYPE[format]
end

-- The q of a media range's parameters (1 when none is given).
local function quality(params)
  local q = params:match ";%s*[qQ]%s*=%s*([%d.]+)"
  return q and tonumber(q) or 1
end

--- The format an Accept header asks for: "openmetrics" when it prefers
-- application/openmetrics-text (version 1.0.0, or none named) to
-- text/plain, as Prometheus asks; else "prometheus".
function M.negotiate(accept)
  local best_om, best_text = 0, 0
  for item in tostring(accept or ""):gmatch "[^,]+" do
    local media, params = item:match "^%s*([^;%s]+)%s*(.*)$"
    media = (media or ""):lower()
    local q = quality(params or "")
    local version = (params or ""):match ";%s*version%s*=%s*([%w.]+)"
    if media == "application/openmetrics-text" and (version == nil or version == "1.0.0") then
      best_om = math.max(best_om, q)
    elseif media == "text/plain" or media == "*/*" or media == "text/*" then
      best_text = math.max(best_text, q)
    end
  end
  if best_om > 0 and best_om >= best_text then
    return "openmetrics"
  end
  return "prometheus"
end

--- Whether every source of a snapshot was refreshed.
function M.ok(snapshot)
  for _, s in ipairs(snapshot.sources) do
    if not s.ok then
      return false
    end
  end
  return true
end

return M
