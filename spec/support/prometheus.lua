-- Starts a real Prometheus (Debian's prometheus package) for a spec: its own
-- config scraping the given targets every second, its TSDB under a
-- temporary directory, its web API on a free port of 127.0.0.1; query()
-- asks its HTTP API (/api/v1/query) with the curl command-line tool.
local cjson = require "cjson"
local util = require "spec.support.util"
local nginx = require "spec.support.nginx"
local standin = require "spec.support.standin"

local M = {}
local Prometheus = {}
Prometheus.__index = Prometheus

local q = util.q

--- Whether the prometheus binary is installed (make deps installs it).
function M.available()
  return util.execute "command -v prometheus >/dev/null 2>&1"
end

local function self_pid()
  local f = assert(io.open "/proc/self/stat")
  local pid = f:read("*l"):match "^(%d+)"
  f:close()
  return pid
end

local function get(url)
  local out = util.capture(("env -u LD_PRELOAD curl -s --max-time 10 -w '\\n%%{http_code}' %s"):format(q(url)))
  local body, status = out:match "^(.*)\n(%d+)$"
  return tonumber(status), body
end

--- Starts Prometheus scraping targets (a list of "host:port") at path
-- (default /metrics) every second. Returns the server: url, dir, query(),
-- targets(), log(), stop().
function M.start(options)
  local self = setmetatable({ dir = util.tmpdir() }, Prometheus)
  local targets = {}
  for i, t in ipairs(options.targets) do
    targets[i] = ('"%s"'):format(t)
  end
  util.write(self.dir .. "/prometheus.yml", table.concat({
    "global:",
    "  scrape_interval: 1s",
    "  scrape_timeout: 1s",
    "scrape_configs:",
    "  - job_name: " .. (options.job or "openai_usage"),
    "    metrics_path: " .. (options.path or "/metrics"),
    "    static_configs:",
    "      - targets: [" .. table.concat(targets, ", ") .. "]",
    "",
  }, "\n"))
  for _ = 1, 10 do
    self.port = nginx.next_port()
    local cmd = ("cd %s && env -u LD_PRELOAD prometheus --config.file=prometheus.yml --storage.tsdb.path=data "
      .. "--web.listen-address=127.0.0.1:%d --log.level=warn >prometheus.log 2>&1 & echo $!"):format(q(self.dir),
      self.port)
    self.pid = util.capture(cmd):match "%d+"
    -- if the spec dies, Prometheus goes too (in a session of its own); the
    -- pid file goes when it is stopped, so a pid reused since is never killed
    util.write(self.dir .. "/prometheus.pid", self.pid)
    util.execute(("setsid sh -c 'while kill -0 %s 2>/dev/null; do sleep 1; done; "
      .. "test \"$(cat %s/prometheus.pid 2>/dev/null)\" = %s && kill %s' >/dev/null 2>&1 &"):format(self_pid(),
      self.dir, self.pid, self.pid))
    self.url = "http://127.0.0.1:" .. self.port
    for _ = 1, 300 do
      if get(self.url .. "/-/ready") == 200 then
        return self
      end
      if not standin.running(self.pid) then
        break
      end
      util.execute "sleep 0.05"
    end
    local log = self:log()
    self:stop_process()
    if not log:find("address already in use", 1, true) then
      self:stop()
      error("prometheus did not start:\n" .. log)
    end
  end
  self:stop()
  error "prometheus found no free port"
end

function Prometheus:log()
  return util.read_if(self.dir .. "/prometheus.log") or ""
end

--- An instant query through the HTTP API: the result list (each
-- { metric = {labels}, value = {time, "text"} }), or nil, the answer.
function Prometheus:query(promql)
  local out = util.capture(("env -u LD_PRELOAD curl -s --max-time 10 -G --data-urlencode %s %s"):format(
    q("query=" .. promql), q(self.url .. "/api/v1/query")))
  local ok, answer = pcall(cjson.decode, out)
  if not ok or answer.status ~= "success" then
    return nil, out
  end
  return answer.data.result
end

--- Polls query(promql) until it has at least one result (seconds, default
-- 30); the results, or an error with Prometheus' view of its targets.
function Prometheus:await(promql, seconds)
  for _ = 1, (seconds or 30) * 10 do
    local result = self:query(promql)
    if result and #result > 0 then
      return result
    end
    util.execute "sleep 0.1"
  end
  local _, targets = get(self.url .. "/api/v1/targets")
  error(("prometheus has no %s; its targets: %s\n%s"):format(promql, tostring(targets), self:log()))
end

--- The active targets, as /api/v1/targets gives them.
function Prometheus:targets()
  local _, body = get(self.url .. "/api/v1/targets")
  return cjson.decode(body).data.activeTargets
end

function Prometheus:stop_process()
  if self.pid then
    util.execute("kill " .. self.pid .. " 2>/dev/null")
    for _ = 1, 100 do
      if not standin.running(self.pid) then
        break
      end
      util.execute "sleep 0.05"
    end
    os.remove(self.dir .. "/prometheus.pid")
    self.pid = nil
  end
end

--- Stops Prometheus, waits for it and removes its directory; safe twice.
function Prometheus:stop()
  self:stop_process()
  if self.dir then
    util.rm_rf(self.dir)
    self.dir = nil
  end
end

Prometheus.__gc = Prometheus.stop
Prometheus.__close = Prometheus.stop

return M
