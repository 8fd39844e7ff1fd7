--- :checkhealth openai_usage: is the C module built for Neovim's LuaJIT and
-- loadable, is an admin key set (never shown), does the API answer one
-- cheap request. Reports through vim.health on Neovim 0.9+ and the older
-- health module (report_start, report_ok, ...) before it.
local M = {
  timeout = 5, -- seconds the reachability request may take, in all
}

-- this file is <root>/lua/openai_usage/health.lua
local ROOT = vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h:h:h")
local uv = vim.uv or vim.loop
local BUILD = "make LUA_VERSION=5.1 LUA=luajit OUTDIR=build/luajit"

-- start, ok, warn, error, info: whichever spelling this Neovim has.
local function reporter()
  local health = vim.health
  if health and health.start then
    return health
  end
  health = health and health.report_start and health or require "health"
  return {
    start = health.report_start,
    ok = health.report_ok,
    warn = health.report_warn,
    error = health.report_error,
    info = health.report_info,
  }
end

-- one line, as the report shows it
local function line(message)
  return (tostring(message):gsub("[\r\n]+", " "))
end

-- The module, or nil after reporting why it does not load.
local function check_module(report)
  local runtime = jit and jit.version or _VERSION
  local ok, core = pcall(require, "openai_usage.core")
  if not ok then
    report.error("the C module openai_usage.core does not load in " .. runtime .. ": " .. line(core),
      { ("build it for Neovim's LuaJIT: run `%s` in %s"):format(BUILD, ROOT) })
    return nil
  end
  local path = package.searchpath and package.searchpath("openai_usage.core", package.cpath)
  report.ok(("openai_usage.core %s loads in %s%s"):format(core.version, runtime, path and (" from " .. path) or ""))
  local loaded, nvim = pcall(require, "openai_usage.nvim")
  if not loaded then
    report.error("openai_usage.nvim does not load: " .. line(nvim))
    return nil
  end
  return nvim
end

-- The key, or nil after reporting that there is none. Only where it was
-- found is said, never the key.
local function check_key(report, nvim)
  local ok, key, source = pcall(nvim.api_key)
  if not ok then
    report.error("vim.g.openai_usage_api_key raised an error: " .. line(key))
    return nil
  end
  if not key then
    report.error("no admin key", { "set $OPENAI_ADMIN_KEY, or vim.g.openai_usage_api_key (a string or a function)" })
    return nil
  end
  if type(key) ~= "string" then
    report.error(("the key from %s is a %s, not a string"):format(source, type(key)))
    return nil
  end
  if key:find("sk-admin-", 1, true) == 1 then
    report.ok("admin key found in " .. source)
  else
    report.warn("a key is set in " .. source .. ", but it does not start with sk-admin-",
      { "the Usage API takes an organization admin key (platform.openai.com, Admin keys)" })
  end
  return key
end

-- Where a request goes, without its query or any user:password@.
local function where(url)
  return (url:gsub("%?.*$", ""):gsub("^(%a[%w+.-]*://)[^/@]*@", "%1"))
end

-- One page of one bucket of images usage, asked once with a short timeout.
local function check_api(report, key)
  local usage = require "openai_usage"
  local client, err = usage.new {
    api_key = key,
    base_url = vim.g.openai_usage_base_url,
    timeout = M.timeout,
    connect_timeout = M.timeout,
    max_retries = 0,
  }
  if not client then
    report.error("the client cannot be made: " .. line(err))
    return
  end
  local now = os.time()
  local params = { start_time = now - 86400, end_time = now, limit = 1 }
  local url = client:url("images", params) or "images"
  local started = uv.hrtime()
  local page
  page, err = client:usage("images", params)
  local ms = (uv.hrtime() - started) / 1e6
  client:close()
  if page then
    report.ok(("the API answered %s in %.0f ms"):format(where(url), ms))
  elseif err.kind == "http" and (err.status == 401 or err.status == 403) then
    report.error(("the API refused the key: %s"):format(line(err)),
      { "an organization admin key is needed; check the one in the key's source above" })
  elseif err.kind == "http" or err.kind == "api" or err.kind == "decode" then
    report.error(("the API is reachable at %s but its answer was an error: %s"):format(where(url), line(err)))
  else
    report.error(("the API is not reachable at %s: %s"):format(where(url), line(err)),
      { "check the network, $OPENAI_BASE_URL or vim.g.openai_usage_base_url" })
  end
end

function M.check()
  local report = reporter()
  report.start "openai-usage"
  local nvim = check_module(report)
  if not nvim then
    report.warn "the key and the API were not checked: the module does not load"
    return
  end
  local key = check_key(report, nvim)
  if not key then
    report.warn "the API was not asked: there is no key to ask it with"
    return
  end
  check_api(report, key)
end

return M
