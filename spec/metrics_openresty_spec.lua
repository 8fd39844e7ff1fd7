-- /metrics from nginx (examples/openresty/metrics.conf, as it stands but for
-- its port, an access log, and a refresh every second): Debian's nginx with
-- two workers refreshing on cosockets into a lua_shared_dict, scraped by
-- curl (checked by promtool) and by a real Prometheus started here, whose
-- HTTP API must answer with the figures the stand-in serves.
local usage = require "openai_usage"
local metrics = require "openai_usage.metrics"
local standin = require "spec.support.standin"
local nginx = require "spec.support.nginx"
local prometheus = require "spec.support.prometheus"
local exposition = require "spec.support.exposition"
local util = require "spec.support.util"

local KEY = "sk-admin-metrics-nginx-9d2a41"
local CONF = nginx.read_file "examples/openresty/metrics.conf"
local HOSTILE = 'proj_"evil"\\x\nnext_line{a="b"} 1'
local PROMETHEUS_ACCEPT = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
  .. "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
local q = util.q

-- Images per "project|model" this month and today, from hourly buckets.
local function expected_images(srv, now)
  local periods = metrics.periods(now)
  local client = assert(usage.new(srv:client_options()))
  local sums = { month = {}, today = {} }
  for row in client:results("images", { start_time = periods.month, bucket_width = "1h", limit = 168,
    group_by = { "project_id", "model" } }) do
    local key = row.project_id .. "|" .. row.model
    sums.month[key] = (sums.month[key] or 0) + row.images
    if row.start_time >= periods.today then
      sums.today[key] = (sums.today[key] or 0) + row.images
    end
  end
  client:close()
  return sums
end

describe("metrics in nginx", function()
  if not nginx.available() or not prometheus.available() then
    it("needs nginx, libnginx-mod-http-lua and prometheus (make deps installs them)", function()
      error("nginx, " .. nginx.LUA_MODULE .. " or prometheus is missing: run make deps")
    end)
    return
  end

  local srv, web, tmp, now

  -- GETs path from nginx: status, headers (lower-case names), body, seconds.
  local function fetch(path, accept)
    local head = tmp .. "/head"
    local out = util.capture(("env -u LD_PRELOAD curl -s --max-time 30 -D %s %s -w '\\n%%{time_total}' %s"):format(
      q(head), accept and ("-H " .. q("Accept: " .. accept)) or "", q(web.url .. path)))
    local body, seconds = out:match "^(.*)\n([%d%.]+)$"
    local headers, status = {}, nil
    for line in (util.read_if(head) or ""):gmatch "[^\r\n]+" do
      status = status or tonumber(line:match "^HTTP/%S+ (%d+)")
      local name, value = line:match "^([^:]+):%s*(.*)$"
      if name then
        headers[name:lower()] = value
      end
    end
    return status, headers, body, tonumber(seconds)
  end

  -- Waits until a scrape answers 200 with check(parsed) true (seconds).
  local function await_scrape(check, seconds)
    local body
    for _ = 1, (seconds or 20) * 10 do
      local status
      status, _, body = fetch "/metrics"
      if status == 200 and check(exposition.parse(body)) then
        return exposition.parse(body), body
      end
      util.execute "sleep 0.1"
    end
    error("no such scrape came; the last:\n" .. tostring(body) .. "\n" .. web:error_log())
  end

  setup(function()
    nginx.build_module()
    tmp = util.tmpdir()
    now = os.time()
    srv = standin.start { key = KEY, now = now }
    srv:settings { rename = { proj_atlas = HOSTILE } }
    -- an access log of what each scraper asked for and got
    local conf = CONF:gsub("access_log off;", 'log_format scrape "$http_accept|$sent_http_content_type|$status";\n'
      .. "    access_log logs/access.log scrape;")
    web = nginx.start {
      conf = conf,
      env = { OPENAI_ADMIN_KEY = KEY, OPENAI_BASE_URL = srv.url, OPENAI_USAGE_METRICS_INTERVAL = "1" },
    }
  end)

  teardown(function()
    if web then
      local log = web:error_log()
      assert.is_nil(log:find(KEY, 1, true), "the key is in nginx's log")
      web:stop()
    end
    srv:stop()
    util.rm_rf(tmp)
  end)

  it("serves the text format from the dict: promtool passes, the figures are the stand-in's", function()
    local parsed, body = await_scrape(function(p)
      return #exposition.find(p, "openai_usage_refresh_success", { endpoint = "costs" }) == 1
    end)
    local status, headers = fetch "/metrics"
    assert.are.equal(200, status)
    assert.are.equal(metrics.CONTENT_TYPE.prometheus, headers["content-type"])
    util.write(tmp .. "/served.prom", body)
    local out, ok = util.popen_run("env -u LD_PRELOAD promtool check metrics < " .. q(tmp .. "/served.prom"))
    assert.is_true(ok, out)
    for _, endpoint in ipairs { "images", "completions", "costs" } do
      assert.are.equal(1, exposition.value(parsed, "openai_usage_refresh_success", { endpoint = endpoint }))
    end
    local sums = expected_images(srv, now)
    local groups = 0
    for key, month in pairs(sums.month) do
      groups = groups + 1
      local project, model = key:match "^(.-)|(.*)$"
      local labels = { endpoint = "images", project_id = project, model = model }
      labels.period = "month"
      assert.are.equal(month, exposition.value(parsed, "openai_usage_images", labels), key)
      labels.period = "today"
      assert.are.equal(sums.today[key] or 0, exposition.value(parsed, "openai_usage_images", labels), key)
    end
    assert.is_true(groups >= 4)
    assert.is_true(#exposition.find(parsed, "openai_usage_images", { project_id = HOSTILE }) >= 2)
  end)

  it("answers 503 at once, not a wait, while the first refresh is still on the wire", function()
    local stalled = standin.start { key = KEY, now = now }
    stalled:settings { latency_ms = 5000 }
    local first = nginx.start {
      conf = CONF,
      env = { OPENAI_ADMIN_KEY = KEY, OPENAI_BASE_URL = stalled.url, OPENAI_USAGE_METRICS_INTERVAL = "1" },
    }
    local ok, err = pcall(function()
      stalled:await_requests(1)
      local status, body, seconds = first:get "/metrics"
      assert.are.equal(503, status, body)
      assert.matches("no refresh has finished yet", body)
      assert.is_true(seconds < 0.5, ("the scrape waited %.3f s"):format(seconds))
    end)
    first:stop()
    stalled:stop()
    assert(ok, err)
  end)

  it("serves OpenMetrics 1.0 to a scraper that asks as Prometheus does", function()
    local status, headers, body = fetch("/metrics", PROMETHEUS_ACCEPT)
    assert.are.equal(200, status)
    assert.are.equal(metrics.CONTENT_TYPE.openmetrics, headers["content-type"])
    assert.are.equal("# EOF\n", body:sub(-6))
    assert.is_true(exposition.parse(body).eof)
  end)

  it("a real Prometheus scrapes it; its HTTP API answers a series with the stand-in's figure", function()
    local server = prometheus.start { targets = { "127.0.0.1:" .. web.port } }
    local ok, err = pcall(function()
      local sums = expected_images(srv, now)
      local key = next(sums.month)
      local project, model = key:match "^(.-)|(.*)$"
      local function series(period)
        return ('openai_usage_images{period="%s",endpoint="images",project_id="%s",model="%s"}'):format(period,
          project:gsub("[\\\"]", "\\%0"):gsub("\n", "\\n"), model)
      end
      local month = server:await(series "month")
      assert.are.equal(1, #month)
      assert.are.equal(sums.month[key], tonumber(month[1].value[2]), key)
      local today = server:await(series "today")
      assert.are.equal(sums.today[key] or 0, tonumber(today[1].value[2]), key)
      -- the hostile project id reached Prometheus whole, as a label value
      local hostile = server:await('openai_usage_images{period="month",model="dall-e-2"}')
      local found
      for _, r in ipairs(hostile) do
        found = found or r.metric.project_id == HOSTILE
      end
      assert.is_true(found, "no series with the hostile project id")
      local up = server:await 'up{job="openai_usage"}'
      assert.are.equal("1", up[1].value[2])
      local target = server:targets()[1]
      assert.are.equal("up", target.health)
      assert.are.equal("", target.lastError)
      -- Prometheus asked for OpenMetrics, and got it
      local access = util.read_if(web.prefix .. "/logs/access.log") or ""
      assert.truthy(access:find("application/openmetrics-text;version=1.0.0,", 1, true), access)
      assert.truthy(access:find("|" .. metrics.CONTENT_TYPE.openmetrics .. "|200", 1, true), access)
    end)
    server:stop()
    assert(ok, err)
  end)

  it("refreshes once an interval whichever of the two workers' timers fires", function()
    srv:call("reset", {}) -- the records only matter from here; the rename goes
    srv:settings { rename = { proj_atlas = HOSTILE } }
    util.execute "sleep 4.5"
    local times = {}
    for _, r in ipairs(srv:requests()) do
      if r.path == "/v1/organization/usage/images" then
        times[#times + 1] = r.time
      end
    end
    -- two workers each refreshing would make about twice as many (9), half of
    -- the gaps at most half the interval; the dict's "due" key keeps refreshes
    -- 0.9 of an interval apart in nginx's clock (the stand-in's records add
    -- a little jitter)
    assert.is_true(#times >= 3 and #times <= 6, "refreshes in 4.5 s: " .. #times)
    for i = 2, #times do
      assert.is_true(times[i] - times[i - 1] >= 0.6, ("refreshes %.3f s apart"):format(times[i] - times[i - 1]))
    end
  end)

  it("answers a scrape at once from the dict while the refresh waits on a stalled API", function()
    local before = fetch "/metrics"
    assert.are.equal(200, before)
    srv:settings { latency_ms = 8000 }
    local count = srv:status().requests
    srv:await_requests(count + 1) -- a refresh is on the wire, held for 8 s
    util.execute "sleep 0.3"
    local status, _, body, seconds = fetch "/metrics"
    print(("\n# metrics: a scrape during a stalled refresh took %.3f s"):format(seconds))
    assert.are.equal(200, status)
    assert.is_true(seconds < 0.5, ("the scrape waited %.3f s"):format(seconds))
    local parsed = exposition.parse(body)
    assert.are.equal(1, exposition.value(parsed, "openai_usage_refresh_success", { endpoint = "images" }))
    assert.is_true(#exposition.find(parsed, "openai_usage_images") > 0)
    srv:settings { latency_ms = 0 }
  end)

  it("a failed refresh: the figures go, refresh_success 0, the last success kept; then they come back", function()
    srv:faults { { status = 400, error_message = "refused for the spec", times = 1000 } }
    local parsed = await_scrape(function(p)
      return #exposition.find(p, "openai_usage_refresh_success", { endpoint = "images" }) == 1
        and exposition.value(p, "openai_usage_refresh_success", { endpoint = "images" }) == 0
    end, 30)
    assert.are.equal(0, #exposition.find(parsed, "openai_usage_images"))
    assert.are.equal(0, #exposition.find(parsed, "openai_usage_cost_usd"))
    local last = exposition.value(parsed, "openai_usage_last_success_timestamp_seconds", { endpoint = "images" })
    local refreshed = exposition.value(parsed, "openai_usage_refresh_timestamp_seconds", { endpoint = "images" })
    assert.is_true(last <= refreshed and refreshed - last < 60, ("%d %d"):format(last, refreshed))
    assert.truthy(web:error_log():find("openai-usage metrics: images: openai_usage: http 400: refused for the spec",
      1, true))
    srv:call("reset", {})
    parsed = await_scrape(function(p)
      return #exposition.find(p, "openai_usage_images") > 0
    end, 30)
    assert.are.equal(1, exposition.value(parsed, "openai_usage_refresh_success", { endpoint = "images" }))
  end)
end)
