--- Charts for reports (pure Lua, no dependencies): an SVG bar chart by
-- group and an SVG stacked column time series (openai_usage.html puts them
-- on a page).
--   chart.bars(rows, {label = {"model", "size"}, value = "images", title = ...})
--   chart.stacked(rows, {series = "model", value = "images", title = ...})
-- Each is laid out first (plain tables of pixels and texts, which
-- chart.layout gives too), then written with openai_usage.svg.
-- The output is deterministic (same input, same bytes: nothing depends on
-- table order, the clock, the time zone or the locale) and every text from
-- the data is escaped, so the result can be cached, compared and embedded.
local errors = require "openai_usage.errors"
local svg = require "openai_usage.svg"
local text = require "openai_usage.text"
local time = require "openai_usage.time"

local M = {}

local floor, ceil, abs = math.floor, math.ceil, math.abs
local concat, sort = table.concat, table.sort

M.NONE = text.NONE
M.OTHER = text.OTHER

-- Okabe and Ito's palette, which people with any common colour-vision
-- deficiency can tell apart; black is left out (it reads as text) and
-- yellow comes last (weak on white). Grey is kept for "(other)".
M.PALETTE = { "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442" }
M.OTHER_COLOR = "#999999"
M.NEGATIVE_COLOR = "#D55E00"

local FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', Arial, sans-serif"
local INK, MUTED, GRID, AXIS = "#222222", "#666666", "#E6E6E6", "#999999"

-- Bad arguments come from programs, not data, so they raise (as the report
-- steps do); data never makes a chart fail.
local raise = errors.invalid

local finite, integral = text.finite, text.integral

-- Advance widths in em of DejaVu Sans (the widest of the usual sans-serif
-- fonts, so a layout that fits it fits the others); beyond ASCII, a
-- character two terminal cells wide takes a full em, one of none no room.
local NARROW = {}
for c in ("il.,:;'|!`ijI"):gmatch "." do
  NARROW[c:byte()] = 0.3
end
for c in ("frt()[]{}-/\\\" "):gmatch "." do
  NARROW[c:byte()] = 0.38
end

local EM_OF_CELLS = { [0] = 0, 0.68, 1.0 }

local function advance(c)
  if c < 0x80 then
    if NARROW[c] then
      return NARROW[c]
    elseif c >= 0x30 and c <= 0x39 then
      return 0.64
    elseif c == 0x4D or c == 0x57 or c == 0x6D or c == 0x77 then -- M W m w
      return 0.92
    elseif c >= 0x41 and c <= 0x5A then
      return 0.72
    end
    return 0.62
  end
  return EM_OF_CELLS[text.cells(c)]
end

local function text_width(s, size)
  local w = 0
  text.each_char(text.xml(s), function(code)
    w = w + advance(code)
  end)
  return w * size
end

--- Text cut to fit width pixels at font size, by whole UTF-8 characters,
-- ending with an ellipsis when cut. Returns the text and whether it was cut.
local function truncate(s, width, size)
  return text.truncate(text.xml(s), width, advance, size)
end

local number, label_text = text.number, text.label

local element, text_element = svg.element, svg.text_element

-- The title line, cut to fit: bold runs about a tenth wider than the
-- regular widths measured.
local function draw_title(out, title, width, pad)
  local shown = truncate(title, (width - 2 * pad) / 1.1, 15)
  out[#out + 1] = text_element("text", {
    "class", "title", "x", pad, "y", pad + 14, "font-size", 15, "font-weight", "bold",
  }, shown)
end

-- The start of a chart's document: its <title> is the chart's title, or
-- what it shows when it has none.
local function start(width, height, title, what)
  local out = svg.start(width, height, title ~= "" and title or what, FONT, INK)
  if title ~= "" then
    draw_title(out, title, width, 12)
  end
  return out
end

local function no_data(title, width)
  local height = 160
  local out = start(width, height, title, "no data")
  out[#out + 1] = element("text", {
    "class", "empty", "x", width / 2, "y", height / 2 + 5, "text-anchor", "middle", "font-size", 14, "fill", MUTED,
  }, "no data")
  return svg.finish(out)
end

-- Steps of an axis, as multiples of a power of ten.
local MANTISSAS = { 1, 2, 2.5, 5 }

--- Round ticks covering lo..hi (and zero), about count intervals: a list of
-- values, the digits after the point their labels need, and the step. Of
-- the round steps near (hi - lo) / count, the one whose number of intervals
-- is nearest count and whose axis wastes least room past the data wins.
-- Whole-number data gets whole-number steps.
function M.ticks(lo, hi, count, whole)
  lo, hi = math.min(lo, 0), math.max(hi, 0)
  if hi - lo <= 0 then
    hi = 1
  end
  count = math.max(count, 1)
  local raw = (hi - lo) / count
  local power = 10 ^ floor(math.log(raw) / math.log(10))
  if power * 10 <= raw then
    power = power * 10
  elseif power > raw then
    power = power / 10
  end
  local step, first, last, best
  for _, p in ipairs { power / 10, power, power * 10 } do
    for _, m in ipairs(MANTISSAS) do
      local s = m * p
      if not whole or s == floor(s) then
        local a, b = floor(lo / s + 1e-9), ceil(hi / s - 1e-9)
        if b - a <= math.max(10, 2 * count) then
          local waste = 1 - (hi - lo) / ((b - a) * s)
          local cost = abs(b - a - count) + 4 * waste
          if not best or cost < best - 1e-9 then
            step, first, last, best = s, a, b, cost
          end
        end
      end
    end
  end
  if not step then -- whole numbers below one step: never for whole data, kept for safety
    step, first, last = 1, floor(lo), ceil(hi)
  end
  local decimals = 0
  while decimals < 12 and abs(step * 10 ^ decimals - floor(step * 10 ^ decimals + 0.5)) > 1e-9 * 10 ^ decimals do
    decimals = decimals + 1
  end
  local values = {}
  for k = first, last do
    values[#values + 1] = k * step
  end
  return values, decimals, step
end

local function check_rows(rows, opts, fn)
  if type(rows) ~= "table" then
    raise(("chart.%s: expected a list of rows, got a %s"):format(fn, type(rows)))
  end
  if type(opts) ~= "table" then
    raise(("chart.%s: expected an options table, got a %s"):format(fn, type(opts)))
  end
  if type(opts.value) ~= "string" then
    raise(("chart.%s: opts.value must name the numeric field to chart"):format(fn))
  end
  if opts.width ~= nil and (not finite(opts.width) or opts.width < 200 or opts.width > 10000) then
    raise(("chart.%s: width %s is not a number of pixels from 200 to 10000"):format(fn, tostring(opts.width)))
  end
  for i, row in ipairs(rows) do
    if type(row) ~= "table" then
      raise(("chart.%s: row %d is a %s, not a table"):format(fn, i, type(row)))
    end
  end
end

local function field_list(names, fn)
  if names == nil then
    return {}
  elseif type(names) == "string" then
    return { names }
  elseif type(names) == "table" then
    for i, name in ipairs(names) do
      if type(name) ~= "string" then
        raise(("chart.%s: label field %d is a %s, not a field name"):format(fn, i, type(name)))
      end
    end
    return names
  end
  raise(("chart.%s: opts.label must be a field name or a list of them, got a %s"):format(fn, type(names)))
end

local function value_text(v, opts, whole)
  if opts.format then
    return tostring(opts.format(v))
  end
  return number(v, whole and 0 or opts.decimals or 2)
end

-- Bars: one item per row, its label, value and value's text; whether all
-- values are whole, and the range they cover (zero included).
local function bar_items(rows, opts, fields)
  local items, whole, lo, hi = {}, true, 0, 0
  for i, row in ipairs(rows) do
    local parts = {}
    for k, name in ipairs(fields) do
      parts[k] = label_text(row[name], opts.none)
    end
    local label = #fields > 0 and concat(parts, " \194\183 ") or ("#" .. i)
    local v = finite(row[opts.value])
    if v then
      whole = whole and integral(v)
      lo, hi = math.min(lo, v), math.max(hi, v)
    end
    items[i] = { label = label, value = v }
  end
  for _, item in ipairs(items) do
    item.text = item.value and value_text(item.value, opts, whole) or "\226\128\148"
  end
  return items, whole, lo, hi
end

local function widest(items, field, size)
  local w = 0
  for _, item in ipairs(items) do
    w = math.max(w, text_width(item[field], size))
  end
  return w
end

local BARS = { pad = 12, label_size = 12, value_size = 11, tick_size = 11, pitch = 24, bar_h = 16 }

-- Where everything of a bar chart goes, in pixels: the plot's x range,
-- the ticks, and per row its label, bar and value text.
local function layout_bars(rows, opts, fields, width, title)
  local k = BARS
  local pad = k.pad
  local items, whole, lo, hi = bar_items(rows, opts, fields)
  local value_w = ceil(widest(items, "text", k.value_size)) + 8
  -- labels take at most a third of the width, the plot at least 40 %
  local label_w = math.min(ceil(widest(items, "label", k.label_size)), floor(width / 3))
  local left_room = lo < 0 and value_w or 0
  local x0 = pad + label_w + 10 + left_room
  local x1 = width - pad - value_w

  local values, decimals = M.ticks(lo, hi, math.max(3, math.min(8, floor((x1 - x0) / 90))), whole)
  local first, last = values[1], values[#values]
  local tick_half = 0
  for _, t in ipairs(values) do
    tick_half = math.max(tick_half, text_width(number(t, decimals), k.tick_size) / 2)
  end
  x1 = math.min(x1, width - pad - ceil(tick_half))
  local scale = (x1 - x0) / (last - first)
  local function x_of(v)
    return x0 + (v - first) * scale
  end
  local zero = x_of(0)

  local title_h = title ~= "" and 28 or 0
  local top = pad + title_h + 4
  local axis_y = top + #items * k.pitch + 4
  local ticks = {}
  for i, t in ipairs(values) do
    ticks[i] = { value = t, x = x_of(t), text = number(t, decimals) }
  end
  for i, item in ipairs(items) do
    local y = top + (i - 1) * k.pitch
    item.shown = truncate(item.label, label_w, k.label_size)
    item.label_x, item.text_y = pad + label_w, y + k.pitch / 2 + 4
    local v = item.value
    if v then
      local a, b = zero, x_of(v)
      if b < a then
        a, b = b, a
      end
      item.bar = { x = a, y = y + (k.pitch - k.bar_h) / 2, width = b - a, height = k.bar_h, negative = v < 0 }
    end
    local end_x = v and x_of(v) or zero
    item.value_x = (v and v < 0) and end_x - 4 or end_x + 4
    item.value_anchor = (v and v < 0) and "end" or "start"
  end
  local caption = opts.value_label or opts.value
  return {
    width = width, height = axis_y + 34 + pad, title = title, x0 = x0, x1 = x1, top = top, axis_y = axis_y,
    ticks = ticks, items = items, caption = truncate(caption, x1 - x0, k.tick_size),
  }
end

local function draw_bars(layout, opts)
  local k, l = BARS, layout
  local out = start(l.width, l.height, l.title, opts.value)
  out[#out + 1] = '<g class="grid">'
  for _, t in ipairs(l.ticks) do
    out[#out + 1] = element("line", {
      "x1", t.x, "y1", l.top - 4, "x2", t.x, "y2", l.axis_y, "stroke", t.value == 0 and AXIS or GRID, "stroke-width", 1,
    })
  end
  out[#out + 1] = "</g>"
  local color, negative = opts.color or M.PALETTE[1], opts.negative_color or M.NEGATIVE_COLOR
  for _, item in ipairs(l.items) do
    out[#out + 1] = '<g class="row">'
    out[#out + 1] = text_element("title", {}, item.label .. ": " .. item.text)
    out[#out + 1] = text_element("text", {
      "class", "label", "x", item.label_x, "y", item.text_y, "text-anchor", "end",
    }, item.shown)
    local bar = item.bar
    if bar then
      out[#out + 1] = element("rect", {
        "class", "bar", "x", bar.x, "y", bar.y, "width", bar.width, "height", bar.height,
        "fill", bar.negative and negative or color,
      })
    end
    out[#out + 1] = text_element("text", {
      "class", "value", "x", item.value_x, "y", item.text_y,
      "text-anchor", item.value_anchor, "font-size", k.value_size, "fill", MUTED,
    }, item.text)
    out[#out + 1] = "</g>"
  end
  out[#out + 1] = '<g class="axis" font-size="' .. k.tick_size .. '" fill="' .. MUTED .. '">'
  out[#out + 1] = element("line", { "x1", l.x0, "y1", l.axis_y, "x2", l.x1, "y2", l.axis_y, "stroke", AXIS })
  for _, t in ipairs(l.ticks) do
    out[#out + 1] = element("line", {
      "class", "tick", "x1", t.x, "y1", l.axis_y, "x2", t.x, "y2", l.axis_y + 4, "stroke", AXIS,
    })
    out[#out + 1] = text_element("text", { "class", "tick", "x", t.x, "y", l.axis_y + 16, "text-anchor", "middle" },
      t.text)
  end
  out[#out + 1] = text_element("text", {
    "class", "caption", "x", l.x1, "y", l.axis_y + 30, "text-anchor", "end",
  }, l.caption)
  out[#out + 1] = "</g>"
  return svg.finish(out)
end

--- A horizontal bar chart, one bar per row in the order given.
-- opts: value (field), label (field or list of fields, joined with " · "),
-- title, width (pixels, default 720), none (label of a nil value),
-- color, negative_color, decimals, format (value -> text), value_label
-- (axis caption, default the value field). Returns the SVG text.
function M.bars(rows, opts)
  check_rows(rows, opts or {}, "bars")
  opts = opts or {}
  local fields = field_list(opts.label, "bars")
  local width = opts.width or 720
  local title = opts.title and tostring(opts.title) or ""
  if #rows == 0 then
    return no_data(title, width)
  end
  return draw_bars(layout_bars(rows, opts, fields, width, title), opts)
end

-- Label spacings in seconds, so thinned labels fall on round times.
local LABEL_STEPS = {
  60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800, 1209600, 2419200,
}

-- The bucket width when the caller gave none: end_time - start_time of a
-- row, else the smallest gap between bucket times, else a day.
local function infer_width(rows, time_field, times)
  for _, row in ipairs(rows) do
    local s, e = finite(row[time_field]), finite(row.end_time)
    if time_field == "start_time" and s and e and e > s then
      return e - s
    end
  end
  local best
  for i = 2, #times do
    local gap = times[i] - times[i - 1]
    if gap > 0 and (not best or gap < best) then
      best = gap
    end
  end
  return best or 86400
end

-- Stacked: the options, checked, with their defaults.
local function stacked_settings(rows, opts)
  check_rows(rows, opts, "stacked")
  local time_field = opts.time == nil and "start_time" or opts.time
  if type(time_field) ~= "string" then
    raise "chart.stacked: opts.time must name a field of Unix seconds"
  end
  if opts.series ~= nil and type(opts.series) ~= "string" then
    raise "chart.stacked: opts.series must name a field"
  end
  local height = opts.height or 360
  if not finite(height) or height < 160 or height > 10000 then
    raise(("chart.stacked: height %s is not a number of pixels from 160 to 10000"):format(tostring(opts.height)))
  end
  local max_series = opts.max_series or #M.PALETTE
  if not finite(max_series) or max_series < 1 then
    raise "chart.stacked: max_series must be at least 1"
  end
  return {
    time_field = time_field, width = opts.width or 720, height = height, max_series = max_series,
    title = opts.title and tostring(opts.title) or "",
  }
end

-- The rows that can be placed (a time and a value) with their series, and
-- their distinct times, sorted.
local function place_rows(rows, opts, time_field)
  local placed, seen, times = {}, {}, {}
  for _, row in ipairs(rows) do
    local t, v = finite(row[time_field]), finite(row[opts.value])
    if t and v then
      local series = opts.series and label_text(row[opts.series], opts.none) or opts.value
      placed[#placed + 1] = { t = t, v = v, series = series }
      if not seen[t] then
        seen[t] = true
        times[#times + 1] = t
      end
    end
  end
  sort(times)
  return placed, times
end

-- The buckets from the first time to the last: the first, the width and
-- how many, within opts.max_buckets.
local function bucket_grid(rows, opts, time_field, times)
  local step = opts.width_seconds
  if step ~= nil and (not finite(step) or step <= 0) then
    raise(("chart.stacked: width_seconds %s is not a positive number"):format(tostring(step)))
  end
  step = step or infer_width(rows, time_field, times)
  local t0 = times[1]
  local count = floor((times[#times] - t0) / step) + 1
  local max_buckets = opts.max_buckets or 2000
  if not finite(max_buckets) or max_buckets < 1 then
    raise "chart.stacked: max_buckets must be at least 1"
  end
  if count > max_buckets then
    raise(("chart.stacked: %s buckets of %s s are too many to draw (at most %s); chart wider buckets"):format(
      number(count), number(step), number(max_buckets)))
  end
  return { t0 = t0, step = step, count = count }
end

-- The series in the order drawn: by total, largest first, the tail past
-- max_series - 1 summed as "(other)"; each with its colour.
local function rank_series(placed, opts, max_series)
  local totals, names, whole = {}, {}, true
  for _, p in ipairs(placed) do
    if not totals[p.series] then
      totals[p.series] = 0
      names[#names + 1] = p.series
    end
    totals[p.series] = totals[p.series] + p.v
    whole = whole and integral(p.v)
  end
  sort(names, function(a, b)
    if totals[a] ~= totals[b] then
      return totals[a] > totals[b]
    end
    return a < b
  end)
  local grouped = false
  if #names > max_series then
    local other = opts.other or M.OTHER
    local kept, rest = {}, 0
    for i, name in ipairs(names) do
      if i < max_series then
        kept[i] = name
      else
        rest = rest + totals[name]
      end
    end
    kept[#kept + 1] = other
    totals[other] = rest
    names, grouped = kept, true
  end
  local rank, colors = {}, {}
  local custom = type(opts.colors) == "table" and opts.colors or {}
  local palette_i = 0
  for i, name in ipairs(names) do
    rank[name] = i
    if custom[name] then
      colors[i] = tostring(custom[name])
    elseif grouped and i == #names then
      colors[i] = M.OTHER_COLOR
    else
      palette_i = palette_i + 1
      colors[i] = M.PALETTE[(palette_i - 1) % #M.PALETTE + 1]
    end
  end
  return { names = names, totals = totals, rank = rank, colors = colors, whole = whole }
end

-- The value of each series in each bucket, each bucket's total, and the
-- range the stacks cover (positives up from zero, negatives down).
local function fill_buckets(placed, grid, series)
  local buckets = {}
  for b = 1, grid.count do
    buckets[b] = { t = grid.t0 + (b - 1) * grid.step, values = {} }
  end
  for _, p in ipairs(placed) do
    local b = floor((p.t - grid.t0) / grid.step) + 1
    local s = series.rank[p.series] or #series.names
    local values = buckets[b].values
    values[s] = (values[s] or 0) + p.v
  end
  local lo, hi = 0, 0
  for _, bucket in ipairs(buckets) do
    local up, down = 0, 0
    for s = 1, #series.names do
      local v = bucket.values[s]
      if v and v > 0 then
        up = up + v
      elseif v then
        down = down + v
      end
    end
    bucket.total = up + down
    lo, hi = math.min(lo, down), math.max(hi, up)
  end
  return buckets, lo, hi
end

local STACKED = { pad = 12, tick_size = 11, label_size = 11 }

-- The projection of a stacked chart (opts.projection), drawn dashed over
-- its band; a colour apart from the palette's first ones.
local PROJECTION_COLOR = "#D55E00"
local projection_points, layout_projection, draw_projection

-- The legend, wrapped onto as many lines as it needs: per series its x,
-- line and shown text; and the number of lines.
local function layout_legend(series, opts, width)
  local k = STACKED
  local legend, line_x, line = {}, k.pad, 0
  for i, name in ipairs(series.names) do
    local shown = truncate(name, 200, k.label_size)
    local w = 14 + text_width(shown, k.label_size)
    if line_x > k.pad and line_x + w > width - k.pad then
      line, line_x = line + 1, k.pad
    end
    legend[i] = {
      x = line_x, line = line, text = shown, color = series.colors[i],
      tooltip = name .. ": " .. value_text(series.totals[name] or 0, opts, series.whole),
    }
    line_x = line_x + w + 16
  end
  return legend, line + 1
end

-- The x axis: the plot's left and right edges, the pitch of a column and
-- the width of its bar, given the room the tick and time labels need.
local function layout_columns(grid, width, tick_w, label_half)
  local pad, count = STACKED.pad, grid.count
  local x0 = pad + math.max(ceil(tick_w) + 6, label_half)
  local x1 = width - pad
  if label_half > (x1 - x0) / count / 2 then
    -- the last label, centred under its column, must fit in the picture:
    -- x1 + label_half - (x1 - x0) / count / 2 = width - pad
    local k = 1 / (2 * count)
    x1 = (width - pad - label_half - x0 * k) / (1 - k)
  end
  local pitch = (x1 - x0) / count
  -- a gap between columns while there is room for one; below a few pixels
  -- a column gaps would only blur, so columns touch
  local bar_w = math.min(pitch * 0.8, 48)
  if pitch < 2 then
    bar_w = pitch
  elseif pitch < 5 then
    bar_w = pitch - 1
  end
  return x0, x1, pitch, bar_w
end

-- The segments of one column: positive values stack up from zero,
-- negative ones down; the edges are rounded once so neighbouring segments
-- meet without seams.
local function column_segments(bucket, series, opts, y_of)
  local function round2(y)
    return floor(y * 100 + 0.5) / 100
  end
  local segments = {}
  local up, down = 0, 0
  for s = 1, #series.names do
    local v = bucket.values[s]
    if v and v ~= 0 then
      local from, to
      if v > 0 then
        from, to = up, up + v
        up = to
      else
        from, to = down, down + v
        down = to
      end
      local ya, yb = round2(y_of(from)), round2(y_of(to))
      if yb > ya then
        ya, yb = yb, ya
      end
      segments[#segments + 1] = {
        y = yb, height = ya - yb, color = series.colors[s],
        tooltip = series.names[s] .. ": " .. value_text(v, opts, series.whole),
      }
    end
  end
  return segments
end

-- Which columns get a time label: a round spacing at least one label
-- wide, anchored on a round time when the spacing divides a day. Gives
-- the first column labelled and the spacing in columns.
local function thin_labels(grid, pitch, label_half)
  local step, t0 = grid.step, grid.t0
  local need = ceil((2 * label_half + 8) / pitch)
  local every = need
  for _, s in ipairs(LABEL_STEPS) do
    if s % step == 0 and s / step >= need then
      every = s / step
      break
    end
  end
  if every < need then
    every = need
  end
  local anchor = 0
  local span = every * step
  if span <= 86400 and 86400 % span == 0 then
    for i = 0, every - 1 do
      if (t0 + i * step) % span == 0 then
        anchor = i
        break
      end
    end
  end
  return anchor + 1, every
end

-- Where everything of a stacked chart goes, in pixels: legend, plot
-- frame, value ticks, columns with their segments, and time labels.
local function layout_stacked(settings, grid, series, buckets, lo, hi, opts)
  local k = STACKED
  local pad, width, height = k.pad, settings.width, settings.height
  local title_h = settings.title ~= "" and 28 or 0
  local legend, legend_lines = layout_legend(series, opts, width)
  local legend_top = pad + title_h
  local plot_top = legend_top + legend_lines * 18 + 22
  local plot_bottom = height - pad - 24
  if plot_bottom - plot_top < 100 then
    plot_bottom = plot_top + 100
    height = plot_bottom + pad + 24
  end

  local values, decimals = M.ticks(lo, hi, math.max(3, math.min(8, floor((plot_bottom - plot_top) / 50))), series.whole)
  local first, last = values[1], values[#values]
  local tick_w = 0
  for _, t in ipairs(values) do
    tick_w = math.max(tick_w, text_width(number(t, decimals), k.tick_size))
  end
  -- x labels: dates for whole UTC days, else month-day hour:minute
  local label_half = text_width(time.axis_label(grid.t0, grid.step), k.label_size) / 2 + 1
  local x0, x1, pitch, bar_w = layout_columns(grid, width, tick_w, label_half)
  local yscale = (plot_bottom - plot_top) / (last - first)
  local function y_of(v)
    return plot_bottom - (v - first) * yscale
  end

  local ticks = {}
  for i, t in ipairs(values) do
    ticks[i] = { value = t, y = y_of(t), text = number(t, decimals) }
  end
  for _, item in ipairs(legend) do
    item.y = legend_top + item.line * 18
  end
  local columns = {}
  for b, bucket in ipairs(buckets) do
    columns[b] = {
      x = x0 + (b - 1) * pitch + (pitch - bar_w) / 2, width = bar_w,
      tooltip = time.axis_label(bucket.t, grid.step) .. ": " .. value_text(bucket.total, opts, series.whole),
      segments = column_segments(bucket, series, opts, y_of),
    }
  end
  local labels = {}
  local from, every = thin_labels(grid, pitch, label_half)
  for b = from, grid.count, every do
    labels[#labels + 1] = { x = x0 + (b - 0.5) * pitch, text = time.axis_label(buckets[b].t, grid.step) }
  end
  local caption = opts.value_label or opts.value
  return {
    width = width, height = height, title = settings.title, legend = legend, x0 = x0, x1 = x1,
    plot_top = plot_top, plot_bottom = plot_bottom, ticks = ticks, columns = columns, labels = labels,
    caption = truncate(caption, width - 2 * pad, k.tick_size), pitch = pitch, y_of = y_of,
  }
end

local function draw_stacked(layout, opts)
  local k, l = STACKED, layout
  local out = start(l.width, l.height, l.title, opts.value)
  out[#out + 1] = ('<g class="legend" font-size="%d">'):format(k.label_size)
  for _, item in ipairs(l.legend) do
    out[#out + 1] = '<g class="legend-item">'
    out[#out + 1] = text_element("title", {}, item.tooltip)
    out[#out + 1] = element("rect", { "x", item.x, "y", item.y + 3, "width", 10, "height", 10, "fill", item.color })
    out[#out + 1] = text_element("text", { "x", item.x + 14, "y", item.y + 12 }, item.text)
    out[#out + 1] = "</g>"
  end
  out[#out + 1] = "</g>"
  out[#out + 1] = text_element("text", {
    "class", "caption", "x", k.pad, "y", l.plot_top - 10, "font-size", k.tick_size, "fill", MUTED,
  }, l.caption)

  out[#out + 1] = ('<g class="axis" font-size="%d" fill="%s">'):format(k.tick_size, MUTED)
  for _, t in ipairs(l.ticks) do
    out[#out + 1] = element("line", {
      "class", "grid", "x1", l.x0, "y1", t.y, "x2", l.x1, "y2", t.y, "stroke", t.value == 0 and AXIS or GRID,
    })
    out[#out + 1] = text_element("text", { "class", "tick", "x", l.x0 - 6, "y", t.y + 4, "text-anchor", "end" }, t.text)
  end
  out[#out + 1] = "</g>"

  for _, column in ipairs(l.columns) do
    out[#out + 1] = '<g class="bucket">'
    out[#out + 1] = text_element("title", {}, column.tooltip)
    for _, seg in ipairs(column.segments) do
      out[#out + 1] = element("rect", {
        "class", "seg", "x", column.x, "y", seg.y, "width", column.width, "height", seg.height, "fill", seg.color,
      }, text_element("title", {}, seg.tooltip))
    end
    out[#out + 1] = "</g>"
  end

  draw_projection(out, l)

  local bottom = l.plot_bottom
  out[#out + 1] = ('<g class="axis" font-size="%d" fill="%s">'):format(k.label_size, MUTED)
  out[#out + 1] = element("line", { "x1", l.x0, "y1", bottom, "x2", l.x1, "y2", bottom, "stroke", AXIS })
  for _, label in ipairs(l.labels) do
    out[#out + 1] = element("line", {
      "class", "tick", "x1", label.x, "y1", bottom, "x2", label.x, "y2", bottom + 4, "stroke", AXIS,
    })
    out[#out + 1] = text_element("text", { "class", "time", "x", label.x, "y", bottom + 17, "text-anchor", "middle" },
      label.text)
  end
  out[#out + 1] = "</g>"
  return svg.finish(out)
end

-- opts.projection checked: the days ahead, { t, value, low, high }, sorted
-- by t (a point without a finite value is left out).
projection_points = function(opts)
  local list = opts.projection
  if list == nil then
    return {}
  end
  if type(list) ~= "table" then
    raise "chart.stacked: opts.projection must be a list of { t, value, low, high }"
  end
  local out = {}
  for _, p in ipairs(list) do
    local t, v = type(p) == "table" and finite(p.t), type(p) == "table" and finite(p.value)
    if t and v then
      local low, high = finite(p.low) or v, finite(p.high) or v
      out[#out + 1] = { t = t, value = v, low = math.min(low, v), high = math.max(high, v) }
    end
  end
  sort(out, function(a, b)
    return a.t < b.t
  end)
  return out
end

-- Where the projection goes: per day ahead the left and right of its
-- column's pitch and the y of its value, low and high (a dashed step line
-- over a band).
layout_projection = function(layout, grid, projection)
  local out = {}
  for i, p in ipairs(projection) do
    local b = floor((p.t - grid.t0) / grid.step) + 1
    local left = layout.x0 + (b - 1) * layout.pitch
    out[i] = { x1 = left, x2 = left + layout.pitch, y = layout.y_of(p.value), y_low = layout.y_of(p.low),
      y_high = layout.y_of(p.high) }
  end
  return out
end

-- The projection's band (a path around the days' intervals) and its
-- dashed step line, with a legend entry.
draw_projection = function(out, l)
  local points = l.projection
  if not points or #points == 0 then
    return
  end
  local up, down, line = {}, {}, {}
  for _, p in ipairs(points) do
    up[#up + 1] = svg.coord(p.x1) .. "," .. svg.coord(p.y_high) .. " " .. svg.coord(p.x2) .. "," .. svg.coord(p.y_high)
    table.insert(down, 1, svg.coord(p.x2) .. "," .. svg.coord(p.y_low) .. " " .. svg.coord(p.x1) .. "," ..
      svg.coord(p.y_low))
    line[#line + 1] = svg.coord(p.x1) .. "," .. svg.coord(p.y) .. " " .. svg.coord(p.x2) .. "," .. svg.coord(p.y)
  end
  out[#out + 1] = '<g class="projection">'
  out[#out + 1] = element("path", {
    "class", "band", "d", "M" .. concat(up, " L") .. " L" .. concat(down, " L") .. " Z", "fill", PROJECTION_COLOR,
    "fill-opacity", "0.22", "stroke", "none",
  }, text_element("title", {}, "projected, 95 % interval"))
  out[#out + 1] = element("polyline", {
    "class", "projected", "points", concat(line, " "), "fill", "none", "stroke", PROJECTION_COLOR,
    "stroke-width", 2.5, "stroke-dasharray", "6 4",
  }, text_element("title", {}, "projected"))
  local x, y = l.width - STACKED.pad - 150, l.plot_top - 14
  out[#out + 1] = element("line", { "x1", x, "y1", y, "x2", x + 24, "y2", y, "stroke", PROJECTION_COLOR,
    "stroke-width", 2.5, "stroke-dasharray", "6 4" })
  out[#out + 1] = text_element("text", { "class", "projection-label", "x", x + 30, "y", y + 4,
    "font-size", STACKED.label_size, "fill", MUTED }, "projected (95 %)")
  out[#out + 1] = "</g>"
end

-- The layout of a stacked chart, or nil when no row can be placed.
local function stacked_layout(rows, opts)
  local settings = stacked_settings(rows, opts)
  local placed, times = place_rows(rows, opts, settings.time_field)
  if #placed == 0 then
    return nil, settings
  end
  local projection = projection_points(opts)
  if #projection > 0 then
    local seen = {}
    for _, t in ipairs(times) do
      seen[t] = true
    end
    for _, p in ipairs(projection) do
      if not seen[p.t] then
        seen[p.t], times[#times + 1] = true, p.t
      end
    end
    sort(times)
  end
  local grid = bucket_grid(rows, opts, settings.time_field, times)
  local series = rank_series(placed, opts, settings.max_series)
  local buckets, lo, hi = fill_buckets(placed, grid, series)
  for _, p in ipairs(projection) do
    hi = math.max(hi, p.high)
    lo = math.min(lo, p.low)
  end
  local layout = layout_stacked(settings, grid, series, buckets, lo, hi, opts)
  layout.projection = layout_projection(layout, grid, projection)
  return layout, settings
end

--- A stacked column chart over time: one column per bucket, one segment
-- per series. opts: value (field), series (field giving the segment;
-- without it one series), time (field of Unix seconds, default
-- "start_time"), width_seconds (bucket width, inferred when absent), title,
-- width and height (pixels, default 720 x 360), max_series (segments shown,
-- "(other)" included, default 7), max_buckets (default 2000), colors (series
-- name -> colour), none, other, decimals, format, value_label, projection
-- (days ahead, { t, value, low, high }: a dashed line over its band).
-- Missing buckets between the first and the last show as empty columns.
function M.stacked(rows, opts)
  opts = opts or {}
  local layout, settings = stacked_layout(rows, opts)
  if not layout then
    return no_data(settings.title, settings.width)
  end
  return draw_stacked(layout, opts)
end

--- The geometry a chart is drawn from, in pixels, for a caller that draws
-- it some other way: chart.layout.bars(rows, opts) and
-- chart.layout.stacked(rows, opts) check opts as chart.bars and
-- chart.stacked do and give a table (nil when there is nothing to draw).
M.layout = {}

function M.layout.bars(rows, opts)
  opts = opts or {}
  check_rows(rows, opts, "bars")
  if #rows == 0 then
    return nil
  end
  return layout_bars(rows, opts, field_list(opts.label, "bars"), opts.width or 720,
    opts.title and tostring(opts.title) or "")
end

function M.layout.stacked(rows, opts)
  return (stacked_layout(rows, opts or {}))
end

return M
