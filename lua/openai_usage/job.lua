--- A report job from the walk to its text: job (cli.parse's) -> rows ->
-- shaped -> text. Each page's rows are folded as the page lands (report's
-- folds keep per-group state, not every row), so a long walk holds no more
-- than its report. The cost step gets its rows (the Costs walk) from here.
-- The CLI (cli.run, and make report through it) and Neovim run jobs.
local report = require "openai_usage.report"
local format = require "openai_usage.format"
local time = require "openai_usage.time"
local walk = require "openai_usage.walk"

local M = {}

local TIME_FIELD = { start_time = true, end_time = true }
local DAY = 86400

local Fold = {}
Fold.__index = Fold

local function is_html(job)
  return job.format == "html"
end

-- Whether an endpoint's rows hold objects (costs' amount = { value,
-- currency }) or units: only then are rows lifted and units watched.
local function has_objects(endpoint)
  for _, f in ipairs(require("openai_usage").rules(endpoint).fields) do
    if f.type == "object" or f.name == "currency" or f.name:match "_unit$" then
      return true
    end
  end
  return false
end

--- The rows of a job as they arrive: fold:page(page) takes a page,
-- fold:add(row) a stamped result row. It keeps the report's folds, the
-- currency and units seen, and (--cost) what the estimate came to, not the
-- rows.
function M.fold(job)
  local fold = setmetatable({ job = job, rows = 0, buckets = 0, units = {}, mixed = {},
    objects = has_objects(job.endpoint) }, Fold)
  if job.by_time then
    fold.shape = report.series_fold { start = job.since, stop = job["until"], width = job.width, by = job.group_by }
  else
    fold.shape = report.group_fold(job.group_by)
  end
  if is_html(job) then -- the stacked chart: a series by the first grouping field
    fold.chart = report.series_fold { start = job.since, stop = job["until"], width = job.width, by = job.group_by[1] }
  end
  if job.cost then
    local cost = require "openai_usage.cost"
    local prices = job.prices_table or assert(cost.load())
    fold.estimate = { prices = prices, quality = job.quality or prices.default_quality or "medium", unpriced = 0,
      missing = {} }
  end
  return fold
end

local UNIT_OF = setmetatable({}, { __index = function(t, k)
  local figure = type(k) == "string" and k:match "^(.+)_unit$" or false
  t[k] = figure
  return figure
end })

-- The currency and the units of the rows: one currency names the amount
-- column; a figure whose unit differs between rows gets no total.
local function note_units(fold, row)
  for k, v in pairs(row) do
    if k == "currency" then
      fold.currency = fold.currency == nil and v or (fold.currency == v and v or false)
    elseif UNIT_OF[k] then
      local figure = UNIT_OF[k]
      v = tostring(v)
      if fold.units[figure] ~= nil and fold.units[figure] ~= v then
        fold.mixed[figure] = true
      end
      fold.units[figure] = v
    end
  end
end

-- Folds a flat row (report.rows lifts costs' amount = { value, currency }).
local function add_flat(self, row)
  local e = self.estimate
  if e then
    local unpriced, missing = require("openai_usage.cost").estimate({ row }, e.prices, e.quality)
    e.unpriced = e.unpriced + unpriced
    for k in pairs(missing) do
      e.missing[k] = true
    end
  end
  if self.objects then
    note_units(self, row)
  end
  self.shape:add(row)
  if self.chart then
    self.chart:add(row)
  end
  self.rows = self.rows + 1
end

function Fold:add(row)
  add_flat(self, self.objects and report.rows({ row })[1] or row)
end

function Fold:page(page)
  self.buckets = self.buckets + #(page.data or {})
  local rows = walk.rows(page) -- stamped with their bucket's times
  if page.organization then -- a page of several organizations' walk (openai_usage.profiles)
    for i = 1, #rows do
      rows[i].organization = page.organization
    end
  end
  if self.objects then
    rows = report.rows(rows)
  end
  for i = 1, #rows do
    add_flat(self, rows[i])
  end
end

--- A fold of a list of rows (each stamped with its bucket's times).
function M.fold_rows(job, rows)
  local fold = M.fold(job)
  for _, row in ipairs(rows) do
    fold:add(row)
  end
  return fold
end

-- The figures to sum: the API's order (or --fields'), then any the rows add
-- (an estimated cost comes last, and only when it is the cost shown).
local function sums_of(job, fold, figures)
  local present, numeric = {}, fold.shape.seen
  for f in pairs(numeric) do
    if not TIME_FIELD[f] then
      present[#present + 1] = f
    end
  end
  table.sort(present)
  local sums, seen = {}, {}
  for _, f in ipairs(job.fields or figures) do
    if numeric[f] or job.fields then
      sums[#sums + 1], seen[f] = f, true
    end
  end
  if not job.fields then
    for _, f in ipairs(present) do
      if not seen[f] and f ~= "cost" then
        sums[#sums + 1] = f
      end
    end
  end
  if fold.rows > 0 and fold.estimate and not fold.actual then
    sums[#sums + 1] = "cost"
  end
  return sums
end

--- The report rows of a job's fold, before formatting. figures: the
-- endpoint's, in the API's order. decorate(rows), when given, may add
-- columns to the grouped rows before they are sorted, cut to the top N and
-- shared.
function M.shape(job, fold, figures, decorate)
  local sums = sums_of(job, fold, figures)
  local shaped = fold.shape:result(sums)
  if decorate then
    decorate(shaped)
  end
  local first = sums[1]
  if job.sort then
    shaped = report.sort(shaped, job.sort)
  elseif first and not job.by_time then
    shaped = report.sort(shaped, "-" .. first)
  end
  if job.top and first and not job.by_time then
    shaped = report.top(shaped, job.top, first)
  end
  if job.share and first then
    shaped = report.share(shaped, first, "share")
  end
  return shaped
end

--- The cost column (--cost): the Costs rows when the grouping can use
-- them, walked through client, then cost.apply. Returns { shaped, note }
-- or nil, err.
function M.cost(client, job, fold, figures)
  local cost = require "openai_usage.cost"
  local query = cost.query(job)
  local costs_rows, costs_err
  if query then
    local ok, err = pcall(function()
      costs_rows = {}
      for row in client:results("costs", query) do
        costs_rows[#costs_rows + 1] = row
      end
    end)
    if not ok then
      costs_rows, costs_err = nil, err
    end
  end
  local applied = cost.apply(job, fold.estimate, costs_rows, costs_err)
  fold.actual = applied.decorate ~= nil
  return { shaped = M.shape(job, fold, figures, applied.decorate), note = applied.note }
end

--- The names step (--names): the report rows shaped now, and the names
-- that cover their ids, read through client (openai_usage.names: cached
-- with the client's cache_dir, read again when an id is unknown). Returns
-- meta with shaped and names added; raises the error table when the
-- directory cannot be read.
function M.names(client, job, fold, figures, meta)
  meta = meta or {}
  local names = require "openai_usage.names"
  local named = false
  for _, f in ipairs(job.group_by) do
    named = named or names.FIELDS[f] ~= nil
  end
  if not named then -- no ids in the report: nothing to read
    return meta
  end
  local shaped = meta.shaped or M.shape(job, fold, figures)
  local resolver = names.new(client, { now = job.now })
  resolver:ensure(shaped)
  meta.shaped, meta.names = shaped, resolver
  return meta
end

-- Machine formats gain name columns beside the ids; the others show
-- "Name (id)" in place of each.
local NAME_COLUMNS = { csv = true, json = true, jsonl = true }

--- What --forecast and --movers add to a report (meta.forecast: forecast.of's;
-- meta.movers: compare's rows, last complete week against the one before,
-- by the report's grouping or by project, model and key), walked through
-- client. Raises the walk's err.
function M.analysis(client, job, meta, figures)
  if job.forecast then
    meta.forecast = require("openai_usage.forecast").of(client, job, figures)
  end
  if job.movers then
    local compare = require "openai_usage.cmd.compare"
    local mjob = { endpoint = job.endpoint, figure = require("openai_usage.forecast").figure(job, figures),
      period = "week", by = #job.group_by > 0 and table.concat(job.group_by, ",") or nil, top = "5" }
    assert(compare.check(mjob, job.now))
    meta.movers = { rows = compare.compare(client, mjob), job = mjob }
  end
  return meta
end

-- The report's rows with the forecast's after them, each marked by kind
-- (json, jsonl, csv: one list for machines).
local function with_forecast(shaped, fc)
  local out = {}
  for i, row in ipairs(shaped) do
    local copy = {}
    for k, v in pairs(row) do
      copy[k] = v
    end
    copy.kind = "actual"
    out[i] = copy
  end
  for _, row in ipairs(fc.rows) do
    out[#out + 1] = row
  end
  if shaped.columns then
    local columns = { "kind" }
    for _, c in ipairs(shaped.columns) do
      columns[#columns + 1] = c
    end
    for i, c in ipairs { "start_time", "end_time" } do
      local seen = false
      for _, have in ipairs(columns) do
        seen = seen or have == c
      end
      if not seen then
        table.insert(columns, 1 + i, c)
      end
    end
    for _, suffix in ipairs { "_to_date", "_low", "_high" } do
      columns[#columns + 1] = fc.figure .. suffix
    end
    out.columns = columns
  end
  return out
end

-- The forecast as its own table for people (table, md, html): the groups,
-- the period, what it came to so far, the projection and its interval;
-- the whole last, as "Total".
local function forecast_rows(job, fc)
  local rows = {}
  for _, row in ipairs(fc.rows) do
    local copy = {}
    for k, v in pairs(row) do
      copy[k] = v
    end
    if row.kind == "forecast_total" and job.group_by[1] then
      copy[job.group_by[1]] = "Total"
    end
    copy.kind = nil
    rows[#rows + 1] = copy
  end
  local columns = { "start_time", "end_time" }
  for _, f in ipairs(job.group_by) do
    columns[#columns + 1] = f
  end
  for _, suffix in ipairs { "_to_date", "", "_low", "_high" } do
    if not job.by_time or suffix ~= "_to_date" then
      columns[#columns + 1] = fc.figure .. suffix
    end
  end
  rows.columns = columns
  return rows
end

local function forecast_headers(job, fc)
  local f = fc.figure
  return { [f] = job.by_time and f .. " expected" or f .. " projected", [f .. "_to_date"] = f .. " so far",
    [f .. "_low"] = "low", [f .. "_high"] = "high", start_time = "from", end_time = "to" }
end

-- Words of text in lines of at most width bytes (a longer word stands alone).
local function wrap(text, width)
  local lines, line = {}, ""
  for word in text:gmatch "%S+" do
    if line ~= "" and #line + 1 + #word > width then
      lines[#lines + 1] = line
      line = word
    else
      line = line == "" and word or line .. " " .. word
    end
  end
  lines[#lines + 1] = line
  return table.concat(lines, "\n")
end

-- The HTML report: the table, bars of its first figure and, for time data,
-- a stacked series by the first grouping field.
local function html(job, fold, shaped, opts, meta)
  local chart = require "openai_usage.chart"
  local value = report.numeric_fields(shaped)[1]
  local fc = meta.forecast
  local projection
  if fc and fc.whole and fc.figure == value then
    projection = {}
    for i, d in ipairs(fc.whole.days) do
      projection[i] = { t = d.start_time, value = d.expected, low = d.low, high = d.high }
    end
  end
  local sections = {}
  if value and #shaped > 0 then
    if not job.by_time then
      local by = #job.group_by > 0 and table.concat(job.group_by, ", ") or "range"
      local bars = format.render(shaped, "svg", { chart = { kind = "bars" }, title = value .. " by " .. by })
      sections[#sections + 1] = { svg = bars }
    end
    local series = fold.chart:result { value }
    if meta.names then -- the chart's legend by name too
      require("openai_usage.names").apply(series, meta.names, "label")
    end
    if #series > 0 then
      sections[#sections + 1] = {
        svg = chart.stacked(series, {
          series = job.group_by[1],
          value = value,
          title = value .. " per " .. job.bucket .. " bucket" .. (job.group_by[1] and " by " .. job.group_by[1] or ""),
          width_seconds = job.width,
          projection = projection,
        }),
      }
    end
  end
  opts.sections = sections
  opts.no_total = nil
  opts.after = {}
  if fc then
    local rows = forecast_rows(job, fc)
    opts.after[#opts.after + 1] = { heading = require("openai_usage.forecast").title(fc), rows = rows,
      headers = forecast_headers(job, fc), note = #fc.notes > 0 and "not projected: " .. table.concat(fc.notes, "; ")
      or nil }
  end
  if meta.movers then
    local m = meta.movers
    local rows = m.rows
    rows.columns = { "dimension", "id", "previous", "current", "change", "change_pct", "status" }
    for _, row in ipairs(meta.names and rows or {}) do -- a mover by name, where its dimension is an id
      if require("openai_usage.names").FIELDS[row.dimension] then
        row.id = meta.names:label(row.dimension, row.id)
      end
    end
    opts.after[#opts.after + 1] = { heading = ("Movers: %s, the week of %s against the week before"):format(
      m.job.figure, time.label(m.job.cur_start, DAY)), rows = rows, headers = { change_pct = "change %" } }
  end
  return format.render(shaped, "html", opts)
end

local function describe_range(job)
  return ("%s, %s to %s, %s buckets"):format(job.endpoint, time.label(job.since), time.label(job["until"]), job.bucket)
end

local PAGED = { table = true, md = true, html = true }

--- The report text of a job's fold. meta: what M.cost gave (shaped with
-- the cost column, note) and M.names (names), or {}. path: the endpoint's, for the subtitle.
function M.text(job, fold, meta, figures, path)
  local shaped = meta.shaped or M.shape(job, fold, figures)
  if meta.names then
    local names, mode = require "openai_usage.names", NAME_COLUMNS[job.format] and "columns" or "label"
    names.apply(shaped, meta.names, mode)
    if meta.forecast then -- its groups by name too
      names.apply(meta.forecast.rows, meta.names, mode)
    end
  end
  local headers = {}
  if fold.currency then
    headers.amount = "amount_" .. fold.currency
  end
  if meta.shaped and job.prices_table then
    headers.cost = "cost_" .. (job.prices_table.currency or "usd")
  end
  local title = "OpenAI usage: " .. describe_range(job)
  if #job.group_by > 0 then
    title = title .. ", by " .. table.concat(job.group_by, ", ")
  end
  local opts = {
    headers = headers,
    no_total = fold.mixed,
    total = not job.by_time and PAGED[job.format] or false,
    width = job.width,
    title = (PAGED[job.format] or job.format == "svg") and title or nil,
    subtitle = ("GET %s · generated %s"):format(path, time.iso(job.now)),
    note = meta.note,
  }
  if is_html(job) then
    return html(job, fold, shaped, opts, meta)
  end
  local fc = meta.forecast
  if fc and not PAGED[job.format] and job.format ~= "svg" then
    return format.render(with_forecast(shaped, fc), job.format, opts)
  end
  local text = format.render(shaped, job.format, opts)
  if meta.note and (job.format == "table" or job.format == "md") then
    text = text .. "\n" .. wrap(meta.note, 100) .. "\n"
  end
  if fc and (job.format == "table" or job.format == "md") then
    text = text .. "\n" .. format.render(forecast_rows(job, fc), job.format, {
      title = require("openai_usage.forecast").title(fc), headers = forecast_headers(job, fc), width = DAY })
    for _, note in ipairs(fc.notes) do
      text = text .. wrap("not projected: " .. note, 100) .. "\n"
    end
  end
  return text
end

--- Walks the job's pages through client, folding each; on_page(fold),
-- when given, runs after each page. Returns the fold; raises the walk's err.
function M.walk(client, job, on_page)
  local fold = M.fold(job)
  for page in client:pages(job.endpoint, job.params) do
    fold:page(page)
    if on_page then
      on_page(fold)
    end
  end
  return fold
end

return M
