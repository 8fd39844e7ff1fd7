-- Reference pages for the benchmarks, written by bench/gen-page.lua.
local M = {}

local lua = os.getenv("OPENAI_USAGE_LUA") or "lua5.4"

--- The JSON text of a page of BUCKETS buckets x PER_BUCKET results
-- (default: the reference page, 1440 x 8).
function M.generate(buckets, per_bucket)
  local p = assert(io.popen(("%s bench/gen-page.lua %d %d"):format(lua, buckets or 1440, per_bucket or 8)))
  local text = p:read "*a"
  p:close()
  assert(#text > 0, "bench/gen-page.lua wrote nothing")
  return text
end

--- Writes such a page to a temporary file and returns its path.
function M.write(buckets, per_bucket)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(M.generate(buckets, per_bucket))
  f:close()
  return path
end

return M
