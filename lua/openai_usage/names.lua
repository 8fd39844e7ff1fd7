--- Names for the ids in reports: "Atlas (proj_atlas)" for project_id,
-- "Ada Lovelace (user-ada)" for user_id, the key's name for api_key_id.
-- The directory is read through the client once per run and, with the
-- client's cache_dir, kept on disk beside the page cache (a private 0600
-- file, written atomically by the C core) for max_age seconds (a day); a
-- report that meets an id the names do not know reads the directory again,
-- once. An id that is still unknown is shown alone: never a wrong name.
--   local resolver = names.new(client)
--   resolver:ensure(rows)                 -- reads the directory when needed
--   names.apply(rows, resolver, "label")  -- or "columns" (project_name, ...)
local core = require "openai_usage.core"
local json = require "openai_usage.json"
local cache = require "openai_usage.cache"

local M = {}

M.MAX_AGE = 86400

-- The fields that hold ids, what names them and the columns a machine
-- format gains beside them.
M.FIELDS = {
  project_id = { columns = { "project_name" } },
  user_id = { columns = { "user_name", "user_email" } },
  api_key_id = { columns = { "api_key_name" } },
}

local MAGIC = "openai-usage-names 1"

-- The lookup tables of a directory (M.fetch's): id -> what a report shows.
local function index_of(dir)
  local index = { fetched_at = dir.fetched_at, project_id = {}, user_id = {}, api_key_id = {} }
  for _, p in ipairs(dir.projects or {}) do
    index.project_id[p.id] = { name = p.name }
  end
  for _, u in ipairs(dir.users or {}) do
    index.user_id[u.id] = { name = u.name, email = u.email }
  end
  -- usage by a service account's key names the service account as its user
  for _, s in ipairs(dir.service_accounts or {}) do
    index.user_id[s.id] = index.user_id[s.id] or { name = s.name }
  end
  for _, k in ipairs(dir.api_keys or {}) do
    index.api_key_id[k.id] = { name = k.name }
  end
  return index
end

local Resolver = {}
Resolver.__index = Resolver

--- A resolver over client. options: max_age (seconds the cached names
-- serve, default M.MAX_AGE), now (Unix seconds, default os.time()).
function M.new(client, options)
  options = options or {}
  local self = setmetatable({ client = client, max_age = options.max_age or M.MAX_AGE,
    now = options.now or os.time(), fetches = 0 }, Resolver)
  if client.cache then
    self.path = ("%s/names-%s.json"):format(client.cache.dir, cache.hash(client.cache.identity))
  end
  return self
end

-- The cached index when its file is whole, of this format and fresh.
local function read_cached(self)
  local f = self.path and io.open(self.path, "rb")
  if not f then
    return nil
  end
  local text = f:read "*a"
  f:close()
  local head, body = text:match "^([^\n]*)\n(.*)$"
  local at = head and head:sub(1, #MAGIC + 1) == MAGIC .. " " and tonumber(head:sub(#MAGIC + 2):match "^%d+$")
  local index = at and core.decode(body)
  if type(index) ~= "table" or at + self.max_age <= self.now or at > self.now + 300 then
    return nil
  end
  for field in pairs(M.FIELDS) do
    if type(index[field]) ~= "table" then
      return nil
    end
  end
  index.fetched_at = at
  return index
end

--- Reads the directory through the client now (and stores it when there
-- is a cache). Raises the error table when it cannot be read.
function Resolver:refresh()
  -- a method call, so an async task's view of the client serves it too
  local dir = self.client:directory()
  self.index = index_of(dir)
  self.fetches = self.fetches + 1
  if self.path then
    local ok, body = pcall(json.encode, { project_id = self.index.project_id, user_id = self.index.user_id,
      api_key_id = self.index.api_key_id })
    if ok then
      -- a names file that cannot be written is only a cache miss next time
      core.write_file(self.path, ("%s %d\n%s\n"):format(MAGIC, self.now, body), "private")
    end
  end
  return self.index
end

--- The names, from the cache when fresh, else read now.
function Resolver:load()
  if not self.index then
    self.index = read_cached(self)
    self.cached = self.index ~= nil
  end
  return self.index or self:refresh()
end

--- What the names know of id in field (project_id, user_id, api_key_id):
-- { name, email } or nil.
function Resolver:lookup(field, id)
  local index = self:load()
  return index[field] and index[field][id]
end

--- Makes sure the names cover the ids of rows: when one is unknown and
-- the names came from the cache, the directory is read again (once a run).
function Resolver:ensure(rows)
  local index = self:load()
  if self.fetches > 0 then
    return index
  end
  for _, row in ipairs(rows) do
    for field in pairs(M.FIELDS) do
      local id = row[field]
      if type(id) == "string" and not index[field][id] and not id:match "^%(" then
        return self:refresh()
      end
    end
  end
  return index
end

--- The label of id in field: "Name (id)", or the id alone when no name is
-- known.
function Resolver:label(field, id)
  local known = type(id) == "string" and self:lookup(field, id)
  local name = known and (known.name or known.email)
  if type(name) ~= "string" or name == "" then
    return id
  end
  return ("%s (%s)"):format(name, id)
end

--- Names the ids of rows (report rows, after shaping) in place: mode
-- "label" writes "Name (id)" over each id (table, Markdown, text, HTML),
-- "columns" adds project_name, user_name and user_email, api_key_name
-- beside them (CSV, JSON), nil when unknown; rows.columns, when set, gains
-- them after their id. Returns rows.
function M.apply(rows, resolver, mode)
  local fields = {}
  for _, c in ipairs(rows.columns or {}) do
    if M.FIELDS[c] then
      fields[c] = true
    end
  end
  for _, row in ipairs(rows) do
    for field in pairs(M.FIELDS) do
      if row[field] ~= nil then
        fields[field] = true
      end
    end
  end
  for _, row in ipairs(rows) do
    for field in pairs(fields) do
      local id = row[field]
      if mode == "label" then
        row[field] = resolver:label(field, id)
      else
        local known = type(id) == "string" and resolver:lookup(field, id) or {}
        local names = M.FIELDS[field].columns
        row[names[1]] = known.name
        if names[2] then
          row[names[2]] = known.email
        end
      end
    end
  end
  if mode ~= "label" and rows.columns then
    local columns = {}
    for _, c in ipairs(rows.columns) do
      columns[#columns + 1] = c
      if fields[c] then
        for _, n in ipairs(M.FIELDS[c].columns) do
          columns[#columns + 1] = n
        end
      end
    end
    rows.columns = columns
  end
  return rows
end

return M
