--- Walks the pages of a usage endpoint from an event loop, never waiting on
-- the network. Each page's transfer runs on the client's background thread
-- (its prefetch); walk:step() asks whether it has landed (a poll, which
-- answers at once) and, when it has, decodes the page in the caller's
-- thread and starts the next transfer. The walk itself is the one walk
-- engine (openai_usage.walk) that client:pages steps too. Any loop can call
-- step: a Neovim timer (openai_usage.nvim), an OpenResty timer, a plain
-- loop in a test.
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
local walk_engine = require "openai_usage.walk"
local protocol = require "openai_usage.protocol"

-- the one error constructor (openai_usage.error)
local usage_error = usage.error

local M = {}

-- An async walk is a walk (openai_usage.walk) this driver steps.
local Walk = setmetatable({}, { __index = walk_engine.Walk })
Walk.__index = Walk

-- Starts what the walk needs next: the transfer of its page, unless the
-- page was read from the cache (then the next step hands it out). False
-- and the error when the client refuses the transfer.
local function start(walk)
  local need, query = walk:want()
  if need ~= "request" then
    return true
  end
  local token, err = protocol.of(walk.client):prefetch(walk.endpoint, query)
  if not token then
    walk:finish(err)
    return false, err
  end
  walk.token = token
  return true
end

--- Starts a walk: its first transfer is on the wire when this returns.
-- options: max_pages (as client:pages takes it).
-- @return walk, or nil and an error table (bad arguments: nothing was sent)
function M.pages(client, endpoint, params, options)
  local walk, err = walk_engine.new(client, endpoint, params, options)
  if not walk then
    return nil, err
  end
  setmetatable(walk, Walk)
  local ok, start_err = start(walk)
  if not ok then
    return nil, start_err
  end
  return walk
end

--- Never blocks. Returns the page that has landed since the last step, or
-- nil while the transfer is still on the wire, or nil and the error once the
-- walk has failed. When walk.done is set the walk is over: walk.err holds
-- the error if it failed (a failed transfer, or a page that says has_more
-- without a cursor or repeats one, or a walk past its page budget, checked
-- exactly as client:pages does: one walk engine; that page itself is still
-- returned).
function Walk:step()
  if self.done then
    return nil, self.err
  end
  local need, page = self:want()
  local err
  if need == "request" then
    local handle = protocol.of(self.client)
    if not handle:poll(self.token) then
      return nil
    end
    -- false when another request took the handle meanwhile: asked again
    page, err = handle:collect(self.token)
    self.token = nil
  end
  page, err = self:feed(page, err)
  if not self.done then
    local ok, start_err = start(self)
    if not ok and not page then
      return nil, start_err
    end
  end
  return page, err
end

--- Stops the walk: no more pages, and returns at once. A transfer still on
-- the wire is aborted (its thread is woken, so this takes milliseconds) and
-- one that has landed is dropped; the client is free for other requests.
function Walk:cancel()
  if self.done then
    return
  end
  local token = self.token
  self.cancelled, self.token = true, nil
  self:finish()
  if token then
    protocol.of(self.client):cancel()
  end
end

local Task = {}
Task.__index = Task

-- Whether a coroutine may yield from a generic for's iterator (and from
-- inside pcall): not on PUC Lua 5.1, where both are C-call boundaries.
-- The generic for is the thing probed, so it stays a loop run at most once.
local probe = coroutine.create(function()
  for _ in function() -- luacheck: ignore 512
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
    return nil, usage_error {
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
M.rows = walk_engine.rows

return M
