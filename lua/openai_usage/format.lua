--- Report output: rows as an aligned text table, Markdown, CSV (RFC 4180),
-- JSON, JSON Lines, an SVG chart or a small HTML report.
-- render(rows, name, opts) with opts:
--   columns   fields to show, in order (default rows.columns, else time
--             fields, then text fields, then numbers)
--   headers   field -> column title
--   total     add a "Total" row (table, md, html)
--   no_total  a set of fields left blank in it (figures of mixed units)
--   decimals  digits after the point for fractional numbers (default 2)
--   width     bucket width in seconds, for time labels (default: inferred)
--   title, subtitle, chart (svg, html; see openai_usage.chart)
--   sections  html: the charts to show above the table (default: one chart
--             of the rows)
--   after     html: more tables below it, { heading, rows, headers, note }
local json = require "openai_usage.json"
local time = require "openai_usage.time"
local text = require "openai_usage.text"
local html = require "openai_usage.html"

local M = {}

M.NAMES = { "table", "md", "csv", "json", "jsonl", "svg", "html" }

local TIME_FIELD = { start_time = true, end_time = true }

-- Bad arguments raise an invalid_argument error value, as report steps do.
local fail = require("openai_usage.errors").invalid

local is_integer = text.is_integer

--- "1234567" -> "1,234,567" (text.thousands, kept here for callers of
-- format.thousands).
M.thousands = text.thousands

local function is_number(v)
  return type(v) == "number"
end

--- The columns to show: opts.columns, rows.columns, or time fields first,
-- then text fields, then numbers, each group sorted ("object" and nested
-- tables left out). The HTML page takes the same columns from rows.
function M.columns(rows, opts)
  opts = opts or {}
  if opts.columns then
    return opts.columns
  end
  if rows.columns then
    return rows.columns
  end
  local kind = {}
  for _, row in ipairs(rows) do
    for k, v in pairs(row) do
      if k ~= "object" and type(v) ~= "table" then
        kind[k] = kind[k] or (TIME_FIELD[k] and 1 or is_number(v) and 3 or 2)
      end
    end
  end
  local names = {}
  for k in pairs(kind) do
    names[#names + 1] = k
  end
  table.sort(names, function(a, b)
    if kind[a] ~= kind[b] then
      return kind[a] < kind[b]
    end
    if TIME_FIELD[a] and TIME_FIELD[b] then
      return a > b -- start_time before end_time
    end
    return a < b
  end)
  return names
end

local function bucket_width(rows, opts)
  if opts.width then
    return opts.width
  end
  for _, row in ipairs(rows) do
    if is_number(row.start_time) and is_number(row.end_time) then
      return row.end_time - row.start_time
    end
  end
end

-- How each column is shown: numeric or not, integers or decimals.
local function describe(rows, columns)
  local info = {}
  for i, c in ipairs(columns) do
    local numeric, integral, seen = true, true, false
    for _, row in ipairs(rows) do
      local v = row[c]
      if v ~= nil then
        seen = true
        if not is_number(v) then
          numeric = false
        elseif not is_integer(v) then
          integral = false
        end
      end
    end
    info[i] = {
      name = c,
      time = TIME_FIELD[c] and numeric and seen,
      numeric = numeric and seen and not TIME_FIELD[c],
      integral = integral,
      percent = c:match "share$" ~= nil,
    }
  end
  return info
end

-- The text of one value for people (table, md, html).
local function human(v, col, opts, width)
  if v == nil or v ~= v then -- NaN: a figure that is unknown (an unpriced cost)
    return ""
  end
  if col.time and is_number(v) then
    return time.label(v, width)
  end
  if is_number(v) then
    if col.percent then
      return text.percent(v, opts.decimals)
    end
    return text.number(v, col.integral and 0 or opts.decimals or 2)
  end
  return tostring(v)
end

-- Text for machines (csv): exact numbers, ISO 8601 times.
local function exact(v, col)
  if v == nil then
    return ""
  end
  if col.time and is_number(v) then
    return time.iso(v)
  end
  if is_number(v) then
    return json.number(v) or ""
  end
  return text.valid(tostring(v))
end

local function totals_row(rows, info, skip)
  local total = {}
  for _, col in ipairs(info) do
    if skip[col.name] then
      total[col.name] = nil
    elseif col.numeric and not col.percent then
      local sum = 0
      for _, row in ipairs(rows) do
        if is_number(row[col.name]) then
          sum = sum + row[col.name]
        end
      end
      total[col.name] = sum
    elseif col.percent then
      total[col.name] = #rows > 0 and 100.0 or nil
    end
  end
  return total
end

-- How each column is shown, and its title (opts.headers, else its name).
local function heading(rows, opts)
  local info = describe(rows, M.columns(rows, opts))
  local headers = opts.headers or {}
  local head = {}
  for i, col in ipairs(info) do
    head[i] = headers[col.name] or col.name
  end
  return info, head
end

-- The table of display strings every text format starts from.
local function cells(rows, opts)
  local info, head = heading(rows, opts)
  local width = bucket_width(rows, opts)
  local body = {}
  for r, row in ipairs(rows) do
    local line = {}
    for i, col in ipairs(info) do
      line[i] = human(row[col.name], col, opts, width)
    end
    body[r] = line
  end
  local total
  if opts.total and #info > 0 then
    local t = totals_row(rows, info, opts.no_total or {})
    total = {}
    for i, col in ipairs(info) do
      total[i] = human(t[col.name], col, opts, width)
    end
    if not info[1].numeric then
      total[1] = "Total"
    end
  end
  return info, head, body, total
end

local function pad(cell, width, right)
  local gap = width - text.width(cell)
  if gap <= 0 then
    return cell
  end
  return right and (" "):rep(gap) .. cell or cell .. (" "):rep(gap)
end

-- A cell as a terminal shows it: on one line, and what is not UTF-8 read
-- as U+FFFD (text.valid), so what is measured is what is written. Controls
-- (C0, DEL, and the C1 range U+0080..U+009F, which terminals also obey) are
-- a space: a server's model name or id must not move the cursor or retitle
-- the window of whoever reads the table.
local function one_line(s)
  return (text.valid((s:gsub("[%c]", " "))):gsub("\194[\128-\159]", " "))
end

-- A format drawn from the display cells; empty is its text for rows with
-- no columns.
local function from_cells(empty, draw)
  return function(rows, opts)
    local info, head, body, total = cells(rows, opts)
    if #info == 0 then
      return empty
    end
    return draw(opts, info, head, body, total)
  end
end

local render_table = from_cells("(no rows)\n", function(opts, info, head, body, total)
  local widths = {}
  local all = { head }
  for _, line in ipairs(body) do
    all[#all + 1] = line
  end
  if total then
    all[#all + 1] = total
  end
  for i = 1, #info do
    local w = 1
    for _, line in ipairs(all) do
      line[i] = one_line(line[i])
      local lw = text.width(line[i])
      if lw > w then
        w = lw
      end
    end
    widths[i] = w
  end
  local out = {}
  local function emit(line)
    local parts = {}
    for i, col in ipairs(info) do
      parts[i] = pad(line[i], widths[i], col.numeric)
    end
    out[#out + 1] = (table.concat(parts, "  "):gsub("%s+$", ""))
  end
  local rule = {}
  for i = 1, #info do
    rule[i] = ("-"):rep(widths[i])
  end
  rule = table.concat(rule, "  ")
  if opts.title then
    out[#out + 1] = one_line(opts.title)
    out[#out + 1] = ""
  end
  emit(head)
  out[#out + 1] = rule
  for _, line in ipairs(body) do
    emit(line)
  end
  if #body == 0 then
    out[#out + 1] = "(no rows)"
  end
  if total then
    out[#out + 1] = rule
    emit(total)
  end
  return table.concat(out, "\n") .. "\n"
end)

local function md_cell(s)
  return (one_line(s):gsub("\\", "\\\\"):gsub("|", "\\|"))
end

local render_md = from_cells("_no rows_\n", function(opts, info, head, body, total)
  local out = {}
  if opts.title then
    out[#out + 1] = "### " .. md_cell(opts.title)
    out[#out + 1] = ""
  end
  local function emit(line, bold)
    local parts = {}
    for i = 1, #info do
      local cell = md_cell(line[i])
      parts[i] = (bold and cell ~= "") and "**" .. cell .. "**" or cell
    end
    out[#out + 1] = "| " .. table.concat(parts, " | ") .. " |"
  end
  emit(head)
  local align = {}
  for i, col in ipairs(info) do
    align[i] = col.numeric and "---:" or "---"
  end
  out[#out + 1] = "| " .. table.concat(align, " | ") .. " |"
  for _, line in ipairs(body) do
    emit(line)
  end
  if total then
    emit(total, true)
  end
  return table.concat(out, "\n") .. "\n"
end)

-- RFC 4180: CRLF between records; a field with a comma, quote, CR or LF (or
-- spaces at its ends) is quoted, its quotes doubled.
local function csv_field(s)
  if s:find '[,"\r\n]' or s:find "^%s" or s:find "%s$" then
    return '"' .. s:gsub('"', '""') .. '"'
  end
  return s
end

local function render_csv(rows, opts)
  local info, head = heading(rows, opts)
  local line = {}
  for i, title in ipairs(head) do
    line[i] = csv_field(title)
  end
  local out = { table.concat(line, ",") }
  for _, row in ipairs(rows) do
    line = {}
    for i, col in ipairs(info) do
      line[i] = csv_field(exact(row[col.name], col))
    end
    out[#out + 1] = table.concat(line, ",")
  end
  return table.concat(out, "\r\n") .. "\r\n"
end

-- Members in column order; a missing value is null, so every object has
-- the same keys.
local function render_json(rows, opts)
  local columns = M.columns(rows, opts)
  local parts = {}
  for i, row in ipairs(rows) do
    parts[i] = json.encode(row, columns)
  end
  if #parts == 0 then
    return "[]\n"
  end
  return "[\n" .. table.concat(parts, ",\n") .. "\n]\n"
end

local function render_jsonl(rows, opts)
  local columns = M.columns(rows, opts)
  local out = {}
  for i, row in ipairs(rows) do
    out[i] = json.encode(row, columns) .. "\n"
  end
  return table.concat(out)
end

-- What to chart when the caller did not say: a stacked time series when
-- rows have buckets and a text field, bars by the text fields otherwise.
local function chart_spec(rows, opts)
  local spec = {}
  for k, v in pairs(opts.chart or {}) do
    spec[k] = v
  end
  local info = describe(rows, M.columns(rows, opts))
  local labels, numbers, has_time = {}, {}, false
  for _, col in ipairs(info) do
    if col.time then
      has_time = has_time or col.name == "start_time"
    elseif col.numeric and not col.percent then
      numbers[#numbers + 1] = col.name
    elseif not col.numeric and not col.percent then
      labels[#labels + 1] = col.name
    end
  end
  spec.value = spec.value or numbers[1]
  if spec.kind == nil then
    spec.kind = has_time and "stacked" or "bars"
  end
  if spec.kind == "stacked" then
    spec.series = spec.series or labels[1]
  else
    spec.label = spec.label or (#labels > 0 and labels or nil)
  end
  spec.title = spec.title or opts.title
  return spec, info
end

local function chart_svg(rows, opts)
  local chart = require "openai_usage.chart"
  local spec = chart_spec(rows, opts)
  if not spec.value then
    fail "svg: the rows have no numeric field to chart"
  end
  if spec.kind == "stacked" then
    return chart.stacked(rows, spec)
  end
  return chart.bars(rows, spec)
end

local function render_html(rows, opts)
  local info, head, body, total = cells(rows, opts)
  local columns = {}
  for i, col in ipairs(info) do
    columns[i] = { key = i, label = head[i], numeric = col.numeric or false }
  end
  local table_rows = {}
  for i, line in ipairs(body) do
    table_rows[i] = line
  end
  local sections = {}
  for _, section in ipairs(opts.sections or {}) do
    sections[#sections + 1] = section
  end
  local spec = chart_spec(rows, opts)
  if opts.sections == nil and spec.value and #rows > 0 then
    sections[#sections + 1] = { svg = chart_svg(rows, opts) }
  end
  sections[#sections + 1] = { table = { columns = columns, rows = table_rows, footer = total }, note = opts.note }
  for _, more in ipairs(opts.after or {}) do -- further tables below (a forecast, movers)
    local minfo, mhead, mbody = cells(more.rows, { headers = more.headers, width = opts.width })
    local mcolumns = {}
    for i, col in ipairs(minfo) do
      mcolumns[i] = { key = i, label = mhead[i], numeric = col.numeric or false }
    end
    sections[#sections + 1] = { heading = more.heading, table = { columns = mcolumns, rows = mbody }, note = more.note }
  end
  return html.page { title = opts.title or "OpenAI usage", subtitle = opts.subtitle, sections = sections }
end

local RENDER = {
  table = render_table,
  md = render_md,
  csv = render_csv,
  json = render_json,
  jsonl = render_jsonl,
  svg = chart_svg,
  html = render_html,
}

--- The text of rows in format name (one of NAMES).
function M.render(rows, name, opts)
  local render = RENDER[name or "table"]
  if not render then
    fail(('format "%s" is not one of %s'):format(tostring(name), table.concat(M.NAMES, ", ")))
  end
  if type(rows) ~= "table" then
    fail("format: expected a list of rows, got a " .. type(rows))
  end
  return render(rows, opts or {})
end

return M
