-- openai_usage: sums images by model over every page (prefetching).
--   lua5.4 ours.lua BASE_URL KEY START_TIME
local usage = require "openai_usage"
local cjson = require "cjson"
local client = assert(usage.new { api_key = arg[2], base_url = arg[1], max_retries = 0 })
local totals, pages = {}, 0
for page in client:pages("images", { start_time = math.tointeger(tonumber(arg[3])) }) do
  for _, bucket in ipairs(page.data) do
    for _, row in ipairs(bucket.results) do
      totals[row.model] = (totals[row.model] or 0) + row.images
    end
  end
  pages = pages + 1
end
io.write(cjson.encode { pages = pages, totals = totals }, "\n")
