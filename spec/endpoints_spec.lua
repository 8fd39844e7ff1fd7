-- Every endpoint of the OpenAPI description is in the rule table, with its
-- parameters, enums and limits; the table is what tools/gen-rules.lua makes.
local usage = require "openai_usage"
local lyaml = require "lyaml"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read "*a"
  f:close()
  return text
end

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

  it("the committed rule table is what tools/gen-rules.lua writes", function()
    local lua = os.getenv("OPENAI_USAGE_LUA") or "lua5.4"
    if lua ~= "lua5.4" then
      return pending "the generator runs on Lua 5.4 (lyaml)"
    end
    local out = os.tmpname()
    assert(os.execute(("%s tools/gen-rules.lua tools/openai-usage-openapi.yaml | clang-format "
      .. "--assume-filename=src/rules_table.c > %s"):format(lua, out)))
    local fresh = read(out)
    os.remove(out)
    assert.are.equal(read "src/rules_table.c", fresh)
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

      it("refuses what the description does not allow", function()
        for _, param in ipairs(op.parameters) do
          local s = param.schema
          local enum = s.enum or (s.items and s.items.enum)
          if enum then
            local _, err = usage.encode_query(name, { start_time = T0, [param.name] = "not-a-value" })
            assert.are.equal(param.name, err.param)
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
    assert.are.equal("start_time=1730419200&batch=false", usage.encode_query("completions", { start_time = T0, batch = false }))
    assert.are.equal("start_time=1730419200&batch=true", usage.encode_query("completions", { start_time = T0, batch = true }))
  end)

  it("suggests the close endpoint name", function()
    local _, err = usage.encode_query("completion", { start_time = T0 })
    assert.matches('did you mean "completions"', err.message, 1, true)
  end)
end)
