-- Every endpoint of the OpenAPI description is in the rule table, with its
-- parameters, enums and limits; the table is what tools/gen-rules.lua makes.
-- The stand-in serves every endpoint from the same generated rules, with
-- exactly the description's result fields.
local usage = require "openai_usage"
local lyaml = require "lyaml"
local cjson = require "cjson"
local standin = require "spec.support.standin"
local util = require "spec.support.util"

local read = util.read

local spec = lyaml.load(read "tools/openai-usage-openapi.yaml")
local T0 = 1730419200

-- A valid value for a parameter, from its schema.
local function sample(param)
  local s = param.schema
  if param.name == "bucket_width" then
    return s.enum[#s.enum]
  elseif param.name == "limit" then
    return 1
  elseif param.name == "page" then
    return "cursor_1"
  elseif s.type == "integer" then
    return param.name == "end_time" and T0 + 86400 or T0
  elseif s.type == "boolean" then
    return true
  elseif s.type == "array" then
    return (s.items.enum or { "x_1" })[1]
  end
  error("no sample for " .. param.name)
end

describe("endpoints", function()
  local paths = {}
  for path in pairs(spec.paths) do
    paths[#paths + 1] = path
  end
  table.sort(paths)

  -- What the generator writes now: the C table and the stand-in's JSON (into
  -- temporary files, never over the committed ones); nil on other Lua versions.
  local generated
  local function generate()
    local lua = util.suite_lua()
    if lua ~= "lua5.4" then
      return nil
    end
    if not generated then
      local c_file, json_file, sql_file, schema_file = os.tmpname(), os.tmpname(), os.tmpname(), os.tmpname()
      local lua_file = os.tmpname()
      assert(os.execute(("%s tools/gen-rules.lua tools/openai-usage-openapi.yaml %s %s %s %s | clang-format "
        .. "--assume-filename=src/rules_table.c > %s"):format(lua, json_file, sql_file, schema_file, lua_file,
        c_file)))
      generated = { c = read(c_file), json = read(json_file), sql = read(sql_file), schema = read(schema_file),
        directory = read(lua_file) }
      for _, file in ipairs { c_file, json_file, sql_file, schema_file, lua_file } do
        os.remove(file)
      end
    end
    return generated
  end

  it("the committed rule table is what tools/gen-rules.lua writes", function()
    local fresh = generate()
    if not fresh then
      return pending "the generator runs on Lua 5.4 (lyaml)"
    end
    assert.are.equal(read "src/rules_table.c", fresh.c)
  end)

  it("the stand-in's committed standin/endpoints.json is what tools/gen-rules.lua writes", function()
    local fresh = generate()
    if not fresh then
      return pending "the generator runs on Lua 5.4 (lyaml)"
    end
    assert.is_true(#fresh.json > 1000)
    assert.are.equal(read "standin/endpoints.json", fresh.json)
  end)

  it("the committed lua/openai_usage/directory_schema.lua (directory fields, the store's DDL) is what "
    .. "tools/gen-rules.lua writes", function()
    local fresh = generate()
    if not fresh then
      return pending "the generator runs on Lua 5.4 (lyaml)"
    end
    assert.truthy(fresh.directory:find("CREATE TABLE IF NOT EXISTS projects", 1, true))
    assert.are.equal(read "lua/openai_usage/directory_schema.lua", fresh.directory)
  end)

  it("the committed store schema (src/store_schema.sql, lua/openai_usage/store_schema.lua) is what "
    .. "tools/gen-rules.lua writes", function()
    local fresh = generate()
    if not fresh then
      return pending "the generator runs on Lua 5.4 (lyaml)"
    end
    assert.is_truthy(fresh.sql:find("CREATE TABLE images (", 1, true))
    assert.are.equal(read "src/store_schema.sql", fresh.sql)
    assert.are.equal(read "lua/openai_usage/store_schema.lua", fresh.schema)
    -- one source: the Lua form carries exactly the SQL text
    assert.are.equal(fresh.sql, dofile("lua/openai_usage/store_schema.lua").sql)
  end)

  it("standin/endpoints.json states the client's rules: parameters, types, enums, limits per width, "
    .. "result fields", function()
    local kinds = { time = "time", width = "bucket_width", limit = "limit", cursor = "cursor", list = "list",
      bool = "boolean" }
    local described = cjson.decode(read "standin/endpoints.json").endpoints
    local names = {}
    for _, e in ipairs(described) do
      names[#names + 1] = e.name
      local rules = usage.rules(e.name)
      assert.are.equal(rules.path, e.path)
      assert.are.equal(rules.default_width, e.default_width)
      assert.are.equal(#rules.params, #e.params)
      for i, p in ipairs(e.params) do
        local r = rules.params[i]
        assert.are.same({ r.name, r.type, r.required }, { p.name, kinds[p.kind], p.required == true })
        if p.kind == "list" then
          assert.are.same(r.values or {}, p.values or {}, e.name .. " " .. p.name)
        end
      end
      assert.are.equal(#rules.widths, #e.widths)
      for i, w in ipairs(e.widths) do
        local r = rules.widths[i]
        assert.are.same({ r.width, r.default_limit, r.max_limit }, { w.name, w.default_limit, w.max_limit })
      end
      -- the result fields, in the API's order (reports show columns so)
      assert.are.equal(#e.fields, #rules.fields, e.name)
      for i, f in ipairs(e.fields) do
        local r = rules.fields[i]
        assert.are.same({ f.name, f.type, f.nullable == true }, { r.name, r.type, r.nullable }, e.name)
      end
    end
    local listed = usage.rules()
    table.sort(listed)
    table.sort(names)
    assert.are.same(listed, names)
  end)

  it("the vendored description is the shared upstream one, where that is beside the clone", function()
    local f = io.open((os.getenv("OPENAI_USAGE_SHARED") or "../shared") .. "/upstream/openai-usage-openapi.yaml", "rb")
    if not f then
      return pending "../shared is not beside this clone"
    end
    local upstream = f:read "*a"
    f:close()
    assert.are.equal(upstream, read "tools/openai-usage-openapi.yaml")
  end)

  it("lists every path of the description, with a shortcut on the client", function()
    local names = {}
    for _, path in ipairs(paths) do
      names[#names + 1] = path:match "([%w_]+)$"
    end
    local listed = usage.rules()
    table.sort(listed)
    table.sort(names)
    assert.are.same(names, listed)
    local c = assert(usage.new { api_key = "sk-admin-endpoints", base_url = "http://127.0.0.1:9/v1" })
    for _, name in ipairs(names) do
      assert.is_function(c[name], name)
    end
  end)

  for _, path in ipairs(paths) do
    local name = path:match "([%w_]+)$"
    local op = spec.paths[path].get

    describe(name, function()
      it("accepts every documented parameter and encodes it in the description's order", function()
        local params, order = {}, {}
        for _, param in ipairs(op.parameters) do
          params[param.name] = sample(param)
          order[#order + 1] = param.name
        end
        local query, err = usage.encode_query(name, params)
        assert.is_nil(err)
        local seen = {}
        for key in query:gmatch "([%w_]+)%[?%]?=" do
          if seen[#seen] ~= key then
            seen[#seen + 1] = key
          end
        end
        assert.are.same(order, seen)
        assert.are.equal(path, usage.rules(name).path)
      end)

      it("refuses what the description does not allow (a filter's listed values are open, but for near "
        .. "misses)", function()
        for _, param in ipairs(op.parameters) do
          local s = param.schema
          local enum = s.enum or (s.items and s.items.enum)
          if enum and (param.name == "group_by" or not s.items) then
            -- a set that shapes the request (group_by, bucket_width): strict
            local _, err = usage.encode_query(name, { start_time = T0, [param.name] = "not-a-value" })
            assert.are.equal(param.name, err.param)
          elseif enum then
            -- a filter's vocabulary: another value is sent as given, a near miss refused
            local query = assert(usage.encode_query(name, { start_time = T0, [param.name] = "not-a-value" }))
            assert.truthy(query:find(param.name .. "[]=not-a-value", 1, true), query)
            local typo = enum[1]:sub(1, -2) .. (enum[1]:sub(-1) == "x" and "y" or "x")
            local _, err = usage.encode_query(name, { start_time = T0, [param.name] = typo })
            assert.are.equal(param.name, err.param)
            assert.matches(('did you mean "%s"?'):format(enum[1]), err.message, 1, true)
          end
          if s.type == "boolean" then
            local _, err = usage.encode_query(name, { start_time = T0, [param.name] = "yes" })
            assert.matches("expected true or false", err.message, 1, true)
          end
        end
        local _, err = usage.encode_query(name, { start_time = T0, no_such_parameter = 1 })
        assert.are.equal("no_such_parameter", err.param)
        _, err = usage.encode_query(name, {})
        assert.are.equal("start_time", err.param)
      end)
    end)
  end

  it("costs: bucket_width 1d only, limit 1..180", function()
    assert.are.equal("start_time=1730419200&limit=180", usage.encode_query("costs", { start_time = T0, limit = 180 }))
    local _, err = usage.encode_query("costs", { start_time = T0, limit = 181 })
    assert.are.equal("limit: 181 is out of range 1..180 for bucket_width 1d", err.message)
    _, err = usage.encode_query("costs", { start_time = T0, bucket_width = "1h" })
    assert.are.equal('bucket_width: "1h" is not one of 1d', err.message)
    assert.are.equal("start_time=1730419200&group_by[]=project_id&group_by[]=line_item",
      usage.encode_query("costs", { start_time = T0, group_by = { "project_id", "line_item" } }))
  end)

  it("completions: batch is a boolean sent as true or false", function()
    assert.are.equal("start_time=1730419200&batch=false",
      usage.encode_query("completions", { start_time = T0, batch = false }))
    assert.are.equal("start_time=1730419200&batch=true",
      usage.encode_query("completions", { start_time = T0, batch = true }))
  end)

  it("suggests the close endpoint name", function()
    local _, err = usage.encode_query("completion", { start_time = T0 })
    assert.matches('did you mean "completions"', err.message, 1, true)
  end)

  -- Every endpoint on the stand-in, read with the real client (and with curl
  -- where the client's own checks would stop a request first); the oracle is
  -- the description itself.
  describe("on the stand-in", function()
    local KEY = "sk-admin-endpoints-spec-0123456789"
    local NOW = 1732406400 -- 2024-11-24T00:00:00Z, a Sunday
    local DAY = 86400
    local srv, c

    setup(function()
      srv = standin.start { key = KEY, now = NOW }
      c = assert(usage.new(srv:client_options { retry_backoff = 0.01, retry_backoff_max = 0.04 }))
    end)

    teardown(function()
      srv:stop()
    end)

    -- GETs with one curl, past the client's checks: {status, decoded body}
    -- per query, nulls kept (cjson.null), so absent and null fields differ.
    local function raw_all(path, queries)
      local urls = {}
      for i, query in ipairs(queries) do
        urls[i] = ("'%s%s?%s'"):format(srv.url, path, query)
      end
      local p = assert(io.popen(("env -u LD_PRELOAD curl -gsS --max-time 20 -H 'Authorization: Bearer %s' "
        .. "-w '\n%%{http_code}\n' %s"):format(KEY, table.concat(urls, " "))))
      local out = p:read "*a"
      p:close()
      local answers = {}
      for body, status in out:gmatch "([^\n]*)\n(%d+)\n" do
        answers[#answers + 1] = { tonumber(status), cjson.decode(body) }
      end
      assert.are.equal(#queries, #answers, out)
      return answers
    end

    local function with(base, extra)
      local t = {}
      for k, v in pairs(base) do
        t[k] = v
      end
      for k, v in pairs(extra or {}) do
        t[k] = v
      end
      return t
    end

    local near = util.near

    local function is_integer(v)
      if math.type then
        return math.type(v) == "integer"
      end
      return type(v) == "number" and v == math.floor(v)
    end

    -- The result schema of an operation: the one whose object constant its
    -- example response names.
    local function result_schema(op)
      local object = op["x-oaiMeta"].examples.response:match '"results"%s*:%s*%[%s*{%s*"object"%s*:%s*"([^"]+)"'
      for _, schema in pairs(spec.components.schemas) do
        local o = schema.properties and schema.properties.object
        if o and o.enum and o.enum[1] == object then
          return schema, object
        end
      end
      error("no schema for " .. tostring(object))
    end

    -- Whether a Lua value has one of the schema's types (JSON null reads as nil).
    local function check_type(value, schema, where)
      for _, alt in ipairs(schema.anyOf or { schema }) do
        local t = alt.type
        if (t == "null" and value == nil) or (t == "string" and type(value) == "string")
          or (t == "boolean" and type(value) == "boolean") or (t == "number" and type(value) == "number")
          or (t == "integer" and is_integer(value)) then
          return
        end
        if t == "object" and type(value) == "table" then
          for k, v in pairs(value) do
            assert(alt.properties[k], where .. "." .. k .. " is not in the description")
            check_type(v, alt.properties[k], where .. "." .. k)
          end
          return
        end
      end
      error(("%s: %s is not of the described type"):format(where, tostring(value)))
    end

    for _, path in ipairs(paths) do
      local name = path:match "([%w_]+)$"
      local op = spec.paths[path].get
      local schema, object = result_schema(op)
      local properties = {}
      for field in pairs(schema.properties) do
        properties[#properties + 1] = field
      end
      table.sort(properties)
      local group_fields, filters = {}, {}
      for _, param in ipairs(op.parameters) do
        local s = param.schema
        if param.name == "group_by" then
          group_fields = s.items.enum
        elseif s.type == "boolean" or (s.type == "array" and param.name:match "s$") then
          -- a filter: project_ids keeps rows by project_id, sizes by size, batch by batch
          filters[#filters + 1] = { param = param.name, field = s.type == "boolean" and param.name
            or param.name:gsub("s$", ""), boolean = s.type == "boolean", enum = s.items and s.items.enum }
        end
      end
      local range = { start_time = NOW - 2 * DAY, end_time = NOW }

      -- The row's main measure: the cost, or its first required count.
      local function measure(row)
        if row.amount then
          return row.amount.value
        end
        for _, field in ipairs(schema.required) do
          if field ~= "object" then
            return row[field]
          end
        end
      end

      describe(name, function()
        it("serves rows with exactly the description's result fields, of its types", function()
          local plain = ("start_time=%d&end_time=%d"):format(range.start_time, NOW)
          local grouped = plain .. "&group_by[]=" .. table.concat(group_fields, "&group_by[]=")
          for _, answer in ipairs(raw_all(path, { plain, grouped })) do
            local status, page = answer[1], answer[2]
            assert.are.equal(200, status)
            local n = 0
            for _, bucket in ipairs(page.data) do
              for _, r in ipairs(bucket.results) do
                n = n + 1
                local keys = {}
                for k in pairs(r) do
                  keys[#keys + 1] = k
                end
                table.sort(keys)
                assert.are.same(properties, keys)
              end
            end
            assert.is_true(n > 0)
          end
          local n = 0
          for row, bucket in c:results(name, with(range, { group_by = group_fields })) do
            n = n + 1
            assert.are.equal(object, row.object)
            assert.are.same({ bucket.start_time, bucket.end_time }, { row.start_time, row.end_time })
            for field, value in pairs(row) do
              if field ~= "start_time" and field ~= "end_time" then
                assert(schema.properties[field], field .. " is not a field of " .. object)
                check_type(value, schema.properties[field], object .. "." .. field)
              end
            end
            for _, field in ipairs(schema.required) do
              assert.is_not_nil(row[field], field)
            end
          end
          assert.is_true(n > 0)
        end)

        it("groups by each group_by field, the others null, and the groups sum to the whole", function()
          local whole = 0
          for row in c:results(name, range) do
            for _, field in ipairs(group_fields) do
              assert.is_nil(row[field])
            end
            whole = whole + measure(row)
          end
          assert.is_true(whole > 0)
          for _, field in ipairs(group_fields) do
            local values, sum = {}, 0
            for row in c:results(name, with(range, { group_by = field })) do
              for _, other in ipairs(group_fields) do
                if other ~= field then
                  assert.is_nil(row[other], other)
                end
              end
              if row[field] ~= nil then
                values[tostring(row[field])] = true
              end
              sum = sum + measure(row)
            end
            assert.is_not_nil(next(values), field)
            near(whole, sum, field)
          end
        end)

        it("keeps only the asked values with each filter", function()
          for _, f in ipairs(filters) do
            local per_value, values = {}, {}
            for row in c:results(name, with(range, { group_by = f.field })) do
              local v = row[f.field]
              if v ~= nil then
                if per_value[v] == nil then
                  values[#values + 1] = v
                end
                per_value[v] = (per_value[v] or 0) + measure(row)
              end
            end
            assert.is_true(#values > 1, f.param)
            table.sort(values, function(a, b)
              return tostring(a) < tostring(b)
            end)
            for i = 1, math.min(#values, 3) do
              local v, sum, n = values[i], 0, 0
              local asked = v
              if not f.boolean then
                asked = { v }
              end
              for row in c:results(name, with(range, { group_by = f.field, [f.param] = asked })) do
                assert.are.equal(v, row[f.field])
                sum, n = sum + measure(row), n + 1
              end
              assert.is_true(n > 0)
              near(per_value[v], sum, f.param .. " " .. tostring(v))
            end
            if not f.boolean and not f.enum then
              for _ in c:results(name, with(range, { [f.param] = { "nobody_at_all" } })) do
                error(f.param .. ": an unknown value matched a row")
              end
            end
          end
        end)

        it("answers 400 with the API's error envelope for what the description does not allow", function()
          local rules = usage.rules(name)
          local widest = rules.widths[#rules.widths]
          local cases = {
            { "bucket_width=2d", "bucket_width" },
            { ("bucket_width=%s&limit=%d"):format(widest.width, widest.max_limit + 1), "limit" },
            { "limit=0", "limit" },
            { "group_by[]=no_such_field", "group_by" },
            { "no_such_parameter=1", "no_such_parameter" },
            { "end_time=" .. NOW, "end_time" }, -- a second end_time
            { "start_time[]=1", "start_time" },
          }
          local widths = {}
          for _, w in ipairs(rules.widths) do
            widths[w.width] = true
          end
          for _, w in ipairs { "1m", "1h", "1d" } do
            if not widths[w] then
              cases[#cases + 1] = { "bucket_width=" .. w, "bucket_width" }
            end
          end
          for _, param in ipairs(op.parameters) do
            local s = param.schema
            if s.items and s.items.enum then
              cases[#cases + 1] = { param.name .. "[]=not-a-value", param.name }
            elseif s.type == "boolean" then
              cases[#cases + 1] = { param.name .. "=yes", param.name }
            end
          end
          local queries = {}
          for i, case in ipairs(cases) do
            queries[i] = ("start_time=%d&end_time=%d&"):format(NOW - DAY, NOW) .. case[1]
          end
          for i, answer in ipairs(raw_all(path, queries)) do
            local status, body = answer[1], answer[2]
            assert.are.equal(400, status, cases[i][1])
            assert.are.same({ cases[i][2], "invalid_request_error" }, { body.error.param, body.error.type })
            assert.is_string(body.error.message)
          end
          -- what only the server can know, through the client
          local _, err = c:usage(name, { start_time = NOW - DAY, page = "page_bogus" })
          assert.are.same({ "http", 400, "page", "invalid_request_error" },
            { err.kind, err.status, err.param, err.type })
          _, err = c:usage(name, { start_time = NOW + DAY }) -- end_time is now
          assert.are.same({ "http", 400, "end_time" }, { err.kind, err.status, err.param })
          local page = assert(c:usage(name, { start_time = NOW - DAY, bucket_width = widest.width,
            limit = widest.max_limit }))
          assert.are.equal(1, #page.data)
        end)

        it("pages like images: limit buckets a page, next_page leads on, the pages sum to one query", function()
          local params = { start_time = NOW - 5 * DAY, end_time = NOW, limit = 2, group_by = group_fields[1] }
          local pages, starts, sum = 0, {}, 0
          for page in c:pages(name, params) do
            pages = pages + 1
            assert.are.equal(pages < 3, page.has_more)
            for _, b in ipairs(page.data) do
              starts[#starts + 1] = b.start_time
              for _, r in ipairs(b.results) do
                sum = sum + measure(r)
              end
            end
          end
          assert.are.equal(3, pages)
          assert.are.same({ NOW - 5 * DAY, NOW - 4 * DAY, NOW - 3 * DAY, NOW - 2 * DAY, NOW - DAY }, starts)
          local one = assert(c:usage(name, with(params, { limit = 5 })))
          assert.is_false(one.has_more)
          assert.is_nil(one.next_page)
          local whole = 0
          for _, b in ipairs(one.data) do
            for _, r in ipairs(b.results) do
              whole = whole + measure(r)
            end
          end
          assert.is_true(whole > 0)
          near(whole, sum)
        end)
      end)
    end
  end)
end)
