-- openai_usage: read the OpenAI organization Usage API from Lua.
-- The C core validates, encodes, transfers (libcurl) and decodes; this file
-- adds the environment's defaults and the lazy iterators.
local core = require "openai_usage.core"
local cache = require "openai_usage.cache"
local time = require "openai_usage.time"

local M = {
  version = core.version,
}

--- The version of the libcurl in use (loaded on first need).
function M.libcurl_version()
  return core.libcurl_version()
end

local methods = core.client_methods

-- Options the Lua layer keeps for itself, per client (weak: no leak).
local lua_options = setmetatable({}, { __mode = "k" })

local function env(name)
  local value = os.getenv(name)
  if value ~= nil and value ~= "" then
    return value
  end
end

-- Option -> environment variable used when the option is not given.
local ENV_DEFAULTS = {
  api_key = "OPENAI_ADMIN_KEY",
  base_url = "OPENAI_BASE_URL",
  organization = "OPENAI_ORG_ID",
  project = "OPENAI_PROJECT_ID",
}

--- max_pages (a client or walk option) checked: nil, a positive integer,
-- or nil and an invalid_argument error.
function M.check_max_pages(value)
  if value == nil then
    return nil
  end
  if type(value) ~= "number" or value < 1 or value ~= math.floor(value) or value >= 2 ^ 53 then
    return nil, core.error {
      kind = "invalid_argument", param = "max_pages",
      message = ("max_pages: %s is not a whole number of pages, at least 1"):format(tostring(value)),
    }
  end
  return math.tointeger and math.tointeger(value) or value
end

--- Creates a client. Options: api_key, base_url, organization, project,
-- timeout, connect_timeout, max_retries, user_agent, ca_file, array_format,
-- max_response_bytes, low_speed_limit, low_speed_time, retry_backoff,
-- retry_backoff_max, retry_after_max, prefetch, cache_dir, settle_after,
-- max_pages, transport (README lists them all).
-- @return client, or nil and an error table
function M.new(options)
  if options ~= nil and type(options) ~= "table" then
    return nil, core.error { kind = "invalid_argument", message = "options: expected a table, got a " .. type(options) }
  end
  local opts = {}
  for name, value in pairs(options or {}) do
    opts[name] = value
  end
  for name, variable in pairs(ENV_DEFAULTS) do
    if opts[name] == nil then
      opts[name] = env(variable)
    end
  end
  local prefetch = opts.prefetch
  if prefetch ~= nil and type(prefetch) ~= "boolean" then
    return nil, core.error {
      kind = "invalid_argument", param = "prefetch", message = "prefetch: expected a boolean, got a " .. type(prefetch),
    }
  end
  if opts.gc ~= nil and type(opts.gc) ~= "boolean" then
    return nil, core.error {
      kind = "invalid_argument", param = "gc", message = "gc: expected a boolean, got a " .. type(opts.gc),
    }
  end
  local settle_after
  if opts.settle_after ~= nil then
    local message
    settle_after, message = time.duration(opts.settle_after)
    if not settle_after then
      return nil, core.error {
        kind = "invalid_argument", param = "settle_after", message = "settle_after: " .. message,
      }
    end
  end
  local max_pages, pages_err = M.check_max_pages(opts.max_pages)
  if pages_err then
    return nil, pages_err
  end
  local cache_dir, gc = opts.cache_dir, opts.gc
  opts.prefetch, opts.cache_dir, opts.gc, opts.settle_after, opts.max_pages = nil, nil, nil, nil, nil
  local client, err = core.new(opts)
  if not client then
    return nil, err
  end
  -- a Lua transport runs in the caller's thread: no background prefetch
  local settings = {
    prefetch = prefetch ~= false and opts.transport == nil, transport = opts.transport, gc = gc,
    settle_after = settle_after, max_pages = max_pages,
  }
  if cache_dir ~= nil then
    -- pages of one organization, project and key never serve another's
    local identity = table.concat({ opts.organization or "", opts.project or "",
      cache.hash("key\0" .. tostring(opts.api_key)) }, "\n")
    local store, cache_err = cache.open(cache_dir, identity, core.decode)
    if not store then
      client:close()
      return nil, core.error { kind = "invalid_argument", param = "cache_dir", message = cache_err }
    end
    settings.cache = store
  end
  lua_options[client] = settings
  return client
end

--- Decodes a UsageResponse JSON text offline with the same decoder the client uses.
-- @return page table, or nil and an error table
function M.decode(text, max_depth)
  return core.decode(text, max_depth)
end

--- The query string a request would send, validated (nil, err when invalid).
function M.encode_query(endpoint, params, array_format)
  return core.encode_query(endpoint, params, array_format)
end

--- The rule table of an endpoint (parameters, enums, limits per bucket width),
-- or the list of endpoint names when called with none.
function M.rules(endpoint)
  return core.rules(endpoint)
end

M.error = core.error

--- s as text a terminal only displays: control bytes (C0, DEL, C1, bytes
-- that are not UTF-8) become \xHH or \u00HH, as tostring(err) shows them.
M.printable = core.printable

--- Monotonic wall-clock seconds (for timing; plain Lua has none).
M.clock = core.clock

local function raise(err)
  error(err, 0)
end

--- Where a walk goes after a page: the next_page cursor to request, or nil
-- at the end. A page that says has_more without a cursor, or a cursor in
-- seen (the set of cursors followed so far, updated here), gives nil and an
-- error: a walk never ends early or loops without saying so. budget
-- (optional, see page_budget) counts the page, and a walk that would go past
-- it gives nil and an error too. Shared by client:pages and
-- openai_usage.async.
function M.next_cursor(page, seen, budget)
  if budget then
    budget.pages = budget.pages + 1
  end
  if page.has_more ~= true then
    return nil
  end
  local cursor = page.next_page
  if type(cursor) ~= "string" or cursor == "" then
    return nil, core.error {
      kind = "api",
      message = "the page says has_more but gives no next_page cursor; the walk is incomplete",
    }
  end
  if seen[cursor] then
    return nil, core.error {
      kind = "api",
      -- not the cursor itself: a string from the response, unscrubbed here
      message = ("the API repeated the cursor of an earlier page (%d bytes); stopping instead of looping"):format(#cursor),
    }
  end
  local over = budget and M.over_budget(budget)
  if over then
    return nil, over
  end
  seen[cursor] = true
  return cursor
end

--- The pages a walk of query (times read) may take, counted by
-- next_cursor: at most max_pages when set, and never more than its range
-- can hold buckets plus two. A page holds at least one bucket (an empty
-- one included), so a server that keeps handing out cursors is stopped.
-- The range is [start_time, end_time or now); its buckets are the UTC
-- multiples of width it touches.
function M.page_budget(query, width, max_pages)
  return { start = query.start_time, stop = query.end_time, width = width, max_pages = max_pages, pages = 0 }
end

--- The error of a walk that has taken budget.pages pages and would take
-- one more, or nil while it may.
function M.over_budget(budget)
  local pages = budget.pages
  if budget.max_pages and pages >= budget.max_pages then
    return core.error {
      kind = "api",
      message = ("the walk reached max_pages (%d) and the API has more pages; the figures would be incomplete")
        :format(budget.max_pages),
    }
  end
  local start, width = budget.start, budget.width
  if type(start) == "number" and type(width) == "number" and width > 0 then
    local stop = type(budget.stop) == "number" and budget.stop or os.time()
    local buckets = math.max(0, math.ceil(stop / width) - math.floor(start / width))
    if pages >= buckets + 2 then
      return core.error {
        kind = "api",
        message = ("the API handed out %d pages for a range of at most %d buckets and still has more; stopping")
          :format(pages, buckets),
      }
    end
  end
end

local function copy(t)
  local c = {}
  for k, v in pairs(t or {}) do
    c[k] = v
  end
  return c
end

-- The time parameters of each endpoint (start_time, end_time), from the
-- rule table, looked up once.
local time_params = setmetatable({}, {
  __index = function(cache, endpoint)
    local names = {}
    local ok, rule = pcall(core.rules, endpoint)
    for _, p in ipairs(ok and rule and rule.params or {}) do
      if p.type == "time" then
        names[#names + 1] = p.name
      end
    end
    cache[endpoint] = names
    return names
  end,
})

-- Times may be given as the report layer reads them ("2024-11-01",
-- "2024-11-01T12:00:00Z", "7d", "90m"): they become Unix seconds here, so
-- the core sees integers. Returns params (a copy when something changed),
-- or nil, err.
local function with_times(endpoint, params)
  if type(params) ~= "table" or type(endpoint) ~= "string" then
    return params
  end
  local out = params
  for _, name in ipairs(time_params[endpoint]) do
    local v = params[name]
    if type(v) == "string" then
      local t, message = time.parse(v)
      if not t then
        return nil, core.error { kind = "invalid_argument", param = name, message = name .. ": " .. message }
      end
      if out == params then
        out = copy(params)
      end
      out[name] = t
    end
  end
  return out
end
M.with_times = with_times

-- A client with a transport (option transport) sends through
-- openai_usage.transport, in Lua so that the transport may yield; the C
-- core still validates, retries and decodes. Others go straight to libcurl.
local curl_request = methods.request
function methods:request(endpoint, params)
  local err
  params, err = with_times(endpoint, params)
  if err then
    return nil, err
  end
  local transport = (lua_options[self] or {}).transport
  if transport then
    return require("openai_usage.transport").request(self, transport, endpoint, params)
  end
  return curl_request(self, endpoint, params)
end

local core_url, core_prefetch = methods.url, methods.prefetch

function methods:url(endpoint, params)
  local err
  params, err = with_times(endpoint, params)
  if err then
    return nil, err
  end
  return core_url(self, endpoint, params)
end

function methods:prefetch(endpoint, params)
  local err
  params, err = with_times(endpoint, params)
  if err then
    return nil, err
  end
  return core_prefetch(self, endpoint, params)
end

--- One page of any usage endpoint.
function methods:usage(endpoint, params)
  return self:request(endpoint, params)
end

-- A shortcut per endpoint of the rule table: client:images(params),
-- client:completions(params), client:costs(params), ...
for _, endpoint in ipairs(core.rules()) do
  if methods[endpoint] == nil then
    methods[endpoint] = function(self, params)
      return self:request(endpoint, params)
    end
  end
end

-- Closes a walk left early (Lua 5.4 generic for): stops its prefetch.
local walk_closer = {
  __close = function(walk)
    walk.close()
  end,
}

-- Whether the host's collector runs. Lua 5.1 and LuaJIT cannot tell (no
-- "isrunning"): a host there that stops its collector passes gc = false.
local function collector_running()
  local ok, running = pcall(collectgarbage, "isrunning")
  return not ok or running
end

-- Keeps a walk's garbage under half a page (in a program whose own data is
-- not much larger than a page). Lua's collector starts a cycle
-- when the heap has doubled since the last one and frees only what was
-- garbage when the cycle began, so a lazy walk's heap rises to several
-- pages (bench/paging.lua). Before each page is fetched, while the prefetch
-- is still on the wire, this runs a full collection when the garbage made
-- since the last one is at least half the largest page and at least half
-- the rest of the program's live data: with a program much larger than a
-- page, about as often as the collector would start a cycle of its own. A
-- stopped collector is left alone. Option gc = false (client or walk)
-- turns this off.
local function page_tidier()
  local count = collectgarbage
  local page, rest = 0, count "count"
  local live = rest
  return {
    -- returns the heap before the page is fetched (KiB)
    before_page = function()
      local heap = count "count"
      local garbage = heap - live
      if page > 0 and garbage >= page / 2 and garbage >= rest / 2 and collector_running() then
        count "collect"
        heap = count "count"
        -- live now holds the loop's current page and the rest
        live, rest = heap, heap - page
        if rest < 0 then
          rest = 0
        end
      end
      return heap
    end,
    -- the page just built (or an error table) cost the heap what it grew by
    after_page = function(before)
      local grown = count "count" - before
      if grown > page then
        page = grown
      end
    end,
  }
end

-- One walk from query, following next_page; store (optional) is the page
-- cache, rule what settles a page there (cache.settled), budget the walk's
-- page budget (page_budget). Returns next_page, close.
local function walk_pages(self, endpoint, query, prefetch, store, rule, budget, tidy)
  local seen = {}
  local finished, pending, token = false, nil, nil
  if query.page ~= nil then
    seen[query.page] = true
  end
  -- a settled page on disk is read instead of requested
  local function cached(q)
    return store and store:get(assert(self:url(endpoint, q)), rule)
  end
  local function next_page()
    if pending then
      local err = pending
      pending, finished = nil, true
      raise(err)
    end
    if finished then
      return nil
    end
    local page, err, from_disk = nil, nil, false
    local before = tidy and tidy.before_page()
    if token then
      page, err = self:collect(token)
      token = nil
      if page == false then -- the handle was used for another request meanwhile
        page, err = self:request(endpoint, query)
      end
    else
      page = cached(query)
      from_disk = page ~= nil
      if not page then
        page, err = self:request(endpoint, query)
      end
    end
    if page and tidy then
      tidy.after_page(before)
    end
    if page and store and not from_disk then
      store:put(assert(self:url(endpoint, query)), page, os.time(), rule)
    end
    if not page then
      finished = true
      raise(err)
    end
    local cursor, cursor_err = M.next_cursor(page, seen, budget)
    if cursor_err then
      pending = cursor_err
    elseif not cursor then
      finished = true
    else
      query.page = cursor
      if prefetch and not cached(query) then
        token = self:prefetch(endpoint, query)
      end
    end
    return page
  end
  local function close()
    if token then
      self:cancel()
      token = nil
    end
    finished = true
  end
  return next_page, close
end

-- How a walk of a query (times already read) goes, for pages() and for
-- openai_usage.async: plan.segments, the queries to walk in turn (one; or,
-- with a cache_dir, the settled buckets then the unsettled ones), of which
-- the first plan.cacheable may be read from and stored in plan.store (nil
-- without a cache_dir) under plan.rule (cache.settled: width, settle
-- window), and plan.budget, the page budget of the whole walk. options:
-- the walk's own (max_pages); nil, err when bad.
function methods:_walk_plan(endpoint, timed, options)
  local settings = lua_options[self] or {}
  local max_pages, err = M.check_max_pages(options and options.max_pages)
  if err then
    return nil, err
  end
  local query = copy(timed)
  local plan = { segments = { query }, cacheable = 0, store = settings.cache }
  local width
  if self:url(endpoint, query) then -- (a bad query fails when sent, with no plan)
    width = time.width(query.bucket_width or core.rules(endpoint).default_width)
  end
  plan.budget = M.page_budget(query, width, max_pages or settings.max_pages)
  if plan.store and width then
    local now = os.time()
    local settle_after = cache.settle_after(endpoint, settings.settle_after)
    plan.rule = { width = width, settle_after = settle_after }
    plan.segments, plan.cacheable = cache.segments(query, width, now, settle_after)
  end
  return plan
end

--- The store and rule (cache.settled) of segment i of a walk plan
-- (client:_walk_plan): nil for an unsettled one. Shared by client:pages and
-- openai_usage.async.
function M.segment_store(plan, i)
  if i > plan.cacheable then
    return nil
  end
  local segment = plan.segments[i]
  return plan.store, { width = plan.rule.width, settle_after = plan.rule.settle_after, query = segment }
end

--- Iterates over pages, requesting the next one only when asked for it.
-- While the caller works on a page, the next one is already on its way
-- (a prefetch on a background thread; options.prefetch = false, here or on
-- the client, turns that off). Raises the error table on failure, on a
-- cursor that repeats, on a page that says has_more without a cursor and
-- on a walk past its page budget (max_pages, or more pages than its range
-- holds buckets): a walk never ends early, or runs on, without saying so.
-- With a cache_dir, the range is walked in two parts: the settled buckets
-- (read from disk when cached) and the unsettled ones (always requested).
function methods:pages(endpoint, params, options)
  if params ~= nil and type(params) ~= "table" then
    raise(core.error { kind = "invalid_argument", message = "params: expected a table, got a " .. type(params) })
  end
  local settings = lua_options[self] or {}
  local prefetch = settings.prefetch ~= false
  if options and options.prefetch ~= nil then
    prefetch = options.prefetch
  end
  -- a relative time ("7d") is read once, so every page asks the same range
  local timed, time_err = with_times(endpoint, params)
  if time_err then
    raise(time_err)
  end
  local plan, plan_err = self:_walk_plan(endpoint, timed, options)
  if not plan then
    raise(plan_err)
  end
  local segments = plan.segments
  local gc = settings.gc ~= false
  if options and options.gc ~= nil then
    if type(options.gc) ~= "boolean" then
      raise(core.error {
        kind = "invalid_argument", param = "gc", message = "gc: expected a boolean, got a " .. type(options.gc),
      })
    end
    gc = options.gc
  end
  local index = 1
  local tidy = gc and page_tidier() or nil
  local function walk_segment(i)
    local store, rule = M.segment_store(plan, i)
    return walk_pages(self, endpoint, segments[i], prefetch, store, rule, plan.budget, tidy)
  end
  local next_in, close_in = walk_segment(1)
  local function next_page()
    while true do
      local page = next_in()
      if page ~= nil or index >= #segments then
        return page
      end
      index = index + 1
      next_in, close_in = walk_segment(index)
    end
  end
  local walk = setmetatable({
    close = function()
      close_in()
      index = #segments
    end,
  }, walk_closer)
  return next_page, nil, nil, walk
end

-- Walks the list t[field] of each item the outer iterator yields: yields
-- element, item; visit(element, item) may annotate the element first.
local function flatten(next_outer, field, visit)
  local outer, index = nil, 0
  return function()
    while true do
      local list = outer and outer[field]
      if list and index < #list then
        index = index + 1
        local element = list[index]
        if visit then
          visit(element, outer)
        end
        return element, outer
      end
      outer, index = next_outer(), 0
      if outer == nil then
        return nil
      end
    end
  end
end

--- Iterates over time buckets across pages; yields bucket, page.
function methods:buckets(endpoint, params, options)
  local next_page, _, _, walk = self:pages(endpoint, params, options)
  return flatten(next_page, "data"), nil, nil, walk
end

local function stamp(row, bucket)
  if type(row) == "table" then
    row.start_time, row.end_time = bucket.start_time, bucket.end_time
  end
end

--- Iterates over result rows across buckets and pages; each row also
-- carries its bucket's start_time and end_time. Yields row, bucket.
function methods:results(endpoint, params, options)
  local next_bucket, _, _, walk = self:buckets(endpoint, params, options)
  return flatten(next_bucket, "results", stamp), nil, nil, walk
end

return M
