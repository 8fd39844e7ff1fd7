--- The organization's directory: its projects (archived ones too), users,
-- and each project's API keys and service accounts, read through a client
-- (the C core's validation, retries and errors) with the admin API's list
-- pagination: a page holds objects under data, has_more says whether
-- another follows, and the next one is asked for with after = last_id.
-- Every walk ends: a repeated cursor, has_more on an empty page or without
-- a cursor, and more pages than max_pages are errors, never a loop.
--   for project in client:list("projects", { include_archived = true }) do ... end
--   local dir = client:directory()   -- { projects, users, api_keys, service_accounts }
--   local rows = directory.rows(dir, "org-1")   -- rows for the store's tables
--   for _, st in ipairs(directory.statements(rows, "org-1")) do ... end  -- their SQL
local core = require "openai_usage.core"
local protocol = require "openai_usage.protocol"
local schema = require "openai_usage.directory_schema"
local time = require "openai_usage.time"

local usage_error = core.error

local M = {}

--- The most pages a walk takes (when neither the walk nor the client sets
-- max_pages): 1,000 pages of 100 objects; a server handing out more is
-- stopped with an error.
M.MAX_PAGES = 1000

local function raise(err)
  error(err, 0)
end

local function api_error(name, message)
  return usage_error { kind = "api", message = name .. ": " .. message }
end

local function copy(t)
  local c = {}
  for k, v in pairs(t or {}) do
    c[k] = v
  end
  return c
end

-- The rule of a directory list, or raises an invalid_argument error.
local function list_rule(name)
  local ok, rule = pcall(core.rules, name)
  if not ok or type(rule) ~= "table" or rule.shape ~= "list" then
    raise(usage_error {
      kind = "invalid_argument", param = "list",
      message = ("list: %s is not a directory list (%s)"):format(tostring(name),
        table.concat(M.lists(), ", ")),
    })
  end
  return rule
end

--- The names of the directory's lists (the directory endpoints whose
-- answer is a list).
function M.lists()
  local out = {}
  for _, name in ipairs(core.rules "directory") do
    if core.rules(name).shape == "list" then
      out[#out + 1] = name
    end
  end
  return out
end

-- The cursor after page: last_id, else the id of its last object.
local function cursor_of(page)
  if type(page.last_id) == "string" and page.last_id ~= "" then
    return page.last_id
  end
  local last = page.data[#page.data]
  return type(last) == "table" and type(last.id) == "string" and last.id ~= "" and last.id or nil
end

-- Checks the objects of a page: each with a string id and, when it says
-- one, the list's object type.
local function check_objects(name, rule, page)
  for i, item in ipairs(page.data) do
    if type(item.id) ~= "string" or item.id == "" then
      raise(api_error(name, ("data[%d] has no id; a list holds objects with ids"):format(i)))
    end
    if item.object ~= nil and item.object ~= rule.object then
      raise(api_error(name, ("data[%d] is a %s, not a %s"):format(i, tostring(item.object), rule.object)))
    end
  end
end

--- Iterates over the objects of a directory list (name: projects, users,
-- api_keys, service_accounts, spend_alerts) for params (project_id for a
-- project's lists; limit defaults to the most a page may hold), through
-- client, asking for each page when the last one is used up. Yields
-- object, page. Raises the error table on a bad argument (before anything
-- is sent), a failed request, a hostile list (see above). options:
-- max_pages (default the client's, else M.MAX_PAGES).
function M.list(client, name, params, options)
  local rule = list_rule(name)
  if params ~= nil and type(params) ~= "table" then
    raise(usage_error { kind = "invalid_argument", message = "params: expected a table, got a " .. type(params) })
  end
  local query = copy(params)
  if query.limit == nil then
    query.limit = rule.max_limit
  end
  local ok, err = protocol.of(client):url(name, query)
  if not ok then
    raise(err)
  end
  local max_pages, pages_err = require("openai_usage.walk").check_max_pages(options and options.max_pages)
  if pages_err then
    raise(pages_err)
  end
  max_pages = max_pages or client.max_pages or M.MAX_PAGES
  local seen, pages, page, index, done = {}, 0, nil, 0, false
  if query.after ~= nil then
    seen[query.after] = true
  end
  local function fail(e)
    done = true
    raise(e)
  end
  return function()
    while true do
      if page and index < #page.data then
        index = index + 1
        return page.data[index], page
      end
      if done then
        return nil
      end
      if page then
        if page.has_more ~= true then
          done = true
          return nil
        end
        local cursor = cursor_of(page)
        if #page.data == 0 then
          fail(api_error(name, "the page says has_more but holds no objects; stopping instead of looping"))
        elseif not cursor then
          fail(api_error(name, "the page says has_more but gives no last_id; the list is incomplete"))
        elseif seen[cursor] then
          -- not the cursor itself: a string from the response
          fail(api_error(name, ("the API repeated the last_id of an earlier page (%d bytes); stopping instead of "
            .. "looping"):format(#cursor)))
        elseif pages >= max_pages then
          fail(api_error(name, ("the walk reached max_pages (%d) and the API has more; the list would be "
            .. "incomplete"):format(max_pages)))
        end
        seen[cursor] = true
        query.after = cursor
      end
      local got, got_err = protocol.request(client, name, query)
      if not got then
        fail(got_err)
      end
      pages = pages + 1
      local checked, check_err = pcall(check_objects, name, rule, got)
      if not checked then
        fail(check_err)
      end
      page, index = got, 0
    end
  end
end

--- Every object of a list, in a sequence (M.list's arguments).
function M.all(client, name, params, options)
  local out = {}
  for item in M.list(client, name, params, options) do
    out[#out + 1] = item
  end
  return out
end

local function archived(project)
  return project.archived_at ~= nil or project.status == "archived"
end

--- The whole directory through client: every project (archived ones
-- included), every user, and each project's API keys and service accounts
-- (an archived project has none the API will list: its keys are asked for,
-- its service accounts are not). Each key and service account carries its
-- project_id. Returns { projects, users, api_keys, service_accounts,
-- fetched_at } or raises the error table.
function M.fetch(client, options)
  local dir = { projects = M.all(client, "projects", { include_archived = true }, options),
    users = M.all(client, "users", nil, options), api_keys = {}, service_accounts = {}, fetched_at = os.time() }
  for _, project in ipairs(dir.projects) do
    local lists = { "api_keys" }
    if not archived(project) then
      lists[2] = "service_accounts"
    end
    for _, list in ipairs(lists) do
      for item in M.list(client, list, { project_id = project.id }, options) do
        local row = copy(item)
        row.project_id = project.id
        dir[list][#dir[list] + 1] = row
      end
    end
  end
  return dir
end

--- The store's directory tables (lua/openai_usage/directory_schema.lua,
-- written by tools/gen-rules.lua): each with name, columns, key and ddl.
M.tables = schema.tables

-- The value of a column for one object of the directory.
local function column_value(col, item, organization, row)
  if col.name == "organization" then
    return organization
  elseif col.iso_of then
    local t = row[col.iso_of]
    return type(t) == "number" and time.iso(t) or nil
  elseif col.name == "owner_id" then
    local owner = type(item.owner) == "table" and item.owner or {}
    local by = type(owner[owner.type]) == "table" and owner[owner.type] or {}
    return by.id
  end
  local v
  if type(col.field) == "table" then
    local outer = item[col.field[1]]
    v = type(outer) == "table" and outer[col.field[2]] or nil
  else
    v = item[col.field or col.name]
  end
  if type(v) == "boolean" then -- SQLite has no booleans
    return v and 1 or 0
  end
  if type(v) == "table" then
    return nil
  end
  return v
end

--- The directory dir (M.fetch's) as rows of the store's tables:
-- { organizations = { row }, projects = { row, ... }, users = ..., api_keys
-- = ..., service_accounts = ... }, each row a table of column -> value
-- (nil for unknown), organization naming whose directory it is.
-- rows.columns[table] lists each table's columns in order.
function M.rows(dir, organization)
  organization = organization or "default" -- the usage tables' default too
  local out = { columns = {} }
  for _, t in ipairs(schema.tables) do
    local names = {}
    for i, col in ipairs(t.columns) do
      names[i] = col.name
    end
    out.columns[t.name] = names
    local items = t.source and dir[t.source] or { { id = organization, refreshed_at = dir.fetched_at } }
    local rows = {}
    for i, item in ipairs(items) do
      local row = {}
      for _, col in ipairs(t.columns) do
        row[col.name] = column_value(col, item, organization, row)
      end
      rows[i] = row
    end
    out[t.name] = rows
  end
  return out
end

--- The SQL that stores rows (M.rows's) as organization's directory, for
-- prepared statements: each table's rows of that organization deleted, then
-- its rows inserted (so a refresh replaces the directory, a project gone is
-- gone). A list, in order, of { sql = text with ? placeholders, values =
-- { { v1, ..., n = count }, ... } } (a value may be nil: SQL NULL).
function M.statements(rows, organization)
  organization = organization or "default" -- the usage tables' default too
  local out = {}
  for _, t in ipairs(schema.tables) do
    local names = rows.columns[t.name]
    local owner = t.source and "organization" or "id"
    out[#out + 1] = { sql = ("DELETE FROM %s WHERE %s = ?"):format(t.name, owner),
      values = { { organization, n = 1 } } }
    local values = {}
    for i, row in ipairs(rows[t.name]) do
      local v = { n = #names }
      for j, name in ipairs(names) do
        v[j] = row[name]
      end
      values[i] = v
    end
    out[#out + 1] = { sql = ("INSERT INTO %s (%s) VALUES (%s)"):format(t.name, table.concat(names, ", "),
      ("?, "):rep(#names - 1) .. "?"), values = values }
  end
  return out
end

--- Reads the directory through client and stores it in store (an open
-- openai_usage.store) as organization's, in one transaction: the directory
-- tables created when missing (the generated DDL), that organization's rows
-- replaced (M.statements). Returns { table = rows stored, ... }, or nil and
-- the error (the directory's, or the store's, kind "store"); on failure
-- the store keeps the directory it had.
function M.refresh_store(store, client, organization, options)
  local read, dir = pcall(M.fetch, client, options)
  if not read then
    return nil, dir
  end
  local rows = M.rows(dir, organization)
  local function failed(what, message)
    return nil, usage_error { kind = "store", message = ("%s: %s: %s"):format(store.path, what, tostring(message)) }
  end
  return store:transaction(function(s)
    for _, t in ipairs(schema.tables) do
      local ok, message = s.db:exec(t.ddl)
      if not ok then
        return failed("create " .. t.name, message)
      end
    end
    for _, st in ipairs(M.statements(rows, organization)) do
      local stmt, message = s.db:prepare(st.sql)
      if not stmt then
        return failed("prepare", message)
      end
      for _, v in ipairs(st.values) do
        local n, run_err = stmt:run((table.unpack or unpack)(v, 1, v.n)) -- luacheck: ignore 143
        if not n then
          stmt:finalize()
          return failed("store the directory", run_err)
        end
      end
      stmt:finalize()
    end
    local counts = {}
    for _, t in ipairs(schema.tables) do
      counts[t.name] = #rows[t.name]
    end
    return counts
  end)
end

return M
