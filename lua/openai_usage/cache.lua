--- An on-disk cache of settled pages: a page whose buckets all ended at
-- least the settle window ago (late data has arrived) no longer changes, so
-- a re-run reads it from disk instead of the API.
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

-- The format of a file: its first line is "openai-usage-cache <FORMAT>
-- <stored_at> <url as a JSON string>", then the page. A file of another
-- format (format 1 began with the URL: it was written when "settled" meant
-- "ended", so it may hold an undercount) is a miss, removed and replaced.
M.FORMAT = 2
local MAGIC = "openai-usage-cache"

-- How long after a bucket ends the API may still revise it (late data): a
-- usage bucket an hour, a cost bucket two days.
M.SETTLE_AFTER = { usage = 3600, costs = 172800 }

--- The settle window of an endpoint, in seconds: option (the client's
-- settle_after) when given, else the endpoint's default.
function M.settle_after(endpoint, option)
  if option ~= nil then
    return option
  end
  return endpoint == "costs" and M.SETTLE_AFTER.costs or M.SETTLE_AFTER.usage
end

--- Whether a page holds only settled buckets: each ended at least
-- rule.settle_after seconds before now, and each of the full rule.width
-- (a server may cut the open bucket short at its own now, which would
-- otherwise look ended a second later) unless it is cut by the query's own
-- start_time or end_time (rule.query).
function M.settled(page, now, rule)
  if type(page) ~= "table" or type(page.data) ~= "table" or type(now) ~= "number" then
    return false
  end
  local width, query = rule.width, rule.query or {}
  local last = now - (rule.settle_after or 0)
  for i = 1, #page.data do
    local bucket = page.data[i]
    if type(bucket) ~= "table" then
      return false
    end
    local start, stop = bucket.start_time, bucket.end_time
    if type(start) ~= "number" or type(stop) ~= "number" or stop > last then
      return false
    end
    if width and stop - start ~= width and start ~= query.start_time and stop ~= query.end_time then
      return false
    end
  end
  return true
end

--- The cached page of url, or nil. A file that is not a whole cache entry
-- of this format for exactly this request, or whose page was not settled
-- under rule (see settled) when it was stored, is removed.
function M:get(url, rule)
  local path = self:path(url)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local text = f:read "*a"
  f:close()
  local first = text:find("\n", 1, true)
  local page, stored_at
  if first then
    local format, at, key = text:sub(1, first - 1):match "^(%S+ %d+) (%d+) (.*)$"
    stored_at = tonumber(at)
    if format == MAGIC .. " " .. M.FORMAT and key == json.string(url) then
      page = self.decode(text:sub(first + 1))
    end
  end
  if type(page) ~= "table" or type(page.data) ~= "table" or not M.settled(page, stored_at, rule or {}) then
    os.remove(path)
    return nil
  end
  self.hits = self.hits + 1
  return page
end

-- The text of a cache file, or nil when the page cannot be written as JSON
-- (a hole in a list, a value JSON has no form for).
local function entry(url, page, now)
  local ok, body = pcall(json.encode, page)
  if not ok then
    return nil
  end
  return ("%s %d %d %s\n%s\n"):format(MAGIC, M.FORMAT, now, json.string(url), body)
end

--- Stores page under url when it is settled at now (see settled); a page
-- that cannot be encoded or written is simply not stored, and no partial
-- file is left. Returns true when stored.
function M:put(url, page, now, rule)
  now = now or os.time()
  if not M.settled(page, now, rule or {}) then
    return false
  end
  local text = entry(url, page, now)
  if not text then
    return false
  end
  local path = self:path(url)
  if not core.write_file(path, text, "private") then
    return false
  end
  self.stores = self.stores + 1
  return true
end

--- Where the settled buckets end at now: buckets are aligned to multiples
-- of width (UTC), and one is settled when it ended settle_after seconds
-- ago, so every bucket before this boundary is settled and none after it.
function M.split_point(width, now, settle_after)
  return floor((now - settle_after) / width) * width
end

--- Splits a query where its unsettled buckets begin (split_point): the
-- part before it is settled (cacheable), the part after is fetched every
-- time. Returns the list of one or two queries and how many of them, from
-- the first, may be cached (0 or 1). A part never is empty: the API
-- refuses end_time <= start_time. Only a part with an end_time at or
-- before the split is cached (without one, the server's now ends it).
function M.segments(query, width, now, settle_after)
  local start, stop = query.start_time, query.end_time
  if type(start) ~= "number" or type(width) ~= "number" or width <= 0 then
    return { query }, 0
  end
  if stop ~= nil and (type(stop) ~= "number" or stop <= start) then
    return { query }, 0
  end
  local split = M.split_point(width, now, settle_after or 0)
  if stop == nil then
    -- the open part ends at the server's now: keep it at least a bucket
    -- before ours, so it is not empty when settle_after is 0
    split = math.min(split, floor((now - 1) / width) * width)
  end
  if stop ~= nil and stop <= split then
    return { query }, 1
  end
  if query.page ~= nil or start >= split then
    return { query }, 0
  end
  local settled, live = {}, {}
  for k, v in pairs(query) do
    settled[k], live[k] = v, v
  end
  settled.end_time = split
  live.start_time = split
  return { settled, live }, 1
end

return M
