--- The history store: usage and costs kept in SQLite, filled by sync and
-- read by reports. The one module in front of the database (through
-- openai_usage.sqlite); its schema is generated from the rule table
-- (openai_usage.store_schema, the same text as src/store_schema.sql).
--
--   local store = require "openai_usage.store"
--   local s = assert(store.open("usage.db"))          -- {readonly = true}: a reader
--   local summary = s:sync(client, { endpoints = { "images", "costs" }, width = "1h", since = "90d" })
--   local page = s:page("images", { bucket_width = "1d", start_time = t0, end_time = t1,
--                                   group_by = { "model" }, project_ids = { "proj_a" } })
--   local cover = s:coverage("images", { bucket_width = "1d", start_time = t0, end_time = t1 })
--   s:close()
--
-- Query API (what reports read):
-- * s:page(endpoint, params) -> page | nil, err: the stored buckets of
--   [start_time, end_time) at bucket_width in the API's page shape ({object
--   = "page", data = {bucket...}, has_more = false}), each bucket's results
--   summed over the dimensions not in params.group_by (those read nil, as
--   the API's null), in group-key order; the endpoint's list filters
--   (project_ids, models, ...) and batch keep rows as the API's do;
--   params.organization (default "default"; a list for several) picks the
--   organization; "organization" in group_by keeps each one's rows apart
--   (the result's organization field; otherwise they are summed). A
--   figure is nil (unknown), never 0, when any row summed lacks it; a
--   figure with a unit (quantity and quantity_unit, amount's value and
--   currency) is nil when the rows summed have more than one.
--   Only buckets a sync stored are in data: see coverage.
-- * s:coverage(endpoint, params) -> { buckets, expected, missing (list of
--   start times not stored), unsettled (stored but not settled) }.
-- * s:state(organization, endpoint, width) -> the sync_state row or nil.
-- * s:select(sql, ...) -> list of rows (column -> value): any read query.
-- Writes: s:put_page(endpoint, page, opts) (one transaction: each bucket's
-- rows replaced by the page's, the bucket recorded, the sync state
-- advanced) and s:sync(client, opts). Functions return nil, err (an
-- openai_usage error, kind "store") on failure.
local core = require "openai_usage.core"
local sqlite = require "openai_usage.sqlite"
local schema = require "openai_usage.store_schema"
local errors = require "openai_usage.errors"
local time = require "openai_usage.time"

local M = { SCHEMA_VERSION = schema.version }

local Store = {}
Store.__index = Store
Store.__name = "openai_usage.store"

local unpack = table.unpack or unpack -- luacheck: ignore 143
local floor = math.floor

local function fail(message, fields)
  local e = { kind = "store", message = message }
  for k, v in pairs(fields or {}) do
    e[k] = v
  end
  return nil, errors.new(e)
end

local function iso(t)
  return time.iso(t)
end

-- The columns every endpoint table starts with (the generator's).
local BUCKET_COLUMNS = { "organization", "width", "start_time", "end_time", "start_iso", "end_iso" }

local WIDTH_SECONDS = { ["1m"] = 60, ["1h"] = 3600, ["1d"] = 86400 }

local function table_of(endpoint)
  return type(endpoint) == "string" and schema.tables[endpoint] or nil
end

-- An endpoint's columns by role, and each figure's unit columns (a figure
-- summed over rows of several units is no figure).
local layouts = {}
local function layout(endpoint)
  local cached = layouts[endpoint]
  if cached then
    return cached
  end
  local t = table_of(endpoint)
  if not t then
    return nil
  end
  local l = { columns = t.columns, dimensions = {}, figures = {}, attributes = {}, by_name = {}, result = t.result }
  for _, c in ipairs(t.columns) do
    l.by_name[c.name] = c
    local list = c.role == "dimension" and l.dimensions or c.role == "figure" and l.figures or l.attributes
    list[#list + 1] = c
  end
  for _, f in ipairs(l.figures) do
    f.units = {}
    for _, a in ipairs(l.attributes) do
      if a.name == f.name .. "_unit" or (f.property and a.property and a.field == f.field) then
        f.units[#f.units + 1] = a.name
      end
    end
  end
  layouts[endpoint] = l
  return l
end

--- The endpoints the store has a table for, sorted.
function M.endpoints()
  local out = {}
  for name in pairs(schema.tables) do
    out[#out + 1] = name
  end
  table.sort(out)
  return out
end

local function sql_error(self, what, message)
  return fail(("%s: %s: %s"):format(self.path, what, tostring(message)))
end

-- Runs one statement to the end with values bound; nil, err on failure.
local function run(self, stmt, what, ...)
  local n, message = stmt:run(...)
  if not n then
    return sql_error(self, what, message)
  end
  return n
end

local function prepare(self, sql)
  local stmt = self.statements[sql]
  if not stmt then
    local message
    stmt, message = self.db:prepare(sql)
    if not stmt then
      return sql_error(self, "prepare", message)
    end
    self.statements[sql] = stmt
  end
  return stmt
end

--- Rows of a read query: a list of { column = value } (NULL absent).
function Store:select(sql, ...)
  local stmt, err = prepare(self, sql)
  if not stmt then
    return nil, err
  end
  local ok, message = stmt:bind(...)
  if not ok then
    return sql_error(self, "bind", message)
  end
  local rows = {}
  while true do
    local more, step_err = stmt:step()
    if more == nil then
      stmt:reset()
      return sql_error(self, "query", step_err)
    elseif not more then
      break
    end
    rows[#rows + 1] = stmt:row()
  end
  stmt:reset()
  return rows
end

--- Runs fn(self) in one transaction (BEGIN IMMEDIATE: a second writer
-- waits for the first); commits when fn returns true, else rolls back and
-- returns fn's nil, err. A Lua error in fn rolls back and is raised again.
function Store:transaction(fn)
  local ok, message = self.db:exec "BEGIN IMMEDIATE"
  if not ok then
    return sql_error(self, "begin", message)
  end
  local called, result, err = pcall(fn, self)
  if called and result then
    ok, message = self.db:exec "COMMIT"
    if ok then
      return result
    end
    err = select(2, sql_error(self, "commit", message))
  end
  self.db:exec "ROLLBACK"
  if not called then
    error(result, 0)
  end
  return nil, err
end

-- Creates the schema in an empty database, or checks the version of the
-- one there: a store of another version is refused, naming both.
local function check_schema(self, readonly)
  local found, err = self:select "SELECT name FROM sqlite_master WHERE type = 'table'"
  if not found then
    return nil, err
  end
  local has_meta = false
  for _, row in ipairs(found) do
    has_meta = has_meta or row.name == "meta"
  end
  if #found == 0 then
    if readonly then
      return fail(("%s: not an openai-usage store (no tables; run openai-usage sync --db %s first)")
        :format(self.path, self.path))
    end
    return self:transaction(function()
      local ok, message = self.db:exec(schema.sql)
      if not ok then
        return sql_error(self, "create the schema", message)
      end
      local stmt = assert(prepare(self, "INSERT INTO meta (key, value) VALUES (?, ?)"))
      local now = os.time()
      for _, kv in ipairs { { "schema_version", tostring(schema.version) }, { "created_at", iso(now) } } do
        local done, run_err = run(self, stmt, "meta", kv[1], kv[2])
        if not done then
          return nil, run_err
        end
      end
      return true
    end)
  end
  if not has_meta then
    return fail(("%s: not an openai-usage store (it has tables but no meta table)"):format(self.path))
  end
  local rows
  rows, err = self:select("SELECT value FROM meta WHERE key = 'schema_version'")
  if not rows then
    return nil, err
  end
  local version = rows[1] and rows[1].value
  if version ~= tostring(schema.version) then
    return fail(("%s: a store of schema version %s; this openai-usage reads schema version %d "
      .. "(sync into a new file, or read it with the openai-usage that wrote it)")
      :format(self.path, tostring(version or "(none)"), schema.version),
      { schema_version = version, expected_version = schema.version })
  end
  return true
end

--- Opens (creating when missing, unless options.readonly) the store at
-- path. Returns the store or nil, err.
function M.open(path, options)
  options = options or {}
  if type(path) ~= "string" or path == "" then
    return fail "store: expected a file path"
  end
  local existing = io.open(path, "rb")
  if existing then
    existing:close()
  elseif not options.readonly then
    -- a new store is private (0600), as the cache is: SQLite gives its
    -- -wal and -shm files the mode of the database file
    local created, create_err = core.write_file(path, "", "private")
    if not created then
      return fail(("%s: cannot create: %s"):format(path, tostring(create_err and create_err.message)))
    end
  end
  local db, message = sqlite.open(path, options.readonly and "ro" or "rwc")
  if not db then
    return fail(("%s: cannot open: %s"):format(path, tostring(message)))
  end
  local self = setmetatable({ db = db, path = path, statements = {}, readonly = options.readonly }, Store)
  db:busy_timeout(options.busy_timeout or 10000)
  if not options.readonly then
    -- WAL: readers (a report, Neovim, OpenResty) read while a sync writes;
    -- NORMAL keeps every committed page across a crash of the process
    local ok
    ok, message = db:exec "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL"
    if not ok then
      self:close()
      return sql_error(self, "pragma", message)
    end
  end
  local ok, err = check_schema(self, options.readonly)
  if not ok then
    self:close()
    return nil, err
  end
  return self
end

--- Releases the statements and the database; safe twice.
function Store:close()
  for sql, stmt in pairs(self.statements or {}) do
    stmt:finalize()
    self.statements[sql] = nil
  end
  if self.db then
    self.db:close()
    self.db = nil
  end
  return true
end

Store.__close = Store.close

--- Fills the store from the API through client: openai_usage.sync.run
-- (its options; returns the list of per-endpoint summaries, or nil, err).
function Store:sync(client, opts)
  return require("openai_usage.sync").run(self, client, opts)
end

--- The sync_state row of an organization, endpoint and width, or nil.
function Store:state(organization, endpoint, width)
  local rows, err = self:select("SELECT * FROM sync_state WHERE organization = ? AND endpoint = ? AND width = ?",
    organization, endpoint, width)
  if not rows then
    return nil, err
  end
  return rows[1]
end

-- The value of a column in a result row, as stored: a boolean as 0/1, a
-- property of an object field (amount.value). A value of the wrong type is
-- refused: a figure that is not a number is no figure.
local function cell(row, c)
  local v = row[c.field]
  if c.property then
    if type(v) ~= "table" then
      return nil
    end
    v = v[c.property]
  end
  if v == nil then
    return nil
  end
  local kind = type(v)
  if c.type == "boolean" and kind == "boolean" then
    return v and 1 or 0
  elseif (c.type == "integer" or c.type == "number") and kind == "number" then
    return v
  elseif c.type == "string" and kind == "string" then
    return v
  end
  return nil, ("%s is a %s where the schema has %s"):format(c.name, kind, c.type)
end

-- The statements of one endpoint's writes, prepared once.
local function writes(self, endpoint)
  local l = layout(endpoint)
  local names = {}
  for i, c in ipairs(BUCKET_COLUMNS) do
    names[i] = c
  end
  for _, c in ipairs(l.columns) do
    names[#names + 1] = c.name
  end
  local placeholders = ("?, "):rep(#names - 1) .. "?"
  local w = {}
  local err
  w.delete, err = prepare(self, ("DELETE FROM %s WHERE organization = ? AND width = ? AND start_time = ?")
    :format(endpoint))
  if not w.delete then
    return nil, err
  end
  w.insert, err = prepare(self, ("INSERT INTO %s (%s) VALUES (%s)"):format(endpoint, table.concat(names, ", "),
    placeholders))
  if not w.insert then
    return nil, err
  end
  w.bucket, err = prepare(self, "INSERT OR REPLACE INTO buckets (organization, endpoint, width, start_time, "
    .. "end_time, start_iso, end_iso, results, settled, fetched_at, fetched_iso) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
    .. "?, ?, ?)")
  if not w.bucket then
    return nil, err
  end
  w.state, err = prepare(self, "INSERT OR REPLACE INTO sync_state (organization, endpoint, width, first_time, "
    .. "first_iso, synced_until, synced_iso, settled_until, settled_iso, updated_at, updated_iso) VALUES (?, ?, ?, "
    .. "?, ?, ?, ?, ?, ?, ?, ?)")
  if not w.state then
    return nil, err
  end
  return w
end

--- Stores a page of endpoint in one transaction: each bucket's rows are
-- replaced by the page's (a group that disappeared from a revised bucket
-- goes too), the bucket is recorded (with its row count: an empty bucket
-- is known empty) and the sync state advances. opts: organization, width
-- (the page's bucket width), now (Unix seconds), settle_after (seconds: a
-- bucket that ended at least that long before now, over its full width,
-- is settled, and settled_until moves past it while the settled buckets
-- are contiguous). Returns { buckets, rows } or nil, err.
function Store:put_page(endpoint, page, opts)
  local l = layout(endpoint)
  if not l then
    return fail(("store: no table for endpoint %s"):format(tostring(endpoint)))
  end
  local organization, width = opts.organization or "default", opts.width
  local seconds = WIDTH_SECONDS[width]
  if not seconds then
    return fail(("store: bucket width %s is not one of 1m, 1h, 1d"):format(tostring(width)))
  end
  if type(page) ~= "table" or type(page.data) ~= "table" then
    return fail "store: not a page (no data list)"
  end
  local now = opts.now or os.time()
  local last_settled = now - (opts.settle_after or 0)
  local w, err = writes(self, endpoint)
  if not w then
    return nil, err
  end
  local columns = l.columns
  local ncol = #columns
  return self:transaction(function()
    local state
    state, err = self:state(organization, endpoint, width)
    if err then
      return nil, err
    end
    local first = state and state.first_time
    local synced = state and state.synced_until
    local settled_until = state and state.settled_until
    local advancing = true
    local stored = 0
    local values = {}
    for _, bucket in ipairs(page.data) do
      local start, stop = bucket.start_time, bucket.end_time
      if type(start) ~= "number" or type(stop) ~= "number" or type(bucket.results) ~= "table" then
        return fail(("store: %s: a bucket without start_time, end_time or results"):format(endpoint))
      end
      local done
      done, err = run(self, w.delete, "delete", organization, width, start)
      if not done then
        return nil, err
      end
      local start_iso, end_iso = iso(start), iso(stop)
      for _, row in ipairs(bucket.results) do
        values[1], values[2], values[3], values[4], values[5], values[6] = organization, width, start, stop,
          start_iso, end_iso
        for i = 1, ncol do
          local v, bad = cell(row, columns[i])
          if bad then
            return fail(("store: %s bucket %s: %s"):format(endpoint, start_iso, bad))
          end
          values[6 + i] = v
        end
        done, err = run(self, w.insert, "insert", unpack(values, 1, 6 + ncol))
        if not done then
          return nil, err
        end
      end
      stored = stored + #bucket.results
      local settled = stop <= last_settled and stop - start == seconds
      done, err = run(self, w.bucket, "bucket", organization, endpoint, width, start, stop, start_iso, end_iso,
        #bucket.results, settled and 1 or 0, now, iso(now))
      if not done then
        return nil, err
      end
      first = first and math.min(first, start) or start
      synced = synced and math.max(synced, stop) or stop
      settled_until = settled_until or start
      -- settled_until: the end of the settled buckets that follow on from it
      if advancing and settled and start <= settled_until then
        settled_until = math.max(settled_until, stop)
      elseif start >= settled_until then
        advancing = false
      end
    end
    if first then
      local done
      done, err = run(self, w.state, "sync state", organization, endpoint, width, first, iso(first), synced,
        iso(synced), settled_until, iso(settled_until), now, iso(now))
      if not done then
        return nil, err
      end
    end
    return { buckets = #page.data, rows = stored }
  end)
end

local function list_of(v)
  if v == nil then
    return {}
  end
  return type(v) == "table" and v or { v }
end

-- The WHERE terms and values of the list filters in params (project_ids
-- keeps rows by project_id, models by model, ...), and of batch.
local function filter_terms(l, params, values)
  local terms = {}
  local names = {}
  for k in pairs(params) do
    names[#names + 1] = k
  end
  table.sort(names)
  for _, name in ipairs(names) do
    local v = params[name]
    local field = name:gsub("s$", "")
    local c = l.by_name[field] or l.by_name[name]
    if c and c.role == "dimension" and name ~= "group_by" then
      if c.type == "boolean" then
        terms[#terms + 1] = ("r.%s = ?"):format(c.name)
        values[#values + 1] = v and 1 or 0
      else
        local wanted = list_of(v)
        if #wanted > 0 then
          terms[#terms + 1] = ("r.%s IN (%s)"):format(c.name, ("?, "):rep(#wanted - 1) .. "?")
          for _, x in ipairs(wanted) do
            values[#values + 1] = x
          end
        end
      end
    end
  end
  return terms
end

local QUERY_PARAMS = { organization = true, bucket_width = true, start_time = true, end_time = true,
  group_by = true, limit = true, page = true }

--- The stored buckets of endpoint in params' range and width, results
-- summed over the dimensions not grouped by, in the API's page shape (see
-- the module header). Returns page or nil, err.
function Store:page(endpoint, params)
  local l = layout(endpoint)
  if not l then
    return fail(("store: no table for endpoint %s"):format(tostring(endpoint)))
  end
  params = params or {}
  local width = params.bucket_width or "1d"
  local group, by_organization = {}, false
  for _, name in ipairs(list_of(params.group_by)) do
    local c = l.by_name[name]
    if name == "organization" then
      by_organization = true
    elseif not c or c.role ~= "dimension" then
      return fail(("store: %s cannot group by %s"):format(endpoint, tostring(name)))
    else
      group[#group + 1] = c
    end
  end
  for name in pairs(params) do
    local field = type(name) == "string" and name:gsub("s$", "")
    if not QUERY_PARAMS[name] and not (l.by_name[field] or l.by_name[name]) then
      return fail(("store: %s has no filter %s"):format(endpoint, tostring(name)))
    end
  end
  local organizations = list_of(params.organization or "default")
  local values, on = {}, {}
  local terms = filter_terms(l, params, values)
  for i, t in ipairs(terms) do
    on[i] = " AND " .. t
  end
  local select_list, group_list = { "b.start_time AS start_time", "b.end_time AS end_time",
    "count(r.start_time) AS n" }, { "b.start_time", "b.end_time" }
  if by_organization then
    select_list[#select_list + 1] = "b.organization AS organization"
    group_list[#group_list + 1] = "b.organization"
  end
  for _, c in ipairs(group) do
    select_list[#select_list + 1] = ("r.%s AS %s"):format(c.name, c.name)
    group_list[#group_list + 1] = "r." .. c.name
  end
  for _, f in ipairs(l.figures) do
    -- unknown (NULL) when any row lacks it, or the rows have several units
    local conditions = { ("count(r.%s) = count(*)"):format(f.name) }
    for _, unit in ipairs(f.units) do
      conditions[#conditions + 1] = ("count(DISTINCT r.%s) <= 1"):format(unit)
    end
    select_list[#select_list + 1] = ("CASE WHEN %s THEN sum(r.%s) END AS %s"):format(table.concat(conditions, " AND "),
      f.name, f.name)
  end
  for _, a in ipairs(l.attributes) do
    select_list[#select_list + 1] = ("CASE WHEN count(DISTINCT r.%s) = 1 AND count(r.%s) = count(*) THEN max(r.%s) END"
      .. " AS %s"):format(a.name, a.name, a.name, a.name)
  end
  local org_marks = ("?, "):rep(#organizations - 1) .. "?"
  local sql = ("SELECT %s FROM buckets b LEFT JOIN %s r ON r.organization = b.organization AND r.width = b.width "
    .. "AND r.start_time = b.start_time%s WHERE b.organization IN (%s) AND b.endpoint = ? AND b.width = ? "
    .. "AND b.start_time >= ? AND b.start_time < ? GROUP BY %s ORDER BY %s"):format(table.concat(select_list, ", "),
    endpoint, table.concat(on), org_marks, table.concat(group_list, ", "), table.concat(group_list, ", "))
  for _, org in ipairs(organizations) do
    values[#values + 1] = org
  end
  values[#values + 1] = endpoint
  values[#values + 1] = width
  values[#values + 1] = params.start_time or 0
  values[#values + 1] = params.end_time or 2 ^ 53
  local rows, err = self:select(sql, unpack(values))
  if not rows then
    return nil, err
  end
  local data, last = {}, nil
  for _, row in ipairs(rows) do
    if not last or last.start_time ~= row.start_time then
      last = { object = "bucket", start_time = row.start_time, end_time = row.end_time, results = {} }
      data[#data + 1] = last
    end
    if row.n > 0 then
      local result = { object = l.result, organization = row.organization }
      for _, c in ipairs(l.columns) do
        local v = row[c.name]
        if c.type == "boolean" and v ~= nil then
          v = v == 1
        end
        if v ~= nil then
          if c.property then
            result[c.field] = result[c.field] or {}
            result[c.field][c.property] = v
          else
            result[c.field] = v
          end
        end
      end
      last.results[#last.results + 1] = result
    end
  end
  return { object = "page", data = data, has_more = false }
end

--- What the store holds of endpoint in params' range and width (and
-- organization, default "default"): { buckets (stored), expected (the
-- range's whole buckets), missing (start times not stored, oldest first),
-- unsettled (start times stored but not settled) }, or nil, err.
function Store:coverage(endpoint, params)
  params = params or {}
  local width = params.bucket_width or "1d"
  local seconds = WIDTH_SECONDS[width]
  if not seconds or type(params.start_time) ~= "number" or type(params.end_time) ~= "number" then
    return fail "store: coverage needs bucket_width, start_time and end_time"
  end
  local rows, err = self:select("SELECT start_time, settled FROM buckets WHERE organization = ? AND endpoint = ? "
    .. "AND width = ? AND start_time >= ? AND start_time < ? ORDER BY start_time", params.organization or "default",
    endpoint, width, params.start_time, params.end_time)
  if not rows then
    return nil, err
  end
  local have, out = {}, { buckets = #rows, missing = {}, unsettled = {} }
  for _, row in ipairs(rows) do
    have[row.start_time] = true
    if row.settled ~= 1 then
      out.unsettled[#out.unsettled + 1] = row.start_time
    end
  end
  local t = floor(params.start_time / seconds) * seconds
  out.expected = 0
  while t < params.end_time do
    out.expected = out.expected + 1
    if not have[t] and t >= params.start_time then
      out.missing[#out.missing + 1] = t
    end
    t = t + seconds
  end
  return out
end

--- The directory a sync --names stored for organization (default
-- "default"), as client:directory() gives it: { projects, users, api_keys,
-- service_accounts }, each a list of rows with the API's fields (id, name,
-- email, ...). nil, err (kind "store") when the store holds none.
function Store:directory(organization)
  organization = organization or "default"
  local have, err = self:select("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'projects'")
  if not have then
    return nil, err
  end
  local dir, any = {}, false
  if have[1].n > 0 then
    for _, t in ipairs { "projects", "users", "api_keys", "service_accounts" } do
      local rows, terr = self:select(("SELECT * FROM %s WHERE organization = ? ORDER BY id"):format(t), organization)
      if not rows then
        return nil, terr
      end
      dir[t] = rows
      any = any or #rows > 0
    end
  end
  if not any then
    return fail(("%s holds no names for organization %s: run openai-usage sync --names to store them")
      :format(self.path, organization))
  end
  return dir
end

--- A client that reads from the store instead of the API
-- (openai_usage.transport.store): what a report asks is validated and its
-- pages decoded as the API's are, and a range the store does not hold
-- whole is an error (kind "http", status 404, code store_range_missing)
-- naming what it holds. path_or_store: a file (opened read-only, closed
-- with the client's last reference) or an open store. options:
-- organization (the store's label, or a list; default "default"), now (a
-- clock function), on_note(text) (told of buckets not yet settled when
-- synced), client (further client options). Returns client or nil, err.
function M.client(path_or_store, options)
  options = options or {}
  local s = path_or_store
  if type(path_or_store) ~= "table" then
    local err
    s, err = M.open(path_or_store, { readonly = true })
    if not s then
      return nil, err
    end
  end
  local client_options = {}
  for k, v in pairs(options.client or {}) do
    client_options[k] = v
  end
  -- no key leaves the machine: the transport answers every request here
  client_options.api_key = "history-store"
  client_options.base_url = "http://history-store.invalid/v1"
  client_options.cache_dir = nil
  client_options.transport = require("openai_usage.transport.store").new(s, {
    organization = options.organization, now = options.now, on_note = options.on_note,
  })
  local client, err = require("openai_usage").new(client_options)
  if not client then
    return nil, err
  end
  client.store = s
  -- names (--names, openai_usage.names) from the directory the store holds
  local organization = options.organization
  if type(organization) == "table" then
    organization = organization[1]
  end
  function client.directory()
    local dir, derr = s:directory(organization)
    if not dir then
      error(derr, 0)
    end
    return dir
  end
  return client
end

return M
