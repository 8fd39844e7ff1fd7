--- Reconciliation: what the price table estimates (images usage x prices,
-- openai_usage.cost) against what the Costs endpoint billed, per line item
-- and project over settled days, with the difference and its share; and
-- whether the table has gone stale: a line item whose estimate is off by
-- more than a tolerance, or images of a model and size it does not price.
-- openai-usage reconcile prints it; reconcile.run goes through a client.
local cost = require "openai_usage.cost"
local time = require "openai_usage.time"

local M = {}

-- The share of the billed amount an estimate may be off before the table
-- counts as stale, and the least difference that counts (a cent: float
-- rounding of many rows is not a price change).
M.TOLERANCE = 0.01
M.LEAST = 0.01

local ALL = "(all projects)"

local function key_of(item, project)
  return item .. "\0" .. (project or "")
end

-- A row of the comparison, made on first use.
local function row_of(rows, index, item, project)
  local k = key_of(item, project)
  local r = index[k]
  if not r then
    r = { line_item = item, project_id = project, billed = 0.0, unpriced_images = 0, unpriced = {}, no_amount = 0 }
    index[k] = r
    rows[#rows + 1] = r
  end
  return r
end

local function sorted_keys(set)
  local out = {}
  for k in pairs(set) do
    out[#out + 1] = k
  end
  table.sort(out)
  return out
end

--- Compares Costs rows (grouped by project_id and line_item) with images
-- usage rows (grouped by project_id, model and size) of the same days.
-- options: prices (cost.load's), quality, tolerance, least. Returns {
-- rows = { { line_item, project_id (nil: all projects), estimated (nil when
-- the table prices nothing of it), billed, difference (estimated - billed),
-- share (difference / billed; nil when billed is 0), unpriced_images,
-- unpriced (list of "model size"), stale } } (the image line item's rows
-- first, its total first among them), stale = { messages }, not_estimated
-- = { count, billed } (line items the table does not price) }.
function M.compare(costs_rows, image_rows, options)
  local prices = options.prices
  local quality = options.quality or prices.default_quality or "medium"
  local tolerance = options.tolerance or M.TOLERANCE
  local least = options.least or M.LEAST
  local image_item = cost.image_line_item(costs_rows, prices)
  local rows, index, other, other_items = {}, {}, 0.0, {}
  local total = row_of(rows, index, image_item, nil)
  total.estimated = 0.0
  for _, c in ipairs(costs_rows) do
    local value = type(c.amount) == "table" and c.amount.value or nil
    if cost.is_image_item(c.line_item, prices) then
      local r = row_of(rows, index, c.line_item, c.project_id)
      local t = c.line_item == image_item and total or row_of(rows, index, c.line_item, nil)
      if type(value) == "number" then
        r.billed, t.billed = r.billed + value, t.billed + value
      else
        r.no_amount, t.no_amount = r.no_amount + 1, t.no_amount + 1
      end
    else
      other_items[tostring(c.line_item)] = true
      other = other + (type(value) == "number" and value or 0)
    end
  end
  for _, u in ipairs(image_rows) do
    local r = row_of(rows, index, image_item, u.project_id)
    local images = tonumber(u.images) or 0
    local price = cost.price(prices, u.model, u.size, quality)
    for _, target in ipairs { r, total } do
      if price then
        target.estimated = (target.estimated or 0.0) + images * price
      elseif images > 0 then
        target.unpriced_images = target.unpriced_images + images
        target.unpriced[("%s %s"):format(tostring(u.model or "(none)"), tostring(u.size or "(none)"))] = true
      end
    end
  end
  local stale = {}
  local source = ("%s (prices of %s)"):format(prices.file or "the bundled price table", prices.date)
  for _, r in ipairs(rows) do
    r.unpriced = sorted_keys(r.unpriced)
    local where = r.project_id and ("%s in %s"):format(r.line_item, r.project_id) or (r.line_item .. ", " .. ALL)
    if r.estimated then
      r.difference = r.estimated - r.billed
      r.share = r.billed ~= 0 and r.difference / r.billed or nil
      local off = math.abs(r.difference)
      r.stale = off >= least and (r.share == nil or math.abs(r.share) > tolerance)
      if r.stale then
        stale[#stale + 1] = ("%s: the estimate is off by %s (%s) over settled days: %s looks stale"):format(where,
          require("openai_usage.budget").usd(r.difference),
          r.share and require("openai_usage.text").percent(100 * r.share, 2) or "billed nothing", source)
      end
    end
    if r.unpriced_images > 0 and r.project_id == nil then
      stale[#stale + 1] = ("%s: %s has no price for %s (%d images)"):format(where, source,
        table.concat(r.unpriced, "; "), r.unpriced_images)
    end
  end
  -- the total first, then projects in order
  table.sort(rows, function(a, b)
    if a.line_item ~= b.line_item then
      return a.line_item < b.line_item
    end
    if (a.project_id == nil) ~= (b.project_id == nil) then
      return a.project_id == nil
    end
    return (a.project_id or "") < (b.project_id or "")
  end)
  local names = sorted_keys(other_items)
  return { rows = rows, stale = stale, not_estimated = { count = #names, billed = other, line_items = names },
    image_line_item = image_item }
end

local function width_of(endpoint)
  for _, w in ipairs(require("openai_usage").rules(endpoint).widths) do
    if w.width == "1d" then
      return w
    end
  end
end

--- Reconciles [since, until) through client, over its settled days only
-- (a costs day settles options.settle_after after it ends, default the
-- budget module's 2 days): options as M.compare's, plus since, until, now
-- (Unix seconds). Returns M.compare's result with since and settled (the
-- end of the days compared), or nil, message when no day in the range has
-- settled. Raises the walk's error.
function M.run(client, options)
  local now = options.now or os.time()
  local settle = options.settle_after or require("openai_usage.budget").SETTLE_AFTER
  local since = options.since
  local settled = require("openai_usage.budget").settled_until(since, options["until"] or now, now, settle)
  if settled <= since then
    return nil, ("no day from %s has settled yet (a day of costs settles %d s after it ends)"):format(
      time.iso(since), settle)
  end
  local costs_rows, image_rows = {}, {}
  for row in client:results("costs", { start_time = since, end_time = settled, bucket_width = "1d",
    group_by = { "project_id", "line_item" }, limit = width_of("costs").max_limit }) do
    costs_rows[#costs_rows + 1] = row
  end
  for row in client:results("images", { start_time = since, end_time = settled, bucket_width = "1d",
    group_by = { "project_id", "model", "size" }, limit = width_of("images").max_limit }) do
    image_rows[#image_rows + 1] = row
  end
  local result = M.compare(costs_rows, image_rows, options)
  result.since, result.settled = since, settled
  return result
end

return M
