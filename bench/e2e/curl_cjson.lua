-- lua-cjson over a curl subprocess per page: sums images by model.
--   lua5.4 curl_cjson.lua BASE_URL KEY START_TIME
local cjson = require "cjson"
local base_url, key, start = arg[1], arg[2], arg[3]
local totals, pages, cursor = {}, 0, nil
repeat
  local url = ("%s/organization/usage/images?start_time=%s%s"):format(base_url, start, cursor and ("&page=" .. cursor) or "")
  local p = assert(io.popen(("curl -sS --compressed -H 'Authorization: Bearer %s' '%s'"):format(key, url)))
  local page = cjson.decode(p:read "*a")
  p:close()
  for _, bucket in ipairs(page.data) do
    for _, row in ipairs(bucket.results) do
      totals[row.model] = (totals[row.model] or 0) + row.images
    end
  end
  pages = pages + 1
  cursor = page.has_more and page.next_page or nil
until not cursor
io.write(cjson.encode { pages = pages, totals = totals }, "\n")
