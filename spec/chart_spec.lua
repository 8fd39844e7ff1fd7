-- Charts: SVG bars, SVG stacked time series and the HTML report, checked as
-- parsed documents (strict XML through python3) and as pictures rendered by
-- headless Chromium.
local chart = require "openai_usage.chart"
local html = require "openai_usage.html"
local txt = require "openai_usage.text"
local time = require "openai_usage.time"
local cjson = require "cjson"
local util = require "spec.support.util"
local browser = require "spec.support.browser"

local q, write, read = util.q, util.write, util.read_if

-- Output and exit code of a shell command (the code from the shell itself:
-- os.execute and close report it differently on 5.1).
local function run(cmd)
  local p = assert(io.popen(cmd .. ' 2>&1; echo "exit=$?"'))
  local out = p:read "*a"
  p:close()
  local body, code = out:match "^(.*)exit=(%d+)%s*$"
  return body, tonumber(code)
end

-- Debian's python3 (make deps installs it) starts fastest; $PYTHON overrides.
local PYTHON = os.getenv "PYTHON" or (read "/usr/bin/python3" and "/usr/bin/python3") or "python3"

local dirs = {}
local function tmpdir()
  local out, code = run "mktemp -d /tmp/chart_spec.XXXXXX"
  assert(code == 0, out)
  local dir = out:match "^(%S+)"
  dirs[#dirs + 1] = dir
  return dir
end

-- The strict parse of an SVG (an error fails the test), or of an HTML page.
local function parse(kind, text)
  local path = tmpdir() .. "/doc." .. kind
  write(path, text)
  local out, code = run(("env -u LD_PRELOAD %s spec/support/markup.py %s %s"):format(PYTHON, kind, q(path)))
  local ok, doc = pcall(cjson.decode, out)
  assert(ok, "markup.py printed no JSON: " .. out)
  assert(code == 0 and not doc.error, ("%s does not parse: %s\n%s"):format(kind, tostring(doc.error), text))
  return doc
end

local function svg_tree(text)
  return parse("svg", text)
end

-- Elements of a tree in document order, optionally of one tag and class.
local function all(node, tag, class, out)
  out = out or {}
  if (not tag or node.tag == tag) and (not class or node.attrs.class == class) then
    out[#out + 1] = node
  end
  for _, child in ipairs(node.children) do
    all(child, tag, class, out)
  end
  return out
end

local function num(node, name)
  local v = tonumber(node.attrs[name])
  assert(v, ("<%s> has no numeric %s"):format(node.tag, name))
  return v
end

-- "1,234.5" -> 1234.5
local function value_of(text)
  return tonumber((text:gsub(",", "")))
end

local function sum(list)
  local s = 0
  for _, v in ipairs(list) do
    s = s + v
  end
  return s
end

-- Characters of valid UTF-8 text (the parse has already proven it valid).
local function utf8_chars(s)
  local out = {}
  for ch in s:gmatch "[%z\1-\127\194-\244][\128-\191]*" do
    out[#out + 1] = ch
  end
  return out
end

local ELLIPSIS = "\226\128\166"

local function interpreter()
  local lua = os.getenv "OPENAI_USAGE_LUA"
  if lua then
    return lua
  end
  local f = assert(io.open "/proc/self/stat")
  local pid = f:read("*l"):match "^(%d+)"
  f:close()
  local out = run("readlink /proc/" .. pid .. "/exe")
  return out:match "^(%S+)"
end

-- A screenshot by headless Chromium of a file, window w x h: the PNG's path.
local function screenshot(path, w, h)
  return browser.screenshot(path, w, h, tmpdir())
end

local pixels = browser.pixels

local DAY = 86400
local T0 = 1730419200 -- 2024-11-01T00:00:00Z

-- Rows of images per day and model, with a gap on one day.
local function daily_rows(days, models, gap)
  local rows = {}
  for d = 0, days - 1 do
    if d ~= gap then
      for i, model in ipairs(models) do
        rows[#rows + 1] = {
          start_time = T0 + d * DAY, end_time = T0 + (d + 1) * DAY, model = model,
          images = ((d * 37 + i * 101) % 97 + 5) * (#models + 1 - i),
        }
      end
    end
  end
  return rows
end

-- The x of a value on a bar chart's axis from its ticks: zero and pixels per unit.
local function bar_scale(tree)
  local ticks = all(tree, "text", "tick")
  local a, b = ticks[1], ticks[#ticks]
  local va, vb = value_of(a.text), value_of(b.text)
  local k = (num(b, "x") - num(a, "x")) / (vb - va)
  return num(a, "x") - va * k, k, ticks
end

-- Pixels per unit on a stacked chart's y axis, and the y of zero.
local function y_scale(tree)
  local ticks = all(tree, "text", "tick")
  local a, b = ticks[1], ticks[#ticks]
  local k = (num(a, "y") - num(b, "y")) / (value_of(b.text) - value_of(a.text))
  return k, num(a, "y") - 4 + value_of(a.text) * k, ticks
end

-- Series name -> fill colour, from the legend.
local function legend_of(tree)
  local colors, order = {}, {}
  for _, item in ipairs(all(tree, "g", "legend-item")) do
    local name = all(item, "text")[1].text
    colors[name] = all(item, "rect")[1].attrs.fill
    order[#order + 1] = name
  end
  return colors, order
end

local function check_svg_root(tree)
  assert.equal("svg", tree.tag)
  assert.equal("http://www.w3.org/2000/svg", tree.ns)
  local w, h = num(tree, "width"), num(tree, "height")
  assert.equal(("0 0 %d %d"):format(w, h), tree.attrs.viewBox)
  assert.equal("title", tree.children[1].tag)
  -- everything placed inside the picture
  for _, node in ipairs(all(tree)) do
    for _, a in ipairs { "x", "x1", "x2" } do
      if node.attrs[a] then
        assert.is_true(num(node, a) >= 0 and num(node, a) <= w, ("%s=%s outside 0..%d"):format(a, node.attrs[a], w))
      end
    end
    for _, a in ipairs { "y", "y1", "y2" } do
      if node.attrs[a] then
        assert.is_true(num(node, a) >= 0 and num(node, a) <= h, ("%s=%s outside 0..%d"):format(a, node.attrs[a], h))
      end
    end
    if node.tag == "rect" and node.attrs.class then
      assert.is_true(num(node, "x") + num(node, "width") <= w + 0.01)
      assert.is_true(num(node, "y") + num(node, "height") <= h + 0.01)
    end
  end
  return w, h
end

describe("chart", function()
  teardown(function()
    for _, dir in ipairs(dirs) do
      util.rm_rf(dir)
    end
  end)

  describe("bars", function()
    local rows = {
      { model = "gpt-image-1", size = "1024x1024", images = 123456 },
      { model = "dall-e-3", size = "1024x1792", images = 45678 },
      { model = "dall-e-2", images = 9012 },
      { model = "tiny", size = "256x256", images = 7 },
    }

    it("is valid SVG with a namespace, a viewBox, a width and a height, all drawn inside it", function()
      local svg = chart.bars(rows, { label = { "model", "size" }, value = "images", title = "Images by model" })
      local w = check_svg_root(svg_tree(svg))
      assert.equal(720, w)
      local wide = svg_tree(chart.bars(rows, { label = "model", value = "images", width = 1000 }))
      assert.equal(1000, check_svg_root(wide))
    end)

    it("draws one bar per row, in the order given, as long as its value", function()
      local tree = svg_tree(chart.bars(rows, { label = "model", value = "images" }))
      local bars, labels = all(tree, "rect", "bar"), all(tree, "text", "label")
      assert.equal(#rows, #bars)
      for i, row in ipairs(rows) do
        assert.equal(row.model, labels[i].text)
      end
      local zero, k = bar_scale(tree)
      for i, row in ipairs(rows) do
        assert.near(zero, num(bars[i], "x"), 0.01)
        assert.near(row.images * k, num(bars[i], "width"), 0.02)
      end
      -- reversed input, reversed bars
      local reversed = {}
      for i = #rows, 1, -1 do
        reversed[#reversed + 1] = rows[i]
      end
      local back = all(svg_tree(chart.bars(reversed, { label = "model", value = "images" })), "text", "label")
      assert.equal(rows[#rows].model, back[1].text)
      assert.equal(rows[1].model, back[#back].text)
    end)

    it("puts round ticks on an axis from zero past the largest value, where the bars say", function()
      for _, top in ipairs { 7, 93, 1000, 123456, 0.37, 9999999 } do
        local data = { { label = "a", v = top }, { label = "b", v = top / 3 } }
        local tree = svg_tree(chart.bars(data, { label = "label", value = "v" }))
        local zero, k, ticks = bar_scale(tree)
        local values = {}
        for i, t in ipairs(ticks) do
          values[i] = value_of(t.text)
          assert.near(zero + values[i] * k, num(t, "x"), 0.02) -- the tick sits where a bar of its value ends
        end
        assert.equal(0, values[1])
        assert.is_true(values[#values] >= top and values[#values - 1] < top, "the axis ends one step past the data")
        local step = values[2] - values[1]
        for i = 3, #values do
          assert.near(step, values[i] - values[i - 1], step * 1e-9)
        end
        local mantissa = step / 10 ^ math.floor(math.log(step) / math.log(10) + 1e-9)
        assert.is_truthy(({ [1] = true, [2] = true, [2.5] = true, [5] = true })[tonumber(("%.6g"):format(mantissa))],
          "step " .. step)
        assert.is_true(#values >= 3 and #values <= 11)
        if top == math.floor(top) and top < 10 then
          assert.equal(step, math.floor(step)) -- counts never get fractional ticks
        end
      end
    end)

    it("labels values with thousands separators", function()
      local tree = svg_tree(chart.bars({
        { name = "a", n = 1234567 }, { name = "b", n = 1234.5 }, { name = "c", n = 999 },
      }, { label = "name", value = "n" }))
      local values = all(tree, "text", "value")
      assert.equal("1,234,567.00", values[1].text)
      assert.equal("1,234.50", values[2].text)
      assert.equal("999.00", values[3].text)
      local whole = all(svg_tree(chart.bars({ { name = "a", n = 1234567 }, { name = "b", n = 1000 } },
        { label = "name", value = "n" })), "text", "value")
      assert.equal("1,234,567", whole[1].text)
      assert.equal("1,000", whole[2].text)
      local costs = all(svg_tree(chart.bars({ { name = "a", usd = 12.5 } }, {
        label = "name", value = "usd", format = function(v)
          return "$" .. txt.number(v, 2)
        end,
      })), "text", "value")
      assert.equal("$12.50", costs[1].text)
    end)

    it("joins several label fields with a middle dot and shows a missing value as (none)", function()
      local labels = all(svg_tree(chart.bars(rows, { label = { "model", "size" }, value = "images" })), "text", "label")
      assert.equal("gpt-image-1 \194\183 1024x1024", labels[1].text)
      assert.equal("dall-e-2 \194\183 (none)", labels[3].text)
      local named = all(svg_tree(chart.bars(rows, { label = { "model", "size" }, value = "images", none = "any" })),
        "text", "label")
      assert.equal("dall-e-2 \194\183 any", named[3].text)
    end)

    it("cuts long labels by UTF-8 character with an ellipsis and keeps the whole label in the tooltip", function()
      local long = ("\195\169t\195\169 \230\151\165\230\156\172 "):rep(40) -- "été 日本 " x 40
      local tree =
        svg_tree(chart.bars({ { name = long, n = 5 }, { name = "short", n = 3 } }, { label = "name", value = "n" }))
      local shown = all(tree, "text", "label")[1].text
      local chars, full = utf8_chars(shown), utf8_chars(long)
      assert.equal(ELLIPSIS, chars[#chars])
      assert.is_true(#chars > 5 and #chars < #full)
      for i = 1, #chars - 1 do
        assert.equal(full[i], chars[i]) -- a prefix by whole characters
      end
      assert.equal(long .. ": 5", all(tree, "g", "row")[1].children[1].text)
      assert.equal("short", all(tree, "text", "label")[2].text)
    end)

    it("gives a label the room of the terminal cells its characters take: wide ones an em, marks none", function()
      local function bar_x(label)
        local svg = chart.bars({ { name = label, n = 1 } }, { label = "name", value = "n" })
        return num(all(svg_tree(svg), "rect", "bar")[1], "x")
      end
      -- U+231A (watch) and U+4E2D (CJK) both take two cells; U+0483 is a combining mark
      local watch, han, mark = ("\226\140\154"):rep(6), ("\228\184\173"):rep(6), "e" .. ("\210\131"):rep(6)
      assert.equal(txt.width(watch), txt.width(han))
      assert.equal(bar_x(han), bar_x(watch))
      assert.equal(1, txt.width(mark))
      assert.equal(bar_x "e", bar_x(mark))
      assert.is_true(bar_x(han) > bar_x "e")
    end)

    it("draws zero as no length and negative values to the left of zero, in another colour", function()
      local data = { { k = "up", v = 40 }, { k = "none", v = 0 }, { k = "down", v = -25 }, { k = "missing" } }
      local tree = svg_tree(chart.bars(data, { label = "k", value = "v" }))
      check_svg_root(tree)
      local bars = all(tree, "rect", "bar")
      assert.equal(3, #bars) -- no bar for a missing value
      local zero, k, ticks = bar_scale(tree)
      assert.is_true(value_of(ticks[1].text) <= -25)
      assert.near(zero, num(bars[1], "x"), 0.01)
      assert.near(40 * k, num(bars[1], "width"), 0.02)
      assert.equal(0, num(bars[2], "width"))
      assert.near(zero - 25 * k, num(bars[3], "x"), 0.02)
      assert.near(25 * k, num(bars[3], "width"), 0.02)
      assert.are_not.equal(bars[1].attrs.fill, bars[3].attrs.fill)
      local values = all(tree, "text", "value")
      assert.equal("40", values[1].text)
      assert.equal("0", values[2].text)
      assert.equal("-25", values[3].text)
      assert.equal("\226\128\148", values[4].text)
      -- all zero still has an axis
      local zeros = svg_tree(chart.bars({ { k = "a", v = 0 }, { k = "b", v = 0 } }, { label = "k", value = "v" }))
      check_svg_root(zeros)
      assert.is_true(#all(zeros, "text", "tick") >= 2)
    end)

    it("says no data for no rows", function()
      local tree = svg_tree(chart.bars({}, { label = "model", value = "images", title = "Images" }))
      check_svg_root(tree)
      assert.equal("no data", all(tree, "text", "empty")[1].text)
      assert.equal(0, #all(tree, "rect", "bar"))
      assert.equal("Images", tree.children[1].text)
    end)

    it("escapes markup, ampersands, quotes and bytes that are not text in every label and title", function()
      local nasty = "<script>alert('x')</script> & \"q\" \195\188ber"
      local svg = chart.bars({ { name = nasty, n = 1 }, { name = "bad \255\0 \1 bytes\t\n", n = 2 } },
        { label = "name", value = "n", title = nasty, value_label = nasty })
      assert.is_nil(svg:find "<script", 1, true)
      local tree = svg_tree(svg)
      assert.equal(0, #all(tree, "script"))
      assert.equal(nasty, tree.children[1].text)
      assert.equal(nasty, all(tree, "text", "title")[1].text)
      assert.equal(nasty, all(tree, "text", "label")[1].text)
      assert.equal(nasty, all(tree, "text", "caption")[1].text)
      local bad = all(tree, "text", "label")[2].text
      assert.equal("bad \239\191\189\239\191\189 \239\191\189 bytes  ", bad)
    end)

    it("refuses bad arguments with an error table", function()
      local cases = {
        { nil, { value = "n" }, "expected a list of rows" },
        { {}, nil, "opts.value" },
        { {}, {}, "opts.value" },
        { {}, { value = "n", label = 3 }, "opts.label" },
        { {}, { value = "n", label = { "a", false } }, "label field 2" },
        { {}, { value = "n", width = 20 }, "width 20" },
        { { { n = 1 }, 5 }, { value = "n" }, "row 2 is a number" },
      }
      for _, case in ipairs(cases) do
        local ok, err = pcall(chart.bars, case[1], case[2])
        assert.is_false(ok)
        assert.equal("invalid_argument", err.kind)
        assert.truthy(tostring(err):find(case[3], 1, true), tostring(err))
      end
    end)
  end)

  describe("stacked", function()
    local models = { "gpt-image-1", "dall-e-3", "dall-e-2" }

    it("stacks one segment per series, each column as tall as its bucket's total", function()
      local rows = daily_rows(10, models, 4)
      local tree = svg_tree(chart.stacked(rows, { series = "model", value = "images", title = "Images per day" }))
      check_svg_root(tree)
      local k, zero = y_scale(tree)
      local colors = legend_of(tree)
      local name_of = {}
      for name, color in pairs(colors) do
        name_of[color] = name
      end
      local expected = {}
      for _, row in ipairs(rows) do
        local b = (row.start_time - T0) / DAY + 1
        expected[b] = expected[b] or { total = 0 }
        expected[b][row.model] = row.images
        expected[b].total = expected[b].total + row.images
      end
      local buckets = all(tree, "g", "bucket")
      assert.equal(10, #buckets)
      for b, bucket in ipairs(buckets) do
        local segs = all(bucket, "rect", "seg")
        local heights = {}
        for i, seg in ipairs(segs) do
          heights[i] = num(seg, "height")
          local v = expected[b] and expected[b][name_of[seg.attrs.fill]]
          assert.near(v * k, heights[i], 0.03)
        end
        local total = expected[b] and expected[b].total or 0
        assert.near(total * k, sum(heights), 0.03)
        if #segs > 0 then
          -- stacked from zero up, no gaps or overlaps
          assert.near(zero, num(segs[1], "y") + heights[1], 0.03)
          for i = 2, #segs do
            assert.near(num(segs[i - 1], "y"), num(segs[i], "y") + heights[i], 0.001)
          end
        end
      end
    end)

    it("leaves an empty column for a bucket with no rows between the first and the last", function()
      local rows = daily_rows(6, models, 2)
      local buckets = all(svg_tree(chart.stacked(rows, { series = "model", value = "images" })), "g", "bucket")
      assert.equal(6, #buckets)
      assert.equal(0, #all(buckets[3], "rect", "seg"))
      assert.equal(#models, #all(buckets[2], "rect", "seg"))
      assert.truthy(buckets[3].children[1].text:find(": 0", 1, true))
    end)

    it("orders series by total, largest first, with colours that do not depend on row order", function()
      local rows = daily_rows(5, models)
      local totals = {}
      for _, row in ipairs(rows) do
        totals[row.model] = (totals[row.model] or 0) + row.images
      end
      local svg = chart.stacked(rows, { series = "model", value = "images" })
      local colors, order = legend_of(svg_tree(svg))
      assert.equal(#models, #order)
      for i = 2, #order do
        assert.is_true(totals[order[i - 1]] >= totals[order[i]])
      end
      for i, name in ipairs(order) do
        assert.equal(chart.PALETTE[i], colors[name])
      end
      local shuffled = {}
      for i = #rows, 1, -1 do
        shuffled[#shuffled + 1] = rows[i]
      end
      assert.equal(svg, chart.stacked(shuffled, { series = "model", value = "images" }))
    end)

    it("groups the series beyond max_series as (other), in grey", function()
      local names = { "a", "b", "c", "d", "e", "f" }
      local rows = daily_rows(3, names)
      local totals = {}
      for _, row in ipairs(rows) do
        totals[row.model] = (totals[row.model] or 0) + row.images
      end
      table.sort(names, function(x, y)
        return totals[x] > totals[y]
      end)
      local tree = svg_tree(chart.stacked(rows, { series = "model", value = "images", max_series = 4 }))
      local colors, order = legend_of(tree)
      assert.same({ names[1], names[2], names[3], "(other)" }, order)
      assert.equal(chart.OTHER_COLOR, colors["(other)"])
      local k = y_scale(tree)
      local kept = { [names[1]] = true, [names[2]] = true, [names[3]] = true }
      local rest = 0
      for _, row in ipairs(rows) do
        if row.start_time == T0 and not kept[row.model] then
          rest = rest + row.images
        end
      end
      local segs = all(all(tree, "g", "bucket")[1], "rect", "seg")
      assert.equal(4, #segs)
      assert.equal(chart.OTHER_COLOR, segs[4].attrs.fill)
      assert.near(rest * k, num(segs[4], "height"), 0.03)
      -- no series field: one series named after the value
      local _, single = legend_of(svg_tree(chart.stacked(rows, { value = "images" })))
      assert.same({ "images" }, single)
    end)

    it("labels days as UTC dates and hours as month-day hour:minute, whatever the time zone", function()
      local days = all(svg_tree(chart.stacked(daily_rows(3, models), { series = "model", value = "images" })),
        "text", "time")
      assert.equal(3, #days)
      for i, label in ipairs(days) do
        assert.equal(os.date("!%Y-%m-%d", T0 + (i - 1) * DAY), label.text)
      end
      local hours = {}
      for h = 0, 3 do
        hours[#hours + 1] = { start_time = T0 + 13 * 3600 + h * 3600, end_time = T0 + 14 * 3600 + h * 3600, images = h }
      end
      local labels = all(svg_tree(chart.stacked(hours, { value = "images" })), "text", "time")
      assert.equal(4, #labels)
      for i, label in ipairs(labels) do
        assert.equal(os.date("!%m-%d %H:%M", hours[i].start_time), label.text)
      end
      -- across a year's end and a leap day
      for _, t in ipairs { 1735603200, 1709164800, 951782400, 4107542400 } do
        assert.equal(os.date("!%Y-%m-%d", t), time.axis_label(t, DAY))
        assert.equal(os.date("!%m-%d %H:%M", t + 45296), time.axis_label(t + 45296, DAY))
        assert.equal(os.date("!%m-%d %H:%M", t), time.axis_label(t, 3600))
        assert.equal(os.date("!%Y-%m-%d %H:%M", t + 45296), time.label(t + 45296, DAY))
      end
    end)

    it("thins the time labels so that they never overlap", function()
      local cases = {
        { rows = daily_rows(90, { "m" }), every = DAY },
        { rows = {}, every = 60 },
        { rows = {}, every = 3600, width = 400 },
      }
      for m = 0, 1439 do
        cases[2].rows[#cases[2].rows + 1] = { start_time = T0 + m * 60, end_time = T0 + m * 60 + 60, n = m % 13 }
      end
      for h = 0, 24 * 7 - 1 do
        cases[3].rows[#cases[3].rows + 1] = { start_time = T0 + h * 3600, end_time = T0 + h * 3600 + 3600, n = 1 }
      end
      for _, case in ipairs(cases) do
        local value = case.rows[1].images and "images" or "n"
        local tree = svg_tree(chart.stacked(case.rows, { value = value, width = case.width }))
        local w = check_svg_root(tree)
        local labels = all(tree, "text", "time")
        assert.is_true(#labels >= 3)
        for i, label in ipairs(labels) do
          -- DejaVu Sans, the widest font that can be picked, draws these
          -- characters at most 0.64 em wide; the labels are 11 px
          local half = #label.text * 11 * 0.64 / 2
          local x = num(label, "x")
          assert.is_true(x - half >= 0 and x + half <= w, label.text .. " is cut at the edge")
          if i > 1 then
            local gap = x - num(labels[i - 1], "x")
            assert.is_true(gap >= 2 * half, ("%s and %s overlap"):format(labels[i - 1].text, label.text))
          end
        end
      end
    end)

    it("takes the bucket width from width_seconds, end_time, or the gaps between buckets", function()
      local rows = {}
      for h = 0, 5, 1 do
        if h ~= 2 then
          rows[#rows + 1] = { t = T0 + h * 3600, n = h + 1 }
        end
      end
      local tree = svg_tree(chart.stacked(rows, { time = "t", value = "n" }))
      assert.equal(6, #all(tree, "g", "bucket"))
      assert.equal(os.date("!%m-%d %H:%M", T0), all(tree, "text", "time")[1].text)
      local given = svg_tree(chart.stacked(rows, { time = "t", value = "n", width_seconds = 1800 }))
      assert.equal(11, #all(given, "g", "bucket"))
      local one = svg_tree(chart.stacked({ { start_time = T0, end_time = T0 + 3600, n = 1 } }, { value = "n" }))
      assert.equal(os.date("!%m-%d %H:%M", T0), all(one, "text", "time")[1].text)
      local single_day = svg_tree(chart.stacked({ { start_time = T0, n = 1 } }, { value = "n" }))
      assert.equal(os.date("!%Y-%m-%d", T0), all(single_day, "text", "time")[1].text)
    end)

    it("stacks negative values below zero", function()
      local rows = {
        { start_time = T0, end_time = T0 + DAY, line = "usage", usd = 30 },
        { start_time = T0, end_time = T0 + DAY, line = "credit", usd = -10 },
      }
      local tree = svg_tree(chart.stacked(rows, { series = "line", value = "usd" }))
      local k, zero = y_scale(tree)
      local segs = all(tree, "rect", "seg")
      assert.equal(2, #segs)
      assert.near(zero - 30 * k, num(segs[1], "y"), 0.03)
      assert.near(zero, num(segs[2], "y"), 0.03)
      assert.near(10 * k, num(segs[2], "height"), 0.03)
    end)

    it("leaves out rows without a time or a value, and says no data when none is left", function()
      local tree = svg_tree(chart.stacked({
        { start_time = T0, n = 2 }, { n = 5 }, { start_time = T0 }, { start_time = T0, n = "x" },
        { start_time = "x", n = 1 },
      }, { value = "n" }))
      local segs = all(tree, "rect", "seg")
      assert.equal(1, #segs)
      assert.equal("n: 2", segs[1].children[1].text)
      for _, rows in ipairs { {}, { { n = 1 } }, { { start_time = T0 } } } do
        local empty = svg_tree(chart.stacked(rows, { value = "n" }))
        check_svg_root(empty)
        assert.equal("no data", all(empty, "text", "empty")[1].text)
      end
    end)

    it("refuses too many buckets and bad arguments with an error table", function()
      local rows = { { start_time = T0, n = 1 }, { start_time = T0 + 3000 * 60, n = 1 } }
      local ok, err = pcall(chart.stacked, rows, { value = "n", width_seconds = 60 })
      assert.is_false(ok)
      assert.equal("invalid_argument", err.kind)
      assert.truthy(tostring(err):find("3,001 buckets", 1, true), tostring(err))
      assert.is_true((pcall(chart.stacked, rows, { value = "n", width_seconds = 60, max_buckets = 5000 })))
      local cases = {
        { { value = "n", width_seconds = 0 }, "width_seconds 0" },
        { { value = "n", series = 1 }, "opts.series" },
        { { value = "n", time = false }, "opts.time" },
        { { value = "n", height = 10 }, "height 10" },
        { { value = "n", max_series = 0 }, "max_series" },
        { { value = "n", max_buckets = "many" }, "max_buckets" },
        { { series = "model" }, "opts.value" },
      }
      for _, case in ipairs(cases) do
        ok, err = pcall(chart.stacked, rows, case[1])
        assert.is_false(ok)
        assert.equal("invalid_argument", err.kind)
        assert.truthy(tostring(err):find(case[2], 1, true), tostring(err))
      end
    end)
  end)

  describe("layout", function()
    -- the SVG writes a coordinate with at most two decimals
    local function near(a, b)
      return math.abs(a - b) <= 0.005 + 1e-9
    end

    it("gives the geometry the stacked SVG is drawn from, column by column and segment by segment", function()
      local rows = daily_rows(6, { "gpt-image-1", "dall-e-3", "dall-e-2" })
      rows[#rows + 1] = { start_time = T0 + DAY, end_time = T0 + 2 * DAY, model = "dall-e-3", images = -4 }
      local opts = { series = "model", value = "images", title = "per day" }
      local layout = chart.layout.stacked(rows, opts)
      local tree = svg_tree(chart.stacked(rows, opts))
      assert.equal(num(tree, "width"), layout.width)
      assert.equal(num(tree, "height"), layout.height)
      local buckets = all(tree, "g", "bucket")
      assert.equal(6, #layout.columns)
      assert.equal(#layout.columns, #buckets)
      local drawn = 0
      for i, column in ipairs(layout.columns) do
        local segs = all(buckets[i], "rect", "seg")
        assert.equal(#column.segments, #segs)
        for j, seg in ipairs(column.segments) do
          assert.is_true(near(column.x, num(segs[j], "x")))
          assert.is_true(near(column.width, num(segs[j], "width")))
          assert.is_true(near(seg.y, num(segs[j], "y")))
          assert.is_true(near(seg.height, num(segs[j], "height")))
          assert.equal(seg.color, segs[j].attrs.fill)
          assert.equal(seg.tooltip, segs[j].children[1].text)
          drawn = drawn + 1
        end
      end
      assert.equal(#all(tree, "rect", "seg"), drawn)
      local times = all(tree, "text", "time")
      assert.equal(#layout.labels, #times)
      for i, label in ipairs(layout.labels) do
        assert.equal(label.text, times[i].text)
        assert.is_true(near(label.x, num(times[i], "x")))
      end
      assert.is_nil(chart.layout.stacked({}, opts))
      local ok, err = pcall(chart.layout.stacked, rows, { value = "images", height = 5 })
      assert.is_false(ok)
      assert.equal("invalid_argument", err.kind)
    end)

    it("gives the geometry the bar SVG is drawn from, bar by bar", function()
      local rows = { { k = "up", v = 40 }, { k = "zero", v = 0 }, { k = "down", v = -25 }, { k = "missing" } }
      local layout = chart.layout.bars(rows, { label = "k", value = "v" })
      local tree = svg_tree(chart.bars(rows, { label = "k", value = "v" }))
      local bars = all(tree, "rect", "bar")
      local n = 0
      for _, item in ipairs(layout.items) do
        if item.bar then
          n = n + 1
          assert.is_true(near(item.bar.x, num(bars[n], "x")))
          assert.is_true(near(item.bar.width, num(bars[n], "width")))
          assert.is_true(near(item.bar.y, num(bars[n], "y")))
        end
      end
      assert.equal(#bars, n)
      assert.equal(3, n)
      assert.equal(#layout.ticks, #all(tree, "text", "tick"))
      assert.is_nil(chart.layout.bars({}, { value = "v" }))
    end)
  end)

  describe("html.page", function()
    local rows = {
      { model = "gpt-image-1", images = 1234567, share = 91.27 },
      { model = "<b>bold</b> & \"co\"", images = 118000, share = 8.73 },
    }
    local columns = {
      { key = "model", label = "Model" },
      { key = "images", label = "Images", numeric = true },
      { key = "share", label = "Share %", numeric = true, decimals = 1 },
    }

    it("is a standalone HTML5 page: doctype, charset, inline CSS, no script, nothing fetched", function()
      local page_text = html.page {
        title = "Usage", subtitle = "images", sections = {
          { heading = "By model", svg = chart.bars(rows, { label = "model", value = "images" }),
            table = { columns = columns, rows = rows }, note = "estimates" },
        },
      }
      local page = parse("html", page_text)
      assert.same({}, page.errors)
      assert.equal("doctype html", page.doctype:lower())
      local tags = {}
      for _, e in ipairs(page.elements) do
        tags[e.tag] = (tags[e.tag] or 0) + 1
        assert.is_nil(e.attrs.src)
        assert.is_nil(e.attrs.href)
        for name in pairs(e.attrs) do
          assert.is_nil(name:match "^on", "no event handlers")
        end
      end
      assert.is_nil(tags.script)
      assert.is_nil(tags.link)
      assert.is_nil(tags.img)
      assert.equal(1, tags.style)
      assert.equal(1, tags.svg)
      assert.equal(1, tags.table)
      assert.is_nil(page_text:find("url(", 1, true))
      assert.is_nil(page_text:find("@import", 1, true))
      assert.truthy(page_text:find('<meta charset="utf-8">', 1, true))
      assert.equal(1, #page.svgs)
      check_svg_root(page.svgs[1])
    end)

    it("escapes the title, subtitle, headings, cells and notes", function()
      local nasty = "<script>alert('x')</script> & \"q\" \195\188"
      local page = parse("html", html.page {
        title = nasty, subtitle = { nasty, "line two" }, sections = {
          { heading = nasty, table = { columns = { { key = 1, label = nasty } }, rows = { { nasty } } }, note = nasty },
        },
      })
      local seen = {}
      for _, e in ipairs(page.elements) do
        assert.are_not.equal("script", e.tag)
        seen[e.tag] = seen[e.tag] or e.text
      end
      assert.equal(nasty, seen.title)
      assert.equal(nasty, seen.h1)
      assert.equal(nasty, seen.h2)
      assert.equal(nasty, seen.th)
      assert.equal(nasty, seen.td)
      assert.truthy(seen.p:find(nasty, 1, true) == 1)
    end)

    it("right-aligns numbers with thousands separators", function()
      local page = parse("html", html.page {
        sections = { { table = { columns = columns, rows = rows, footer = { model = "Total", images = 1352567 } } } },
      })
      local cells = {}
      for _, e in ipairs(page.elements) do
        if e.tag == "td" or e.tag == "th" then
          cells[#cells + 1] = e
        end
      end
      assert.equal(3 * 4, #cells)
      assert.same({ "Model", "Images", "Share %" }, { cells[1].text, cells[2].text, cells[3].text })
      assert.equal("1,234,567", cells[5].text)
      assert.equal("91.3", cells[6].text)
      assert.equal('<b>bold</b> & "co"', cells[7].text)
      assert.equal("118,000", cells[8].text)
      assert.equal("1,352,567", cells[11].text)
      assert.equal("", cells[12].text)
      for i, cell in ipairs(cells) do
        local numeric = (i - 1) % 3 ~= 0
        assert.equal(numeric and "num" or nil, cell.attrs.class)
      end
      assert.equal("tfoot", cells[10].path[#cells[10].path - 1])
    end)

    it("takes the columns from the rows when none are given", function()
      local page = parse("html", html.page { sections = { { table = { rows = rows } } } })
      local head, body = {}, {}
      for _, e in ipairs(page.elements) do
        if e.tag == "th" then
          head[#head + 1] = e.text
        elseif e.tag == "td" then
          body[#body + 1] = e
        end
      end
      -- in the order the report formats give the same rows: text, then numbers
      assert.same({ "model", "images", "share" }, head)
      assert.same(require("openai_usage.format").columns(rows), head)
      assert.equal("gpt-image-1", body[1].text)
      assert.is_nil(body[1].attrs.class)
      assert.equal("1,234,567", body[2].text)
      assert.equal("num", body[2].attrs.class)
      assert.equal("91.27", body[3].text)
    end)

    it("is a page even with nothing in it, and refuses what is not a document", function()
      local page = parse("html", html.page {})
      assert.same({}, page.errors)
      local ok, err = pcall(html.page, "x")
      assert.is_false(ok)
      assert.equal("invalid_argument", err.kind)
      ok, err = pcall(html.page, { sections = { 5 } })
      assert.is_false(ok)
      assert.truthy(tostring(err):find("section 1", 1, true))
    end)
  end)

  it("gives the same bytes for the same rows in another process, time zone and C locale", function()
    local fixture = [[
      local chart = require "openai_usage.chart"
      local html = require "openai_usage.html"
      local rows = {}
      for d = 0, 40 do
        for i, m in ipairs { "a", "b", "c", "d", "e", "f", "g", "h", "i" } do
          rows[#rows + 1] = { start_time = 1730419200 + d * 3600, end_time = 1730422800 + d * 3600,
            model = m, usd = (d * 7 + i * 13) % 17 / 8 }
        end
      end
      local by = { { model = "x \226\128\148 y", usd = 1234.5678 }, { model = "z", usd = 0.125 } }
      return chart.stacked(rows, { series = "model", value = "usd", title = "t" })
        .. chart.bars(by, { label = "model", value = "usd" })
        .. html.page { title = "r", sections = { { table = { rows = by } } } }
    ]]
    local here = assert((loadstring or load)(fixture))()
    local dir = tmpdir()
    assert.equal(0, select(2, run("mkdir -p " .. dir .. "/locale && localedef -i de_DE -f UTF-8 " .. dir
      .. "/locale/de_DE.UTF-8")), "localedef could not build de_DE.UTF-8 (Debian package locales)")
    write(dir .. "/fixture.lua", "local text = (function() " .. fixture .. " end)()\n"
      .. 'assert(os.setlocale("de_DE.UTF-8", "numeric"), "no de_DE locale")\n'
      -- LuaJIT formats numbers itself, whatever the C locale; the others use printf
      .. 'assert(jit or ("%.1f"):format(2.5) == "2,5", "the locale is not in effect")\n'
      .. "io.write((function() " .. fixture .. " end)() == text and 'same\\n' or 'differs\\n')\n"
      .. "io.write((function() " .. fixture .. " end)())\n")
    local out, code = run(("LOCPATH=%s TZ=Pacific/Kiritimati LUA_PATH='lua/?.lua;;' %s %s"):format(
      q(dir .. "/locale"), q(interpreter()), q(dir .. "/fixture.lua")))
    assert.equal(0, code, out)
    assert.equal("same\n" .. here, out)
  end)

  describe("in headless Chromium", function()
    it("shows the bars with as many pixels of the bar colour as the bars cover", function()
      local data = {}
      for i, m in ipairs { "gpt-image-1", "dall-e-3", "dall-e-2", "gpt-image-1-mini", "(none)" } do
        data[i] = { model = m, images = math.floor(100000 / i ^ 1.5) }
      end
      local svg = chart.bars(data, { label = "model", value = "images", title = "Images by model" })
      local tree = svg_tree(svg)
      local w, h = check_svg_root(tree)
      local path = tmpdir() .. "/bars.svg"
      write(path, svg)
      local area, edges = 0, 0
      for _, bar in ipairs(all(tree, "rect", "bar")) do
        area = area + num(bar, "width") * num(bar, "height")
        edges = edges + 2 * num(bar, "height") + 2 * num(bar, "width")
      end
      local stats = pixels(screenshot(path, w, h), { chart.PALETTE[1] })
      assert.equal(w, stats.width)
      assert.equal("FFFFFF", stats.background)
      local bar_pixels = stats.counts[chart.PALETTE[1]:gsub("#", "")]
      assert.is_true(math.abs(bar_pixels - area) <= edges,
        ("%d bar pixels for an area of %.0f"):format(bar_pixels, area))
      -- text and axes draw more than the bars alone
      assert.is_true(stats.nonbackground > area * 1.1)
    end)

    it("shows the HTML report: every series colour in proportion to its segments, and the table", function()
      local rows = daily_rows(14, { "gpt-image-1", "dall-e-3", "dall-e-2", "gpt-image-1-mini" }, 6)
      local svg = chart.stacked(rows, { series = "model", value = "images", title = "Images per day" })
      local page_text = html.page {
        title = "OpenAI usage", subtitle = "images, 14 days", sections = {
          { heading = "Per day", svg = svg },
          { heading = "By model", table = { rows = { { model = "gpt-image-1", images = 12345 } } } },
        },
      }
      local tree = svg_tree(svg)
      local colors = legend_of(tree)
      local area = {}
      for _, seg in ipairs(all(tree, "rect", "seg")) do
        local c = seg.attrs.fill:gsub("#", "")
        area[c] = (area[c] or 0) + num(seg, "width") * num(seg, "height")
      end
      local wanted = {}
      for _, c in pairs(colors) do
        wanted[#wanted + 1] = c
      end
      table.sort(wanted)
      local path = tmpdir() .. "/report.html"
      write(path, page_text)
      local stats = pixels(screenshot(path, 1000, 800), wanted)
      assert.equal("FFFFFF", stats.background)
      assert.equal(4, #wanted)
      for _, c in ipairs(wanted) do
        local hex = c:gsub("#", "")
        local got = stats.counts[hex] - 100 -- the legend's 10 x 10 swatch
        assert.is_true(math.abs(got - area[hex]) <= 0.08 * area[hex],
          ("%s: %d pixels for an area of %.0f"):format(c, got, area[hex]))
        local listed = false
        for _, seen in ipairs(stats.colored) do
          listed = listed or seen == hex
        end
        assert.is_true(listed)
      end
      assert.is_true(stats.nonbackground > 20000)
    end)
  end)
end)
