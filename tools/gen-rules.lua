#!/usr/bin/env lua5.4
-- Writes src/rules_table.c, the C rule table of every usage endpoint and of
-- costs, from the OpenAPI description; and the same rules, with each
-- endpoint's result fields, as JSON for the stand-in server (which must not
-- keep a second copy of them). Run by `make rules`; the outputs are
-- committed, and a spec checks they are what this script writes. It also
-- writes the history store's schema (openai_usage.store) from the same
-- rules: the DDL as SQL text and the same DDL with each table's columns as
-- a Lua module, the form store.lua loads. The directory's endpoints
-- (projects, users, their keys and service accounts, spend alerts and
-- limit) come from tools/openai-admin-directory-openapi.yaml into the same
-- C file, and their fields with the store's DDL of the directory tables
-- into lua/openai_usage/directory_schema.lua.
--   lua5.4 tools/gen-rules.lua tools/openai-usage-openapi.yaml [JSON [SQL LUA [DIRECTORY]]] > src/rules_table.c
-- JSON defaults to standin/endpoints.json in the repository of this script,
-- SQL to src/store_schema.sql, LUA to lua/openai_usage/store_schema.lua,
-- DIRECTORY to lua/openai_usage/directory_schema.lua.
local lyaml = require "lyaml"

-- The one fact the description states only in prose (in the limit
-- parameter's text): default and maximum limit for each bucket width.
local WIDTH_LIMITS = {
  usage = { { "1m", 60, 1440 }, { "1h", 24, 168 }, { "1d", 7, 31 } },
  costs = { { "1d", 7, 180 } },
}

-- Enumerations that shape the request stay strict: a group_by value the
-- description does not list is refused (bucket_width has its own rule). The
-- values of every other enumerated filter (images' sizes and sources) are
-- the described ones of a vocabulary that grows faster than the
-- description (gpt-image-1's 1536x1024): open, so another value is sent as
-- given unless it is a near miss of a described one.
local STRICT_ENUMS = { group_by = true }

local function is_open(param, values)
  return values ~= nil and not STRICT_ENUMS[param.name]
end

local path = assert(arg[1], "usage: gen-rules.lua OPENAPI.yaml [ENDPOINTS.json [SQL LUA [DIRECTORY.lua]]]")
local tools_dir = arg[0]:match "^(.-)gen%-rules%.lua$" or ""
local here = tools_dir
local json_path = arg[2] or (tools_dir .. "../standin/endpoints.json")
local schema_sql_path = arg[3] or (tools_dir .. "../src/store_schema.sql")
local schema_lua_path = arg[4] or (tools_dir .. "../lua/openai_usage/store_schema.lua")
local lua_path = arg[5] or (tools_dir .. "../lua/openai_usage/directory_schema.lua")
local f = assert(io.open(path))
local spec = lyaml.load(f:read "*a")
f:close()

local function c_string(s)
  return '"' .. s:gsub('[\\"]', "\\%0"):gsub("\n", " ") .. '"'
end

-- The first sentence of a description, without Markdown backticks.
local function doc(text)
  text = (text or ""):gsub("`", ""):gsub("%s+", " ")
  return (text:match "^(.-%.)%s" or text):gsub("%.$", "")
end

local function param_type(p)
  local s = p.schema or {}
  if p.name == "bucket_width" then
    return "OU_PARAM_WIDTH"
  elseif p.name == "limit" then
    return "OU_PARAM_LIMIT"
  elseif p.name == "page" then
    return "OU_PARAM_CURSOR"
  elseif s.type == "integer" and p.name:match "_time$" then
    return "OU_PARAM_TIME"
  elseif s.type == "array" and (s.items or {}).type == "string" then
    return "OU_PARAM_LIST", (s.items or {}).enum
  elseif s.type == "boolean" then
    return "OU_PARAM_BOOL"
  end
  error(("no rule type for parameter %s (%s)"):format(p.name, tostring(s.type)))
end

-- The directory: the endpoints a report's names come from (and issue 15's
-- spend alerts and limit), under names of their own beside the usage ones.
local DIRECTORY = {
  { name = "projects", path = "/organization/projects" },
  { name = "users", path = "/organization/users" },
  { name = "api_keys", path = "/organization/projects/{project_id}/api_keys" },
  { name = "service_accounts", path = "/organization/projects/{project_id}/service_accounts" },
  { name = "spend_alerts", path = "/organization/spend_alerts" },
  { name = "spend_limit", path = "/organization/spend_limit" },
}

-- The store's directory tables: the list each is filled from, the columns
-- beside the object's own (organization always; the project a key or a
-- service account belongs to; a key's owner, read from owner.user.id or
-- owner.service_account.id) and the key.
local DIRECTORY_TABLES = {
  { name = "organizations", columns = { { "id", "TEXT" }, { "name", "TEXT" }, { "refreshed_at", "INTEGER", time = true } },
    key = { "id" } },
  { name = "projects", source = "projects", key = { "organization", "id" } },
  { name = "users", source = "users", key = { "organization", "id" } },
  { name = "api_keys", source = "api_keys", extra = { { "project_id", "TEXT" }, { "owner_id", "TEXT" } },
    key = { "organization", "id" } },
  { name = "service_accounts", source = "service_accounts", extra = { { "project_id", "TEXT" } },
    key = { "organization", "project_id", "id" } },
}

local directory_spec

-- schema with its $ref followed (within the directory description).
local function resolve(schema)
  while schema and schema["$ref"] do
    local name = schema["$ref"]:match "^#/components/schemas/(.+)$"
    schema = assert(directory_spec.components.schemas[name], "no schema " .. tostring(schema["$ref"]))
  end
  return schema
end

-- A property's one JSON type (null aside), whether null is allowed, and
-- whether it is a Unix time.
local function property_type(schema)
  schema = resolve(schema)
  local kind, nullable, unixtime
  for _, alt in ipairs(schema.anyOf or { schema }) do
    alt = resolve(alt)
    if alt.type == "null" then
      nullable = true
    else
      assert(kind == nil or kind == alt.type, "more than one type")
      kind = alt.type
      unixtime = unixtime or alt.format == "unixtime"
    end
  end
  return assert(kind, "no type"), nullable, unixtime
end

-- The properties of an object schema: those of its example first, in the
-- example's order (the order the API writes them in), then the rest by name.
local function directory_fields(schema)
  schema = resolve(schema)
  for _, alt in ipairs(schema.anyOf or {}) do -- an object or null: the object's
    if resolve(alt).type == "object" then
      schema = resolve(alt)
    end
  end
  local example = schema["x-oaiMeta"] and schema["x-oaiMeta"].example or ""
  local list = {}
  for name, property in pairs(schema.properties) do
    local kind, nullable, unixtime = property_type(property)
    local at = example:find('"' .. name .. '"%s*:')
    list[#list + 1] = { name = name, type = kind, nullable = nullable, unixtime = unixtime, at = at or math.huge,
      schema = resolve(property) }
  end
  table.sort(list, function(a, b)
    if a.at ~= b.at then
      return a.at < b.at
    end
    return a.name < b.name
  end)
  return list
end

-- A directory parameter's rule type: the path's own, the list cursors,
-- strings (an enumeration is the whole set), and the usage kinds.
local function directory_param_type(p)
  local s = resolve(p.schema or {})
  if p["in"] == "path" then
    return "OU_PARAM_PATH"
  elseif p.name == "limit" then
    return "OU_PARAM_LIMIT"
  elseif p.name == "after" or p.name == "before" then
    return "OU_PARAM_CURSOR"
  elseif s.type == "string" then
    return "OU_PARAM_STRING", s.enum
  elseif s.type == "array" and (s.items or {}).type == "string" then
    return "OU_PARAM_LIST", (s.items or {}).enum
  elseif s.type == "boolean" then
    return "OU_PARAM_BOOL"
  end
  error(("no rule type for parameter %s (%s)"):format(p.name, tostring(s.type)))
end

-- The page size limit: the schema's maximum, else the prose's ("Limit can
-- range between 1 and 100"). The least is 1 whatever the schema says
-- (spend alerts' says 0): a page of none never moves a walk on.
local function list_max_limit(p)
  local s = p.schema or {}
  local max = s.maximum or tonumber((p.description or ""):match "between %d+ and (%d+)")
  return assert(math.tointeger(max), p.name .. ": no maximum limit in the description")
end

-- The directory's C rule table (ou_directory) and, for the Lua side, each
-- endpoint's shape, object and fields.
local function directory_rules(c_string, doc, usage_endpoints)
  local f = assert(io.open(here .. "openai-admin-directory-openapi.yaml"))
  directory_spec = lyaml.load(f:read "*a")
  f:close()
  local taken = {}
  for _, e in ipairs(usage_endpoints) do
    taken[e.name] = true
  end
  local c, rows, described = { "", "/* The directory's rules, from tools/openai-admin-directory-openapi.yaml. */" }, {}, {}
  for _, d in ipairs(DIRECTORY) do
    assert(not taken[d.name], d.name .. ": a usage endpoint has this name")
    local op = assert(directory_spec.paths[d.path], d.path .. " is not in the directory description").get
    local body = resolve(op.responses["200"].content["application/json"].schema)
    local shape, item = "OU_SHAPE_OBJECT", body
    if body.properties.data and body.properties.has_more then
      shape, item = "OU_SHAPE_LIST", resolve(body.properties.data.items)
    end
    local object = assert(resolve(item.properties.object).enum, d.name .. ": no object constant")[1]
    local params, max_limit = {}, 0
    for _, p in ipairs(op.parameters or {}) do
      local kind, values = directory_param_type(p)
      local values_name = "NULL"
      if values then
        values_name = "dir_" .. d.name .. "_" .. p.name
        local quoted = {}
        for i, v in ipairs(values) do
          quoted[i] = c_string(v)
        end
        c[#c + 1] = ("static const char *const %s[] = {%s, NULL};"):format(values_name, table.concat(quoted, ", "))
      end
      if kind == "OU_PARAM_LIMIT" then
        max_limit = list_max_limit(p)
      end
      params[#params + 1] = ("    {%s, %s, %d, %s, 0, %s},"):format(c_string(p.name), kind,
        (p.required or p["in"] == "path") and 1 or 0, values_name, c_string(doc(p.description or p.name)))
    end
    assert(shape ~= "OU_SHAPE_LIST" or max_limit > 0, d.name .. ": a list without a limit parameter")
    local params_name = "NULL"
    if #params > 0 then
      params_name = "dir_" .. d.name .. "_params"
      c[#c + 1] = ("static const struct ou_param_rule %s[] = {"):format(params_name)
      for _, line in ipairs(params) do
        c[#c + 1] = line
      end
      c[#c + 1] = "};"
    end
    local fields, field_rows = directory_fields(item), {}
    for i, fd in ipairs(fields) do
      field_rows[i] = ("{%s, %s, %d}"):format(c_string(fd.name), c_string(fd.type), fd.nullable and 1 or 0)
    end
    c[#c + 1] = ("static const struct ou_field_rule dir_%s_fields[] = {%s};"):format(d.name,
      table.concat(field_rows, ", "))
    rows[#rows + 1] = ("    {.name = %s, .path = %s, .params = %s, .nparams = %d, .fields = dir_%s_fields, "
      .. ".nfields = %d, .shape = %s, .max_limit = %d, .object = %s},"):format(c_string(d.name), c_string(d.path),
      params_name, #params, d.name, #fields, shape, max_limit, c_string(object))
    described[d.name] = { name = d.name, path = d.path, shape = shape == "OU_SHAPE_LIST" and "list" or "object",
      object = object, fields = fields }
  end
  c[#c + 1] = ""
  c[#c + 1] = "const struct ou_endpoint_rule ou_directory[] = {"
  for _, row in ipairs(rows) do
    c[#c + 1] = row
  end
  c[#c + 1] = "};"
  c[#c + 1] = ("const size_t ou_ndirectory = %d;"):format(#rows)
  return { c = c, described = described }
end

local SQL_TYPES = { string = "TEXT", integer = "INTEGER", boolean = "INTEGER", number = "REAL" }

-- A table's columns: organization, the extra ones, then the object's
-- scalar fields in the API's order (a nested object's scalars as
-- owner_type), a Unix time followed by its ISO text (time_iso).
local function table_columns(t, described)
  local columns = {}
  local function add(name, sql, from)
    columns[#columns + 1] = { name = name, type = sql, field = from }
  end
  local function add_time(name, from)
    add(name, "INTEGER", from)
    columns[#columns].time = true
    add(name .. "_iso", "TEXT")
    columns[#columns].iso_of = name
  end
  if not t.source then
    for _, col in ipairs(t.columns) do
      if col.time then
        add_time(col[1])
      else
        add(col[1], col[2])
      end
    end
    return columns
  end
  add("organization", "TEXT")
  for _, col in ipairs(t.extra or {}) do
    add(col[1], col[2])
  end
  for _, fd in ipairs(described[t.source].fields) do
    if fd.name == "object" then -- the constant, the same in every row
      -- (no column)
    elseif fd.type == "object" then
      for _, sub in ipairs(directory_fields(fd.schema)) do
        if SQL_TYPES[sub.type] then
          add(fd.name .. "_" .. sub.name, SQL_TYPES[sub.type], { fd.name, sub.name })
        end
      end
    elseif fd.unixtime then
      add_time(fd.name, fd.name)
    elseif SQL_TYPES[fd.type] then
      add(fd.name, SQL_TYPES[fd.type], fd.name)
    end
  end
  return columns
end

-- Lua source of a value: sorted keys, one entry a line for lists of tables.
local function lua_source(v, indent)
  if type(v) == "string" and v:find "\n" then -- the DDL: one column a line
    assert(not v:find "%]%]")
    return "[[" .. v .. "]]"
  elseif type(v) == "string" then
    return ("%q"):format(v)
  elseif type(v) ~= "table" then
    return tostring(v)
  end
  local parts = {}
  if v[1] ~= nil or next(v) == nil then
    for i, x in ipairs(v) do
      parts[i] = lua_source(x, indent .. "  ")
    end
  else
    local keys = {}
    for k in pairs(v) do
      keys[#keys + 1] = k
    end
    table.sort(keys)
    for i, k in ipairs(keys) do
      parts[i] = k .. " = " .. lua_source(v[k], indent .. "  ")
    end
  end
  local flat = "{ " .. table.concat(parts, ", ") .. " }"
  if #flat + #indent <= 110 then
    return #parts == 0 and "{}" or flat
  end
  local inner = indent .. "  "
  return "{\n" .. inner .. table.concat(parts, ",\n" .. inner) .. ",\n" .. indent .. "}"
end

-- lua/openai_usage/directory_schema.lua: each directory endpoint's shape,
-- object and fields, and the store's directory tables (columns, key, DDL).
local function write_directory_schema(directory, lua_path)
  local endpoints, tables = {}, {}
  for _, d in ipairs(DIRECTORY) do
    local e = directory.described[d.name]
    local fields = {}
    for i, fd in ipairs(e.fields) do
      fields[i] = { name = fd.name, type = fd.type, nullable = fd.nullable or nil, time = fd.unixtime or nil }
    end
    endpoints[#endpoints + 1] = { name = e.name, path = e.path, shape = e.shape, object = e.object, fields = fields }
  end
  for _, t in ipairs(DIRECTORY_TABLES) do
    local columns = table_columns(t, directory.described)
    local defs = {}
    for i, col in ipairs(columns) do
      defs[i] = col.name .. " " .. col.type
    end
    defs[#defs + 1] = "PRIMARY KEY (" .. table.concat(t.key, ", ") .. ")"
    tables[#tables + 1] = { name = t.name, source = t.source, key = t.key, columns = columns,
      ddl = ("CREATE TABLE IF NOT EXISTS %s (\n  %s\n)"):format(t.name, table.concat(defs, ",\n  ")) }
  end
  local f = assert(io.open(lua_path, "w"))
  f:write("-- Generated by tools/gen-rules.lua from tools/openai-admin-directory-openapi.yaml: do not edit.\n",
    "-- The directory's endpoints (shape, object, fields in the API's order) and the\n",
    "-- store's directory tables: columns (field: where a column's value is read\n",
    "-- from an object; iso_of: the ISO text of a time column), key and DDL.\n",
    "return ", lua_source({ endpoints = endpoints, tables = tables }, ""), "\n")
  f:close()
end

local paths = {}
for p in pairs(spec.paths) do
  paths[#paths + 1] = p
end
table.sort(paths)

local out = {
  "/* Generated by tools/gen-rules.lua from tools/openai-usage-openapi.yaml: do not edit.",
  " * The request rules of every endpoint; see rules.h. */",
  '#include "rules.h"',
  "",
}
local endpoints = {}
for _, p in ipairs(paths) do
  local op = spec.paths[p].get
  local name = p:match "([%w_]+)$"
  local family = name == "costs" and "costs" or "usage"
  local widths = WIDTH_LIMITS[family]
  local lines, default_width = {}, nil
  for _, param in ipairs(op.parameters) do
    local kind, values = param_type(param)
    local values_name = "NULL"
    if values then
      values_name = name .. "_" .. param.name
      local quoted = {}
      for i, v in ipairs(values) do
        quoted[i] = c_string(v)
      end
      out[#out + 1] = ("static const char *const %s[] = {%s, NULL};"):format(values_name, table.concat(quoted, ", "))
    end
    if kind == "OU_PARAM_WIDTH" then
      -- the enum must be exactly the widths whose limits are written above
      local known = {}
      for _, w in ipairs(widths) do
        known[w[1]] = true
      end
      assert(#param.schema.enum == #widths, name .. ": bucket_width enum and the prose limits differ")
      for _, w in ipairs(param.schema.enum) do
        assert(known[w], name .. ": no limits written for bucket_width " .. w)
      end
      default_width = param.schema.default
    end
    lines[#lines + 1] = ("    {%s, %s, %d, %s, %d, %s},"):format(c_string(param.name), kind, param.required and 1 or 0,
      values_name, is_open(param, values) and 1 or 0, c_string(doc(param.description)))
  end
  assert(default_width, name .. ": no bucket_width default")
  out[#out + 1] = ("static const struct ou_param_rule %s_params[] = {"):format(name)
  for _, line in ipairs(lines) do
    out[#out + 1] = line
  end
  out[#out + 1] = "};"
  out[#out + 1] = ""
  endpoints[#endpoints + 1] = { name = name, path = p, family = family, default_width = default_width,
    nparams = #lines }
end

for _, family in ipairs { "costs", "usage" } do
  local widths = WIDTH_LIMITS[family]
  local rows = {}
  for i, w in ipairs(widths) do
    rows[i] = ("{%s, %d, %d}"):format(c_string(w[1]), w[2], w[3])
  end
  out[#out + 1] = ("static const struct ou_width_rule %s_widths[] = {%s};"):format(family, table.concat(rows, ", "))
end
-- (the endpoint table itself is written below, once the result fields are known)

-- The stand-in's copy of the same rules, as JSON, with each endpoint's result
-- fields: types from the result schema, order from the path's example
-- response (the order the API writes them in).
local KINDS = {
  OU_PARAM_TIME = "time", OU_PARAM_WIDTH = "width", OU_PARAM_LIMIT = "limit",
  OU_PARAM_CURSOR = "cursor", OU_PARAM_LIST = "list", OU_PARAM_BOOL = "bool",
}
local UNIT_SECONDS = { m = 60, h = 3600, d = 86400 }

-- The result schema whose object constant is `object`.
local function result_schema(object)
  for _, schema in pairs(spec.components.schemas) do
    local o = (schema.properties or {}).object
    if o and o.enum and o.enum[1] == object then
      return schema
    end
  end
  error("no result schema has the object " .. object)
end

local fields_of

-- One property: its single non-null type, nullable when null is allowed,
-- the known values of a string, the properties of an object.
local function field(name, schema, required, example)
  local f = { name = name, required = required or nil }
  local kind
  for _, alt in ipairs(schema.anyOf or { schema }) do
    if alt.type == "null" then
      f.nullable = true
    else
      assert(kind == nil or kind == alt.type, name .. ": more than one type")
      kind = alt.type
      if alt.enum and name ~= "object" then
        f.values = alt.enum
      end
    end
  end
  f.type = assert(kind, name .. ": no type")
  if kind == "object" then
    f.properties = fields_of(schema, example)
  end
  return f
end

-- The properties of an object schema in the order the example shows them.
function fields_of(schema, example)
  local required, list = {}, {}
  for _, name in ipairs(schema.required or {}) do
    required[name] = true
  end
  for name, property in pairs(schema.properties) do
    local at = example:find('"' .. name .. '"%s*:')
    assert(at, name .. " is not in the example response")
    list[#list + 1] = { at = at, field = field(name, property, required[name], example) }
  end
  table.sort(list, function(a, b)
    return a.at < b.at
  end)
  for i, entry in ipairs(list) do
    list[i] = entry.field
  end
  return list
end

local described = {}
for i, p in ipairs(paths) do
  local op, e = spec.paths[p].get, endpoints[i]
  local example = op["x-oaiMeta"].examples.response:match '"results"%s*:%s*%[%s*(%b{})'
  local object = assert(example, e.name .. ": no result in the example response"):match '"object"%s*:%s*"([^"]+)"'
  local fields = fields_of(result_schema(object), example)
  local by_name = {}
  for _, f in ipairs(fields) do
    by_name[f.name] = f
  end
  local params, widths = {}, {}
  for _, param in ipairs(op.parameters) do
    local kind, values = param_type(param)
    local entry = { name = param.name, kind = KINDS[kind], required = param.required or nil, values = values,
      open = is_open(param, values) or nil }
    if kind == "OU_PARAM_WIDTH" then
      entry.values = param.schema.enum
      local limits = {}
      for _, w in ipairs(WIDTH_LIMITS[e.family]) do
        limits[w[1]] = w
      end
      for _, w in ipairs(param.schema.enum) do
        local n, unit = w:match "^(%d+)(%a)$"
        widths[#widths + 1] = { name = w, seconds = tonumber(n) * assert(UNIT_SECONDS[unit], w),
          default_limit = limits[w][2], max_limit = limits[w][3] }
      end
    elseif kind == "OU_PARAM_LIMIT" and param.schema.default then
      for _, w in ipairs(WIDTH_LIMITS[e.family]) do
        assert(w[1] ~= e.default_width or w[2] == param.schema.default,
          e.name .. ": the description's default limit differs from the one written above")
      end
    elseif param.name == "group_by" then
      for _, v in ipairs(values) do
        assert(by_name[v] and by_name[v].nullable, e.name .. ": group_by " .. v .. " is not a result field")
      end
    elseif kind == "OU_PARAM_LIST" or kind == "OU_PARAM_BOOL" then
      -- a filter: project_ids keeps rows by project_id, sizes by size, batch by batch
      entry.field = kind == "OU_PARAM_BOOL" and param.name or param.name:gsub("s$", "")
      assert(by_name[entry.field], e.name .. ": filter " .. param.name .. " names no result field")
    end
    params[#params + 1] = entry
  end
  described[#described + 1] = { name = e.name, path = e.path, result = object, default_width = e.default_width,
    widths = widths, params = params, fields = fields }
end

-- The C table's result fields: name, type and nullability, in the order the
-- API writes them (reports show columns in that order).
for i, e in ipairs(endpoints) do
  local rows = {}
  for j, f in ipairs(described[i].fields) do
    rows[j] = ("{%s, %s, %d}"):format(c_string(f.name), c_string(f.type), f.nullable and 1 or 0)
  end
  out[#out + 1] = ("static const struct ou_field_rule %s_fields[] = {%s};"):format(e.name, table.concat(rows, ", "))
  e.nfields = #rows
end
out[#out + 1] = ""
out[#out + 1] = "const struct ou_endpoint_rule ou_endpoints[] = {"
for _, e in ipairs(endpoints) do
  out[#out + 1] = ("    {%s, %s, %s_params, %d, %s_widths, %d, %s, %s_fields, %d, OU_SHAPE_USAGE, 0, NULL},")
    :format(c_string(e.name),
    c_string(e.path), e.name, e.nparams, e.family, #WIDTH_LIMITS[e.family], c_string(e.default_width), e.name, e.nfields)
end
out[#out + 1] = "};"
out[#out + 1] = ("const size_t ou_nendpoints = %d;"):format(#endpoints)
local directory = directory_rules(c_string, doc, endpoints)
for _, line in ipairs(directory.c) do
  out[#out + 1] = line
end
io.write(table.concat(out, "\n"), "\n")
write_directory_schema(directory, lua_path)

local function json_scalar(v)
  if type(v) == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c)
      return ("\\u%04x"):format(c:byte())
    end) .. '"'
  elseif math.type(v) == "integer" or type(v) == "boolean" then
    return tostring(v)
  end
  error("cannot write " .. tostring(v) .. " as JSON")
end

-- Sorted keys; a container goes on one line when it fits in 110 columns.
local function json(v, indent)
  if type(v) ~= "table" then
    return json_scalar(v)
  end
  local list = v[1] ~= nil or next(v) == nil
  local keys = {}
  if not list then
    for k in pairs(v) do
      keys[#keys + 1] = k
    end
    table.sort(keys)
  end
  local function items(inner)
    local parts = {}
    for i = 1, list and #v or #keys do
      local value = json(list and v[i] or v[keys[i]], inner)
      parts[i] = list and value or (json_scalar(keys[i]) .. ": " .. value)
    end
    return parts
  end
  local open, close = list and "[" or "{", list and "]" or "}"
  local flat = open .. table.concat(items(""), ", ") .. close
  if #indent + #flat <= 110 and not flat:find "\n" then
    return flat
  end
  local inner = indent .. "  "
  return open .. "\n" .. inner .. table.concat(items(inner), ",\n" .. inner) .. "\n" .. indent .. close
end

local f = assert(io.open(json_path, "w"))
f:write(json({ note = "Generated by tools/gen-rules.lua from tools/openai-usage-openapi.yaml: do not edit.",
  endpoints = described }, ""), "\n")
f:close()

-- The history store's schema (openai_usage.store), from the same rules: one
-- table per endpoint (typed columns: the organization, the bucket width and
-- times in Unix seconds and ISO text, each group dimension, each figure),
-- the buckets a sync has seen, the sync state, the schema version, and
-- views. Bump STORE_SCHEMA_VERSION whenever the DDL changes: a store
-- written under another version is refused, never half-read.
local STORE_SCHEMA_VERSION = 1
local SQL_TYPES = { integer = "INTEGER", number = "REAL", string = "TEXT", boolean = "INTEGER" }

local function sql_name(name)
  assert(name:match "^[%a_][%w_]*$", name .. ": not a plain SQL name")
  return name
end

-- An endpoint's store columns: { name, sql type, role, field, property,
-- type, not_null }; role is "dimension" (a group_by value: part of the
-- row's key), "figure" (a number) or "attribute" (other text of a row,
-- such as costs' quantity_unit); an object field (costs' amount) gives a
-- column per property, amount_value and amount_currency.
local function store_columns(e)
  local dimensions = {}
  for _, p in ipairs(e.params) do
    if p.name == "group_by" then
      for _, v in ipairs(p.values) do
        dimensions[v] = true
      end
    end
  end
  local columns = {}
  local function add(name, f, parent)
    local role = dimensions[name] and "dimension" or
      ((f.type == "integer" or f.type == "number") and "figure" or "attribute")
    columns[#columns + 1] = { name = sql_name(name), sql = assert(SQL_TYPES[f.type], name .. ": no SQL type"),
      role = role, field = parent and parent.name or f.name, property = parent and f.name or nil, type = f.type,
      not_null = (f.required and not f.nullable and not parent) or nil }
  end
  for _, f in ipairs(e.fields) do
    if f.type == "object" then
      for _, sub in ipairs(f.properties) do
        add(f.name .. "_" .. sub.name, sub, f)
      end
    elseif f.name ~= "object" then
      add(f.name, f)
    end
  end
  return columns
end

-- The columns every endpoint table starts with: whose usage, which bucket.
local BUCKET_COLUMNS = {
  { "organization", "TEXT NOT NULL", "the organization the rows are of (a client's organization option)" },
  { "width", "TEXT NOT NULL", "the bucket width: 1m, 1h or 1d" },
  { "start_time", "INTEGER NOT NULL", "bucket start, Unix seconds" },
  { "end_time", "INTEGER NOT NULL", "bucket end (exclusive), Unix seconds" },
  { "start_iso", "TEXT NOT NULL", "bucket start, ISO 8601 UTC (2024-11-01T00:00:00Z)" },
  { "end_iso", "TEXT NOT NULL", "bucket end, ISO 8601 UTC" },
}

-- "  name TYPE, -- comment" lines; more: a line (a key) follows the last.
local function column_lines(list, more)
  local lines = {}
  for i, c in ipairs(list) do
    local comma = (i < #list or more) and "," or ""
    lines[i] = ("  %s %s%s%s"):format(c[1], c[2], comma, c[3] ~= "" and (" -- " .. c[3]) or "")
  end
  return lines
end

-- One endpoint's table and its key: a row per (organization, width, bucket
-- start, group) — a NULL dimension is a value of its own in the key.
local function endpoint_table_ddl(e, columns)
  local list, key = {}, { "organization", "width", "start_time" }
  for _, c in ipairs(BUCKET_COLUMNS) do
    list[#list + 1] = c
  end
  for _, c in ipairs(columns) do
    list[#list + 1] = { c.name, c.sql .. (c.not_null and " NOT NULL" or ""),
      c.role .. (c.property and (" (" .. c.field .. "." .. c.property .. ")") or "") }
    if c.role == "dimension" then
      key[#key + 1] = ("coalesce(%s, x'00')"):format(c.name)
    end
  end
  local out = { ("-- %s: the rows of GET %s, grouped by every dimension."):format(e.name, e.path),
    ("CREATE TABLE %s ("):format(sql_name(e.name)) }
  for _, line in ipairs(column_lines(list)) do
    out[#out + 1] = line
  end
  out[#out + 1] = ");"
  out[#out + 1] = ("CREATE UNIQUE INDEX %s_key ON %s (\n  %s\n);"):format(e.name, e.name,
    table.concat(key, ",\n  "))
  return table.concat(out, "\n")
end

-- The tables of the sync itself: the schema version, the buckets each
-- sync has seen (a bucket with no rows is known empty, not missing), and
-- where each endpoint's next sync starts.
local function sync_tables_ddl()
  local out = {
    "-- meta: schema_version (the store's), created_at.",
    "CREATE TABLE meta (",
    "  key TEXT PRIMARY KEY,",
    "  value TEXT NOT NULL",
    ");",
    "-- buckets: every bucket a sync stored, with or without rows.",
    "CREATE TABLE buckets (",
  }
  local buckets = {
    { "organization", "TEXT NOT NULL", "as in the endpoint tables" },
    { "endpoint", "TEXT NOT NULL", "the endpoint table the rows are in" },
    { "width", "TEXT NOT NULL", "1m, 1h or 1d" },
    { "start_time", "INTEGER NOT NULL", "Unix seconds" },
    { "end_time", "INTEGER NOT NULL", "Unix seconds (the last bucket of a sync may end early, at its now)" },
    { "start_iso", "TEXT NOT NULL", "ISO 8601 UTC" },
    { "end_iso", "TEXT NOT NULL", "ISO 8601 UTC" },
    { "results", "INTEGER NOT NULL", "rows the API gave for the bucket (0: known empty)" },
    { "settled", "INTEGER NOT NULL", "1 when it was settled when fetched: later syncs do not ask again" },
    { "fetched_at", "INTEGER NOT NULL", "Unix seconds" },
    { "fetched_iso", "TEXT NOT NULL", "ISO 8601 UTC" },
  }
  for _, line in ipairs(column_lines(buckets, true)) do
    out[#out + 1] = line
  end
  out[#out + 1] = "  PRIMARY KEY (organization, endpoint, width, start_time)"
  out[#out + 1] = ");"
  out[#out + 1] = "-- sync_state: per organization, endpoint and width, where the next sync starts."
  out[#out + 1] = "CREATE TABLE sync_state ("
  local state = {
    { "organization", "TEXT NOT NULL", "" },
    { "endpoint", "TEXT NOT NULL", "" },
    { "width", "TEXT NOT NULL", "" },
    { "first_time", "INTEGER NOT NULL", "the oldest bucket stored, Unix seconds" },
    { "first_iso", "TEXT NOT NULL", "" },
    { "synced_until", "INTEGER NOT NULL", "end of the last bucket stored" },
    { "synced_iso", "TEXT NOT NULL", "" },
    { "settled_until", "INTEGER NOT NULL", "every bucket before it was settled when stored: the next sync starts here" },
    { "settled_iso", "TEXT NOT NULL", "" },
    { "updated_at", "INTEGER NOT NULL", "when a page was last committed" },
    { "updated_iso", "TEXT NOT NULL", "" },
  }
  for _, line in ipairs(column_lines(state, true)) do
    out[#out + 1] = line
  end
  out[#out + 1] = "  PRIMARY KEY (organization, endpoint, width)"
  out[#out + 1] = ");"
  return table.concat(out, "\n")
end

-- Views over the sync's own tables.
local function sync_views_ddl()
  return table.concat({
    "-- sync_coverage: what the store holds, per organization, endpoint and width.",
    "CREATE VIEW sync_coverage AS",
    "  SELECT organization, endpoint, width, min(start_iso) AS first_iso, max(end_iso) AS last_iso,",
    "    count(*) AS buckets, sum(results = 0) AS empty_buckets, sum(settled) AS settled_buckets,",
    "    sum(results) AS results",
    "  FROM buckets GROUP BY organization, endpoint, width;",
  }, "\n")
end

-- Hooks for the directory (organizations, projects, users, api_keys,
-- service_accounts) and the views that join names into the endpoint
-- tables: each returns a list of DDL texts, appended after the sync's.
local function directory_tables_ddl()
  return {}
end

local function named_views_ddl(e, columns) -- luacheck: ignore 212
  return {}
end

local function lua_literal(v, indent)
  if type(v) == "string" then
    return ("%q"):format(v)
  elseif type(v) ~= "table" then
    return tostring(v)
  end
  local inner, parts = indent .. "  ", {}
  if v[1] ~= nil then
    for i, x in ipairs(v) do
      parts[i] = inner .. lua_literal(x, inner)
    end
  else
    local keys = {}
    for k in pairs(v) do
      keys[#keys + 1] = k
    end
    table.sort(keys)
    for i, k in ipairs(keys) do
      parts[i] = ("%s%s = %s"):format(inner, k, lua_literal(v[k], inner))
    end
  end
  local flat = {}
  for i, p in ipairs(parts) do
    flat[i] = p:gsub("^%s+", "")
  end
  local one = "{ " .. table.concat(flat, ", ") .. " }"
  if #indent + #one <= 110 and not one:find "\n" then
    return #parts == 0 and "{}" or one
  end
  return "{\n" .. table.concat(parts, ",\n") .. ",\n" .. indent .. "}"
end

local function write_store_schema()
  local ddl, tables = { sync_tables_ddl() }, {}
  for _, text in ipairs(directory_tables_ddl()) do
    ddl[#ddl + 1] = text
  end
  for _, e in ipairs(described) do
    local columns = store_columns(e)
    ddl[#ddl + 1] = endpoint_table_ddl(e, columns)
    local list = {}
    for i, c in ipairs(columns) do
      list[i] = { name = c.name, role = c.role, field = c.field, property = c.property, type = c.type }
    end
    tables[e.name] = { path = e.path, result = e.result, columns = list }
  end
  ddl[#ddl + 1] = sync_views_ddl()
  for _, e in ipairs(described) do
    for _, text in ipairs(named_views_ddl(e, tables[e.name].columns)) do
      ddl[#ddl + 1] = text
    end
  end
  local note = "Generated by tools/gen-rules.lua from tools/openai-usage-openapi.yaml: do not edit."
  local sql = ("-- %s\n-- The history store's schema, version %d (openai_usage.store).\n%s\n"):format(note,
    STORE_SCHEMA_VERSION, table.concat(ddl, "\n\n"))
  local out = assert(io.open(schema_sql_path, "w"))
  out:write(sql)
  out:close()
  assert(not sql:find "]==]", "the DDL holds the long bracket the Lua form closes with")
  out = assert(io.open(schema_lua_path, "w"))
  out:write(("-- %s\n-- The history store's schema as openai_usage.store loads it: version, the DDL\n"
    .. "-- (src/store_schema.sql, the same text) and each endpoint table's columns.\n"
    .. "return {\n  version = %d,\n  tables = %s,\n  sql = [==[\n%s]==],\n}\n"):format(note,
    STORE_SCHEMA_VERSION, lua_literal(tables, "  "), sql))
  out:close()
end
write_store_schema()
