--- SVG emission (pure Lua): elements from names and attribute lists, and
-- the document around them. It decides nothing about where things go:
-- openai_usage.chart lays a chart out, then writes it with these.
local text = require "openai_usage.text"

local M = {}

local concat = table.concat

--- A coordinate: at most two decimals, no trailing zeros, never "-0",
-- always a point whatever the C locale.
function M.coord(x)
  local s = text.decimal("%.2f", x)
  s = s:gsub("0+$", ""):gsub("%.$", "")
  if s == "-0" then
    return "0"
  end
  return s
end

-- Attributes from a list name, value, name, value...: numbers as
-- coordinates, text escaped, nil values left out.
local function attrs(list)
  local out = {}
  for i = 1, #list, 2 do
    local v = list[i + 1]
    if v ~= nil then
      if type(v) == "number" then
        v = M.coord(v)
      else
        v = text.escape(v)
      end
      out[#out + 1] = (" %s=\"%s\""):format(list[i], v)
    end
  end
  return concat(out)
end

--- <name attrs/> or, with content (markup, already escaped),
-- <name attrs>content</name>.
function M.element(name, list, content)
  if content == nil then
    return "<" .. name .. attrs(list) .. "/>"
  end
  return "<" .. name .. attrs(list) .. ">" .. content .. "</" .. name .. ">"
end

--- An element holding text from the data, escaped.
function M.text_element(name, list, content)
  return M.element(name, list, text.escape(content))
end

--- The lines a document starts with: the root with its size, font and
-- ink, a <title> and a white background. Add elements, then M.finish.
function M.start(width, height, title, font, ink)
  local w, h = M.coord(width), M.coord(height)
  return {
    ('<svg xmlns="http://www.w3.org/2000/svg" width="%s" height="%s" viewBox="0 0 %s %s" role="img"'):format(w, h, w, h)
      .. (' font-family="%s" font-size="12" fill="%s">'):format(text.escape(font), ink),
    M.text_element("title", {}, title),
    M.element("rect", { "width", width, "height", height, "fill", "#FFFFFF" }),
  }
end

--- The text of a document begun with M.start.
function M.finish(out)
  out[#out + 1] = "</svg>\n"
  return concat(out, "\n")
end

return M
