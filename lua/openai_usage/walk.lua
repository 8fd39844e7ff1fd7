--- One walk over the pages of a query, as a state machine that every driver
-- steps: the blocking iterators here (client:pages, buckets, results) do
-- each request themselves, the event-loop walk (openai_usage.async) polls
-- a transfer. The machine keeps what a walk must get right: the cursors
-- followed (a repeat is an error, never a loop), the page budget (every
-- walk ends), the page cache (each page keyed once, by its URL, read from
-- and stored to disk when its segment is settled) and the segments of a
-- cached walk (settled buckets, then unsettled ones). It is also the one
-- place that stamps result rows with their bucket's times.
--
--   local walk = assert(walk.new(client, "images", params))
--   repeat
--     local need, x = walk:want()
--     if need == "cached" then         -- x: the page, read from the cache
--       page = walk:feed(x)
--     elseif need == "request" then    -- x: the query; get its page
--       page = walk:feed(request(x))   -- (false: it was displaced, ask again)
--     end
--   until need == "done"               -- x: the error, or nil
local core = require "openai_usage.core"
local cache = require "openai_usage.cache"
local time = require "openai_usage.time"
local protocol = require "openai_usage.protocol"

-- the one error constructor (openai_usage.error)
local usage_error = core.error

local M = {}

local function raise(err)
  error(err, 0)
end

local function copy(t)
  local c = {}
  for k, v in pairs(t or {}) do
    c[k] = v
  end
  return c
end

--- max_pages (a client or walk option) checked: nil, a positive integer,
-- or nil and an invalid_argument error.
function M.check_max_pages(value)
  if value == nil then
    return nil
  end
  if type(value) ~= "number" or value < 1 or value ~= math.floor(value) or value >= 2 ^ 53 then
    return nil, usage_error {
      kind = "invalid_argument", param = "max_pages",
      message = ("max_pages: %s is not a whole number of pages, at least 1"):format(tostring(value)),
    }
  end
  return math.tointeger and math.tointeger(value) or value
end

-- The time parameters of each endpoint (start_time, end_time), from the
-- rule table, looked up once.
local time_params = setmetatable({}, {
  __index = function(names_of, endpoint)
    local names = {}
    local ok, rule = pcall(core.rules, endpoint)
    for _, p in ipairs(ok and rule and rule.params or {}) do
      if p.type == "time" then
        names[#names + 1] = p.name
      end
    end
    names_of[endpoint] = names
    return names
  end,
})

--- Times as the report layer reads them ("2024-11-01",
-- "2024-11-01T12:00:00Z", "7d", "90m") made Unix seconds, so the core sees
-- integers; a walk reads them once, so every page asks the same range.
-- Returns params (a copy when something changed), or nil, err.
function M.with_times(endpoint, params)
  if type(params) ~= "table" or type(endpoint) ~= "string" then
    return params
  end
  local out = params
  for _, name in ipairs(time_params[endpoint]) do
    local v = params[name]
    if type(v) == "string" then
      local t, message = time.parse(v)
      if not t then
        return nil, usage_error { kind = "invalid_argument", param = name, message = name .. ": " .. message }
      end
      if out == params then
        out = copy(params)
      end
      out[name] = t
    end
  end
  return out
end

--- The page budget of a walk of query (times read): at most max_pages
-- when set, and never more than its range can hold buckets plus two. A page
-- holds at least one bucket (an empty one included), so a server that keeps
-- handing out cursors is stopped. The range is [start_time, end_time or
-- now); its buckets are the UTC multiples of width it touches.
function M.page_budget(query, width, max_pages)
  return { start = query.start_time, stop = query.end_time, width = width, max_pages = max_pages, pages = 0 }
end

--- The error of a walk that has taken budget.pages pages and would take
-- one more, or nil while it may.
function M.over_budget(budget)
  local pages = budget.pages
  if budget.max_pages and pages >= budget.max_pages then
    return usage_error {
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
      return usage_error {
        kind = "api",
        message = ("the API handed out %d pages for a range of at most %d buckets and still has more; stopping")
          :format(pages, buckets),
      }
    end
  end
end

--- Where a walk goes after a page: the next_page cursor to request, or nil
-- at the end. A page that says has_more without a cursor, or a cursor in
-- seen (the set of cursors followed so far, updated here), gives nil and an
-- error: a walk never ends early or loops without saying so. budget
-- (page_budget) counts the page, and a walk that would go past it gives nil
-- and an error too.
function M.next_cursor(page, seen, budget)
  budget.pages = budget.pages + 1
  if page.has_more ~= true then
    return nil
  end
  local cursor = page.next_page
  if type(cursor) ~= "string" or cursor == "" then
    return nil, usage_error {
      kind = "api",
      message = "the page says has_more but gives no next_page cursor; the walk is incomplete",
    }
  end
  if seen[cursor] then
    return nil, usage_error {
      kind = "api",
      -- not the cursor itself: a string from the response, unscrubbed here
      message = ("the API repeated the cursor of an earlier page (%d bytes); stopping instead of looping")
        :format(#cursor),
    }
  end
  local over = M.over_budget(budget)
  if over then
    return nil, over
  end
  seen[cursor] = true
  return cursor
end

local Walk = {}
Walk.__index = Walk
M.Walk = Walk

-- Moves the walk to segment i, from its first page.
local function enter(walk, i)
  walk.index, walk.query, walk.seen = i, walk.segments[i], {}
  if walk.query.page ~= nil then
    walk.seen[walk.query.page] = true
  end
  -- only a settled segment has a store
  walk.store, walk.rule = nil, nil
  if i <= walk.cacheable then
    walk.store = walk.client.cache
    walk.rule = { width = walk.width, settle_after = walk.settle_after, query = walk.query }
  end
end

-- The query now names its page: the URL keys that page in the cache, once.
local function at_page(walk)
  walk.url = walk.store and walk.client:url(walk.endpoint, walk.query)
  walk.cached_page = nil -- not looked up yet
end

--- A walk of endpoint for params, on client (an openai_usage client; its
-- settings max_pages, cache, settle_after apply). options: the walk's own
-- max_pages. Nothing is sent. With a cache, the range is walked in two
-- segments (cache.segments): the settled buckets, read from disk when
-- cached and stored when not, then the unsettled ones, always requested.
-- @return walk, or nil and an error table (bad arguments)
function M.new(client, endpoint, params, options)
  if params ~= nil and type(params) ~= "table" then
    return nil, usage_error { kind = "invalid_argument", message = "params: expected a table, got a " .. type(params) }
  end
  local timed, err = M.with_times(endpoint, params)
  if err then
    return nil, err
  end
  local max_pages
  max_pages, err = M.check_max_pages(options and options.max_pages)
  if err then
    return nil, err
  end
  local query = copy(timed)
  local walk = setmetatable({
    client = client, endpoint = endpoint,
    segments = { query }, cacheable = 0,
    pages = 0, -- pages handed out so far
    cached = 0, -- of which read from the cache
    done = false,
  }, Walk)
  if client:url(endpoint, query) then -- (a bad query fails when sent)
    walk.width = time.width(query.bucket_width or core.rules(endpoint).default_width)
  end
  walk.budget = M.page_budget(query, walk.width, max_pages or client.max_pages)
  if client.cache and walk.width then
    walk.settle_after = cache.settle_after(endpoint, client.settle_after)
    walk.segments, walk.cacheable = cache.segments(query, walk.width, os.time(), walk.settle_after)
  end
  enter(walk, 1)
  at_page(walk)
  return walk
end

--- What the walk needs next: "request", query (the page of query: get it
-- and feed it), "cached", page (the page of query, read from the cache:
-- feed it), or "done", err (the walk is over; err when it failed). Asking
-- again before feeding gives the same answer: the cache is read once.
function Walk:want()
  if self.done then
    return "done", self.err
  end
  if self.cached_page == nil then
    self.cached_page = self.url and self.store:get(self.url, self.rule) or false
  end
  if self.cached_page then
    return "cached", self.cached_page
  end
  return "request", self.query
end

--- Ends the walk (err: why it failed, or nil when it was stopped or done).
function Walk:finish(err)
  self.done, self.err, self.cached_page = true, err, nil
end

--- Advances the walk with what the driver got for the page it wanted: the
-- page (which it returns, to be handed out), nil and an error (the walk
-- fails: nil, err), or false (the transfer was displaced by another request
-- on the client: nothing changes, the walk wants that page again; nil).
-- A page that ends the walk with an error (a repeated or missing cursor,
-- the page budget) is still returned; the walk is then done with that err.
function Walk:feed(page, err)
  if self.done then
    return nil, self.err
  end
  if page == false then
    return nil
  end
  if not page then
    self:finish(err)
    return nil, err
  end
  if page == self.cached_page then
    self.cached = self.cached + 1
  elseif self.url then
    self.store:put(self.url, page, os.time(), self.rule)
  end
  self.pages = self.pages + 1
  local cursor, cursor_err = M.next_cursor(page, self.seen, self.budget)
  if cursor_err then
    self:finish(cursor_err)
  elseif cursor then
    self.query.page = cursor
    at_page(self)
  elseif self.index < #self.segments then
    -- the settled buckets are done: on to the unsettled ones, never cached
    enter(self, self.index + 1)
    at_page(self)
  else
    self:finish()
  end
  return page
end

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

-- Closes a walk left early (Lua 5.4 generic for): stops its prefetch.
local closer = {
  __close = function(walk)
    walk.close()
  end,
}

-- A walk option that must be a boolean: the option, else the client's
-- setting; raises when it is not a boolean.
local function flag(options, name, default)
  local value = options and options[name]
  if value == nil then
    return default
  end
  if type(value) ~= "boolean" then
    raise(usage_error {
      kind = "invalid_argument", param = name, message = name .. ": expected a boolean, got a " .. type(value),
    })
  end
  return value
end

--- The blocking driver: iterates over the pages of a walk (M.new's
-- arguments), requesting each when asked for it. With prefetch (the
-- client's setting, or options.prefetch), the next page is on its way on
-- the client's background thread while the caller works on this one; with
-- gc (likewise), the walk's garbage is kept under half a page
-- (page_tidier). Raises the error table on failure (once; then the walk
-- is over). Returns the iterator, nil, nil and a to-be-closed value.
function M.pages(client, endpoint, params, options)
  local walk, err = M.new(client, endpoint, params, options)
  if not walk then
    raise(err)
  end
  local prefetch = client.prefetch ~= false
  if options and options.prefetch ~= nil then
    prefetch = options.prefetch
  end
  -- a Lua transport runs in the caller's thread: never in the background
  prefetch = prefetch and not client.transport
  local tidy = flag(options, "gc", client.gc ~= false) and page_tidier() or nil
  local handle = protocol.of(client)
  local token, raised
  local function next_page()
    while true do
      if walk.done then
        if walk.err and not raised then
          raised = true
          raise(walk.err)
        end
        return nil
      end
      local before = tidy and tidy.before_page()
      local need, got = walk:want()
      local page, page_err = got, nil
      if need == "request" then
        if token then
          page, page_err = handle:collect(token)
          token = nil
        else
          page, page_err = protocol.request(client, endpoint, got)
        end
      end
      if page and tidy then
        tidy.after_page(before)
      end
      page, page_err = walk:feed(page, page_err)
      if page then
        if prefetch and walk:want() == "request" then
          token = handle:prefetch(endpoint, walk.query)
        end
        return page
      elseif page_err then
        raised = true
        raise(page_err)
      end
      -- false: another request took the handle meanwhile; ask again
    end
  end
  local function close()
    if token then
      handle:cancel()
      token = nil
    end
    walk:finish()
  end
  return next_page, nil, nil, setmetatable({ close = close }, closer)
end

--- Stamps a result row with its bucket's start_time and end_time (as every
-- walk yields rows).
function M.stamp(row, bucket)
  if type(row) == "table" then
    row.start_time, row.end_time = bucket.start_time, bucket.end_time
  end
  return row
end

--- The result rows of a page, each stamped (M.stamp), appended to rows (or
-- a new list). Returns rows.
function M.rows(page, rows)
  rows = rows or {}
  for _, bucket in ipairs(page.data or {}) do
    for _, row in ipairs(bucket.results or {}) do
      rows[#rows + 1] = M.stamp(row, bucket)
    end
  end
  return rows
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

--- The buckets of the pages next_page yields: an iterator of bucket, page.
function M.buckets(next_page)
  return flatten(next_page, "data")
end

--- The stamped result rows of the buckets next_bucket yields: an iterator
-- of row, bucket.
function M.results(next_bucket)
  return flatten(next_bucket, "results", M.stamp)
end

return M
