-- Hostile and broken answers from the server: each gives the documented
-- error, in bounded time, and never a partial result presented as complete.
local usage = require "openai_usage"
local standin = require "spec.support.standin"
local util = require "spec.support.util"

local KEY = "sk-admin-faults-5b1f0c"
local NOW = 1732406400
local START = NOW - 3 * 86400

-- Raw bytes travel to the stand-in as hex (JSON cannot carry invalid UTF-8).
local function hex(s)
  return (s:gsub(".", function(c)
    return ("%02x"):format(c:byte())
  end))
end

describe("faults", function()
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

  local function client(options)
    return assert(usage.new(srv:client_options({ retry_backoff = 0.01, retry_backoff_max = 0.02 }, options)))
  end

  local function fails(fault, kind, pattern, options)
    srv:faults { fault }
    local page, err =
      client(options or { max_retries = 0 }):images { start_time = START, bucket_width = "1h", limit = 72 }
    assert.is_nil(page)
    assert.are.equal(kind, err.kind, tostring(err))
    if pattern then
      assert.matches(pattern, err.message, 1, true)
    end
    return err
  end

  it("a connection reset mid-body: network error, no page", function()
    fails({ reset_after = 500 }, "network")
  end)

  it("a body cut short of its Content-Length: network error, no page", function()
    fails({ truncate = 2000 }, "network")
  end)

  it("the server closing a keep-alive connection between pages: the walk goes on over a new one", function()
    srv:faults { { close_after = true }, { close_after = true } }
    local pages = 0
    for _ in client():pages("images", { start_time = START, end_time = NOW, bucket_width = "1h", limit = 24 }) do
      pages = pages + 1
    end
    assert.are.equal(3, pages)
    local records = srv:requests()
    assert.are_not.equal(records[1].connection, records[2].connection)
    assert.are_not.equal(records[2].connection, records[3].connection)
  end)

  it("a slow drip below the low-speed limit: timeout, in bounded time", function()
    local t0 = os.time()
    fails({ drip_bytes_per_sec = 50 }, "timeout", "too slow",
      { max_retries = 0, low_speed_limit = 1000, low_speed_time = 1 })
    assert.is_true(os.time() - t0 <= 5)
  end)

  it("a body over the size cap: aborted with a clear error", function()
    fails({ latency_ms = 1 }, "network", "exceeds max_response_bytes", { max_retries = 0, max_response_bytes = 4096 })
  end)

  it("a gzip bomb: the cap counts decompressed bytes", function()
    local err = fails({ gzip_bomb = 200 * 1024 * 1024 }, "network", "exceeds max_response_bytes (1048576 bytes",
      { max_retries = 0, max_response_bytes = 1024 * 1024 })
    assert.are.equal(200, err.status)
  end)

  it("a 429 storm: retried max_retries times with the asked delay, then the 429", function()
    srv:faults { { status = 429, retry_after_ms = "20", times = 50 } }
    local c = client { max_retries = 3 }
    local _, err = c:images { start_time = START }
    assert.are.equal(429, err.status)
    assert.are.equal(4, err.attempts)
    assert.are.same({ 0.02, 0.02, 0.02 }, c:last_transfer().delays)
    assert.are.equal(4, #srv:requests())
  end)

  it("a Retry-After longer than allowed: gives up at once", function()
    local err =
      fails({ status = 503, retry_after = "3600" }, "http", "more than the 120 s allowed", { max_retries = 5 })
    assert.are.equal(3600, err.retry_after)
    assert.are.equal(1, #srv:requests())
  end)

  it("a wrong Content-Type with a non-JSON body: decode error naming it", function()
    fails({ status = 200, body = "<!doctype html><p>gateway", content_type = "text/html; charset=utf-8" }, "decode",
      "Content-Type was text/html")
  end)

  it("invalid UTF-8 in a string: decode error at its byte", function()
    local body = '{"object":"page","data":[{"object":"bucket","results":[{"model":"d\255e"}]}],"has_more":false}'
    local err = fails({ status = 200, body_hex = hex(body) }, "decode", "invalid UTF-8")
    assert.are.equal(body:find("\255", 1, true) - 1, err.offset)
  end)

  it("nesting 10 000 deep: decode error, no crash", function()
    fails({ status = 200, body = ("["):rep(10000) .. ("]"):rep(10000) }, "decode", "nesting deeper than 512")
  end)

  it("duplicate keys: the last one wins, as documented", function()
    srv:faults {
      { status = 200, body = '{"object":"page","data":[],"has_more":true,"has_more":false,"next_page":null}' },
    }
    local page = assert(client():images { start_time = START })
    assert.is_false(page.has_more)
  end)

  it("numbers: 1e400 is refused, -0 and 99999999999999999999 are read", function()
    fails({ status = 200, body = '{"object":"page","data":[{"start_time":1e400}]}' }, "decode", "number out of range")
    srv:faults { { status = 200, body = '{"object":"page","data":[{"start_time":-0,'
      .. '"end_time":99999999999999999999,"results":[]}],"has_more":false}' } }
    local page = assert(client():images { start_time = START })
    assert.are.equal(0, page.data[1].start_time)
    assert.are.equal(1e20, page.data[1].end_time)
  end)

  it("a page with has_more and no cursor: the walk raises after that page", function()
    srv:faults { { status = 200, body = '{"object":"page","data":[{"object":"bucket",'
      .. '"start_time":1,"end_time":2,"results":[]}],"has_more":true}' } }
    local seen = 0
    local ok, err = pcall(function()
      for _ in client():buckets("images", { start_time = START }) do
        seen = seen + 1
      end
    end)
    assert.is_false(ok)
    assert.are.equal(1, seen)
    assert.are.equal("api", err.kind)
  end)

  -- The first bucket of the page the stand-in serves that holds a result,
  -- as a 0-based index (the stand-in's and JSON's).
  local function first_bucket_with_results(params)
    local page = assert(client():images(params))
    for i, bucket in ipairs(page.data) do
      if #bucket.results > 0 then
        return i - 1, #page.data
      end
    end
    error "the stand-in served no results"
  end

  it("a null where a bucket belongs: an api error naming the index, never a shorter page", function()
    local params = { start_time = START, bucket_width = "1h", limit = 72 }
    local _, buckets = first_bucket_with_results(params)
    for _, index in ipairs { 0, 5, buckets - 1 } do
      srv:faults { { null_bucket = index } }
      local page, err = client({ max_retries = 0 }):images(params)
      assert.is_nil(page)
      assert.are.equal("api", err.kind, tostring(err))
      assert.matches(("data[%d] is null;"):format(index), err.message, 1, true)
      assert.are.equal(200, err.status)
    end
  end)

  it("a null where a result belongs: an api error naming bucket and result", function()
    local params = { start_time = START, bucket_width = "1h", limit = 72 }
    local bucket = first_bucket_with_results(params)
    srv:faults { { null_result = { bucket, 0 } } }
    local page, err = client({ max_retries = 0 }):images(params)
    assert.is_nil(page)
    assert.are.equal("api", err.kind, tostring(err))
    assert.matches(("data[%d].results[0] is null;"):format(bucket), err.message, 1, true)
    local body = '{"object":"page","data":[{"results":[]},{"results":[{"a":1},null,{"a":2}]}],"has_more":false}'
    srv:faults { { status = 200, body = body } }
    local _, literal = client({ max_retries = 0 }):images(params)
    assert.are.equal("api", literal.kind)
    assert.matches("data[1].results[1] is null;", literal.message, 1, true)
    assert.are.equal(body:find("null", 1, true) - 1, literal.offset)
    -- a walk raises it; the generic decoder keeps null as a hole
    srv:faults { { null_result = { bucket, 0 } } }
    local ok, raised = pcall(function()
      for _ in client({ max_retries = 0 }):results("images", params) do
      end
    end)
    assert.is_false(ok)
    assert.are.equal("api", raised.kind)
    assert.are.same({ [2] = 1 }, usage.decode '{"data":[null,1]}'.data)
  end)

  it("anything but a bucket object in data, or a result object in results, is an api error naming where", function()
    local params = { start_time = START, bucket_width = "1h", limit = 72 }
    local B = '{"object":"bucket","start_time":1,"end_time":2,"results":[{"images":1}]}'
    local cases = {
      { '{"object":"page","data":[' .. B .. ',1],"has_more":false}', "data[1] is a number;" },
      { '{"object":"page","data":[' .. B .. ',"x"],"has_more":false}', "data[1] is a string;" },
      { '{"object":"page","data":[[' .. B .. ']],"has_more":false}', "data[0] is an array;" },
      { '{"object":"page","data":null,"has_more":false}', "data is null;" },
      { '{"object":"page","data":{"0":' .. B .. '},"has_more":false}', "data is an object;" },
      { '{"object":"page","data":[' .. B .. ',{"object":"bucket","results":null}],"has_more":false}',
        "data[1].results is null;" },
      { '{"object":"page","data":[{"object":"bucket","result":{"images":1}}],"has_more":false}',
        "data[0].results is an object;" },
      { '{"object":"page","data":[{"object":"bucket","results":[{"images":1},true]}],"has_more":false}',
        "data[0].results[1] is a boolean;" },
      { '{"object":"page","data":[{"object":"bucket","results":[[{"images":1}]]}],"has_more":false}',
        "data[0].results[0] is an array;" },
      { '{"object":"page","data":[{"object":"bucket","results":["{\\"images\\":1}","5"]}],"has_more":false}',
        "data[0].results[1] is a string holding a number;" },
    }
    for _, case in ipairs(cases) do
      srv:faults { { status = 200, body = case[1] } }
      local page, err = client({ max_retries = 0 }):images(params)
      assert.is_nil(page, case[1])
      assert.are.equal("api", err.kind, tostring(err))
      assert.matches(case[2], err.message, 1, true)
    end
    -- the seed's quirk still reads: a result sent as a string holding an object
    local quirk = '{"object":"page","data":[{"object":"bucket","results":["{\\"images\\":3}"]}],"has_more":false}'
    srv:faults { { status = 200, body = quirk } }
    local page = assert(client({ max_retries = 0 }):images(params))
    assert.are.equal(3, page.data[1].results[1].images)
    -- the generic decoder reads any JSON as it is
    assert.are.same({ 1, "x" }, usage.decode('{"data":[1,"x"]}').data)
  end)

  it("a page with a hole is never cached: the walk fails and the cache directory stays empty", function()
    local dir = os.tmpname()
    os.remove(dir)
    local params = { start_time = START, end_time = NOW - 86400, bucket_width = "1d" }
    srv:faults { { null_bucket = 1 } }
    local c = client { max_retries = 0, cache_dir = dir }
    local ok, err = pcall(function()
      for _ in c:results("images", params) do
      end
    end)
    assert.is_false(ok)
    assert.are.equal("api", err.kind, tostring(err))
    assert.matches("data[1] is null", err.message, 1, true)
    assert.are.equal("", util.capture("ls -A " .. util.q(dir) .. " | grep -v '^.openai-usage-cache$'"))
    -- the next walk asks the server again and caches the whole page
    local rows = 0
    for _ in client({ cache_dir = dir }):results("images", params) do
      rows = rows + 1
    end
    assert.is_true(rows > 0)
    assert.are.equal(2, #srv:requests())
    util.rm_rf(dir)
  end)

  it("a 16 KB gzip reply of 16 MiB of {} ends in a decode error within the value budget, not gigabytes", function()
    -- a child process with default options, so its peak RSS is the page's
    -- alone; 5.6 million empty tables would take ~1 GB of Lua heap
    local n = math.floor(16 * 1024 * 1024 / 3)
    srv:faults { { empty_buckets = n } }
    local script = os.tmpname()
    util.write(script, ([[
      local usage = require "openai_usage"
      local c = assert(usage.new { api_key = %q, base_url = %q, max_retries = 0 })
      local page, err = c:images { start_time = %d }
      local f = assert(io.open "/proc/self/status")
      local hwm = f:read("*a"):match "VmHWM:%%s*(%%d+) kB"
      f:close()
      local t = c:last_transfer()
      print(tostring(page), err.kind, err.message, hwm, t.wire_bytes, t.body_bytes)
    ]]):format(KEY, srv.url, START))
    local out, ok = util.popen_run(util.LUA .. " " .. util.q(script))
    os.remove(script)
    assert.is_true(ok, out)
    local page, kind, message, hwm, wire, body = out:match "^(%S+)\t(%S+)\t([^\t]+)\t(%d+)\t(%d+)\t(%d+)\n$"
    assert.are.equal("nil", page, out)
    assert.are.equal("decode", kind)
    assert.matches("more than 4194304 values (the decoder's budget for one page; a table counts as 4)",
      message, 1, true)
    assert.is_true(tonumber(wire) < 64 * 1024, wire)
    assert.is_true(tonumber(body) > 16 * 1024 * 1024, body)
    -- an ASan build (make check-asan preloads its runtime) keeps freed
    -- memory in quarantine: the bound holds for the real build
    if not (os.getenv "LD_PRELOAD" or ""):find("asan", 1, true) then
      assert.is_true(tonumber(hwm) < 200 * 1024, "peak RSS " .. hwm .. " kB")
    end
  end)

  it("the value budget follows max_response_bytes: a smaller cap refuses a smaller flood", function()
    srv:faults { { empty_buckets = 5000 } }
    local _, err = client({ max_retries = 0, max_response_bytes = 32 * 1024 }):images { start_time = START }
    assert.are.equal("decode", err.kind, tostring(err))
    assert.matches("more than 2048 values", err.message, 1, true)
    srv:faults { { empty_buckets = 5000 } }
    local page = assert(client({ max_retries = 0 }):images { start_time = START })
    assert.are.equal(5000, #page.data)
  end)

  it("an empty 200 body: decode error, not an empty page", function()
    fails({ status = 200, body = "" }, "decode", "empty input")
  end)

  it("a redirect to another server: not followed, and that server hears nothing", function()
    local other = standin.start { key = KEY, now = NOW }
    srv:faults { { status = 307, headers = { Location = other.url .. "/organization/usage/images?start_time=1" } } }
    local _, err = client():images { start_time = START }
    local heard = other:requests()
    other:stop()
    assert.are.equal(307, err.status)
    assert.are.same({}, heard)
  end)
end)
