--- The cost column of an images report: real amounts from the Costs
-- endpoint when the report's grouping can be matched to them (by project,
-- or no grouping), else an estimate from a dated price table, with a note
-- saying which, and what quality the estimate assumed.
local time = require "openai_usage.time"

local M = {}

M.DEFAULT = "openai_usage.prices"

local function check(prices, where)
  if type(prices) ~= "table" or type(prices.images) ~= "table" then
    return nil, where
      .. ": a price table returns { date = ..., images = { [model] = { [quality] = { [size] = price } } } }"
  end
  if type(prices.date) ~= "string" then
    return nil, where .. ": the price table needs a date (the day its prices were read)"
  end
  for model, qualities in pairs(prices.images) do
    if type(qualities) ~= "table" then
      return nil, ("%s: images[%q] must be a table of qualities"):format(where, tostring(model))
    end
    for quality, sizes in pairs(qualities) do
      if type(sizes) ~= "table" then
        return nil, ("%s: images[%q][%q] must be a table of sizes"):format(where, tostring(model), tostring(quality))
      end
      for size, price in pairs(sizes) do
        if type(price) ~= "number" or price < 0 then
          return nil, ("%s: images[%q][%q][%q] must be a price >= 0"):format(where, model, quality, tostring(size))
        end
      end
    end
  end
  return prices
end

--- The price table in path (a Lua file returning a table), or the bundled
-- one. Returns the table or nil, message.
function M.load(path)
  if path == nil then
    return check(require(M.DEFAULT), M.DEFAULT)
  end
  local chunk, err = loadfile(path)
  if not chunk then
    return nil, err
  end
  local ok, prices = pcall(chunk)
  if not ok then
    return nil, tostring(prices)
  end
  local checked, cerr = check(prices, path)
  if not checked then
    return nil, cerr
  end
  prices.file = path
  return prices
end

--- The price of one image of model and size at quality, and the quality
-- actually priced (the table's fallback when the model lacks the one asked).
function M.price(prices, model, size, quality)
  local qualities = model and prices.images[model]
  if not qualities or not size then
    return nil
  end
  local tried = { quality }
  for _, q in ipairs((prices.quality_fallback or {})[quality] or {}) do
    tried[#tried + 1] = q
  end
  for _, q in ipairs(tried) do
    local price = qualities[q] and qualities[q][size]
    if price then
      return price, q
    end
  end
  return nil
end

--- The cost of images the table has no price for: unknown, not 0. NaN, so
-- that every sum it enters (a group, a fold, the totals line) is unknown
-- too; the formats show it blank (CSV, tables) or null (JSON).
M.UNKNOWN = 0 / 0

--- Adds cost = images x price to each row it can price, M.UNKNOWN to a row
-- of images it cannot (0 images cost 0); returns the number of images it
-- could not price and the set of model/size pairs behind them.
function M.estimate(rows, prices, quality)
  local unpriced, missing = 0, {}
  for _, row in ipairs(rows) do
    local price = M.price(prices, row.model, row.size, quality)
    local images = tonumber(row.images) or 0
    if price then
      row.cost = images * price
    else
      row.cost = images > 0 and M.UNKNOWN or 0.0
      if images > 0 then
        unpriced = unpriced + images
        missing[("%s %s"):format(tostring(row.model or "(none)"), tostring(row.size or "(none)"))] = true
      end
    end
  end
  return unpriced, missing
end

local function sorted(set)
  local out = {}
  for k in pairs(set) do
    out[#out + 1] = k
  end
  table.sort(out)
  return out
end

-- Line items of image generation: their name says image, or names a model
-- of the price table.
local function is_image_item(item, prices)
  if type(item) ~= "string" then
    return false
  end
  local lower = item:lower()
  if lower:find("image", 1, true) then
    return true
  end
  for model in pairs(prices.images) do
    if lower:find(model:lower(), 1, true) then
      return true
    end
  end
  return false
end

--- The Costs query whose rows give a job's actual image costs, or nil
-- when the job's grouping cannot be matched to them (only by project, or
-- no grouping, and not over time). The width and page size are the
-- widest the rule table allows the Costs endpoint.
function M.query(job)
  if job.by_time or not (#job.group_by == 0 or (#job.group_by == 1 and job.group_by[1] == "project_id")) then
    return nil
  end
  local rule = require("openai_usage").rules "costs"
  local widest
  for _, w in ipairs(rule.widths) do
    if not widest or time.width(w.width) > time.width(widest.width) then
      widest = w
    end
  end
  return {
    start_time = job.since,
    end_time = job["until"],
    bucket_width = widest.width,
    group_by = { "project_id", "line_item" },
    limit = widest.max_limit,
  }
end

--- Real image costs by project from the Costs rows of M.query: { [project_id
-- or "*"] = amount }, the line items used, the currency.
function M.actual(rows, job, prices)
  local by_project = job.group_by[1] == "project_id"
  local amounts, items, currency = {}, {}, nil
  for _, row in ipairs(rows) do
    if is_image_item(row.line_item, prices) and type(row.amount) == "table" then
      local key = by_project and (row.project_id or "(none)") or "*"
      amounts[key] = (amounts[key] or 0) + (row.amount.value or 0)
      items[row.line_item] = true
      currency = currency or row.amount.currency
    end
  end
  return amounts, sorted(items), currency
end

-- The note of an estimate: what it assumed, and what had no price.
local function estimate_note(estimate)
  local prices = estimate.prices
  local note = ("cost: an estimate at %s quality (the Usage API does not report quality), prices of %s from %s (%s)")
    :format(estimate.quality, prices.date, prices.file or "the bundled table", prices.currency or "usd")
  if estimate.unpriced > 0 then
    local count = require("openai_usage.text").thousands(("%d"):format(estimate.unpriced))
    note = note .. ("; %s images had no price (%s)"):format(count, table.concat(sorted(estimate.missing), "; "))
  end
  return note
end

--- The cost column of a job: estimate is what its rows' estimate came to
-- ({ prices, quality, unpriced, missing }); costs_rows the rows of M.query
-- (nil when there was no such query, or with costs_err when it failed).
-- Returns { decorate = fn(grouped rows) adding the actual amounts, or nil
-- for the estimate the rows carry; note = text }.
function M.apply(job, estimate, costs_rows, costs_err)
  local costs_note
  if costs_rows then
    local amounts, items, currency = M.actual(costs_rows, job, estimate.prices)
    if #items > 0 then
      return {
        decorate = function(grouped)
          for _, row in ipairs(grouped) do
            local key = job.group_by[1] and row.project_id or "*"
            row.cost = amounts[key] or 0.0
          end
          grouped.columns[#grouped.columns + 1] = "cost"
        end,
        note = ("cost: actual amounts (%s) from the Costs endpoint, line items: %s"):format(
          currency or "usd", table.concat(items, ", ")),
      }
    end
    costs_note = "the Costs endpoint listed no image line items"
  elseif costs_err ~= nil then
    costs_note = "the Costs endpoint was not available: " .. tostring(costs_err)
  end
  local note = estimate_note(estimate)
  if costs_note then
    note = note .. "; " .. costs_note
  else
    note = note .. "; actual amounts need --group-by project_id or no grouping, without --by-time"
  end
  return { note = note }
end

return M
