--- openai_usage.transport.store: a Lua transport that answers a client's
-- requests from the history store (openai_usage.store) instead of the API,
-- so that every report, walk and command reads a store exactly as it reads
-- the API: the same validation of what is asked (the C core builds the
-- request), the same decoding and checks of what comes back.
--
--   local store = require "openai_usage.store"
--   local client = assert(store.client("usage.db", { on_note = print }))
--   for row in client:results("images", { start_time = "2024-11-01", group_by = { "model" } }) do ... end
--
-- A report's figures must be the API's or none: a range of buckets the
-- store does not hold whole (never synced, or synced only in part) is an
-- error naming what it holds, never a shorter total; the buckets the store
-- holds that were not yet settled when they were synced are said once per
-- query through on_note (their figures may since have been revised).
-- The store answers whole buckets only: a start or end off the width's
-- boundary (UTC) is an error, since the API's first bucket would then
-- differ from any the store holds.
local json = require "openai_usage.json"
local time = require "openai_usage.time"

local M = {}

local function unescape(s)
  return (s:gsub("+", " "):gsub("%%(%x%x)", function(h)
    return string.char(tonumber(h, 16))
  end))
end

-- The endpoint of each API path, from the rule table.
local function endpoint_paths()
  local usage = require "openai_usage"
  local by_path = {}
  for _, name in ipairs(usage.rules()) do
    local rule = usage.rules(name)
    if rule and rule.path and rule.fields then
      by_path[rule.path] = rule
    end
  end
  return by_path
end

-- The query string of a request read back into parameters, typed by the
-- endpoint's rule (lists from name[]=..., times and limits as integers,
-- booleans as booleans).
local function read_query(rule, query)
  local types = {}
  for _, p in ipairs(rule.params) do
    types[p.name] = p.type
  end
  local params = {}
  for pair in (query or ""):gmatch "[^&]+" do
    local k, v = pair:match "^([^=]*)=?(.*)$"
    k, v = unescape(k), unescape(v)
    local name = k:match "^(.-)%[%]$"
    if name then
      params[name] = params[name] or {}
      table.insert(params[name], v)
    elseif types[k] == "time" or types[k] == "limit" or types[k] == "integer" then
      params[k] = math.tointeger and math.tointeger(tonumber(v)) or tonumber(v)
    elseif types[k] == "boolean" then
      params[k] = v == "true"
    else
      params[k] = v
    end
  end
  return params
end

-- An answer the client reads as the API's error envelope.
local function refuse(status, message, code)
  return {
    status = status,
    headers = { ["content-type"] = "application/json" },
    body = json.encode { error = { message = message, type = "invalid_request_error", code = code } },
  }
end

-- The JSON of a result: its members in any order (the decoder keeps none),
-- strings and numbers as json.lua writes them, objects (costs' amount)
-- through json.encode.
local function result_json(result, parts, strings)
  local n = 0
  for k, v in pairs(result) do
    local t = type(v)
    local value
    if t == "number" then
      value = json.number(v) or "null"
    elseif t == "string" then
      value = strings[v]
    else
      value = json.encode(v)
    end
    n = n + 1
    parts[n] = strings[k] .. ":" .. value
  end
  return "{" .. table.concat(parts, ",", 1, n) .. "}"
end

-- The JSON of a page: written here rather than by json.encode, which
-- sorts every object's keys (three times the time of the query itself).
local function page_body(page)
  local buckets, parts = {}, {}
  -- the same ids, models and field names recur in every bucket: each
  -- string's JSON is worked out once a page
  local strings = setmetatable({}, { __index = function(t, k)
    local v = json.string(k)
    t[k] = v
    return v
  end })
  for i, bucket in ipairs(page.data) do
    local results = {}
    for j, result in ipairs(bucket.results) do
      results[j] = result_json(result, parts, strings)
    end
    buckets[i] = ('{"object":"bucket","start_time":%s,"end_time":%s,"results":[%s]}'):format(
      json.number(bucket.start_time), json.number(bucket.end_time), table.concat(results, ","))
  end
  return '{"object":"page","has_more":false,"next_page":null,"data":[' .. table.concat(buckets, ",") .. "]}"
end

local function span(times, seconds)
  if #times == 0 then
    return ""
  end
  local first, last = times[1], times[#times] + seconds
  return ("%s to %s"):format(time.iso(first), time.iso(last))
end

--- A transport over s (an open store). opts.now: the clock (default
-- os.time) for a query without end_time; opts.organization: the store's
-- organization (or a list) the client reads (default "default");
-- opts.on_note(text): told of unsettled buckets.
function M.new(s, opts)
  opts = opts or {}
  local rules = endpoint_paths()
  local function answer(req)
    local path, query = req.url:match "^%a[%w+.-]*://[^/]*(/[^?#]*)%??([^#]*)"
    if not path then
      return refuse(400, "the history store cannot read the URL " .. tostring(req.url), "store_url")
    end
    local rule = rules[path:gsub("^/v1", "", 1)]
    if not rule then
      return refuse(404, ("the history store holds no %s"):format(path), "store_no_endpoint")
    end
    local endpoint = rule.name
    local params = read_query(rule, query)
    local width = params.bucket_width or rule.default_width or "1d"
    local seconds = time.width(width) -- the C core checked it against the rule table
    local now = (opts.now or os.time)()
    params.bucket_width = width
    params.organization = opts.organization
    params.limit, params.page = nil, nil
    -- up to now (no end_time, one past the start of the bucket now is in,
    -- or in the future): through the bucket now is in, as the API answers
    local current_end = now - now % seconds + seconds
    if params.end_time == nil or params.end_time > current_end
      or (params.end_time % seconds ~= 0 and params.end_time > current_end - seconds) then
      params.end_time = current_end
    end
    for _, t in ipairs { "start_time", "end_time" } do
      if type(params[t]) ~= "number" or params[t] % seconds ~= 0 then
        return refuse(400, ("the history store answers whole %s buckets: %s %s is not on a %s boundary (UTC)")
          :format(width, t, params[t] and time.iso(params[t]) or "(none)", width), "store_unaligned")
      end
    end
    local cover, err = s:coverage(endpoint, params)
    if not cover then
      return refuse(400, tostring(err and err.message or err), "store_error")
    end
    if #cover.missing > 0 then
      local state = s:state(opts.organization or "default", endpoint, width)
      local holds = state and ("it holds %s %s from %s to %s"):format(endpoint, width, state.first_iso,
        state.synced_iso) or ("it holds no %s %s buckets"):format(endpoint, width)
      return refuse(404, ("the history store does not hold %d of the %d %s %s buckets asked for (%s; %s); "
        .. "run openai-usage sync for that range and width"):format(#cover.missing, cover.expected, endpoint,
        width, span(cover.missing, seconds), holds), "store_range_missing")
    end
    if #cover.unsettled > 0 and opts.on_note then
      opts.on_note(("%d %s %s bucket(s) (%s) were not yet settled when synced: the API may since have revised them")
        :format(#cover.unsettled, endpoint, width, span(cover.unsettled, seconds)))
    end
    local page, perr = s:page(endpoint, params)
    if not page then
      return refuse(400, tostring(perr and perr.message or perr), "store_error")
    end
    return { status = 200, headers = { ["content-type"] = "application/json" }, body = page_body(page) }
  end
  return {
    request = function(req)
      local a = answer(req)
      return a.status, a.headers, a.body
    end,
    sleep = function() end,
    gzip = false,
  }
end

return M
