-- openai_usage: read the OpenAI organization Usage API from Lua.
-- The C core validates, encodes, transfers (libcurl) and decodes; this file
-- is the client object (the environment's defaults, its settings) and its
-- iterators, which step one walk engine (openai_usage.walk).
local core = require "openai_usage.core"
local cache = require "openai_usage.cache"
local time = require "openai_usage.time"
local walk = require "openai_usage.walk"
local protocol = require "openai_usage.protocol"

-- the one error constructor (openai_usage.error)
local usage_error = core.error

local M = {
  version = core.version,
}

--- The version of the libcurl in use (loaded on first need).
function M.libcurl_version()
  return core.libcurl_version()
end

local function invalid(param, message)
  return usage_error { kind = "invalid_argument", param = param, message = message }
end

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

--- A client: a Lua object whose fields are the settings the Lua layer
-- keeps (prefetch, gc, settle_after in seconds, max_pages, transport,
-- cache_dir and its opened cache), over a C handle of its own (private:
-- openai_usage.protocol) that holds the connection and the C settings.
-- The handle's __gc releases it when the client is collected; __close (Lua
-- 5.4) and close() release it at once.
local Client = {}
Client.__index = Client
Client.__name = "openai_usage.client"

function Client:__tostring()
  return tostring(protocol.of(self))
end

function Client:__close()
  self:close()
end

--- Creates a client. Options: api_key, base_url, organization, project,
-- timeout, connect_timeout, max_retries, user_agent, ca_file, array_format,
-- max_response_bytes, low_speed_limit, low_speed_time, retry_backoff,
-- retry_backoff_max, retry_after_max, prefetch, cache_dir, settle_after,
-- max_pages, transport (README lists them all).
-- @return client, or nil and an error table
function M.new(options)
  if options ~= nil and type(options) ~= "table" then
    return nil, invalid(nil, "options: expected a table, got a " .. type(options))
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
  for _, name in ipairs { "prefetch", "gc" } do
    if opts[name] ~= nil and type(opts[name]) ~= "boolean" then
      return nil, invalid(name, name .. ": expected a boolean, got a " .. type(opts[name]))
    end
  end
  local settle_after
  if opts.settle_after ~= nil then
    local message
    settle_after, message = time.duration(opts.settle_after)
    if not settle_after then
      return nil, invalid("settle_after", "settle_after: " .. message)
    end
  end
  local max_pages, pages_err = walk.check_max_pages(opts.max_pages)
  if pages_err then
    return nil, pages_err
  end
  -- what the Lua layer keeps; the rest is the C handle's
  local client = setmetatable({
    -- a Lua transport runs in the caller's thread: no background prefetch
    prefetch = opts.prefetch ~= false and opts.transport == nil,
    gc = opts.gc ~= false,
    settle_after = settle_after,
    max_pages = max_pages,
    transport = opts.transport,
    cache_dir = opts.cache_dir,
    -- whose usage this is, as the history store records it (nil: "default")
    organization = opts.organization,
  }, Client)
  opts.prefetch, opts.cache_dir, opts.gc, opts.settle_after, opts.max_pages = nil, nil, nil, nil, nil
  local handle, err = core.new(opts)
  if not handle then
    return nil, err
  end
  protocol.attach(client, handle)
  if client.cache_dir ~= nil then
    -- pages of one organization, project and key never serve another's
    local identity = table.concat({ opts.organization or "", opts.project or "",
      cache.hash("key\0" .. tostring(opts.api_key)) }, "\n")
    local store, cache_err = cache.open(client.cache_dir, identity, core.decode)
    if not store then
      handle:close()
      return nil, invalid("cache_dir", cache_err)
    end
    client.cache = store
  end
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

M.error = usage_error

--- s as text a terminal only displays: control bytes (C0, DEL, C1, bytes
-- that are not UTF-8) become \xHH or \u00HH, as tostring(err) shows them.
M.printable = require("openai_usage.text").printable

--- Monotonic wall-clock seconds (for timing; plain Lua has none).
M.clock = core.clock

M.with_times = walk.with_times

--- One page of any usage endpoint, or nil and an error table. Times may be
-- given as the report layer reads them ("2024-11-01", "7d"). A client with
-- a transport (option transport) sends through openai_usage.transport, in
-- Lua so that the transport may yield; the C core still validates, retries
-- and decodes. Others go straight to libcurl.
function Client:usage(endpoint, params)
  local timed, err = walk.with_times(endpoint, params)
  if err then
    return nil, err
  end
  return protocol.request(self, endpoint, timed)
end

--- The URL a request would GET, validated (nothing is sent), or nil, err.
function Client:url(endpoint, params)
  local timed, err = walk.with_times(endpoint, params)
  if err then
    return nil, err
  end
  return protocol.of(self):url(endpoint, timed)
end

--- What the last request did: attempts, delays, connections, bytes.
function Client:last_transfer()
  return protocol.of(self):last_transfer()
end

--- Aborts the request on the wire (a prefetch), at once.
function Client:cancel()
  return protocol.of(self):cancel()
end

--- Releases the handle now; safe twice. Later calls raise.
function Client:close()
  return protocol.of(self):close()
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
-- See openai_usage.walk.
function Client:pages(endpoint, params, options)
  return walk.pages(self, endpoint, params, options)
end

--- Iterates over time buckets across pages; yields bucket, page.
function Client:buckets(endpoint, params, options)
  local next_page, _, _, closer = self:pages(endpoint, params, options)
  return walk.buckets(next_page), nil, nil, closer
end

--- Iterates over result rows across buckets and pages; each row also
-- carries its bucket's start_time and end_time. Yields row, bucket.
function Client:results(endpoint, params, options)
  local next_bucket, _, _, closer = self:buckets(endpoint, params, options)
  return walk.results(next_bucket), nil, nil, closer
end

--- Iterates over the objects of a directory list ("projects", "users",
-- "api_keys", "service_accounts", "spend_alerts"; project_id in params for
-- a project's), following last_id page after page; yields object, page
-- and raises on failure and on a list that would not end. See
-- openai_usage.directory.
function Client:list(name, params, options)
  return require("openai_usage.directory").list(self, name, params, options)
end

--- The organization's whole directory: { projects (archived ones too),
-- users, api_keys, service_accounts (each with its project_id),
-- fetched_at }; raises the error table on failure.
function Client:directory(options)
  return require("openai_usage.directory").fetch(self, options)
end

-- A shortcut per endpoint of the rule table: client:images(params),
-- client:completions(params), client:costs(params), ...
for _, endpoint in ipairs(core.rules()) do
  if Client[endpoint] == nil then
    Client[endpoint] = function(self, params)
      return Client.usage(self, endpoint, params)
    end
  end
end

return M
