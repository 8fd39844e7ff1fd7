-- A Lua transport (usage.new{transport = ...}) on the curl command-line
-- tool, for specs that drive the Lua-transport path against the real
-- stand-in (plain Lua has no sockets).
local util = require "spec.support.util"

local M = {}

local shell_quote, read_file = util.q, util.read

-- Response headers as curl -D wrote them: the last response's, names in
-- lower case, a repeated one as a list.
local function parse_head(text)
  local status, headers
  for line in text:gmatch "[^\r\n]*" do
    local code = line:match "^HTTP/[%d%.]+ (%d%d%d)"
    if code then
      status, headers = tonumber(code), {}
    elseif headers then
      local name, value = line:match "^([^:]+):%s*(.-)%s*$"
      if name then
        name = name:lower()
        local seen = headers[name]
        if seen == nil then
          headers[name] = value
        elseif type(seen) == "table" then
          seen[#seen + 1] = value
        else
          headers[name] = { seen, value }
        end
      end
    end
  end
  return status, headers
end

--- A transport on the curl CLI. options: compressed (curl inflates gzip),
-- extra_headers (added to the request's), calls (a list each req is appended to).
function M.new(options)
  options = options or {}
  return function(req)
    if options.calls then
      options.calls[#options.calls + 1] = req
    end
    local base = os.tmpname()
    local f = assert(io.open(base .. ".req", "wb")) -- headers in a file: the key stays off the command line
    for name, value in pairs(req.headers) do
      f:write(name, ": ", value, "\n")
    end
    for name, value in pairs(options.extra_headers or {}) do
      f:write(name, ": ", value, "\n")
    end
    f:close()
    local cmd = ("env -u LD_PRELOAD curl -sS %s --max-time %s --connect-timeout %s -H @%s -D %s -o %s %s 2>&1; "
      .. "echo \"exit $?\""):format(options.compressed and "--compressed" or "", req.timeout, req.connect_timeout,
        shell_quote(base .. ".req"), shell_quote(base .. ".head"), shell_quote(base .. ".body"), shell_quote(req.url))
    local p = assert(io.popen(cmd))
    local out = p:read "*a"
    p:close()
    local code = tonumber(out:match "exit (%d+)%s*$")
    local head, body = io.open(base .. ".head", "rb") and read_file(base .. ".head"),
      io.open(base .. ".body", "rb") and read_file(base .. ".body")
    for _, ext in ipairs { "", ".req", ".head", ".body" } do
      os.remove(base .. ext)
    end
    if code ~= 0 then
      local message = out:match "curl: (%b() [^\n]*)" or out
      if code == 28 then
        return nil, { kind = "timeout", message = message }
      end
      return nil, message
    end
    local status, headers = parse_head(head or "")
    return status, headers, body or ""
  end
end

return M
