--- openai_usage.metrics.resty: /metrics inside nginx (lua-nginx-module). A
-- timer refreshes the figures on cosockets (openai_usage.transport.resty)
-- into a lua_shared_dict; a scrape only reads the dict, so it never waits
-- on the API and never blocks the worker.
--
--   lua_shared_dict openai_usage_metrics 4m;
--   init_worker_by_lua_block { require("openai_usage.metrics.resty").start { dict = "openai_usage_metrics" } }
--   location = /metrics { content_by_lua_block { require("openai_usage.metrics.resty").serve { ... } } }
--
-- Every worker runs the timer; a refresh is taken by one worker only: the
-- first to add the dict's "due" key (which lives one interval) refreshes,
-- and a "running" key keeps a slow refresh from overlapping the next.
local usage = require "openai_usage"
local metrics = require "openai_usage.metrics"
local resty = require "openai_usage.transport.resty"
local json = require "openai_usage.json"

local M = {}

local DUE, RUNNING, LAST_SUCCESS = "refresh:due", "refresh:running", "refresh:last_success"

local function log(level, ...)
  ngx.log(level, "openai-usage metrics: ", ...)
end

local function store(dict, key, value)
  local ok, err = dict:set(key, value)
  if not ok then
    log(ngx.ERR, "lua_shared_dict: cannot keep ", key, ": ", err)
  end
  return ok
end

-- One refresh: gather through a client on cosockets, render both formats,
-- keep them in the dict (with each endpoint's last success, for the next).
function M.refresh(options)
  local dict = ngx.shared[options.dict]
  local client_options = { transport = options.transport or resty }
  for k, v in pairs(options.client or {}) do
    client_options[k] = v
  end
  local client, err = usage.new(client_options)
  if not client then
    log(ngx.ERR, tostring(err))
    return nil, err
  end
  local previous = dict:get(LAST_SUCCESS)
  local snapshot, gerr = metrics.gather(client, {
    sources = options.sources, fields = options.fields, group_by = options.group_by,
    last_success = previous and usage.decode(previous) or nil,
  })
  client:close()
  if not snapshot then
    log(ngx.ERR, tostring(gerr))
    return nil, gerr
  end
  for _, s in ipairs(snapshot.sources) do
    if not s.ok then
      log(ngx.WARN, s.endpoint, ": ", s.error)
    end
  end
  local ok = true
  for _, format in ipairs(metrics.FORMATS) do
    ok = store(dict, "exposition:" .. format, (metrics.render(snapshot, format))) and ok
  end
  ok = store(dict, LAST_SUCCESS, json.encode(metrics.last_success(snapshot))) and ok
  return ok, snapshot
end

-- A timer's tick: refresh when this worker takes the interval's turn.
local function tick(premature, options)
  if premature then
    return
  end
  local dict = ngx.shared[options.dict]
  if not dict:add(DUE, true, options.interval * 0.9) then
    return -- another worker refreshed (or is refreshing) this interval
  end
  if not dict:add(RUNNING, ngx.worker.pid(), options.timeout) then
    return -- the last refresh is still on the wire
  end
  local ok, err = pcall(M.refresh, options)
  dict:delete(RUNNING)
  if not ok then
    log(ngx.ERR, tostring(err))
  end
end

--- Starts the refresh in this worker (call it from init_worker_by_lua):
-- options.dict (the lua_shared_dict's name, required), interval (seconds,
-- default 60), timeout (seconds a refresh may take before another may start,
-- default 600), client (options of usage.new; the transport is the resty
-- one), sources, fields, group_by (as openai_usage.metrics.gather's). The
-- first refresh starts at once.
function M.start(options)
  assert(type(options) == "table" and ngx.shared[options.dict], "metrics.resty: options.dict names no lua_shared_dict")
  local o = {}
  for k, v in pairs(options) do
    o[k] = v
  end
  o.interval = o.interval or 60
  o.timeout = o.timeout or 600
  assert(type(o.interval) == "number" and o.interval > 0, "metrics.resty: interval must be seconds above 0")
  local ok, err = ngx.timer.at(0, tick, o)
  if ok then
    ok, err = ngx.timer.every(o.interval, tick, o)
  end
  if not ok then
    log(ngx.ERR, "cannot start the refresh timer: ", err)
  end
  return ok, err
end

--- Answers a scrape from the dict alone (call it from content_by_lua):
-- the format the Accept header asks for (OpenMetrics for Prometheus, the
-- text format otherwise); 503 until a first refresh has finished.
function M.serve(options)
  local dict = ngx.shared[options.dict]
  local format = metrics.negotiate(ngx.var.http_accept)
  local body = dict:get("exposition:" .. format)
  if not body then
    ngx.status = 503
    ngx.header.content_type = "text/plain; charset=utf-8"
    ngx.say("openai-usage metrics: no refresh has finished yet")
    return
  end
  ngx.header.content_type = metrics.CONTENT_TYPE[format]
  ngx.print(body)
end

return M
