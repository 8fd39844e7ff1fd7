-- The stand-in server behaves like the API where a client relies on it:
-- checked with the curl command-line tool, independently of our client.
local cjson = require "cjson"
local lyaml = require "lyaml"
local usage = require "openai_usage"
local standin = require "spec.support.standin"
local util = require "spec.support.util"

local KEY = "sk-admin-standin-spec-123456"
local NOW = 1732406400 -- 2024-11-24T00:00:00Z, a Sunday
local DAY = 86400

describe("stand-in server", function()
  local srv

  setup(function()
    srv = standin.start { key = KEY, now = NOW }
  end)

  teardown(function()
    srv:stop()
  end)

  before_each(function()
    srv:reset()
  end)

  -- GET path?query with curl; returns status, headers (lower-cased), body
  local function get(query, options)
    options = options or {}
    local headers_file = os.tmpname()
    local cmd = ("env -u LD_PRELOAD curl -sS --max-time 20 -D %s %s %s '%s/organization/usage/images?%s'"):format(
      headers_file, options.key == false and "" or ("-H 'Authorization: Bearer " .. (options.key or KEY) .. "'"),
      options.compressed and "--compressed" or "", srv.url, query)
    local p = assert(io.popen(cmd))
    local body = p:read "*a"
    p:close()
    local f = assert(io.open(headers_file))
    local raw = f:read "*a"
    f:close()
    os.remove(headers_file)
    local headers = {}
    for name, value in raw:gmatch "([%w%-]+): ([^\r\n]*)" do
      headers[name:lower()] = value
    end
    return tonumber(raw:match "^HTTP/1.1 (%d+)"), headers, body
  end

  local function page(query)
    local status, _, body = get(query)
    assert.are.equal(200, status, body)
    return cjson.decode(body)
  end

  local function total(p, field)
    local sum = 0
    for _, b in ipairs(p.data) do
      for _, r in ipairs(b.results) do
        sum = sum + r[field or "images"]
      end
    end
    return sum
  end

  -- Runs curl with extra arguments against url (default: the usage endpoint with
  -- query); returns status, headers (lower-cased), body, curl's exit code, seconds.
  local function run(args, query, url)
    local headers_file = os.tmpname()
    url = url or (srv.url .. "/organization/usage/images?" .. (query or ""))
    -- the shell appends curl's exit code: io.popen's close gives none on 5.1
    local cmd = ("env -u LD_PRELOAD curl -s --max-time 20 -D %s -w '\n%%{time_total}' %s '%s' 2>/dev/null; "
      .. "printf ' %%d' $?")
      :format(headers_file, args or "", url)
    local p = assert(io.popen(cmd))
    local out = p:read "*a"
    p:close()
    local f = assert(io.open(headers_file, "rb"))
    local raw = f:read "*a"
    f:close()
    os.remove(headers_file)
    local headers = {}
    for name, value in raw:gmatch "([%w%-]+): ([^\r\n]*)" do
      headers[name:lower()] = value
    end
    local body, seconds, code = out:match "^(.*)\n([%d%.]+) (%d+)$"
    return tonumber(raw:match "^HTTP/1.1 (%d+)"), headers, body or out, tonumber(code), tonumber(seconds)
  end

  local AUTH = "-H 'Authorization: Bearer " .. KEY .. "'"

  it("answers 401 with the OpenAI envelope, a request id and a masked key", function()
    local status, headers, body = get("start_time=" .. (NOW - DAY), { key = "sk-admin-wrongwrongwrong" })
    assert.are.equal(401, status)
    assert.matches("^req_%x+$", headers["x-request-id"])
    local e = cjson.decode(body).error
    assert.are.equal("invalid_api_key", e.code)
    assert.are.equal("invalid_request_error", e.type)
    assert.matches("sk-adm***rong", e.message, 1, true)
    assert.is_nil(e.message:find("wrongwrongwrong", 1, true))
    assert.are.equal(401, (get("start_time=1", { key = false })))
  end)

  local bad = {
    { "", "start_time" },
    { "start_time=abc", "start_time" },
    { "start_time=100&end_time=100", "end_time" },
    { "start_time=100&bucket_width=2d", "bucket_width" },
    { "start_time=100&limit=32", "limit" },
    { "start_time=100&bucket_width=1h&limit=169", "limit" },
    { "start_time=100&bucket_width=1m&limit=1441", "limit" },
    { "start_time=100&sizes[]=300x300", "sizes" },
    { "start_time=100&group_by[]=colour", "group_by" },
    { "start_time=100&colour=red", "colour" },
    { "start_time=100&page=page_bogus", "page" },
    { "start_time=1.5", "start_time" },
    { "start_time=200&end_time=100", "end_time" },
    { "start_time=" .. (NOW + 10), "end_time" },
    { "start_time=100&limit=0", "limit" },
    { "start_time=100&sources[]=image.upscale", "sources" },
    { "start_time=100&start_time=200", "start_time" },
    { "start_time[]=100", "start_time" },
  }
  for _, case in ipairs(bad) do
    it("answers 400 naming " .. case[2] .. " for " .. (case[1] == "" and "no start_time" or case[1]), function()
      local status, headers, body = get(case[1])
      assert.are.equal(400, status)
      assert.matches("^req_", headers["x-request-id"])
      local e = cjson.decode(body).error
      assert.are.equal(case[2], e.param)
      assert.are.equal("invalid_request_error", e.type)
    end)
  end

  it("aligns buckets to UTC, clips the first to start_time and the last to end_time", function()
    local p = page(("start_time=%d&end_time=%d&bucket_width=1h&limit=168"):format(NOW - 7200 + 600, NOW - 1800))
    assert.are.equal(2, #p.data)
    assert.are.same({ NOW - 7200 + 600, NOW - 3600 }, { p.data[1].start_time, p.data[1].end_time })
    assert.are.same({ NOW - 3600, NOW - 1800 }, { p.data[2].start_time, p.data[2].end_time })
    local d = page(("start_time=%d&end_time=%d&limit=31"):format(NOW - 3 * DAY + 5, NOW))
    assert.are.equal(3, #d.data)
    assert.are.equal(NOW - 2 * DAY, d.data[1].end_time)
    local m = page(("start_time=%d&end_time=%d&bucket_width=1m&limit=1440"):format(NOW - 3600, NOW))
    assert.are.equal(60, #m.data)
    for i, b in ipairs(m.data) do
      assert.are.equal(NOW - 3600 + (i - 1) * 60, b.start_time)
    end
  end)

  it("uses each width's default limit and pages with an opaque cursor", function()
    assert.are.equal(7, #page(("start_time=%d&end_time=%d"):format(NOW - 30 * DAY, NOW)).data)
    assert.are.equal(24, #page(("start_time=%d&end_time=%d&bucket_width=1h"):format(NOW - 3 * DAY, NOW)).data)
    local m = page(("start_time=%d&end_time=%d&bucket_width=1m"):format(NOW - DAY, NOW))
    assert.are.equal(60, #m.data)
    assert.is_true(m.has_more)
    assert.matches("^page_", m.next_page)
  end)

  it("pages through a range: the pages sum to one big query and end with next_page null", function()
    local base = ("start_time=%d&end_time=%d&bucket_width=1h"):format(NOW - 5 * DAY, NOW)
    local sum, buckets, cursor, pages = 0, 0, nil, 0
    repeat
      local p = page(base .. "&limit=50" .. (cursor and ("&page=" .. cursor) or ""))
      pages = pages + 1
      sum, buckets = sum + total(p), buckets + #p.data
      cursor = p.has_more and p.next_page or nil
      if not p.has_more then
        assert.are.equal(cjson.null, p.next_page)
      end
    until not cursor
    assert.are.equal(3, pages)
    assert.are.equal(120, buckets)
    assert.are.equal(total(page(base .. "&limit=168")), sum)
    assert.is_true(sum > 0)
  end)

  it("refuses a cursor reused with another query", function()
    local p = page(("start_time=%d&end_time=%d&bucket_width=1h"):format(NOW - 3 * DAY, NOW))
    local status, _, body = get(("start_time=%d&end_time=%d&bucket_width=1h&page=%s"):format(NOW - 4 * DAY, NOW,
      p.next_page))
    assert.are.equal(400, status)
    assert.are.equal("page", cjson.decode(body).error.param)
  end)

  it("agrees with itself across widths: minutes sum to hours, hours to days", function()
    local start = NOW - 2 * DAY
    local days = total(page(("start_time=%d&end_time=%d"):format(start, start + DAY)))
    local hours = total(page(("start_time=%d&end_time=%d&bucket_width=1h"):format(start, start + DAY)))
    local minutes = total(page(("start_time=%d&end_time=%d&bucket_width=1m&limit=1440"):format(start + 36000,
      start + 39600)))
    local hour = total(page(("start_time=%d&end_time=%d&bucket_width=1h"):format(start + 36000, start + 39600)))
    assert.are.equal(days, hours)
    assert.are.equal(hour, minutes)
    assert.is_true(days > 0)
  end)

  it("has a daily and a weekly rhythm", function()
    local p = page(("start_time=%d&end_time=%d&limit=14"):format(NOW - 14 * DAY, NOW))
    local weekday, weekend = 0, 0
    for _, b in ipairs(p.data) do
      local dow = (math.floor(b.start_time / DAY) + 3) % 7 -- 0 = Monday
      local images = 0
      for _, r in ipairs(b.results) do
        images = images + r.images
      end
      if dow >= 5 then
        weekend = weekend + images / 4
      else
        weekday = weekday + images / 10
      end
    end
    assert.is_true(weekday > 1.5 * weekend, ("weekday %g, weekend %g"):format(weekday, weekend))
    local h = page(("start_time=%d&end_time=%d&bucket_width=1h"):format(NOW - 4 * DAY, NOW - 3 * DAY))
    assert.is_true(total { data = { h.data[15] } } > total { data = { h.data[3] } })
  end)

  it("has no usage before its 90 days of history", function()
    local p = page(("start_time=%d&end_time=%d&limit=31"):format(NOW - 120 * DAY, NOW - 100 * DAY))
    assert.are.equal(20, #p.data)
    assert.are.equal(0, total(p))
    for _, b in ipairs(p.data) do
      assert.are.same({}, b.results)
    end
  end)

  it("groups by the asked fields, leaving the others null", function()
    local p = page(("start_time=%d&end_time=%d&group_by[]=model&group_by[]=size"):format(NOW - DAY, NOW))
    local rows = p.data[1].results
    assert.is_true(#rows > 1)
    for _, r in ipairs(rows) do
      assert.are.equal("organization.usage.images.result", r.object)
      assert.is_string(r.model)
      assert.is_string(r.size)
      assert.are.equal(cjson.null, r.project_id)
      assert.are.equal(cjson.null, r.source)
      assert.is_true(r.images >= r.num_model_requests)
    end
    local plain = page(("start_time=%d&end_time=%d"):format(NOW - DAY, NOW)).data[1].results
    assert.are.equal(1, #plain)
    assert.are.equal(cjson.null, plain[1].model)
    assert.are.equal(total(p), plain[1].images)
  end)

  it("filters before grouping, and reads both array syntaxes", function()
    local q = ("start_time=%d&end_time=%d"):format(NOW - DAY, NOW)
    local brackets = page(q .. "&models[]=dall-e-3&group_by[]=model")
    local repeated = page(q .. "&models=dall-e-3&group_by=model")
    local encoded = page(q .. "&models%5B%5D=dall-e-3&group_by%5B%5D=model")
    assert.are.same(brackets, repeated)
    assert.are.same(brackets, encoded)
    for _, r in ipairs(brackets.data[1].results) do
      assert.are.equal("dall-e-3", r.model)
      assert.are.equal(r.images, r.num_model_requests)
    end
    local all = total(page(q))
    local parts = 0
    for _, m in ipairs { "dall-e-2", "dall-e-3", "gpt-image-1" } do
      parts = parts + total(page(q .. "&models[]=" .. m))
    end
    assert.are.equal(all, parts)
  end)

  it("gzips only when asked", function()
    local q = ("start_time=%d&end_time=%d&bucket_width=1h&limit=48"):format(NOW - 2 * DAY, NOW)
    local _, plain_headers, plain = get(q)
    local _, gz_headers, unzipped = get(q, { compressed = true })
    assert.is_nil(plain_headers["content-encoding"])
    assert.are.equal("gzip", gz_headers["content-encoding"])
    assert.is_true(tonumber(gz_headers["content-length"]) < #plain / 3)
    assert.are.equal(plain, unzipped)
  end)

  it("answers the same query with the same body", function()
    local q = ("start_time=%d&end_time=%d&group_by[]=project_id"):format(NOW - 5 * DAY, NOW)
    assert.are.equal(select(3, get(q)), select(3, get(q)))
  end)

  it("keeps a connection alive and records each request with it", function()
    local q = ("%s/organization/usage/images?start_time=%d"):format(srv.url, NOW - DAY)
    local p = io.popen(("env -u LD_PRELOAD curl -sS -o /dev/null -o /dev/null -H 'Authorization: Bearer %s' "
      .. "-H 'X-Trace: 1' '%s' '%s&limit=2'"):format(KEY, q, q))
    p:read "*a"
    p:close()
    local records = srv:requests()
    assert.are.equal(2, #records)
    assert.are.equal(records[1].connection, records[2].connection)
    assert.are.equal("GET", records[1].method)
    assert.are.equal("/v1/organization/usage/images", records[2].path)
    assert.are.equal(("start_time=%d&limit=2"):format(NOW - DAY), records[2].query)
    assert.are.equal("1", records[1].headers["x-trace"])
  end)

  it("serves a fixture page verbatim and loops a cursor on request", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write '{"object":"page","data":[],"has_more":false,"next_page":null}'
    f:close()
    srv:settings { fixture_page = path }
    assert.are.equal('{"object":"page","data":[],"has_more":false,"next_page":null}', select(3, get "start_time=1"))
    os.remove(path)
    srv:reset()
    srv:settings { cursor_loop = true }
    local p = page(("start_time=%d&end_time=%d"):format(NOW - DAY, NOW))
    local again = page(("start_time=%d&end_time=%d&page=%s"):format(NOW - DAY, NOW, p.next_page))
    assert.are.equal(p.next_page, again.next_page)
    assert.is_true(again.has_more)
  end)

  it("hands out a fresh cursor on every page with cursor_fresh, and serves late data with late_seconds", function()
    srv:settings { cursor_fresh = true }
    local query = ("start_time=%d&end_time=%d"):format(NOW - DAY, NOW)
    local p = page(query)
    local again = page(query .. "&page=" .. p.next_page)
    assert.is_true(again.has_more)
    assert.are_not.equal(p.next_page, again.next_page)
    srv:reset()
    -- hours of the last day: usage reaches the API 90 minutes late
    local hours = ("start_time=%d&end_time=%d&bucket_width=1h&limit=24"):format(NOW - DAY, NOW)
    local function images(bucket)
      local n = 0
      for _, row in ipairs(bucket.results) do
        n = n + row.images
      end
      return n
    end
    local final = page(hours).data
    srv:settings { late_seconds = 5400 }
    local late = page(hours).data
    assert.are.equal(24, #late)
    for i = 1, 22 do
      assert.are.equal(images(final[i]), images(late[i]), "an hour that ended over 90 minutes ago is whole")
    end
    assert.are.equal(0, images(late[24])) -- nothing of the last hour yet
    assert.is_true(images(late[23]) < images(final[23])) -- half of the one before
    assert.is_true(images(late[23]) > 0)
    -- late_until: the same cutoff as a fixed time
    srv:reset()
    srv:settings { late_until = NOW - 5400 }
    local cut = page(hours).data
    for i = 1, 24 do
      assert.are.equal(images(late[i]), images(cut[i]))
    end
  end)

  it("rename: serves a value as another on every endpoint (usage and costs alike); strings only", function()
    local hostile = 'proj_"a"\\b\nc'
    local query = ("start_time=%d&end_time=%d&bucket_width=1d&group_by[]=project_id"):format(NOW - 2 * DAY, NOW)
    local plain = page(query)
    srv:settings { rename = { proj_atlas = hostile } }
    local renamed = page(query)
    local seen = 0
    for i, b in ipairs(plain.data) do
      for j, r in ipairs(b.results) do
        local want = r.project_id == "proj_atlas" and hostile or r.project_id
        seen = seen + (want == hostile and 1 or 0)
        assert.are.equal(want, renamed.data[i].results[j].project_id)
        assert.are.equal(r.images, renamed.data[i].results[j].images)
      end
    end
    assert.are.equal(2, seen)
    local client = assert(usage.new(srv:client_options()))
    local costs = {}
    for row in client:results("costs", { start_time = NOW - DAY, end_time = NOW, group_by = "project_id" }) do
      costs[row.project_id] = true
    end
    client:close()
    assert.is_true(costs[hostile])
    assert.is_nil(costs.proj_atlas)
    assert.has_error(function()
      srv:settings { rename = { proj_atlas = 1 } }
    end)
  end)

  it("injects statuses with headers, and a queue of faults with counts", function()
    srv:faults {
      { status = 503, retry_after = "7", times = 2 },
      { status = 200, body = "raw", content_type = "text/plain" },
    }
    local s1, h1 = get "start_time=1"
    local s2 = get "start_time=1"
    local s3, h3, b3 = get "start_time=1"
    assert.are.same({ 503, 503, 200 }, { s1, s2, s3 })
    assert.are.equal("7", h1["retry-after"])
    assert.are.equal("text/plain", h3["content-type"])
    assert.are.equal("raw", b3)
    assert.are.equal(400, (get "start_time=x"))
  end)
  describe("errors", function()
    it("answers 401 invalid_api_key without a key, as JSON with a 32-hex request id", function()
      local status, headers, body = run("", "start_time=1")
      assert.are.equal(401, status)
      assert.are.equal("application/json", headers["content-type"])
      assert.matches("^req_" .. ("%x"):rep(32) .. "$", headers["x-request-id"])
      local e = cjson.decode(body).error
      assert.are.equal("invalid_api_key", e.code)
      assert.are.equal(cjson.null, e.param)
    end)

    it("never echoes a short wrong key", function()
      local status, _, body = run("-H 'Authorization: Bearer sk-short'", "start_time=1")
      assert.are.equal(401, status)
      assert.is_nil(body:find("sk-short", 1, true))
      assert.matches("Incorrect API key provided", body, 1, true)
    end)

    it("answers 404 with the envelope for unknown paths and methods, and records them", function()
      local s1, h1, b1 = run(AUTH, nil, srv.url .. "/organization/usage/nothing")
      local s2 = run(AUTH .. " -X POST", "start_time=1")
      assert.are.same({ 404, 404 }, { s1, s2 })
      assert.matches("^req_", h1["x-request-id"])
      assert.matches("Invalid URL (GET /v1/organization/usage/nothing)", cjson.decode(b1).error.message, 1, true)
      local records = srv:requests()
      assert.are.equal(2, #records)
      assert.are.equal("/v1/organization/usage/nothing", records[1].path)
      assert.are.equal("POST", records[2].method)
    end)
  end)

  describe("buckets", function()
    it("clips the last minute bucket at an end_time inside a minute", function()
      local p = page(("start_time=%d&end_time=%d&bucket_width=1m"):format(NOW - 300, NOW - 30))
      assert.are.equal(5, #p.data)
      assert.are.same({ NOW - 60, NOW - 30 }, { p.data[5].start_time, p.data[5].end_time })
      assert.is_false(p.has_more)
    end)

    it("accepts each width's maximum limit", function()
      for _, case in ipairs { { "1d", 31, 40 * DAY }, { "1h", 168, 10 * DAY }, { "1m", 1440, 2 * DAY } } do
        local p =
          page(("start_time=%d&end_time=%d&bucket_width=%s&limit=%d"):format(NOW - case[3], NOW, case[1], case[2]))
        assert.are.equal(case[2], #p.data)
        assert.is_true(p.has_more)
      end
    end)

    it("lists every bucket up to end_time, empty after now", function()
      local p = page(("start_time=%d&end_time=%d&bucket_width=1h"):format(NOW - 7200, NOW + 7200))
      assert.are.equal(4, #p.data)
      assert.is_true(#p.data[1].results > 0 and #p.data[2].results > 0)
      assert.are.same({}, p.data[3].results)
      assert.are.same({}, p.data[4].results)
      for i = 2, 4 do
        assert.are.equal(p.data[i - 1].end_time, p.data[i].start_time)
      end
    end)
  end)

  describe("grouping and filters", function()
    local day = ("start_time=%d&end_time=%d"):format(NOW - DAY, NOW)
    local fields = { "project_id", "user_id", "api_key_id", "model", "size", "source" }

    it("groups by all six fields: strings everywhere, rows in group-key order, no empty groups", function()
      local q = day
      for _, f in ipairs(fields) do
        q = q .. "&group_by[]=" .. f
      end
      local rows = page(q).data[1].results
      assert.is_true(#rows > 5)
      local previous
      for _, r in ipairs(rows) do
        local key = {}
        for _, f in ipairs(fields) do
          assert.is_string(r[f])
          key[#key + 1] = r[f]
        end
        key = table.concat(key, "\0")
        assert.is_true(r.images > 0 and r.num_model_requests > 0 and r.images >= r.num_model_requests)
        if previous then
          assert.is_true(previous < key, "rows out of order")
        end
        previous = key
      end
    end)

    it("each filter keeps only its values, and the filtered parts sum to the whole", function()
      local whole = total(page(day))
      for param, field in pairs { project_ids = "project_id", user_ids = "user_id", api_key_ids = "api_key_id",
        sizes = "size", sources = "source" } do
        local values = {}
        for _, r in ipairs(page(day .. "&group_by=" .. field).data[1].results) do
          values[#values + 1] = r[field]
        end
        assert.is_true(#values > 1, field)
        local parts = 0
        for _, v in ipairs(values) do
          local p = page(day .. "&group_by=" .. field .. "&" .. param .. "[]=" .. v)
          for _, r in ipairs(p.data[1].results) do
            assert.are.equal(v, r[field])
          end
          parts = parts + total(p)
        end
        assert.are.equal(whole, parts, param)
      end
    end)

    it("serves gpt-image-1's own sizes, which the description lacks, filters by them and prices them", function()
      local p = page(day .. "&models[]=gpt-image-1&group_by[]=size")
      local real = { ["1024x1024"] = true, ["1024x1536"] = true, ["1536x1024"] = true, auto = true }
      local described = {}
      for _, e in ipairs(cjson.decode(util.read "standin/endpoints.json").endpoints) do
        for _, param in ipairs(e.name == "images" and e.params or {}) do
          for _, v in ipairs(param.name == "sizes" and param.values or {}) do
            described[v] = true
          end
        end
      end
      assert.is_true(described["1024x1024"])
      local sizes = {}
      for _, r in ipairs(p.data[1].results) do
        assert.is_true(real[r.size], r.size)
        sizes[#sizes + 1] = r.size
      end
      assert.is_true(#sizes >= 3, table.concat(sizes, " "))
      local prices = srv:call("prices").images.per_image["gpt-image-1"]
      for _, size in ipairs(sizes) do
        assert.is_number(prices[size], size)
        local only = page(day .. "&models[]=gpt-image-1&group_by[]=size&sizes[]=" .. size)
        assert.are.equal(1, #only.data[1].results)
        assert.are.equal(size, only.data[1].results[1].size)
      end
      assert.is_nil(described["1536x1024"])
      local status = get(day .. "&sizes[]=300x300")
      assert.are.equal(400, status)
    end)

    it("combines filters, and an unknown id matches nothing", function()
      local p = page(day .. "&models[]=dall-e-3&sizes[]=1024x1024&group_by[]=model&group_by[]=size")
      assert.is_true(#p.data[1].results > 0)
      for _, r in ipairs(p.data[1].results) do
        assert.are.same({ "dall-e-3", "1024x1024" }, { r.model, r.size })
      end
      assert.are.same({}, page(day .. "&project_ids[]=proj_nobody").data[1].results)
    end)
  end)

  describe("paging", function()
    it("a cursor keeps the filters and grouping: a grouped 1m walk sums to one big query", function()
      local base = ("start_time=%d&end_time=%d&bucket_width=1m&group_by[]=model&sources[]=image.generation")
        :format(NOW - 3 * 3600 - 1800, NOW)
      local sum, cursor, pages, last_end = 0, nil, 0, NOW - 3 * 3600 - 1800
      repeat
        local p = page(base .. (cursor and ("&page=" .. cursor) or ""))
        pages = pages + 1
        assert.are.equal(last_end, p.data[1].start_time)
        last_end = p.data[#p.data].end_time
        sum = sum + total(p)
        cursor = p.has_more and p.next_page or nil
      until not cursor
      assert.are.equal(4, pages)
      assert.are.equal(NOW, last_end)
      assert.are.equal(total(page(base .. "&limit=1440")), sum)
    end)
  end)

  describe("HTTP", function()
    it("does not gzip when Accept-Encoding refuses it or when settings say never", function()
      local q = ("start_time=%d&end_time=%d"):format(NOW - DAY, NOW)
      local _, refused = run(AUTH .. " -H 'Accept-Encoding: gzip;q=0, identity'", q)
      assert.is_nil(refused["content-encoding"])
      srv:settings { gzip = false }
      local status, never, body = run(AUTH .. " --compressed", q)
      assert.are.equal(200, status)
      assert.is_nil(never["content-encoding"])
      assert.are.equal("page", cjson.decode(body).object)
    end)

    it("gzips error envelopes too when asked", function()
      local status, headers, body = run("--compressed", "start_time=1")
      assert.are.equal(401, status)
      assert.are.equal("gzip", headers["content-encoding"])
      assert.are.equal("invalid_api_key", cjson.decode(body).error.code)
    end)

    it("answers a day of grouped 1m buckets (1440) well under a second", function()
      local q = ("start_time=%d&end_time=%d&bucket_width=1m&limit=1440"
        .. "&group_by[]=model&group_by[]=size&group_by[]=source&group_by[]=project_id"):format(NOW - DAY, NOW)
      run(AUTH, q) -- warm the caches
      local status, _, body, _, plain = run(AUTH, q)
      local _, _, _, _, gzipped = run(AUTH .. " --compressed", q)
      assert.are.equal(200, status)
      assert.are.equal(1440, #cjson.decode(body).data)
      assert.is_true(plain < 0.5, plain)
      assert.is_true(gzipped < 0.5, gzipped)
    end)
  end)

  describe("records", function()
    it("keep the raw query as sent, lower-cased headers and a time; the control plane is not recorded", function()
      local before = os.time()
      run(AUTH .. " -H 'X-Custom-Thing: A'", "start_time=1&group_by%5B%5D=model&x=%2F")
      srv:status()
      srv:requests()
      local records = srv:requests()
      assert.are.equal(1, #records)
      local r = records[1]
      assert.are.equal("start_time=1&group_by%5B%5D=model&x=%2F", r.query)
      assert.are.equal("A", r.headers["x-custom-thing"])
      assert.are.equal("Bearer " .. KEY, r.headers.authorization)
      assert.are.equal(math.floor(r.connection), r.connection)
      assert.is_true(r.time >= before - 1 and r.time <= os.time() + 1)
    end)

    it("reset clears records, faults and settings", function()
      srv:faults { { status = 500, times = 5 } }
      srv:settings { latency_ms = 2000 }
      srv:reset()
      assert.are.same({}, srv:requests())
      local status, _, _, _, seconds = run(AUTH, ("start_time=%d&end_time=%d"):format(NOW - DAY, NOW))
      assert.are.equal(200, status)
      assert.is_true(seconds < 1)
      assert.are.equal(0, srv:status().faults_pending)
    end)
  end)

  describe("faults", function()
    local q = ("start_time=%d&end_time=%d"):format(NOW - DAY, NOW)

    it("reset: the connection is reset with no answer, and the server carries on", function()
      srv:faults { { reset = true } }
      local status, _, body, code = run(AUTH, q)
      assert.is_nil(status)
      assert.are.equal(56, code) -- CURLE_RECV_ERROR: connection reset by peer
      assert.are.equal("", body)
      assert.are.equal(200, (run(AUTH, q)))
    end)

    it("truncate: the full Content-Length, then N bytes and a close", function()
      local _, _, full = run(AUTH, q)
      srv:faults { { truncate = 10 } }
      local status, headers, body, code = run(AUTH, q)
      assert.are.equal(200, status)
      assert.are.equal(#full, tonumber(headers["content-length"]))
      assert.are.equal(18, code) -- CURLE_PARTIAL_FILE
      assert.are.equal(full:sub(1, 10), body)
    end)

    it("reset_after: N bytes of the body, then a reset", function()
      srv:faults { { reset_after = 20 } }
      local status, _, body, code = run(AUTH, q)
      assert.are.equal(200, status)
      assert.are.equal(56, code)
      assert.is_true(#body <= 20)
    end)

    it("latency_ms delays one answer; the next is prompt", function()
      srv:faults { { latency_ms = 300 } }
      local _, _, _, _, slow = run(AUTH, q)
      local _, _, _, _, quick = run(AUTH, q)
      assert.is_true(slow >= 0.3, slow)
      assert.is_true(quick < 0.3, quick)
    end)

    it("drip_bytes_per_sec sends the real body slowly", function()
      local _, _, full = run(AUTH, q)
      srv:faults { { drip_bytes_per_sec = #full * 4 } } -- about a quarter of a second
      local status, _, body, code, seconds = run(AUTH, q)
      assert.are.same({ 200, 0 }, { status, code })
      assert.are.equal(full, body)
      assert.is_true(seconds >= 0.2, seconds)
    end)

    it("a drip stops soon after its client gives up", function()
      srv:faults { { drip_bytes_per_sec = 100 } }
      local _, _, _, code = run(AUTH .. " --max-time 0.5",
        ("start_time=%d&end_time=%d&bucket_width=1m&limit=1440"):format(NOW - DAY, NOW))
      assert.are.equal(28, code) -- CURLE_OPERATION_TIMEDOUT
      local drips
      for _ = 1, 30 do
        drips = srv:status().active_drips
        if drips == 0 then
          break
        end
        os.execute "sleep 0.1"
      end
      assert.are.equal(0, drips)
    end)

    it("gzip_bomb: a tiny gzip body that inflates to N bytes of JSON", function()
      local n = 10 * 1024 * 1024
      local file = os.tmpname()
      srv:faults { { gzip_bomb = n } }
      local status, headers, _, code = run(AUTH .. " -o " .. file, q)
      assert.are.same({ 200, 0 }, { status, code })
      assert.are.equal("gzip", headers["content-encoding"])
      assert.is_true(tonumber(headers["content-length"]) < n / 500)
      local p = assert(io.popen("gzip -dc " .. file .. " | wc -c"))
      local inflated = tonumber(p:read "*a")
      p:close()
      os.remove(file)
      assert.are.equal(n + #'{"object":"page","data":[],"padding":"' + 2, inflated)
    end)

    it("close_after: answers, then closes, so the next request opens a new connection", function()
      srv:faults { { close_after = true } }
      local url = srv.url .. "/organization/usage/images?" .. q
      local p = assert(io.popen(("env -u LD_PRELOAD curl -s -D - -o /dev/null -o /dev/null %s '%s' '%s'")
        :format(AUTH, url, url)))
      local headers = p:read "*a"
      p:close()
      assert.matches("[Cc]onnection: close", headers)
      local records = srv:requests()
      assert.are.equal(2, #records)
      assert.are_not.equal(records[1].connection, records[2].connection)
    end)

    it("statuses carry the API's wording by default and every override", function()
      srv:faults {
        { status = 429, retry_after_ms = "250", headers = { ["x-ratelimit-remaining-requests"] = "0" } },
        { status = 500 },
        { status = 418, error_message = "teapot", error_type = "odd_error", error_code = "tea", error_param = "cup" },
      }
      local s1, h1, b1 = run(AUTH, q)
      local s2, _, b2 = run(AUTH, q)
      local s3, _, b3 = run(AUTH, q)
      assert.are.same({ 429, 500, 418 }, { s1, s2, s3 })
      assert.are.equal("250", h1["retry-after-ms"])
      assert.are.equal("0", h1["x-ratelimit-remaining-requests"])
      local e1, e2, e3 = cjson.decode(b1).error, cjson.decode(b2).error, cjson.decode(b3).error
      assert.are.same({ "requests", "rate_limit_exceeded" }, { e1.type, e1.code })
      assert.are.equal("server_error", e2.type)
      assert.are.same({ "teapot", "odd_error", "tea", "cup" }, { e3.message, e3.type, e3.code, e3.param })
    end)

    it("body_hex sends raw bytes as they are", function()
      srv:faults { { status = 200, body_hex = "7b2261223a22ff227d" } }
      local _, _, body = run(AUTH, q)
      assert.are.equal('{"a":"\255"}', body)
    end)

    it("refuses a fault with an unknown field", function()
      local ok, err = pcall(srv.faults, srv, { { stauts = 500 } })
      assert.is_false(ok)
      assert.matches("unknown field 'stauts'", err, 1, true)
      assert.are.equal(200, (run(AUTH, q)))
    end)
  end)

  describe("settings", function()
    it("latency_ms slows every API answer but not the control plane", function()
      srv:settings { latency_ms = 300 }
      local _, _, _, _, api = run(AUTH, "start_time=1")
      local _, _, _, _, control = run("", nil, srv.url:gsub("/v1$", "/__standin/status"))
      assert.is_true(api >= 0.3, api)
      assert.is_true(control < 0.3, control)
    end)

    it("fixture_pages chains copies of a fixture with fixture_N cursors, behind auth", function()
      local path = os.tmpname()
      local f = assert(io.open(path, "w"))
      f:write '{"object":"page","data":[],"has_more":true,"next_page":"page_x"}'
      f:close()
      srv:settings { fixture_page = path, fixture_pages = 3 }
      local first = page "start_time=1"
      local second = page "start_time=1&page=fixture_1"
      local last = page "start_time=1&page=fixture_2"
      assert.are.same({ true, "fixture_1" }, { first.has_more, first.next_page })
      assert.are.same({ true, "fixture_2" }, { second.has_more, second.next_page })
      assert.are.same({ false, cjson.null }, { last.has_more, last.next_page })
      assert.are.equal(400, (get "start_time=1&page=fixture_9"))
      assert.are.equal(401, (get("start_time=1", { key = "sk-admin-not-this-one" })))
      os.remove(path)
    end)
  end)

  -- The other endpoints and costs: one organization, read with the real client.
  describe("one organization across every endpoint", function()
    local WEEK = { start_time = NOW - 7 * DAY, end_time = NOW }
    local c

    before_each(function()
      c = assert(usage.new(srv:client_options { retry_backoff = 0.01, retry_backoff_max = 0.04 }))
    end)

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

    local function rows(endpoint, params)
      local out = {}
      for row in c:results(endpoint, params) do
        out[#out + 1] = row
      end
      return out
    end

    local near = util.near

    local function is_float(v)
      return type(v) == "number" and (math.type == nil or math.type(v) == "float")
    end

    local function group_fields(endpoint)
      for _, p in ipairs(usage.rules(endpoint).params) do
        if p.name == "group_by" then
          return p.values
        end
      end
    end

    -- Sum of every count of the rows (all numbers but the bucket times).
    local function counted(list)
      local sum = 0
      for _, r in ipairs(list) do
        for k, v in pairs(r) do
          if type(v) == "number" and k ~= "start_time" and k ~= "end_time" then
            sum = sum + v
          end
        end
      end
      return sum
    end

    it("every endpoint has the images projects, and only the images users and keys", function()
      local ids = {}
      for _, field in ipairs { "project_id", "user_id", "api_key_id" } do
        ids[field] = {}
        for _, r in ipairs(rows("images", with(WEEK, { group_by = field }))) do
          ids[field][r[field]] = true
        end
      end
      local endpoints = 0
      for _, endpoint in ipairs(usage.rules()) do
        local fields = {}
        for _, f in ipairs(group_fields(endpoint)) do
          fields[f] = true
        end
        assert.is_true(fields.project_id, endpoint)
        for _, field in ipairs { "project_id", "user_id", "api_key_id" } do
          if fields[field] then
            local seen = {}
            for _, r in ipairs(rows(endpoint, with(WEEK, { group_by = field }))) do
              if r[field] ~= nil then
                assert.is_true(ids[field][r[field]], ("%s: %s %s is not in images"):format(endpoint, field, r[field]))
                seen[r[field]] = true
              end
            end
            if field == "project_id" then
              assert.are.same(ids.project_id, seen, endpoint)
            else
              assert.is_not_nil(next(seen), endpoint .. " " .. field)
            end
          end
        end
        endpoints = endpoints + 1
      end
      assert.are.equal(#usage.rules(), endpoints)
      assert.is_true(endpoints > 10)
    end)

    it("costs join images usage by project: the image line item is the images priced by the stand-in's "
      .. "table", function()
      local prices = srv:call "prices"
      local item = prices.images.line_item
      local amounts, images = {}, {}
      for _, r in ipairs(rows("images", with(WEEK, { group_by = { "project_id", "model", "size" } }))) do
        local price = prices.images.per_image[r.model][r.size]
        assert.is_number(price, r.model .. " " .. r.size .. " has no price")
        local k = r.start_time .. " " .. r.project_id
        amounts[k] = (amounts[k] or 0) + r.images * price
        images[k] = (images[k] or 0) + r.images
      end
      local joined = 0
      for r in c:results("costs", with(WEEK, { group_by = { "project_id", "line_item" } })) do
        if r.line_item == item then
          local k = r.start_time .. " " .. r.project_id
          assert.is_not_nil(amounts[k], "an image cost without image usage: " .. k)
          near(amounts[k], r.amount.value, k)
          assert.are.equal(images[k], r.quantity)
          assert.are.equal(prices.images.unit, r.quantity_unit)
          amounts[k] = nil
          joined = joined + 1
        end
      end
      assert.is_nil(next(amounts), "image usage without a cost")
      assert.is_true(joined >= 7 * 2)
    end)

    it("costs of completions follow from its tokens: input, cached input and output per model, batch at its "
      .. "factor", function()
      local p = srv:call("prices").completions
      local expected = {} -- [day .. line item] = { quantity, amount }
      for _, r in ipairs(rows("completions", with(WEEK, { group_by = { "model", "batch" } }))) do
        local names = r.batch and p.batch_line_items or p.line_items
        local factor = r.batch and p.batch_factor or 1
        local tokens = { r.input_uncached_tokens + r.input_cache_write_tokens, r.input_cached_tokens, r.output_tokens }
        for i, kind in ipairs { "input", "cached input", "output" } do
          if tokens[i] > 0 then
            local name = names[i]:gsub("{model}", r.model)
            local k = r.start_time .. " " .. name
            local e = expected[k] or { 0, 0 }
            e[1], e[2] = e[1] + tokens[i], e[2] + tokens[i] * p.per_million_tokens[r.model][kind] * factor / 1e6
            expected[k] = e
          end
        end
      end
      local matched = 0
      for r in c:results("costs", with(WEEK, { group_by = "line_item" })) do
        local model = r.line_item:match "^(.-), "
        if model and p.per_million_tokens[model] then
          local k = r.start_time .. " " .. r.line_item
          local e = expected[k]
          assert.is_not_nil(e, "a completions cost without usage: " .. k)
          assert.are.equal(e[1], r.quantity)
          assert.are.equal(p.unit, r.quantity_unit)
          near(e[2], r.amount.value, k)
          expected[k] = nil
          matched = matched + 1
        end
      end
      assert.is_nil(next(expected), "completions usage without a cost")
      assert.is_true(matched > 7 * 4)
    end)

    it("costs: float amounts in usd; line items carry a quantity and a unit the description knows", function()
      local description = lyaml.load(assert(io.open "tools/openai-usage-openapi.yaml"):read "*a")
      local units = {}
      for _, alt in ipairs(description.components.schemas.CostsResult.properties.quantity_unit.anyOf) do
        for _, u in ipairs(alt.enum or {}) do
          units[u] = true
        end
      end
      local per_day, items = {}, {}
      for r in c:results("costs", with(WEEK, { group_by = "line_item" })) do
        assert.is_true(is_float(r.amount.value), r.line_item)
        assert.are.equal("usd", r.amount.currency)
        assert.is_true(is_float(r.quantity), r.line_item)
        assert.is_true(r.quantity_unit == nil or units[r.quantity_unit], tostring(r.quantity_unit))
        per_day[r.start_time] = (per_day[r.start_time] or 0) + r.amount.value
        items[r.line_item] = true
      end
      local days = 0
      for r in c:results("costs", WEEK) do
        days = days + 1
        assert.is_true(is_float(r.amount.value))
        assert.are.equal("usd", r.amount.currency)
        assert.is_nil(r.line_item or r.project_id or r.api_key_id or r.quantity or r.quantity_unit)
        near(per_day[r.start_time], r.amount.value, "day " .. r.start_time)
      end
      assert.are.equal(7, days)
      local n = 0
      for _ in pairs(items) do
        n = n + 1
      end
      assert.is_true(n > 10)
    end)

    it("vector_stores reports a level: every hour of a day shows the day's bytes, and storage costs bytes x "
      .. "hours", function()
      local day = { start_time = NOW - 2 * DAY, end_time = NOW - DAY }
      local bytes, projects = {}, 0
      for _, r in ipairs(rows("vector_stores", with(day, { group_by = "project_id" }))) do
        bytes[r.project_id] = r.usage_bytes
        projects = projects + 1
      end
      local hours = 0
      for r in c:results("vector_stores", with(day, { bucket_width = "1h", group_by = "project_id" })) do
        assert.are.equal(bytes[r.project_id], r.usage_bytes)
        hours = hours + 1
      end
      assert.are.equal(24 * projects, hours)
      local p = srv:call("prices").vector_stores
      local costed = 0
      for r in c:results("costs", with(day, { group_by = { "project_id", "line_item" } })) do
        if r.line_item == p.line_item then
          near(bytes[r.project_id] / 2 ^ 30 * 24, r.quantity, r.project_id)
          near(r.quantity * p.per_gibibyte_day / 24, r.amount.value, r.project_id)
          costed = costed + 1
        end
      end
      assert.are.equal(projects, costed)
      assert.is_true(projects > 1)
    end)

    it("completions tokens add up as the description defines them", function()
      local list = rows("completions", with(WEEK, { group_by = { "model", "batch", "service_tier" } }))
      assert.is_true(#list > 7)
      for _, r in ipairs(list) do
        assert.are.equal(r.input_tokens, r.input_cached_tokens + r.input_cache_write_tokens + r.input_uncached_tokens)
        assert.are.equal(r.input_uncached_tokens, r.input_text_tokens + r.input_audio_tokens + r.input_image_tokens)
        assert.are.equal(r.input_cached_tokens,
          r.input_cached_text_tokens + r.input_cached_audio_tokens + r.input_cached_image_tokens)
        assert.are.equal(r.output_tokens, r.output_text_tokens + r.output_audio_tokens + r.output_image_tokens)
        assert.is_boolean(r.batch)
        assert.is_string(r.service_tier)
      end
    end)

    it("every usage endpoint but vector_stores agrees with itself across widths", function()
      local start = NOW - 2 * DAY
      local checked = 0
      for _, endpoint in ipairs(usage.rules()) do
        if endpoint ~= "costs" and endpoint ~= "vector_stores" then
          local days = counted(rows(endpoint, { start_time = start, end_time = start + DAY }))
          local hours = counted(rows(endpoint, { start_time = start, end_time = start + DAY, bucket_width = "1h" }))
          local hour = counted(rows(endpoint, { start_time = start + 36000, end_time = start + 39600,
            bucket_width = "1h" }))
          local minutes = counted(rows(endpoint, { start_time = start + 36000, end_time = start + 39600,
            bucket_width = "1m" }))
          assert.are.equal(days, hours, endpoint)
          assert.are.equal(hour, minutes, endpoint)
          assert.is_true(hour > 0, endpoint)
          checked = checked + 1
        end
      end
      assert.are.equal(#usage.rules() - 2, checked)
    end)

    it("faults and settings apply to every endpoint", function()
      srv:faults { { status = 503 } }
      assert.is_table(assert(c:costs(WEEK)).data)
      local records = srv:requests()
      assert.are.same({ "/v1/organization/costs", "/v1/organization/costs" }, { records[1].path, records[2].path })
      srv:faults { { status = 429, times = 5 } }
      local _, err = c:completions(WEEK)
      assert.are.same({ "http", 429, "rate_limit_exceeded" }, { err.kind, err.status, err.code })
      srv:reset()
      local path = os.tmpname()
      local f = assert(io.open(path, "w"))
      f:write '{"object":"page","data":[],"has_more":false,"next_page":null}'
      f:close()
      srv:settings { fixture_page = path }
      assert.are.same({}, assert(c:embeddings { start_time = 1 }).data)
      os.remove(path)
      srv:reset()
      srv:settings { cursor_loop = true }
      local ok, walk_err = pcall(function()
        for _ in c:pages("vector_stores", { start_time = NOW - 3 * DAY, end_time = NOW, limit = 1 }) do
        end
      end)
      assert.is_false(ok)
      assert.matches("repeated the cursor", tostring(walk_err), 1, true)
    end)

    it("answers the same query with the same body on every endpoint, and 404 on a path it does not know", function()
      local urls = {}
      for _, endpoint in ipairs(usage.rules()) do
        local url = srv.url .. usage.rules(endpoint).path .. "?" .. usage.encode_query(endpoint, with(WEEK, {
          group_by = group_fields(endpoint) }))
        urls[#urls + 1] = "'" .. url .. "' '" .. url .. "'"
      end
      -- each URL twice, in one curl; each body ends with a line of its own
      local p = assert(io.popen(("env -u LD_PRELOAD curl -gsS --max-time 20 %s -w '\n' %s")
        :format(AUTH, table.concat(urls, " "))))
      local bodies = {}
      for line in p:read("*a"):gmatch "[^\n]+" do
        bodies[#bodies + 1] = line
      end
      p:close()
      assert.are.equal(2 * #urls, #bodies)
      for i = 1, #bodies, 2 do
        assert.are.equal(bodies[i], bodies[i + 1])
        assert.are.equal("page", cjson.decode(bodies[i]).object)
      end
      local status, _, body = run(AUTH, nil, srv.url .. "/organization/usage/file_searches?start_time=1")
      assert.are.equal(404, status)
      assert.matches("Invalid URL", cjson.decode(body).error.message, 1, true)
    end)
  end)

  describe("process", function()
    it("prints where it listens", function()
      local f = assert(io.open(srv.log))
      local log = f:read "*a"
      f:close()
      assert.truthy(log:find("openai-usage stand-in listening on " .. srv.url .. "\n", 1, true), log)
    end)

    it("is a pure function of time: a second server with the same now answers the same", function()
      local other = standin.start { key = KEY, now = NOW }
      local q = ("start_time=%d&end_time=%d&bucket_width=1h&limit=48&group_by[]=api_key_id&group_by[]=size")
        :format(NOW - 3 * DAY, NOW - DAY)
      local _, _, mine = run(AUTH, q)
      local _, _, theirs = run(AUTH, nil, other.url .. "/organization/usage/images?" .. q)
      other:stop()
      other:stop() -- twice is safe
      assert.are.equal(mine, theirs)
      assert.is_true(#cjson.decode(mine).data[1].results > 0)
    end)

    it("exits soon after the process it watches is gone", function()
      local port_file = os.tmpname()
      os.remove(port_file)
      local p = assert(io.popen("sleep 0.3 >/dev/null 2>&1 & echo $!"))
      local watched = p:read "*l"
      p:close()
      p = assert(io.popen(("env -u LD_PRELOAD %s standin/server.py --port 0 --port-file %s --watch-pid %s --quiet "
        .. ">/dev/null 2>&1 & echo $!"):format(os.getenv "PYTHON" or "python3", port_file, watched)))
      local pid = p:read "*l"
      p:close()
      local gone = false
      for _ = 1, 60 do
        if not standin.running(pid) then
          gone = true
          break
        end
        os.execute "sleep 0.1"
      end
      local f = io.open(port_file)
      assert.is_not_nil(f, "it never wrote its port file")
      f:close()
      os.remove(port_file)
      if not gone then
        os.execute("kill " .. pid)
      end
      assert.is_true(gone)
    end)
  end)
end)
