-- Starts Debian's nginx (with libnginx-mod-http-lua) for a spec: one
-- worker on a free port of 127.0.0.1, in a temporary prefix that holds a
-- copy of the repository's lua/ (prefix/lua) and of the module built for
-- LuaJIT (prefix/lib/openai_usage/core.so), so a conf names them with
-- $prefix. Copies, not links: started as root, nginx runs its worker as
-- nobody, which cannot read into a checkout under a 0700 directory (/root).
local M = {}
local Nginx = {}
Nginx.__index = Nginx

M.LUA_MODULE = "/usr/lib/nginx/modules/ngx_http_lua_module.so"
-- the port written in examples/openresty/nginx.conf, replaced by a free one
M.EXAMPLE_LISTEN = "127.0.0.1:8080"

local util = require "spec.support.util"
local shell_quote, read_file, write_file, capture, run = util.q, util.read_if, util.write, util.capture, util.execute
M.read_file = read_file
M.write_file = write_file

--- Whether nginx and its lua module are installed (make deps installs them).
function M.available()
  return run "command -v nginx >/dev/null 2>&1" and read_file(M.LUA_MODULE) ~= nil
end

--- Builds (or refreshes) build/luajit/openai_usage/core.so, the module nginx's
-- LuaJIT loads; make decides whether anything is stale.
function M.build_module()
  local out, ok = util.make "LUA_VERSION=5.1 LUA=luajit LUA_PKG=luajit OUTDIR=build/luajit"
  assert(ok, "building the LuaJIT module failed:\n" .. out)
  return "build/luajit/openai_usage/core.so"
end

local function self_pid()
  local f = assert(io.open "/proc/self/stat")
  local pid = f:read("*l"):match "^(%d+)"
  f:close()
  return pid
end

-- A port below Linux's ephemeral range (32768 up), so no outgoing
-- connection holds it, spread by pid and time (Lua's RNG is the suite's);
-- one in use is retried by start.
local tries = 0
local function next_port()
  tries = tries + 1
  return 20000 + (tonumber(self_pid()) * 7919 + os.time() + tries * 104729) % 12000
end

M.next_port = next_port

--- Starts nginx with conf (text; its listen address M.EXAMPLE_LISTEN is
-- replaced by a free port), env (variables for the master, passed on by the
-- conf's env directives) and files (name -> text, written into prefix/conf).
-- Returns the server: url, port, prefix, get(path), error_log(), stop().
function M.start(options)
  local repo = capture("pwd"):gsub("%s+$", "")
  local prefix = capture("mktemp -d"):gsub("%s+$", "")
  local p = shell_quote(prefix)
  assert(run(("mkdir -p %s/conf %s/logs %s/lib/openai_usage && cp -R %s/lua %s/lua && "
    .. "cp %s %s/lib/openai_usage/"):format(
    p, p, p, shell_quote(repo), p, shell_quote(repo .. "/build/luajit/openai_usage/core.so"), p)))
  local self = setmetatable({ prefix = prefix }, Nginx)
  for name, text in pairs(options.files or {}) do
    write_file(prefix .. "/conf/" .. name, text)
  end
  -- the worker runs as nobody when nginx starts as root: it must read the
  -- prefix, whatever the umask
  assert(run("chmod -R a+rX " .. p))
  local env = {}
  for name, value in pairs(options.env or {}) do
    env[#env + 1] = name .. "=" .. shell_quote(value)
  end
  for _ = 1, 20 do
    self.port = next_port()
    local conf, count = options.conf:gsub(M.EXAMPLE_LISTEN:gsub("%.", "%%."), "127.0.0.1:" .. self.port)
    assert(count == 1, "the conf must listen on " .. M.EXAMPLE_LISTEN .. " exactly once")
    write_file(prefix .. "/conf/nginx.conf", conf)
    local out = capture(("cd %s && env -u LD_PRELOAD %s nginx -p %s/ -e logs/error.log -c conf/nginx.conf 2>&1; "
      .. "echo \"exit $?\""):format(shell_quote(prefix), table.concat(env, " "), shell_quote(prefix)))
    if out:match "exit 0%s*$" then
      self.url = "http://127.0.0.1:" .. self.port
      break
    end
    if not out:find("in use", 1, true) then
      self:stop()
      error("nginx did not start:\n" .. out .. (read_file(prefix .. "/logs/error.log") or ""))
    end
  end
  assert(self.url, "nginx found no free port")
  self.pid = (read_file(prefix .. "/logs/nginx.pid") or ""):match "%d+"
  -- if the spec dies, nginx goes too (nginx removes its pid file when it stops)
  -- (in a session of its own: whatever kills the spec's process group spares it)
  run(("setsid sh -c 'while kill -0 %s 2>/dev/null; do sleep 1; done; test -f %s/logs/nginx.pid && kill %s' "
    .. ">/dev/null 2>&1 &"):format(self_pid(), prefix, self.pid))
  for _ = 1, 100 do
    if self:get "/__nginx_ready" then
      return self
    end
    run "sleep 0.05"
  end
  local log = self:error_log()
  self:stop()
  error("nginx did not answer within 5 s; its error log:\n" .. log)
end

--- GETs path with the curl command-line tool: status, body, seconds taken
-- (nil when nothing answered).
function Nginx:get(path)
  local out = capture(("env -u LD_PRELOAD curl -s --max-time 60 -w '\\n%%{http_code} %%{time_total}' %s"):format(
    shell_quote(self.url .. path)))
  local body, status, seconds = out:match "^(.*)\n(%d+) ([%d%.]+)$"
  status = tonumber(status)
  if not status or status == 0 then
    return nil
  end
  return status, body, tonumber(seconds)
end

--- Starts a GET of path in the background; returns a handle whose wait()
-- gives status, body, seconds once curl is done.
function Nginx:get_in_background(path)
  local out = os.tmpname()
  run(("(env -u LD_PRELOAD curl -s --max-time 60 -w '\\n%%{http_code} %%{time_total}' %s > %s.tmp 2>&1; "
    .. "mv %s.tmp %s) &"):format(shell_quote(self.url .. path), shell_quote(out), shell_quote(out), shell_quote(out)))
  return {
    wait = function()
      for _ = 1, 1200 do
        local text = read_file(out)
        if text and text ~= "" then
          os.remove(out)
          local body, status, seconds = text:match "^(.*)\n(%d+) ([%d%.]+)$"
          return tonumber(status), body, tonumber(seconds)
        end
        run "sleep 0.05"
      end
      error("the background request to " .. path .. " did not finish within 60 s")
    end,
  }
end

function Nginx:error_log()
  return read_file(self.prefix .. "/logs/error.log") or ""
end

--- Stops nginx, waits for it and removes the prefix; safe to call twice.
function Nginx:stop()
  if self.pid then
    run("kill -QUIT " .. self.pid .. " 2>/dev/null")
    for _ = 1, 100 do
      if read_file(self.prefix .. "/logs/nginx.pid") == nil then
        break
      end
      run "sleep 0.05"
    end
    self.pid = nil
  end
  if self.prefix then
    run("rm -rf " .. shell_quote(self.prefix))
    self.prefix = nil
  end
end

Nginx.__gc = Nginx.stop
Nginx.__close = Nginx.stop

return M
