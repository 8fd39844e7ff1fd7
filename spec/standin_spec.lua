-- The stand-in server behaves like the API where a client relies on it:
-- checked with the curl command-line tool, independently of our client.
local cjson = require "cjson"
local standin = require "spec.support.standin"

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
      local dow = (b.start_time // DAY + 3) % 7 -- 0 = Monday
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

  it("injects statuses with headers, and a queue of faults with counts", function()
    srv:faults { { status = 503, retry_after = "7", times = 2 }, { status = 200, body = "raw", content_type = "text/plain" } }
    local s1, h1 = get "start_time=1"
    local s2 = get "start_time=1"
    local s3, h3, b3 = get "start_time=1"
    assert.are.same({ 503, 503, 200 }, { s1, s2, s3 })
    assert.are.equal("7", h1["retry-after"])
    assert.are.equal("text/plain", h3["content-type"])
    assert.are.equal("raw", b3)
    assert.are.equal(400, (get "start_time=x"))
  end)
end)
