--- The cost column of an images report: real amounts from the Costs
-- endpoint when the report's grouping can be matched to them (by project,
-- or no grouping), else an estimate from a dated price table, with a note
-- saying which, and what quality the estimate assumed.
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

--- Adds cost = images x price to each row it can price; returns the number
-- of images it could not price and the set of model/size pairs behind them.
function M.estimate(rows, prices, quality)
  local unpriced, missing = 0, {}
  for _, row in ipairs(rows) do
    local price = M.price(prices, row.model, row.size, quality)
    local images = tonumber(row.images) or 0
    if price then
      row.cost = images * price
    else
      row.cost = 0.0
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

--- Real image costs by project over the job's range: { [project_id or
-- "*"] = amount }, the line items used, the currency; or nil, err.
function M.actual(client, job, prices)
  local by_project = job.group_by[1] == "project_id"
  local params = {
    start_time = job.since,
    end_time = job["until"],
    bucket_width = "1d",
    group_by = { "project_id", "line_item" },
    limit = 180,
  }
  local amounts, items, currency = {}, {}, nil
  local ok, err = pcall(function()
    for row in client:results("costs", params) do
      if is_image_item(row.line_item, prices) and type(row.amount) == "table" then
        local key = by_project and (row.project_id or "(none)") or "*"
        amounts[key] = (amounts[key] or 0) + (row.amount.value or 0)
        items[row.line_item] = true
        currency = currency or row.amount.currency
      end
    end
  end)
  if not ok then
    return nil, err
  end
  return amounts, sorted(items), currency
end

--- Works out the cost column for a CLI job over its result rows:
-- returns { shaped = report rows with cost, note = text } or nil, err.
-- shape(job, rows, decorate) builds the report rows.
function M.apply(job, rows, client, shape)
  local prices = job.prices_table or assert(M.load())
  local quality = job.quality or prices.default_quality or "medium"
  local label = prices.file or "the bundled table"
  local real_possible = not job.by_time
    and (#job.group_by == 0 or (#job.group_by == 1 and job.group_by[1] == "project_id"))
  local costs_note
  if real_possible then
    local amounts, items, currency = M.actual(client, job, prices)
    if amounts and #items > 0 then
      local shaped = shape(job, rows, function(grouped)
        for _, row in ipairs(grouped) do
          local key = job.group_by[1] and row.project_id or "*"
          row.cost = amounts[key] or 0.0
        end
        grouped.columns[#grouped.columns + 1] = "cost"
      end)
      return {
        shaped = shaped,
        note = ("cost: actual amounts (%s) from the Costs endpoint, line items: %s"):format(
          currency or "usd", table.concat(items, ", ")),
      }
    end
    costs_note = amounts and "the Costs endpoint listed no image line items"
      or ("the Costs endpoint was not available: " .. tostring(items))
  end
  local unpriced, missing = M.estimate(rows, prices, quality)
  local shaped = shape(job, rows)
  local note = ("cost: an estimate at %s quality (the Usage API does not report quality), prices of %s from %s (%s)")
    :format(quality, prices.date, label, prices.currency or "usd")
  if unpriced > 0 then
    local count = require("openai_usage.format").thousands(("%d"):format(unpriced))
    note = note .. ("; %s images had no price (%s)"):format(count, table.concat(sorted(missing), "; "))
  end
  if costs_note then
    note = note .. "; " .. costs_note
  elseif not real_possible then
    note = note .. "; actual amounts need --group-by project_id or no grouping, without --by-time"
  end
  return { shaped = shaped, note = note }
end

return M
