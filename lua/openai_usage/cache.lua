--- An on-disk cache of settled pages: a page whose buckets have all ended
-- cannot change, so a re-run reads it from disk instead of the API.
-- Files are keyed by the full request (URL, organization, project and a
-- fingerprint of the key, never the key itself), written by the C core to
-- an exclusive private temporary file (0600) renamed into place, in a
-- directory created 0700; a file that does not read back whole is ignored
-- and replaced.
local core = require "openai_usage.core"
local json = require "openai_usage.json"

local M = {}

local floor = math.floor

-- Two 31-bit polynomial hashes side by side, in plain arithmetic (no bit
-- library on 5.1): 62 bits name a file, and the file repeats its full key,
-- so a collision costs a miss, never a wrong page.
function M.hash(text)
  local a, b = 7, 11
  for i = 1, #text do
    local c = text:byte(i)
    a = (a * 31 + c) % 2147483647
    b = (b * 131 + c) % 2147483629
  end
  return ("%08x%08x"):format(a, b)
end

-- whether a file can be created in dir (an exclusive probe, removed again)
local function exists_dir(dir)
  return core.probe_dir(dir) == true
end

--- Opens (creating it when missing) the cache in dir. identity names whose
-- pages these are (organization, project, key fingerprint). Returns the
-- cache or nil, message.
function M.open(dir, identity, decode)
  if type(dir) ~= "string" or dir == "" then
    return nil, "cache_dir: expected a directory path"
  end
  if not exists_dir(dir) then
    core.mkdir_p(dir)
    if not exists_dir(dir) then
      return nil, ("cache_dir: cannot create or write %s"):format(dir)
    end
  end
  return setmetatable({ dir = dir, identity = identity or "", decode = decode, hits = 0, stores = 0 }, { __index = M })
end

function M:path(url)
  return ("%s/%s.json"):format(self.dir, M.hash(self.identity .. "\n" .. url))
end

--- The cached page of url, or nil. A file that is not a whole cache entry
-- for exactly this request is removed.
function M:get(url)
  local path = self:path(url)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local text = f:read "*a"
  f:close()
  local first = text:find("\n", 1, true)
  local page
  if first and text:sub(1, first - 1) == json.string(url) then
    page = self.decode(text:sub(first + 1))
  end
  if type(page) ~= "table" or type(page.data) ~= "table" then
    os.remove(path)
    return nil
  end
  self.hits = self.hits + 1
  return page
end

--- Whether a page holds only buckets that have ended by now, each of the
-- full width (a server may cut the open bucket short at its own now, which
-- would otherwise look ended a second later).
function M.settled(page, now, width)
  if type(page.data) ~= "table" then
    return false
  end
  for _, bucket in ipairs(page.data) do
    local start, stop = bucket.start_time, bucket.end_time
    if type(start) ~= "number" or type(stop) ~= "number" or stop > now or (width and stop - start ~= width) then
      return false
    end
  end
  return true
end

--- Stores page under url when it is settled (see settled). Returns true
-- when stored.
function M:put(url, page, now, width)
  if not M.settled(page, now or os.time(), width) then
    return false
  end
  local path = self:path(url)
  if not core.write_file(path, json.string(url) .. "\n" .. json.encode(page) .. "\n", "private") then
    return false
  end
  self.stores = self.stores + 1
  return true
end

--- Splits a query at the start of the bucket still open at now: the part
-- before it is settled (cacheable), the part after is fetched every time.
-- Returns a list of one or two queries.
function M.segments(query, width, now)
  local start, stop = query.start_time, query.end_time
  if type(start) ~= "number" or type(width) ~= "number" or query.page ~= nil then
    return { query }
  end
  if stop ~= nil and (type(stop) ~= "number" or stop <= now) then
    return { query }
  end
  local open = start + floor((now - start) / width) * width
  if open <= start or (stop ~= nil and open >= stop) then
    return { query }
  end
  local settled, live = {}, {}
  for k, v in pairs(query) do
    settled[k], live[k] = v, v
  end
  settled.end_time = open
  live.start_time = open
  return { settled, live }
end

return M
