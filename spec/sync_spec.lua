-- openai-usage sync and the history store against the stand-in: a backfill
-- whose figures equal the live API's, an incremental re-run that asks only
-- from the oldest unsettled bucket (requests counted in the stand-in's log),
-- revised buckets replaced (late data, a group that vanished), a real
-- process killed with SIGKILL mid-backfill and resumed to exactly the
-- totals of an uninterrupted sync, and rate limits that stop a sync which
-- the next run resumes.
local usage = require "openai_usage"
local store_module = require "openai_usage.store"
local schema = require "openai_usage.store_schema"
local standin = require "spec.support.standin"
local util = require "spec.support.util"

local q = util.q
local KEY = "sk-admin-standin"
local HOUR, DAY = 3600, 86400
local T0 = 1732406400 -- 2024-11-24T00:00:00Z
local NOW = T0 + 5400 -- 01:30: the last bucket is open
local LUA = util.suite_lua()

-- The figures of an endpoint's table (names, as the store's columns).
local function figures_of(endpoint)
  local out = {}
  for _, c in ipairs(schema.tables[endpoint].columns) do
    if c.role == "figure" then
      out[#out + 1] = c
    end
  end
  return out
end

local function group_by_of(endpoint)
  for _, p in ipairs(usage.rules(endpoint).params) do
    if p.name == "group_by" then
      return p.values
    end
  end
end

-- The live API's totals of every figure over [start, stop) at width, and
-- its rows grouped by every dimension, by plain loops over the results.
local function live_totals(srv, endpoint, width, start, stop)
  local c = assert(usage.new(srv:client_options()))
  local totals, rows = {}, 0
  for row in c:results(endpoint, { start_time = start, end_time = stop, bucket_width = width,
    group_by = group_by_of(endpoint) }) do
    rows = rows + 1
    for _, f in ipairs(figures_of(endpoint)) do
      local v = row[f.field]
      if f.property then
        v = v and v[f.property]
      end
      if v ~= nil then
        totals[f.name] = (totals[f.name] or 0) + v
      end
    end
  end
  c:close()
  return totals, rows
end

-- The store's totals of every figure, and its row count, over [start, stop).
local function store_totals(path, endpoint, width, start, stop)
  local s = assert(store_module.open(path, { readonly = true }))
  local sums = {}
  for _, f in ipairs(figures_of(endpoint)) do
    sums[#sums + 1] = ("sum(%s) AS %s"):format(f.name, f.name)
  end
  local rows = assert(s:select(("SELECT count(*) AS n, %s FROM %s WHERE width = ? AND start_time >= ? "
    .. "AND start_time < ?"):format(table.concat(sums, ", "), endpoint), width, start, stop))
  s:close()
  local n = rows[1].n
  rows[1].n = nil
  return rows[1], n
end

local function assert_equal_totals(expected, actual, what)
  local names = {}
  for k in pairs(expected) do
    names[#names + 1] = k
  end
  for k in pairs(actual) do
    assert(expected[k] ~= nil, what .. ": " .. k .. " stored but not in the API's answer")
  end
  assert(#names > 0, what .. ": no figures")
  for _, k in ipairs(names) do
    if math.type and math.type(expected[k]) == "integer" then
      assert.are.equal(expected[k], actual[k], what .. " " .. k)
    else
      util.near(expected[k], actual[k], what .. " " .. k)
    end
  end
end

local function api_requests(srv)
  local out = {}
  for _, r in ipairs(srv:requests()) do
    out[#out + 1] = r
  end
  return out
end

local function query_value(query, name)
  return query:match("[?&]" .. name .. "=([^&]*)") or query:match("^" .. name .. "=([^&]*)")
end

describe("sync", function()
  local srv, dir
  setup(function()
    srv = standin.start { key = KEY, now = NOW }
    dir = util.tmpdir()
  end)
  teardown(function()
    srv:stop()
    util.rm_rf(dir)
  end)
  before_each(function()
    srv:reset()
  end)

  local function sync(path, opts, client_opts)
    local client = assert(usage.new(srv:client_options(client_opts)))
    local s = assert(store_module.open(path))
    local summaries, err = s:sync(client, opts)
    client:close()
    s:close()
    return assert(summaries, err)
  end

  it("backfills every endpoint: the store's figures and rows equal the live API's, grouped by every dimension",
    function()
      local path = dir .. "/backfill.db"
      local summaries = sync(path, { endpoints = "all", width = "1h", since = NOW - 3 * DAY, now = NOW })
      assert.are.equal(#store_module.endpoints(), #summaries)
      -- figures, ids and times only: the key is in no file of the store
      for _, file in ipairs { path, path .. "-wal" } do
        local bytes = util.read_if(file) or ""
        assert.is_nil(bytes:find(KEY, 1, true), file)
      end
      for _, s in ipairs(summaries) do
        assert.is_nil(s.err)
        local width = s.endpoint == "costs" and "1d" or "1h"
        assert.are.equal(width, s.width)
        local seconds = width == "1d" and DAY or HOUR
        local start = math.floor((NOW - 3 * DAY) / seconds) * seconds
        local live, live_rows = live_totals(srv, s.endpoint, width, start, NOW)
        local stored, stored_rows = store_totals(path, s.endpoint, width, start, NOW)
        assert_equal_totals(live, stored, s.endpoint)
        assert.is_true(live_rows > 0, s.endpoint)
        assert.are.equal(live_rows, stored_rows, s.endpoint .. " rows")
        assert.are.equal(live_rows, s.rows)
        -- every bucket is recorded, the empty ones too, none missing
        local st = assert(store_module.open(path, { readonly = true }))
        local cover = assert(st:coverage(s.endpoint, { bucket_width = width, start_time = start, end_time = NOW }))
        st:close()
        assert.are.same({}, cover.missing)
        assert.are.equal(cover.expected, cover.buckets)
        assert.are.equal(s.buckets, cover.buckets)
      end
    end)

  it("re-run minutes later asks only from the oldest unsettled bucket: one request, the same totals as live",
    function()
      local path = dir .. "/incremental.db"
      local since = NOW - 30 * DAY
      local first = sync(path, { endpoints = "images", width = "1h", since = since, now = NOW })
      local backfill_requests = #api_requests(srv)
      assert.are.equal(first[1].requests, backfill_requests)
      assert.is_true(backfill_requests >= 5, "30 days of hours are several pages")
      local s = assert(store_module.open(path, { readonly = true }))
      local state = assert(s:state("default", "images", "1h"))
      s:close()
      -- settled: ended an hour (the settle window) before now, over a full hour
      assert.are.equal(math.floor((NOW - HOUR) / HOUR) * HOUR, state.settled_until)
      assert.are.equal(NOW, state.synced_until)
      srv:reset()
      local later = NOW + 300
      local second = sync(path, { endpoints = "images", width = "1h", since = since, now = later })
      local requests = api_requests(srv)
      assert.are.equal(1, #requests)
      assert.are.equal(1, second[1].requests)
      assert.are.equal(tostring(state.settled_until), query_value(requests[1].query, "start_time"))
      assert.are.equal(tostring(later), query_value(requests[1].query, "end_time"))
      local start = math.floor(since / HOUR) * HOUR
      assert_equal_totals((live_totals(srv, "images", "1h", start, later)),
        (store_totals(path, "images", "1h", start, later)), "after the re-run")
    end)

  it("a revised bucket replaces the old figures: late data arrives, the re-run's totals equal the live API's",
    function()
      local path = dir .. "/revised.db"
      local since = NOW - DAY
      local start = math.floor(since / HOUR) * HOUR
      srv:settings { late_until = NOW - 2700 } -- usage after 00:45 has not reached the API yet
      sync(path, { endpoints = "images", width = "1h", since = since, now = NOW })
      local early = store_totals(path, "images", "1h", start, NOW)
      srv:reset() -- the late usage arrives
      local live = live_totals(srv, "images", "1h", start, NOW)
      assert.is_true(early.images < live.images, "the first sync saw less than all")
      sync(path, { endpoints = "images", width = "1h", since = since, now = NOW + 60 })
      local stored, rows = store_totals(path, "images", "1h", start, NOW)
      assert_equal_totals(live, stored, "revised")
      local _, live_rows = live_totals(srv, "images", "1h", start, NOW)
      assert.are.equal(live_rows, rows)
    end)

  it("a group that vanished from a revised bucket is gone from the store (the bucket's rows are replaced)",
    function()
      local path = dir .. "/vanished.db"
      local bucket = T0 - HOUR
      local function fixture(models)
        local results = {}
        for i, m in ipairs(models) do
          results[i] = ('{"object":"organization.usage.images.result","images":%d,"num_model_requests":%d,'
            .. '"size":"1024x1024","source":"image.generation","project_id":"proj_a","user_id":null,'
            .. '"api_key_id":"key_a","model":"%s"}'):format(10 * i, i, m)
        end
        local file = dir .. "/fixture-" .. #models .. ".json"
        util.write(file, ('{"object":"page","data":[{"object":"bucket","start_time":%d,"end_time":%d,'
          .. '"results":[%s]}],"has_more":false,"next_page":null}'):format(bucket, T0, table.concat(results, ",")))
        return file
      end
      srv:settings { fixture_page = fixture { "dall-e-2", "dall-e-3" } }
      local opts = { endpoints = "images", width = "1h", since = bucket, ["until"] = T0 + HOUR, now = T0 + 60 }
      sync(path, opts)
      srv:settings { fixture_page = fixture { "dall-e-2" } }
      sync(path, opts)
      local s = assert(store_module.open(path, { readonly = true }))
      local rows = assert(s:select("SELECT model, images FROM images WHERE start_time = ? ORDER BY model", bucket))
      local recorded = assert(s:select("SELECT results FROM buckets WHERE endpoint = 'images' AND start_time = ?",
        bucket))
      s:close()
      assert.are.same({ { model = "dall-e-2", images = 10 } }, rows)
      assert.are.same({ { results = 1 } }, recorded)
    end)

  it("stops when rate-limit retries run out, paced by Retry-After, keeping what it committed; "
    .. "the next run resumes to the live totals", function()
    local path = dir .. "/limited.db"
    local since = NOW - 30 * DAY
    local start = math.floor(since / HOUR) * HOUR
    -- two pages pass, then 429 with Retry-After: 1 on every try
    srv:faults { { latency_ms = 1, times = 2 }, { status = 429, retry_after = 1, times = 3 } }
    local summaries = sync(path, { endpoints = "images", width = "1h", since = since, now = NOW },
      { max_retries = 1, prefetch = false })
    local s1 = summaries[1]
    assert.is_truthy(s1.err)
    assert.are.equal(429, s1.err.status)
    assert.are.equal(2, s1.requests)
    local requests = api_requests(srv)
    assert.are.equal(4, #requests) -- two pages, one 429 and its one retry
    assert.is_true(requests[4].time - requests[3].time >= 0.9, "the retry waited for Retry-After")
    local s = assert(store_module.open(path, { readonly = true }))
    local state = assert(s:state("default", "images", "1h"))
    s:close()
    assert.are.equal(start + 2 * 168 * HOUR, state.synced_until) -- two whole pages of 168 hours
    srv:reset()
    local resumed = sync(path, { endpoints = "images", width = "1h", since = since, now = NOW })
    assert.is_nil(resumed[1].err)
    assert.are.equal(tostring(state.settled_until), query_value(api_requests(srv)[1].query, "start_time"))
    local live, live_rows = live_totals(srv, "images", "1h", start, NOW)
    local stored, rows = store_totals(path, "images", "1h", start, NOW)
    assert_equal_totals(live, stored, "resumed")
    assert.are.equal(live_rows, rows)
  end)

  describe("the command", function()
    -- bin/openai-usage sync as a real process; returns stdout, stderr, exit code
    local function run_cli(args, background)
      local quoted = {}
      for i, a in ipairs(args) do
        quoted[i] = q(a)
      end
      local base = os.tmpname()
      local cmd = ("env OPENAI_ADMIN_KEY=%s %s bin/openai-usage sync --base-url %s %s >%s 2>%s"):format(q(KEY),
        LUA, q(srv.url), table.concat(quoted, " "), q(base .. ".out"), q(base .. ".err"))
      if background then
        local p = assert(io.popen(cmd .. " & echo $!"))
        local pid = p:read "*l"
        p:close()
        return pid, base
      end
      local code = util.exit_code(os.execute(cmd))
      local out, err = util.read(base .. ".out"), util.read(base .. ".err")
      os.remove(base .. ".out")
      os.remove(base .. ".err")
      os.remove(base)
      return out, err, code
    end

    -- a fixed past range: every bucket is settled by the machine's clock
    local SINCE, UNTIL = "2024-08-26", "2024-11-24"
    local T_SINCE, T_UNTIL = 1724630400, T0

    it("prints one line per endpoint: requests, buckets, rows, time", function()
      local path = dir .. "/cli.db"
      local out, err, code = run_cli { "--db", path, "--endpoints", "images,costs", "--bucket", "1h", "--since",
        "2024-11-20", "--until", UNTIL }
      assert.are.equal(0, code, err)
      local lines = {}
      for line in out:gmatch "[^\n]+" do
        lines[#lines + 1] = line
      end
      assert.are.equal(2, #lines, out)
      assert.is_truthy(lines[1]:match "^images 1h: 1 request, 96 buckets, %d+ rows, %d+%.%d s %(2024%-11%-20T00:00:00Z")
      assert.is_truthy(lines[2]:match "^costs 1d: 1 request, 4 buckets, %d+ rows, %d+%.%d s", out)
      -- a re-run of a past range has nothing left to ask
      srv:reset()
      out, err, code = run_cli { "--db", path, "--endpoints", "images", "--bucket", "1h", "--since", "2024-11-20",
        "--until", UNTIL }
      assert.are.equal(0, code, err)
      assert.is_truthy(out:match "^images 1h: 0 requests, 0 buckets, 0 rows", out)
      assert.are.equal(0, #api_requests(srv))
    end)

    it("refuses bad arguments before any request, naming what is allowed", function()
      for _, case in ipairs {
        { {}, "--db FILE is required" },
        { { "--db", dir .. "/x.db", "--endpoints", "imagez" }, "imagez is not one of" },
        { { "--db", dir .. "/x.db", "--bucket", "2d" }, "2d is not one of 1m, 1h, 1d" },
        { { "--db", dir .. "/x.db", "--since", "yesterday" }, "since: time \"yesterday\"" },
        { { "--db", dir .. "/x.db", "--frobnicate" }, "unknown option --frobnicate" },
      } do
        local _, err, code = run_cli(case[1])
        assert.are.equal(2, code, err)
        assert.is_truthy(err:find(case[2], 1, true), err)
      end
      assert.are.equal(0, #api_requests(srv))
    end)

    it("killed with SIGKILL mid-backfill, then re-run, gives exactly the totals of an uninterrupted sync", function()
      local killed, whole = dir .. "/killed.db", dir .. "/whole.db"
      local args = { "--endpoints", "images", "--bucket", "1h", "--since", SINCE, "--until", UNTIL }
      local function with_db(path)
        local out = { "--db", path }
        for _, a in ipairs(args) do
          out[#out + 1] = a
        end
        return out
      end
      srv:settings { latency_ms = 400 } -- 13 pages: ~5 s
      local pid, base = run_cli(with_db(killed), true)
      -- wait until some pages are committed, then kill it without warning
      local committed
      for _ = 1, 300 do
        local s = store_module.open(killed, { readonly = true })
        local state = s and s:state("default", "images", "1h")
        if s then
          s:close()
        end
        if state and state.synced_until >= T_SINCE + 3 * 168 * HOUR then
          committed = state
          break
        end
        os.execute "sleep 0.05"
      end
      assert.is_truthy(committed, "the sync committed no pages")
      assert(util.execute("kill -9 " .. pid))
      for _ = 1, 100 do
        if not standin.running(pid) then
          break
        end
        os.execute "sleep 0.05"
      end
      for _, suffix in ipairs { ".out", ".err", "" } do
        os.remove(base .. suffix)
      end
      local s = assert(store_module.open(killed, { readonly = true }))
      local state = assert(s:state("default", "images", "1h"))
      s:close()
      assert.is_true(state.synced_until < T_UNTIL, "killed before the end")
      srv:reset()
      local _, err, code = run_cli(with_db(killed))
      assert.are.equal(0, code, err)
      -- it resumed where the killed run's last commit left off
      assert.are.equal(tostring(state.settled_until), query_value(api_requests(srv)[1].query, "start_time"))
      _, err, code = run_cli(with_db(whole))
      assert.are.equal(0, code, err)
      local a, a_rows = store_totals(killed, "images", "1h", T_SINCE, T_UNTIL)
      local b, b_rows = store_totals(whole, "images", "1h", T_SINCE, T_UNTIL)
      assert.are.same(b, a)
      assert.are.equal(b_rows, a_rows)
      -- bucket by bucket too, and both are the live API's
      local per_bucket = "SELECT start_time, sum(images) AS images, count(*) AS n FROM images GROUP BY start_time "
        .. "ORDER BY start_time"
      local ka, kb = assert(store_module.open(killed, { readonly = true })), assert(store_module.open(whole,
        { readonly = true }))
      assert.are.same(kb:select(per_bucket), ka:select(per_bucket))
      assert.are.same(kb:select "SELECT * FROM sync_coverage", ka:select "SELECT * FROM sync_coverage")
      ka:close()
      kb:close()
      local live, live_rows = live_totals(srv, "images", "1h", T_SINCE, T_UNTIL)
      assert_equal_totals(live, a, "killed and resumed")
      assert.are.equal(live_rows, a_rows)
    end)

    it("Ctrl-C mid-backfill stops it at once, exit 130, the committed pages kept; the next run resumes", function()
      local path = dir .. "/interrupted.db"
      local base = os.tmpname()
      -- three pages pass, the fourth drips at 40 bytes/s: the CLI is mid-transfer
      srv:faults { { latency_ms = 1, times = 3 }, { drip_bytes_per_sec = 40 } }
      local cmd = ("( env OPENAI_ADMIN_KEY=%s %s bin/openai-usage sync --base-url %s --db %s --endpoints images "
        .. "--bucket 1h --since %s --until %s >%s 2>%s & echo $! >%s; wait $!; echo $? >%s ) >/dev/null 2>&1 &")
        :format(q(KEY), LUA, q(srv.url), q(path), SINCE, UNTIL, q(base .. ".out"), q(base .. ".err"),
          q(base .. ".pid"), q(base .. ".code"))
      assert(util.execute(cmd))
      local pid
      for _ = 1, 500 do
        pid = (util.read_if(base .. ".pid") or ""):match "(%d+)\n"
        if pid and srv:status().active_drips > 0 then
          break
        end
        os.execute "sleep 0.02"
      end
      assert.is_truthy(pid and srv:status().active_drips > 0, "the fourth page never started")
      os.execute "sleep 0.2"
      os.execute("kill -INT " .. pid)
      local code
      for _ = 1, 500 do
        code = (util.read_if(base .. ".code") or ""):match "(%d+)\n"
        if code then
          break
        end
        os.execute "sleep 0.02"
      end
      if not code then
        os.execute("kill -9 " .. pid .. " 2>/dev/null")
      end
      local err = util.read_if(base .. ".err") or ""
      for _, suffix in ipairs { "", ".out", ".err", ".pid", ".code" } do
        os.remove(base .. suffix)
      end
      assert.are.equal("130", code, err)
      assert.is_truthy(err:find("openai-usage: interrupted", 1, true), err)
      local s = assert(store_module.open(path, { readonly = true }))
      local state = assert(s:state("default", "images", "1h"))
      s:close()
      assert.are.equal(T_SINCE + 3 * 168 * HOUR, state.synced_until)
      srv:reset()
      local _, rerr, rcode = run_cli { "--db", path, "--endpoints", "images", "--bucket", "1h", "--since", SINCE,
        "--until", UNTIL }
      assert.are.equal(0, rcode, rerr)
      local live, live_rows = live_totals(srv, "images", "1h", T_SINCE, T_UNTIL)
      local stored, rows = store_totals(path, "images", "1h", T_SINCE, T_UNTIL)
      assert_equal_totals(live, stored, "interrupted and resumed")
      assert.are.equal(live_rows, rows)
    end)

    it("says where it stopped and how to resume when the API keeps refusing", function()
      local path = dir .. "/refused.db"
      srv:faults { { latency_ms = 1, times = 1 }, { status = 429, retry_after = 0, times = 10 } }
      local out, err, code = run_cli { "--db", path, "--endpoints", "images", "--bucket", "1h", "--since", SINCE,
        "--until", UNTIL }
      assert.are.equal(1, code)
      assert.is_truthy(out:match "^images 1h: 1 request, 168 buckets", out)
      assert.is_truthy(err:find("openai-usage: sync images stopped: openai_usage: http 429 (rate_limit_exceeded)",
        1, true), err)
      assert.is_truthy(err:find("buckets through 2024-09-02T00:00:00Z are stored, the next run starts at "
        .. "2024-09-02T00:00:00Z: run the same sync again to resume", 1, true), err)
    end)
  end)
end)
