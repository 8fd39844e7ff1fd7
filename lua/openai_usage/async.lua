--- Walks the pages of a usage endpoint from an event loop, never waiting on
-- the network. Each page's transfer runs on the client's background thread
-- (client:prefetch); walk:step() asks whether it has landed (client:poll,
-- which answers at once) and, when it has, decodes the page in the caller's
-- thread and starts the next transfer. Any loop can call step: a Neovim
-- timer (openai_usage.nvim), an OpenResty timer, a plain loop in a test.
--
--   local walk = assert(async.pages(client, "images", params))
--   -- then, every 10-20 ms:
--   local page = walk:step()
--   if page then ... end
--   if walk.done then ... walk.err ... end
--
-- A walk has its client's handle to itself while it runs: any other request
-- on that client takes the handle back, and the walk then asks for that page
-- again. One walk per client at a time. A client with a cache_dir walks as
-- client:pages does: settled pages on disk are read instead of requested
-- (walk.cached counts them), and pages of settled buckets are stored.
local usage = require "openai_usage"

local M = {}

local Walk = {}
Walk.__index = Walk

local function finish(walk, err)
  walk.done, walk.err, walk.token, walk.landed = true, err, nil, nil
end

-- Starts the transfer of walk.query, or takes its page from the cache;
-- false and the error when the client refuses it (parameters are validated
-- here, before anything is sent).
local function start(walk)
  -- only settled segments have a store
  local store, rule = usage.segment_store(walk.plan, walk.index)
  -- the URL names the page in the cache: read now, and stored under when it lands
  local url = store and walk.client:url(walk.endpoint, walk.query)
  walk.url, walk.store, walk.rule = url, store, rule
  local page = url and store:get(url, rule)
  if page then
    walk.landed, walk.cached = page, walk.cached + 1
    return true
  end
  local token, err = walk.client:prefetch(walk.endpoint, walk.query)
  if not token then
    finish(walk, err)
    return false, err
  end
  walk.token = token
  return true
end

--- Starts a walk: its first transfer is on the wire when this returns.
-- options: max_pages (as client:pages takes it).
-- @return walk, or nil and an error table (bad arguments: nothing was sent)
function M.pages(client, endpoint, params, options)
  if params ~= nil and type(params) ~= "table" then
    return nil, usage.error { kind = "invalid_argument", message = "params: expected a table, got a " .. type(params) }
  end
  -- a relative time ("7d") is read once, so every page asks the same range
  local timed, time_err = usage.with_times(endpoint, params)
  if time_err then
    return nil, time_err
  end
  local plan, plan_err = client:_walk_plan(endpoint, timed or {}, options)
  if not plan then
    return nil, plan_err
  end
  local walk = setmetatable({
    client = client,
    endpoint = endpoint,
    plan = plan,
    segments = plan.segments,
    index = 1,
    query = plan.segments[1],
    seen = {},
    pages = 0, -- pages handed out so far
    cached = 0, -- of which read from the cache
    done = false,
  }, Walk)
  if walk.query.page ~= nil then
    walk.seen[walk.query.page] = true
  end
  local ok, err = start(walk)
  if not ok then
    return nil, err
  end
  return walk
end

--- Never blocks. Returns the page that has landed since the last step, or
-- nil while the transfer is still on the wire, or nil and the error once the
-- walk has failed. When walk.done is set the walk is over: walk.err holds
-- the error if it failed (a failed transfer, or a page that says has_more
-- without a cursor or repeats one, or a walk past its page budget, checked
-- by usage.next_cursor exactly as client:pages does; that page itself is
-- still returned).
function Walk:step()
  if self.done then
    return nil, self.err
  end
  local page = self.landed
  self.landed = nil
  if not page then
    if not self.client:poll(self.token) then
      return nil
    end
    local err
    page, err = self.client:collect(self.token)
    self.token = nil
    if page == false then -- another request took the handle meanwhile: ask again
      local ok, start_err = start(self)
      if not ok then
        return nil, start_err
      end
      return nil
    end
    if not page then
      finish(self, err)
      return nil, err
    end
    if self.url then
      self.store:put(self.url, page, os.time(), self.rule)
    end
  end
  self.pages = self.pages + 1
  local cursor, cursor_err = usage.next_cursor(page, self.seen, self.plan.budget)
  if cursor_err then
    finish(self, cursor_err)
  elseif cursor == nil and self.index < #self.segments then
    -- the settled buckets are done: on to the unsettled ones, never cached
    self.index = self.index + 1
    self.query, self.seen = self.segments[self.index], {}
    start(self)
  elseif cursor == nil then
    finish(self)
  else
    self.query.page = cursor
    start(self)
  end
  return page
end

--- Stops the walk: no more pages, and returns at once. A transfer still on
-- the wire is aborted (its thread is woken, so this takes milliseconds) and
-- one that has landed is dropped; the client is free for other requests.
function Walk:cancel()
  if self.done then
    return
  end
  local token = self.token
  self.cancelled = true
  finish(self)
  if token then
    self.client:cancel()
  end
end

local Task = {}
Task.__index = Task

-- Whether a coroutine may yield from a generic for's iterator (and from
-- inside pcall): not on PUC Lua 5.1, where both are C-call boundaries.
local probe = coroutine.create(function()
  for _ in function()
    return pcall(coroutine.yield)
  end do
    return
  end
end)
coroutine.resume(probe)
M.tasks_supported = coroutine.status(probe) == "suspended"

-- The client as a task's function sees it: pages() walks by yielding to
-- the loop while a page is on the wire; buckets() and results() are the
-- client's own, which are built on self:pages, so they walk the same way;
-- every other method is the client's (and blocks as usual).
local function task_client(task, client)
  local view = setmetatable({}, {
    __index = function(_, name)
      local value = client[name]
      if type(value) ~= "function" or name == "buckets" or name == "results" then
        return value
      end
      return function(_, ...)
        return value(client, ...)
      end
    end,
  })
  function view.pages(_, endpoint, params, options)
    local walk, err = M.pages(client, endpoint, params, options)
    if not walk then
      error(err, 0)
    end
    task.walk = walk
    local counted = 0 -- of walk.cached, added to task.cached
    local function next_page()
      while true do
        local page, step_err = walk:step()
        if page then
          task.pages = task.pages + 1
          task.cached, counted = task.cached + walk.cached - counted, walk.cached
          return page
        end
        if walk.done then
          if step_err then
            error(step_err, 0)
          end
          return nil
        end
        coroutine.yield()
      end
    end
    -- the generic for of Lua 5.4 closes a walk left early
    local closer = setmetatable({ close = function()
      walk:cancel()
    end }, { __close = function(w)
      w.close()
    end })
    return next_page, nil, nil, closer
  end
  return view
end

--- Runs fn(client) as a task an event loop drives: code written for the
-- plain client runs unchanged, but its iterators (client:pages, buckets,
-- results) wait for a page by yielding to the loop instead of blocking it.
-- task:step() never blocks: it runs fn until it next waits for a page (or
-- ends). Then task.done is set, with task.result (what fn returned) or
-- task.err (what it raised, or the err of a nil, err return). task.pages
-- counts the pages so far (task.cached those read from the client's
-- cache_dir), task.walk is the walk in progress. Needs Lua
-- 5.2+ or LuaJIT (Neovim, OpenResty): on 5.1, nil and an error.
function M.task(client, fn)
  if not M.tasks_supported then
    return nil, usage.error {
      kind = "invalid_argument",
      message = "async.task needs Lua 5.2+ or LuaJIT: Lua 5.1 cannot yield from inside a for loop's iterator",
    }
  end
  local task = setmetatable({ pages = 0, cached = 0, done = false }, Task)
  local view = task_client(task, client)
  task.co = coroutine.create(function()
    return fn(view)
  end)
  return task
end

function Task:step()
  if self.done then
    return
  end
  local ok, result, err = coroutine.resume(self.co)
  if not ok then
    self.done, self.err = true, result
  elseif coroutine.status(self.co) == "dead" then
    self.done, self.result = true, result
    if result == nil then
      self.err = err
    end
  end
end

--- Stops the task where it waits; returns at once (see Walk:cancel: a
-- page on the wire is aborted).
function Task:cancel()
  if self.done then
    return
  end
  self.done, self.cancelled = true, true
  if self.walk then
    self.walk:cancel()
  end
end

--- The result rows of a page, each stamped with its bucket's start_time and
-- end_time as client:results yields them, appended to rows (or a new list).
function M.rows(page, rows)
  rows = rows or {}
  for _, bucket in ipairs(page.data or {}) do
    for _, row in ipairs(bucket.results or {}) do
      if type(row) == "table" then
        row.start_time, row.end_time = bucket.start_time, bucket.end_time
      end
      rows[#rows + 1] = row
    end
  end
  return rows
end

return M
