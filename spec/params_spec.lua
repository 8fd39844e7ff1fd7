-- Parameter rules: every rule refuses bad input with a message naming the
-- parameter and what is allowed; valid input encodes to an exact query.
local usage = require "openai_usage"

local T0 = 1730419200 -- 2024-11-01T00:00:00Z

local function refused(params, endpoint)
  local query, err = usage.encode_query(endpoint or "images", params)
  assert.is_nil(query)
  assert.is_table(err)
  assert.are.equal("invalid_argument", err.kind)
  return err
end

local function encoded(params, format)
  local query, err = usage.encode_query("images", params, format)
  assert.is_nil(err)
  return query
end

describe("parameters", function()
  describe("start_time", function()
    it("is required", function()
      local err = refused {}
      assert.are.equal("start_time", err.param)
      assert.matches("start_time: required", err.message, 1, true)
      assert.are.equal("start_time", refused(nil).param)
    end)

    it("must be a whole number of seconds", function()
      assert.matches("integer number of Unix seconds, got 1.5", refused({ start_time = 1.5 }).message, 1, true)
      assert.matches('got "2024-11-01"', refused({ start_time = "2024-11-01" }).message, 1, true)
      assert.matches("got a boolean", refused({ start_time = true }).message, 1, true)
    end)

    it("refuses times before 1970", function()
      assert.matches("before 1970", refused({ start_time = -1 }).message, 1, true)
    end)

    it("accepts a float holding a whole number", function()
      assert.are.equal("start_time=1730419200", encoded { start_time = 1730419200.0 })
    end)
  end)

  describe("end_time", function()
    it("must be after start_time", function()
      local err = refused { start_time = T0, end_time = T0 }
      assert.are.equal("end_time", err.param)
      assert.matches("must be after start_time", err.message, 1, true)
      assert.are.equal("end_time", refused({ start_time = T0, end_time = T0 - 60 }).param)
    end)

    it("is encoded after start_time", function()
      assert.are.equal("start_time=1730419200&end_time=1730505600", encoded { end_time = T0 + 86400, start_time = T0 })
    end)
  end)

  describe("bucket_width", function()
    it("accepts 1m, 1h and 1d", function()
      for _, width in ipairs { "1m", "1h", "1d" } do
        assert.are.equal("start_time=1730419200&bucket_width=" .. width,
          encoded { start_time = T0, bucket_width = width })
      end
    end)

    it("refuses anything else, listing what is allowed", function()
      local err = refused { start_time = T0, bucket_width = "2d" }
      assert.are.equal("bucket_width", err.param)
      assert.are.equal('bucket_width: "2d" is not one of 1m, 1h, 1d', err.message)
      assert.are.equal("bucket_width", refused({ start_time = T0, bucket_width = 60 }).param)
    end)
  end)

  describe("limit", function()
    local cases = { { "1d", 31 }, { "1h", 168 }, { "1m", 1440 } }
    for _, case in ipairs(cases) do
      local width, max = case[1], case[2]
      it("is 1.." .. max .. " for bucket_width " .. width, function()
        assert.are.equal(
          "start_time=1730419200&bucket_width=" .. width .. "&limit=" .. max,
          encoded { start_time = T0, bucket_width = width, limit = max }
        )
        encoded { start_time = T0, bucket_width = width, limit = 1 }
        local err = refused { start_time = T0, bucket_width = width, limit = max + 1 }
        assert.are.equal("limit", err.param)
        assert.are.equal(("limit: %d is out of range 1..%d for bucket_width %s"):format(max + 1, max, width),
          err.message)
        assert.are.equal("limit", refused({ start_time = T0, bucket_width = width, limit = 0 }).param)
      end)
    end

    it("follows the default width, 1d, when bucket_width is absent", function()
      assert.matches("1..31 for bucket_width 1d", refused({ start_time = T0, limit = 32 }).message, 1, true)
    end)

    it("must be an integer", function()
      assert.matches("expected an integer", refused({ start_time = T0, limit = 2.5 }).message, 1, true)
      assert.matches("expected an integer", refused({ start_time = T0, limit = "7" }).message, 1, true)
    end)

    it("agrees with the rule table", function()
      local rules = usage.rules "images"
      local seen = {}
      for _, w in ipairs(rules.widths) do
        seen[w.width] = { w.default_limit, w.max_limit }
      end
      assert.are.same({ ["1d"] = { 7, 31 }, ["1h"] = { 24, 168 }, ["1m"] = { 60, 1440 } }, seen)
      assert.are.equal("1d", rules.default_width)
    end)
  end)

  describe("enumerated lists", function()
    local enums = {
      sources = { "image.generation", "image.edit", "image.variation" },
      sizes = { "256x256", "512x512", "1024x1024", "1792x1792", "1024x1792" },
      group_by = { "project_id", "user_id", "api_key_id", "model", "size", "source" },
    }
    for name, values in pairs(enums) do
      it(name .. " accepts the seed's values", function()
        local query = encoded { start_time = T0, [name] = values }
        local expected = {}
        for i, v in ipairs(values) do
          expected[i] = name .. "[]=" .. v
        end
        assert.are.equal("start_time=1730419200&" .. table.concat(expected, "&"), query)
      end)
    end

    it("group_by, which shapes the request, stays strict: any other value is refused", function()
      local err = refused { start_time = T0, group_by = { "model", "bogus" } }
      assert.are.equal("group_by", err.param)
      assert.are.equal(('group_by[2]: "bogus" is not one of %s'):format(table.concat(enums.group_by, ", ")),
        err.message)
      assert.are.equal("bucket_width", refused({ start_time = T0, bucket_width = "2d" }).param)
      assert.are.equal("colour", refused({ start_time = T0, colour = "red" }).param)
      local rules = {}
      for _, p in ipairs(usage.rules("images").params) do
        rules[p.name] = p
      end
      assert.are.same({ false, true, true }, { rules.group_by.open, rules.sizes.open, rules.sources.open })
    end)

    it("a filter's value the description does not list is sent as given: gpt-image-1's sizes", function()
      assert.are.equal("start_time=1730419200&sizes[]=1024x1536&sizes[]=1536x1024&sizes[]=auto&sizes[]=1024x1024",
        encoded { start_time = T0, sizes = { "1024x1536", "1536x1024", "auto", "1024x1024" } })
      assert.are.equal("start_time=1730419200&sources[]=image.upscale",
        encoded { start_time = T0, sources = "image.upscale" })
    end)

    it("a near miss of a listed value (two edits or fewer) is refused with a did you mean", function()
      local cases = {
        { "sizes", "1024x1O24", "1024x1024" }, -- a letter O for a zero
        { "sizes", "1024X1024", "1024x1024" },
        { "sizes", "512x521", "512x512" }, -- a transposition
        { "sizes", "1024x179", "1024x1792" },
        { "sources", "image.generatoin", "image.generation" },
        { "sources", "image-edit", "image.edit" },
      }
      for _, case in ipairs(cases) do
        local err = refused { start_time = T0, [case[1]] = { "auto", case[2] } }
        assert.are.equal(case[1], err.param)
        assert.are.equal(('%s[2]: "%s" is not one of the described values; did you mean "%s"?'):format(case[1], case[2],
          case[3]), err.message)
      end
      -- three edits from every listed size: not a typo
      assert.is_string(encoded { start_time = T0, sizes = "1536x1024" })
    end)

    it("reads a single string as a one-element list", function()
      assert.are.equal("start_time=1730419200&group_by[]=model", encoded { start_time = T0, group_by = "model" })
      assert.are.equal("sizes", refused({ start_time = T0, sizes = "1024x1025" }).param)
    end)

    it("refuses an empty list, a table with other keys, non-strings and empty strings", function()
      assert.matches("non-empty list", refused({ start_time = T0, models = {} }).message, 1, true)
      assert.matches("other keys", refused({ start_time = T0, models = { "a", x = "b" } }).message, 1, true)
      assert.matches("models%[2%]: expected a string, got 5", refused({ start_time = T0, models = { "a", 5 } }).message)
      assert.matches("models[1]: empty string", refused({ start_time = T0, models = { "" } }).message, 1, true)
      assert.matches("models: empty string", refused({ start_time = T0, models = "" }).message, 1, true)
      assert.matches("got a boolean", refused({ start_time = T0, models = true }).message, 1, true)
    end)

    it("keeps free-form ids as given", function()
      assert.are.equal(
        "start_time=1730419200&project_ids[]=proj_a&user_ids[]=user-b&api_key_ids[]=key_c&models[]=dall-e-3",
        encoded {
          start_time = T0, models = "dall-e-3", api_key_ids = { "key_c" }, user_ids = "user-b", project_ids = "proj_a",
        }
      )
    end)
  end)

  describe("page", function()
    it("is a non-empty cursor string, percent-encoded", function()
      assert.are.equal("start_time=1730419200&page=page_AAAA%2Bb%2F%3D",
        encoded { start_time = T0, page = "page_AAAA+b/=" })
      assert.are.equal("page", refused({ start_time = T0, page = "" }).param)
      assert.are.equal("page", refused({ start_time = T0, page = 5 }).param)
    end)
  end)

  describe("names", function()
    it("refuses an unknown name and suggests the close one", function()
      local err = refused { start_time = T0, group = "model" }
      assert.are.equal("group", err.param)
      assert.are.equal('unknown parameter "group" for images; did you mean "group_by"?', err.message)
      assert.matches('did you mean "models"', refused({ start_time = T0, model = "x" }).message, 1, true)
      assert.matches('did you mean "start_time"', refused({ start_tmie = T0 }).message, 1, true)
      assert.matches('did you mean "bucket_width"', refused({ start_time = T0, bucket_widht = "1d" }).message, 1, true)
    end)

    it("offers no suggestion for a name that is nothing like one", function()
      local err = refused { start_time = T0, colour = "red" }
      assert.are.equal('unknown parameter "colour" for images', err.message)
    end)

    it("refuses keys that are not strings", function()
      assert.matches("parameter names must be strings", refused({ T0 }).message, 1, true)
    end)

    it("refuses an unknown endpoint, suggesting the close one", function()
      local err = refused({ start_time = T0 }, "image")
      assert.are.equal("endpoint", err.param)
      assert.matches('did you mean "images"', err.message, 1, true)
    end)

    it("refuses params that are not a table", function()
      assert.matches("params: expected a table", refused("start_time=1").message, 1, true)
    end)
  end)

  describe("encoding", function()
    it("orders parameters as the rule table does, whatever the Lua table's order", function()
      local params = {
        page = "c1", limit = 5, group_by = { "model", "size" }, models = "m", api_key_ids = "k", user_ids = "u",
        project_ids = "p", sizes = "256x256", sources = "image.edit", bucket_width = "1h", end_time = T0 + 3600,
        start_time = T0,
      }
      assert.are.equal(
        "start_time=1730419200&end_time=1730422800&bucket_width=1h&sources[]=image.edit&sizes[]=256x256"
          .. "&project_ids[]=p&user_ids[]=u&api_key_ids[]=k&models[]=m&group_by[]=model&group_by[]=size"
          .. "&limit=5&page=c1",
        encoded(params)
      )
    end)

    it("sends arrays as name[]= by default and as repeated names with array_format repeat", function()
      local params = { start_time = T0, group_by = { "model", "size" } }
      assert.are.equal("start_time=1730419200&group_by[]=model&group_by[]=size", encoded(params))
      assert.are.equal("start_time=1730419200&group_by[]=model&group_by[]=size", encoded(params, "brackets"))
      assert.are.equal("start_time=1730419200&group_by=model&group_by=size", encoded(params, "repeat"))
    end)

    it("percent-encodes every value, keeping only RFC 3986 unreserved characters", function()
      local id = "a b&c=d/e?f#g%h+i~j.k-l_m\"\0n" .. "é"
      assert.are.equal(
        "start_time=1730419200&models[]=a%20b%26c%3Dd%2Fe%3Ff%23g%25h%2Bi~j.k-l_m%22%00n%C3%A9",
        encoded { start_time = T0, models = id }
      )
    end)

    it("does not change the caller's table", function()
      local params = { start_time = T0, group_by = "model" }
      encoded(params)
      assert.are.same({ start_time = T0, group_by = "model" }, params)
    end)
  end)

  describe("the rule table", function()
    it("lists the images endpoint and its parameters in order", function()
      local listed = {}
      for _, name in ipairs(usage.rules()) do
        listed[name] = true
      end
      assert.is_true(listed.images)
      local names = {}
      for i, p in ipairs(usage.rules("images").params) do
        names[i] = p.name
      end
      assert.are.same({
        "start_time", "end_time", "bucket_width", "sources", "sizes", "project_ids", "user_ids", "api_key_ids",
        "models", "group_by", "limit", "page",
      }, names)
      assert.is_true(usage.rules("images").params[1].required)
      assert.are.equal("/organization/usage/images", usage.rules("images").path)
    end)
  end)

  describe("errors", function()
    it("print as one line naming the kind and the problem", function()
      local err = refused { start_time = T0, bucket_width = "2d" }
      assert.are.equal('openai_usage: invalid_argument: bucket_width: "2d" is not one of 1m, 1h, 1d', tostring(err))
    end)
  end)
end)
