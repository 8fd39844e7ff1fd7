-- Starts the stand-in server (standin/server.py) on a free port for a spec
-- and drives its control plane with the curl command-line tool.
local cjson = require "cjson"
local util = require "spec.support.util"

local M = {}
local Server = {}
Server.__index = Server

local function self_pid()
  -- /proc/self opened by this Lua process names this process, not a shell
  local f = assert(io.open("/proc/self/stat"))
  local stat = f:read "*l"
  f:close()
  return stat:match "^(%d+)"
end
M.self_pid = self_pid

local read_file, shell_quote = util.read_if, util.q

--- Whether a process runs; a zombie (exited, not yet reaped: the server is
-- an orphan and some container inits reap slowly) counts as stopped.
function M.running(pid)
  local f = io.open("/proc/" .. tostring(pid) .. "/stat")
  if not f then
    return false
  end
  local stat = f:read "*l" or ""
  f:close()
  return stat:match "%)%s+(%a)" ~= "Z"
end

local function sleep(seconds)
  os.execute("sleep " .. seconds)
end

local function without_nulls(value)
  if value == cjson.null then
    return nil
  end
  if type(value) == "table" then
    for k, v in pairs(value) do
      value[k] = without_nulls(v)
    end
  end
  return value
end

-- A self-signed certificate for 127.0.0.1 and localhost, made with the
-- openssl command-line tool; returns the certificate and key paths.
local function make_certificate(base, name)
  local cert, key = base .. ".crt", base .. ".key"
  local cmd = ("env -u LD_PRELOAD openssl req -x509 -newkey rsa:2048 -nodes -keyout %s -out %s -days 2 "
    .. "-subj '/CN=%s' -addext 'subjectAltName=IP:127.0.0.1,DNS:localhost' >/dev/null 2>&1")
    :format(shell_quote(key), shell_quote(cert), name)
  assert(os.execute(cmd), "openssl could not make a certificate")
  return cert, key
end
M.make_certificate = make_certificate

--- Starts a server: options key (the accepted admin key), now (frozen
-- time), tls (serve HTTPS with a fresh self-signed certificate: srv.ca_file),
-- orgs ({ name = key }: other organizations, each seen by its own key).
function M.start(options)
  options = options or {}
  local orgs = {}
  for name, key in pairs(options.orgs or {}) do
    orgs[#orgs + 1] = "--org " .. shell_quote(name .. "=" .. key)
  end
  local base = os.tmpname()
  local self = setmetatable({
    key = options.key or "sk-admin-standin",
    port_file = base .. ".port",
    log = base .. ".log",
    tmp = base,
  }, Server)
  local python = os.getenv("PYTHON") or "python3"
  local tls, scheme = "", "http"
  if options.tls then
    self.ca_file, self.key_file = make_certificate(base, "openai-usage stand-in")
    tls, scheme = ("--tls-cert %s --tls-key %s"):format(shell_quote(self.ca_file), shell_quote(self.key_file)), "https"
  end
  local cmd = ("env -u LD_PRELOAD %s standin/server.py --port 0 --port-file %s --watch-pid %s --key %s %s %s"
    .. " --quiet >%s 2>&1 & echo $!"):format(python, shell_quote(self.port_file), self_pid(), shell_quote(self.key),
    options.now and ("--now " .. math.floor(options.now)) or "", tls .. " " .. table.concat(orgs, " "),
    shell_quote(self.log))
  local p = assert(io.popen(cmd))
  self.pid = p:read "*l"
  p:close()
  for i = 1, 200 do
    local port = read_file(self.port_file)
    if port and port:match "%d+" then
      self.port = tonumber(port:match "%d+")
      self.url = ("%s://127.0.0.1:%d/v1"):format(scheme, self.port)
      self.control = ("%s://127.0.0.1:%d/__standin/"):format(scheme, self.port)
      return self
    end
    -- a server that died (bad python, bad flag) is reported at once, not after 10 s
    if i % 10 == 0 and not M.running(self.pid) then
      break
    end
    sleep(0.05)
  end
  local log = read_file(self.log) or "(none)"
  self:stop()
  error(("the stand-in server (%s standin/server.py) exited or did not start within 10 s; its log:\n%s")
    :format(python, log))
end

-- Calls the control plane; body (a Lua value) is sent as JSON.
function Server:call(name, body)
  local args = "-sS --max-time 20 " .. (self.ca_file and ("--cacert " .. shell_quote(self.ca_file) .. " ") or "")
  if body ~= nil then
    local f = assert(io.open(self.tmp, "wb"))
    f:write(cjson.encode(body))
    f:close()
    args = args .. "-X POST -H 'Content-Type: application/json' --data-binary @" .. shell_quote(self.tmp) .. " "
  end
  local p = assert(io.popen("env -u LD_PRELOAD curl " .. args .. shell_quote(self.control .. name) .. " 2>&1"))
  local out = p:read "*a"
  p:close()
  local ok, value = pcall(cjson.decode, out)
  if not ok then
    error("stand-in control " .. name .. " failed: " .. out, 2)
  end
  if type(value) == "table" and value.ok == false then
    -- the server refused it: an unknown setting or fault field, a bad type
    error("stand-in control " .. name .. " refused: " .. tostring(value.error), 2)
  end
  return without_nulls(value)
end

--- Options for a client of this server: its key and URL (and its CA file
-- over TLS), then each table given, in turn, on top.
function Server:client_options(...)
  local opts = { api_key = self.key, base_url = self.url, ca_file = self.ca_file }
  for i = 1, select("#", ...) do
    for k, v in pairs(select(i, ...) or {}) do
      opts[k] = v
    end
  end
  return opts
end

function Server:requests()
  return self:call "requests"
end

function Server:last_request()
  local records = self:requests()
  return records[#records]
end

function Server:faults(list)
  return self:call("faults", list)
end

function Server:settings(settings)
  return self:call("settings", settings)
end

function Server:reset()
  return self:call("reset", {})
end

--- The Lua source of a price table (for cost.load) holding the stand-in's
-- image prices (GET /__standin/prices) at one quality, "standard": an
-- estimate from it is what the stand-in bills, to float rounding.
function Server:image_price_table()
  local prices = self:call "prices"
  local models = {}
  for model, sizes in pairs(prices.images.per_image) do
    local cells = {}
    for size, price in pairs(sizes) do
      cells[#cells + 1] = ("[%q] = %.17g"):format(size, price)
    end
    table.sort(cells)
    models[#models + 1] = ("    [%q] = { standard = { %s } },"):format(model, table.concat(cells, ", "))
  end
  table.sort(models)
  return table.concat({ "return {", '  date = "stand-in",', ("  currency = %q,"):format(prices.currency),
    '  default_quality = "standard",', "  images = {", table.concat(models, "\n"), "  },", "}", "" }, "\n")
end

--- Pending faults, active drips, settings and the request count.
function Server:status()
  return self:call "status"
end

--- Waits until the server has received at least n requests (a transfer is
-- on the wire): 20 ms polls, for 5 s (50 s under valgrind, which runs the
-- client's transfer thread many times slower); an error if they never come.
function Server:await_requests(n)
  local polls = 250 * (os.getenv "OPENAI_USAGE_VALGRIND" and 10 or 1)
  for _ = 1, polls do
    if self:status().requests >= n then
      return
    end
    sleep(0.02)
  end
  error("the stand-in never received " .. n .. " requests")
end

--- Stops the server and waits for it to exit; safe to call twice.
function Server:stop()
  if self.pid then
    os.execute("kill " .. self.pid .. " 2>/dev/null")
    for _ = 1, 100 do
      if not M.running(self.pid) then
        break
      end
      sleep(0.05)
    end
    self.pid = nil
  end
  for _, path in ipairs { self.port_file, self.log, self.tmp, self.ca_file, self.key_file } do
    os.remove(path)
  end
end

-- `local srv <close> = standin.start()` stops it at the end of the scope;
-- a server nothing refers to any more is stopped when collected.
Server.__close = Server.stop
Server.__gc = Server.stop

return M
