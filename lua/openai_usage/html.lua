--- The one HTML page builder (pure Lua): a standalone HTML5 page of
-- charts, tables and notes, with inline CSS only (no scripts, nothing
-- fetched). format's html output and the command line's report are built
-- with it; every text from the data is escaped.
--   html.page{title = ..., subtitle = ..., sections = {{heading =, svg =, table =, note =}}}
local errors = require "openai_usage.errors"
local text = require "openai_usage.text"

local M = {}

local concat = table.concat
local escape = text.escape
local raise = errors.invalid

local CSS = [[
body{margin:0;background:#fff;color:#222;]] .. [[
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif}
main{max-width:980px;margin:0 auto;padding:24px 20px 40px}
h1{font-size:22px;margin:0 0 4px}
.subtitle{color:#666;margin:0 0 20px}
section{margin:28px 0}
h2{font-size:17px;margin:0 0 10px}
figure{margin:0 0 14px}
figure svg{max-width:100%;height:auto;display:block}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:4px 12px;border-bottom:1px solid #e6e6e6;text-align:left;vertical-align:top}
th{border-bottom:2px solid #bbb;font-weight:600}
tbody tr:nth-child(even){background:#f7f7f7}
tfoot td{border-top:2px solid #bbb;font-weight:600}
.num{text-align:right;white-space:nowrap}
.note{color:#666;font-size:13px}
]]

local function lines(value)
  if type(value) == "table" then
    local out = {}
    for i, line in ipairs(value) do
      out[i] = escape(line)
    end
    return concat(out, "<br>")
  end
  return escape(value)
end

local function cell(v, column)
  if v == nil then
    return ""
  end
  if column.format then
    return escape(column.format(v))
  end
  if text.finite(v) then
    return escape(text.number(v, column.decimals))
  end
  return escape(text.label(v))
end

-- Columns when the caller gave none: the fields of the rows as the report
-- formats order them (format.columns), numeric when every value is a number.
local function columns_of(rows)
  local columns = {}
  for i, k in ipairs(require("openai_usage.format").columns(rows)) do
    local numeric = true
    for _, row in ipairs(rows) do
      numeric = numeric and (row[k] == nil or type(row[k]) == "number")
    end
    columns[i] = { key = k, label = tostring(k), numeric = numeric }
  end
  return columns
end

local function html_table(out, t)
  local rows = t.rows or {}
  local columns = t.columns or columns_of(rows)
  out[#out + 1] = "<table>"
  if t.caption then
    out[#out + 1] = "<caption>" .. escape(t.caption) .. "</caption>"
  end
  local head = {}
  for i, c in ipairs(columns) do
    head[i] = (c.numeric and '<th class="num">' or "<th>") .. escape(c.label or text.label(c.key)) .. "</th>"
  end
  out[#out + 1] = "<thead><tr>" .. concat(head) .. "</tr></thead>"
  local function line(row)
    local cells = {}
    for i, c in ipairs(columns) do
      cells[i] = (c.numeric and '<td class="num">' or "<td>") .. cell(row[c.key], c) .. "</td>"
    end
    return "<tr>" .. concat(cells) .. "</tr>"
  end
  out[#out + 1] = "<tbody>"
  for _, row in ipairs(rows) do
    out[#out + 1] = line(row)
  end
  out[#out + 1] = "</tbody>"
  if t.footer then
    out[#out + 1] = "<tfoot>" .. line(t.footer) .. "</tfoot>"
  end
  out[#out + 1] = "</table>"
end

-- An SVG from chart.* is embedded as it is; a prolog some other tool put
-- before it would be stray text inside HTML.
local function inline_svg(svg)
  svg = tostring(svg):gsub("^%s*<%?xml.-%?>%s*", ""):gsub("^%s*<!DOCTYPE[^>]*>%s*", "")
  return svg
end

--- A standalone HTML5 page: doc.title, doc.subtitle (text or a list of
-- lines), doc.sections = list of {heading, svg, table = {columns = {{key,
-- label, numeric, decimals, format}}, rows, footer, caption}, note}. Inline
-- CSS only: no scripts, nothing fetched.
function M.page(doc)
  if type(doc) ~= "table" then
    raise(("html.page: expected a document table, got a %s"):format(type(doc)))
  end
  local sections = doc.sections or {}
  if type(sections) ~= "table" then
    raise "html.page: doc.sections must be a list"
  end
  local title = doc.title and tostring(doc.title) or "Report"
  local out = {
    "<!DOCTYPE html>",
    '<html lang="en">',
    "<head>",
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    "<title>" .. escape(title) .. "</title>",
    "<style>\n" .. CSS .. "</style>",
    "</head>",
    "<body>",
    "<main>",
    "<h1>" .. escape(title) .. "</h1>",
  }
  if doc.subtitle then
    out[#out + 1] = '<p class="subtitle">' .. lines(doc.subtitle) .. "</p>"
  end
  for i, section in ipairs(sections) do
    if type(section) ~= "table" then
      raise(("html.page: section %d is a %s, not a table"):format(i, type(section)))
    end
    out[#out + 1] = "<section>"
    if section.heading then
      out[#out + 1] = "<h2>" .. escape(section.heading) .. "</h2>"
    end
    if section.svg then
      out[#out + 1] = "<figure>\n" .. inline_svg(section.svg) .. "</figure>"
    end
    if section.table then
      html_table(out, section.table)
    end
    if section.note then
      out[#out + 1] = '<p class="note">' .. lines(section.note) .. "</p>"
    end
    out[#out + 1] = "</section>"
  end
  out[#out + 1] = "</main>"
  out[#out + 1] = "</body>"
  out[#out + 1] = "</html>\n"
  return concat(out, "\n")
end

return M
