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
local json = require "openai_usage.json"
local time = require "openai_usage.time"
local errors = require "openai_usage.errors"

local M = {}

M.NAMES = { "table", "md", "csv", "json", "jsonl", "svg", "html" }

local floor = math.floor
local TIME_FIELD = { start_time = true, end_time = true }

local fail = errors.invalid

local is_integer = json.is_integer

--- "1234567" -> "1,234,567" (the sign and any fraction kept).
function M.thousands(text)
  local sign, int, rest = text:match "^([-+]?)(%d+)(.*)$"
  if not int then
    return text
  end
  int = int:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
  return sign .. int .. rest
end

--- The shortest decimal text that reads back as the same number.
M.number = json.number

-- Display width of UTF-8 text in a terminal: East Asian wide and emoji
-- characters take two cells, combining marks none.
local WIDE = {
  { 0x1100, 0x115F }, { 0x231A, 0x231B }, { 0x2329, 0x232A }, { 0x23E9, 0x23EC }, { 0x23F0, 0x23F0 },
  { 0x23F3, 0x23F3 }, { 0x25FD, 0x25FE }, { 0x2614, 0x2615 }, { 0x2648, 0x2653 }, { 0x267F, 0x267F },
  { 0x2693, 0x2693 }, { 0x26A1, 0x26A1 }, { 0x26AA, 0x26AB }, { 0x26BD, 0x26BE }, { 0x26C4, 0x26C5 },
  { 0x26CE, 0x26CE }, { 0x26D4, 0x26D4 }, { 0x26EA, 0x26EA }, { 0x26F2, 0x26F3 }, { 0x26F5, 0x26F5 },
  { 0x26FA, 0x26FA }, { 0x26FD, 0x26FD }, { 0x2705, 0x2705 }, { 0x270A, 0x270B }, { 0x2728, 0x2728 },
  { 0x274C, 0x274C }, { 0x274E, 0x274E }, { 0x2753, 0x2755 }, { 0x2757, 0x2757 }, { 0x2795, 0x2797 },
  { 0x27B0, 0x27B0 }, { 0x27BF, 0x27BF }, { 0x2B1B, 0x2B1C }, { 0x2B50, 0x2B50 }, { 0x2B55, 0x2B55 },
  { 0x2E80, 0x303E }, { 0x3041, 0x33FF }, { 0x3400, 0x4DBF }, { 0x4E00, 0x9FFF }, { 0xA000, 0xA4CF },
  { 0xA960, 0xA97F }, { 0xAC00, 0xD7A3 }, { 0xF900, 0xFAFF }, { 0xFE10, 0xFE19 }, { 0xFE30, 0xFE6F },
  { 0xFF00, 0xFF60 }, { 0xFFE0, 0xFFE6 }, { 0x16FE0, 0x16FE4 }, { 0x17000, 0x18CFF }, { 0x1B000, 0x1B2FF },
  { 0x1F004, 0x1F004 }, { 0x1F0CF, 0x1F0CF }, { 0x1F18E, 0x1F18E }, { 0x1F191, 0x1F19A }, { 0x1F200, 0x1F251 },
  { 0x1F300, 0x1F320 }, { 0x1F32D, 0x1F335 }, { 0x1F337, 0x1F37C }, { 0x1F37E, 0x1F393 }, { 0x1F3A0, 0x1F3CA },
  { 0x1F3CF, 0x1F3D3 }, { 0x1F3E0, 0x1F3F0 }, { 0x1F3F4, 0x1F3F4 }, { 0x1F3F8, 0x1F43E }, { 0x1F440, 0x1F440 },
  { 0x1F442, 0x1F4FC }, { 0x1F4FF, 0x1F53D }, { 0x1F54B, 0x1F54E }, { 0x1F550, 0x1F567 }, { 0x1F57A, 0x1F57A },
  { 0x1F595, 0x1F596 }, { 0x1F5A4, 0x1F5A4 }, { 0x1F5FB, 0x1F64F }, { 0x1F680, 0x1F6C5 }, { 0x1F6CC, 0x1F6CC },
  { 0x1F6D0, 0x1F6D2 }, { 0x1F6D5, 0x1F6D7 }, { 0x1F6EB, 0x1F6EC }, { 0x1F6F4, 0x1F6FC }, { 0x1F7E0, 0x1F7EB },
  { 0x1F90C, 0x1F93A }, { 0x1F93C, 0x1F945 }, { 0x1F947, 0x1F9FF }, { 0x1FA70, 0x1FAFF }, { 0x20000, 0x3FFFD },
}
local ZERO = {
  { 0x0300, 0x036F }, { 0x0483, 0x0489 }, { 0x0591, 0x05BD }, { 0x0610, 0x061A }, { 0x064B, 0x065F },
  { 0x0E31, 0x0E31 }, { 0x0E34, 0x0E3A }, { 0x0E47, 0x0E4E }, { 0x1AB0, 0x1AFF }, { 0x1DC0, 0x1DFF },
  { 0x200B, 0x200F }, { 0x202A, 0x202E }, { 0x2060, 0x2064 }, { 0x20D0, 0x20FF }, { 0xFE00, 0xFE0F },
  { 0xFE20, 0xFE2F }, { 0xFEFF, 0xFEFF }, { 0xE0100, 0xE01EF },
}

local function in_ranges(ranges, c)
  local lo, hi = 1, #ranges
  while lo <= hi do
    local mid = floor((lo + hi) / 2)
    local r = ranges[mid]
    if c < r[1] then
      hi = mid - 1
    elseif c > r[2] then
      lo = mid + 1
    else
      return true
    end
  end
  return false
end

-- Code points of UTF-8 text; a byte that starts no valid sequence counts as
-- one narrow character.
local function each_char(s, visit)
  local i, n = 1, #s
  while i <= n do
    local b = s:byte(i)
    local len, c = 1, b
    if b >= 0xC2 and b <= 0xDF then
      len, c = 2, b - 0xC0
    elseif b >= 0xE0 and b <= 0xEF then
      len, c = 3, b - 0xE0
    elseif b >= 0xF0 and b <= 0xF4 then
      len, c = 4, b - 0xF0
    end
    local ok = i + len - 1 <= n
    for k = i + 1, i + len - 1 do
      local cb = ok and s:byte(k)
      if not cb or cb < 0x80 or cb > 0xBF then
        ok = false
        break
      end
      c = c * 64 + (cb - 0x80)
    end
    if not ok then
      len, c = 1, 0xFFFD
    end
    visit(c, i, i + len - 1)
    i = i + len
  end
end

--- Terminal columns taken by UTF-8 text.
function M.display_width(s)
  local w = 0
  each_char(s, function(c)
    if c < 0x20 or (c >= 0x7F and c < 0xA0) or in_ranges(ZERO, c) then
      return
    end
    w = w + (in_ranges(WIDE, c) and 2 or 1)
  end)
  return w
end

local function is_number(v)
  return type(v) == "number"
end

-- The columns to show: opts.columns, rows.columns, or time fields first,
-- then text fields, then numbers, each group sorted.
local function columns_of(rows, opts)
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
  if v == nil then
    return ""
  end
  if col.time and is_number(v) then
    return time.label(v, width)
  end
  if is_number(v) then
    if col.percent then
      return (("%." .. (opts.decimals or 1) .. "f%%"):format(v):gsub(",", "."))
    end
    if col.integral then
      return M.thousands(("%d"):format(v))
    end
    -- a decimal comma from the C locale (os.setlocale) would read as grouping
    return M.thousands((("%." .. (opts.decimals or 2) .. "f"):format(v):gsub(",", ".")))
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
    return M.number(v) or ""
  end
  return tostring(v)
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

-- The table of display strings every text format starts from.
local function cells(rows, opts)
  local columns = columns_of(rows, opts)
  local info = describe(rows, columns)
  local width = bucket_width(rows, opts)
  local headers = opts.headers or {}
  local head, body = {}, {}
  for i, col in ipairs(info) do
    head[i] = headers[col.name] or col.name
  end
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

local function pad(text, width, right)
  local gap = width - M.display_width(text)
  if gap <= 0 then
    return text
  end
  return right and (" "):rep(gap) .. text or text .. (" "):rep(gap)
end

local function one_line(text)
  return (text:gsub("[%c]", " "))
end

local function render_table(rows, opts)
  local info, head, body, total = cells(rows, opts)
  if #info == 0 then
    return "(no rows)\n"
  end
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
      local lw = M.display_width(line[i])
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
end

local function md_cell(text)
  return (one_line(text):gsub("\\", "\\\\"):gsub("|", "\\|"))
end

local function render_md(rows, opts)
  local info, head, body, total = cells(rows, opts)
  if #info == 0 then
    return "_no rows_\n"
  end
  local out = {}
  if opts.title then
    out[#out + 1] = "### " .. md_cell(opts.title)
    out[#out + 1] = ""
  end
  local function emit(line, bold)
    local parts = {}
    for i = 1, #info do
      local text = md_cell(line[i])
      parts[i] = (bold and text ~= "") and "**" .. text .. "**" or text
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
end

-- RFC 4180: CRLF between records; a field with a comma, quote, CR or LF (or
-- spaces at its ends) is quoted, its quotes doubled.
local function csv_field(text)
  if text:find '[,"\r\n]' or text:find "^%s" or text:find "%s$" then
    return '"' .. text:gsub('"', '""') .. '"'
  end
  return text
end

local function render_csv(rows, opts)
  local columns = columns_of(rows, opts)
  local info = describe(rows, columns)
  local headers = opts.headers or {}
  local out = {}
  local line = {}
  for i, col in ipairs(info) do
    line[i] = csv_field(headers[col.name] or col.name)
  end
  out[1] = table.concat(line, ",")
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
local function json_object(row, columns)
  return json.encode(row, columns)
end

local function render_json(rows, opts)
  local columns = columns_of(rows, opts)
  local parts = {}
  for i, row in ipairs(rows) do
    parts[i] = json_object(row, columns)
  end
  if #parts == 0 then
    return "[]\n"
  end
  return "[\n" .. table.concat(parts, ",\n") .. "\n]\n"
end

local function render_jsonl(rows, opts)
  local columns = columns_of(rows, opts)
  local out = {}
  for i, row in ipairs(rows) do
    out[i] = json_object(row, columns) .. "\n"
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
  local info = describe(rows, columns_of(rows, opts))
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
  local chart = require "openai_usage.chart"
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
  return chart.html { title = opts.title or "OpenAI usage", subtitle = opts.subtitle, sections = sections }
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
