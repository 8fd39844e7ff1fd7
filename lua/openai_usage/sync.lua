--- Sync: fills a history store (openai_usage.store) from the API through a
-- client, endpoint by endpoint. The first run backfills from `since`; a
-- later run asks only from the oldest unsettled bucket onward (the sync
-- state's settled_until: buckets that ended the settle window ago no longer
-- change), so a re-run minutes later sends a request or two an endpoint.
-- Every dimension the endpoint has is grouped by, so any report can be
-- computed from the store. Each page is one transaction with the sync
-- state in it: a run killed midway leaves whole pages, and the next run
-- goes on from them. Rate limits are paced by the client's retry rules
-- (Retry-After); when those give up, the sync stops with what it
-- committed and says so, and the next run resumes.
--   local summaries, err = store:sync(client, { endpoints = "all", width = "1h", since = "90d" })
local core = require "openai_usage.core"
local cache = require "openai_usage.cache"
local time = require "openai_usage.time"
local errors = require "openai_usage.errors"
local store_module = require "openai_usage.store"

local M = {}

local floor = math.floor

local function fail(message)
  return nil, errors.new { kind = "invalid_argument", message = message }
end

--- The endpoints a sync can fill (every endpoint of the rule table that
-- the store has a table for), sorted.
function M.endpoints()
  local known, out = {}, {}
  for _, name in ipairs(core.rules()) do
    known[name] = true
  end
  for _, name in ipairs(store_module.endpoints()) do
    if known[name] then
      out[#out + 1] = name
    end
  end
  return out
end

-- "all", "images,costs" or a list -> a checked list of endpoint names.
local function endpoint_list(value)
  local all = M.endpoints()
  if value == nil or value == "all" then
    return all
  end
  local list = value
  if type(value) == "string" then
    list = {}
    for name in value:gmatch "[^,%s]+" do
      list[#list + 1] = name
    end
  end
  if type(list) ~= "table" or #list == 0 then
    return fail "endpoints: expected a list of endpoints, or all"
  end
  local known = {}
  for _, name in ipairs(all) do
    known[name] = true
  end
  for _, name in ipairs(list) do
    if not known[name] then
      return fail(("endpoints: %s is not one of %s, or all"):format(tostring(name), table.concat(all, ", ")))
    end
  end
  return list
end

-- An endpoint's rule facts for a sync: the width (the one asked for when
-- the endpoint has it, else its default: costs are daily only), that
-- width's seconds and largest page, and every group_by value.
local function plan_of(endpoint, width)
  local rule = core.rules(endpoint)
  local chosen
  for _, w in ipairs(rule.widths) do
    if w.width == width then
      chosen = w
    end
  end
  if not chosen then
    for _, w in ipairs(rule.widths) do
      if w.width == rule.default_width then
        chosen = w
      end
    end
  end
  local group_by = {}
  for _, p in ipairs(rule.params) do
    if p.name == "group_by" then
      group_by = p.values
    end
  end
  return { width = chosen.width, seconds = assert(time.width(chosen.width)), limit = chosen.max_limit,
    group_by = group_by }
end

--- Syncs one endpoint: walks its pages from the start the sync state gives
-- and stores each. Returns the summary { endpoint, width, requests,
-- buckets, rows, seconds, start_time, end_time, err } (err: why it stopped
-- early, with everything before it committed).
function M.endpoint(store, client, endpoint, opts)
  local started = core.clock()
  local plan = plan_of(endpoint, opts.width)
  local now = opts.now
  local organization = opts.organization
  local settle_after = cache.settle_after(endpoint, opts.settle_after)
  local summary = { endpoint = endpoint, width = plan.width, requests = 0, buckets = 0, rows = 0,
    organization = organization }
  local stop = opts.until_time or now
  local since = floor(opts.since_time / plan.seconds) * plan.seconds
  local state, err = store:state(organization, endpoint, plan.width)
  if err then
    summary.err = err
    return summary
  end
  local start = since
  if state and state.first_time <= since then
    start = state.settled_until
  end
  summary.start_time, summary.end_time = start, stop
  if start >= stop then
    summary.seconds = core.clock() - started
    return summary
  end
  local params = { start_time = start, end_time = stop, bucket_width = plan.width, limit = plan.limit,
    group_by = plan.group_by }
  local ok, walk_err = pcall(function()
    local next_page, _, _, closer = client:pages(endpoint, params)
    local done, failure = pcall(function()
      for page in next_page do
        summary.requests = summary.requests + 1
        local put, put_err = store:put_page(endpoint, page, { organization = organization, width = plan.width,
          now = now, settle_after = settle_after })
        if not put then
          error(put_err, 0)
        end
        summary.buckets = summary.buckets + put.buckets
        summary.rows = summary.rows + put.rows
        if opts.on_page then
          opts.on_page(summary)
        end
      end
    end)
    closer.close()
    if not done then
      error(failure, 0)
    end
  end)
  if not ok then
    summary.err = walk_err
  end
  summary.seconds = core.clock() - started
  return summary
end

--- Syncs endpoints into store through client. opts: endpoints ("all",
-- default; "images,costs" or a list), width ("1d" default; an endpoint
-- without it uses its own default), since (the first run's start: Unix
-- seconds, "2024-08-01" or "90d", default 90d), until (default now: a past
-- range stays fixed), now (Unix seconds, default os.time()), organization
-- (default the client's, else "default"), settle_after (seconds; default
-- the client's, else the endpoint's settle window), on_page(summary) and
-- on_endpoint(summary) callbacks. Returns the list of summaries (one per
-- endpoint, stopping after the first that failed), or nil, err for bad
-- options. A summary with err stopped early; its committed pages stay.
function M.run(store, client, opts)
  opts = opts or {}
  local list, err = endpoint_list(opts.endpoints)
  if not list then
    return nil, err
  end
  local now = opts.now or os.time()
  local since, until_time, message
  since, message = time.parse(opts.since or "90d", now)
  if not since then
    return fail("since: " .. message)
  end
  if opts["until"] ~= nil then
    until_time, message = time.parse(opts["until"], now)
    if not until_time then
      return fail("until: " .. message)
    end
    if until_time <= since then
      return fail("until: the range ends before it begins (until <= since)")
    end
  end
  local width = opts.width or "1d"
  if not time.width(width) or not ({ ["1m"] = true, ["1h"] = true, ["1d"] = true })[width] then
    return fail(("width: %s is not one of 1m, 1h, 1d"):format(tostring(width)))
  end
  local settle_after = opts.settle_after
  if settle_after == nil then
    settle_after = client.settle_after
  end
  local run_opts = { width = width, now = now, since_time = since, until_time = until_time,
    organization = opts.organization or client.organization or "default", settle_after = settle_after,
    on_page = opts.on_page }
  local summaries = {}
  for _, endpoint in ipairs(list) do
    local summary = M.endpoint(store, client, endpoint, run_opts)
    summaries[#summaries + 1] = summary
    if opts.on_endpoint then
      opts.on_endpoint(summary)
    end
    if summary.err then
      break
    end
  end
  return summaries
end

return M
