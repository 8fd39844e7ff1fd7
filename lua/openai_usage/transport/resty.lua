-- openai_usage.transport.resty: the client's transport inside nginx with
-- lua-nginx-module (OpenResty, or Debian's nginx + libnginx-mod-http-lua),
-- on cosockets: while a page is on the wire, or a retry waits (ngx.sleep),
-- the worker serves its other requests.
--
--   local usage = require "openai_usage"
--   local client = usage.new { transport = require "openai_usage.transport.resty" }
--
-- or resty.new { keepalive_timeout = 60, pool_size = 30, hosts = {...} } for
-- other settings. HTTP/1.1 with keep-alive: a connection whose answer was
-- read whole goes back to the worker's cosocket pool (setkeepalive). https is
-- verified (sslhandshake with verify on) against lua_ssl_trusted_certificate,
-- by host name: nginx does not match IP addresses in certificates, so an
-- https base_url names a host, which nginx's `resolver` (it does not read
-- /etc/hosts) or the hosts option turns into an address. It asks for no gzip
-- (pure Lua cannot inflate),
-- follows no redirect, and stops reading past req.max_response_bytes, which
-- the client then reports. Usable where cosockets are (rewrite, access,
-- content phases, ngx.timer), not in init_by_lua or the filters.
local M = {}

local DEFAULTS = { keepalive_timeout = 60, pool_size = 30, hosts = {} }
local MAX_HEADER_LINES = 200
local MAX_HEADER_BYTES = 65536

-- scheme, host, port, path (with query) and the Host header's value.
local function parse_url(url)
  local scheme, rest = url:match "^(https?)://(.*)$"
  if not scheme then
    return nil, "unsupported URL (http:// or https:// only): " .. url
  end
  local authority, path = rest:match "^([^/]*)(.*)$"
  if path == "" then
    path = "/"
  end
  local host, port
  if authority:sub(1, 1) == "[" then -- an IPv6 literal
    host, port = authority:match "^%[([^%]]+)%]:?(%d*)$"
  else
    host, port = authority:match "^([^:@]+):?(%d*)$"
  end
  if not host then
    return nil, "cannot read host and port from the URL " .. url
  end
  port = tonumber(port) or (scheme == "https" and 443 or 80)
  return { scheme = scheme, host = host, port = port, path = path, authority = authority }
end

-- nil, err for a failed step: a {kind = "timeout"} table for a timeout (the
-- client reports kind timeout), else a string (kind network). Both are
-- retried by the client like libcurl's connection failures.
local function failure(step, err)
  local message = step .. ": " .. tostring(err)
  if err == "timeout" then
    return nil, { kind = "timeout", message = message }
  end
  return nil, message
end

local function request_text(u, headers)
  local names = {}
  for name in pairs(headers) do
    names[#names + 1] = name
  end
  table.sort(names) -- a stable order, for whoever reads the wire
  local lines = { "GET " .. u.path .. " HTTP/1.1", "Host: " .. u.authority }
  for _, name in ipairs(names) do
    lines[#lines + 1] = name .. ": " .. tostring(headers[name])
  end
  lines[#lines + 1] = "\r\n"
  return table.concat(lines, "\r\n")
end

-- Milliseconds left before deadline (at least 1: 0 would mean "no timeout"),
-- and at most stall seconds when given: a read that waits that long without
-- a byte ends the attempt, as libcurl's low-speed limit does.
local function left_ms(deadline, stall)
  local ms = math.floor((deadline - ngx.now()) * 1000)
  if stall and stall > 0 and ms > stall * 1000 then
    ms = math.floor(stall * 1000)
  end
  return ms > 0 and ms or 1
end

-- Reads the status line and headers of one response (skipping 1xx ones).
-- Returns status, headers (lower-case names; a repeated one as a list),
-- the HTTP version, or nil, err.
local function read_head(sock, where, deadline, stall)
  while true do
    sock:settimeout(left_ms(deadline, stall))
    local line, err = sock:receive "*l"
    if not line then
      return failure("reading the status line from " .. where, err)
    end
    local version, status = line:match "^HTTP/(%d%.%d) (%d%d%d)"
    if not version then
      return nil, "not an HTTP response from " .. where .. ": " .. line:sub(1, 80)
    end
    local headers, count, bytes = {}, 0, 0
    while true do
      line, err = sock:receive "*l"
      if not line then
        return failure("reading the headers from " .. where, err)
      end
      if line == "" then
        break
      end
      count, bytes = count + 1, bytes + #line
      if count > MAX_HEADER_LINES or bytes > MAX_HEADER_BYTES then
        return nil, "the response headers from " .. where .. " are too large"
      end
      local name, value = line:match "^([^:%s]+):%s*(.-)%s*$"
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
    status = tonumber(status)
    if status >= 200 or status < 100 then
      return status, headers, version
    end
  end
end

-- Reads up to n bytes into parts; returns the count read, or nil, err.
local function read_exact(sock, n, parts, where)
  local data, err = sock:receive(n)
  if not data then
    return failure("reading the body from " .. where, err)
  end
  parts[#parts + 1] = data
  return #data
end

-- Reads the body. Returns the body, whether the connection can be reused
-- (the answer was read whole and framed), or nil, err. Stops after limit
-- bytes: the client then reports its size cap.
local function read_body(sock, status, headers, where, limit)
  local parts, total = {}, 0
  local te = headers["transfer-encoding"]
  local length = headers["content-length"]
  if status == 204 or status == 304 then
    return "", true
  end
  if type(te) == "string" and te:lower():find("chunked", 1, true) then
    while true do
      local line, err = sock:receive "*l"
      if not line then
        return failure("reading a chunk size from " .. where, err)
      end
      local size = tonumber(line:match "^%s*(%x+)", 16)
      if not size then
        return nil, "a malformed chunk size from " .. where .. ": " .. line:sub(1, 40)
      end
      if size == 0 then
        repeat -- trailers, up to the empty line
          line, err = sock:receive "*l"
          if not line then
            return failure("reading the trailers from " .. where, err)
          end
        until line == ""
        return table.concat(parts), true
      end
      local want = math.min(size, limit - total)
      local got, err2 = read_exact(sock, want, parts, where)
      if not got then
        return nil, err2
      end
      total = total + got
      if total >= limit then
        return table.concat(parts), false
      end
      local crlf, err3 = sock:receive(2)
      if crlf ~= "\r\n" then
        return failure("reading the end of a chunk from " .. where, err3 or "malformed chunk")
      end
    end
  elseif length ~= nil then
    local n = tonumber(type(length) == "table" and length[1] or length)
    if not n or n < 0 then
      return nil, "a malformed Content-Length from " .. where
    end
    if n == 0 then
      return "", true
    end
    local got, err = read_exact(sock, math.min(n, limit), parts, where)
    if not got then
      return nil, err
    end
    return parts[1], n < limit
  end
  -- no framing: the body ends when the server closes
  while total < limit do
    local data, err = sock:receiveany(math.min(65536, limit - total))
    if not data then
      if err == "closed" then
        break
      end
      return failure("reading the body from " .. where, err)
    end
    parts[#parts + 1] = data
    total = total + #data
  end
  return table.concat(parts), false
end

local function keeps_alive(version, headers)
  local connection = headers.connection
  connection = type(connection) == "string" and connection:lower() or ""
  if version == "1.0" then
    return connection:find("keep-alive", 1, true) ~= nil
  end
  return connection:find("close", 1, true) == nil
end

-- When a handshake ends within its first call (the server answered at once)
-- and verification failed, lua-resty-core 0.1.25 (Debian 12) raises
-- "assertion failed!" instead of returning the reason: nginx has recorded
-- the reason and closed the socket, and resty.core asserts that fetching
-- the session succeeds. Seen under load, on either verification failure.
-- The reason is read here the way resty.core reads it when the handshake
-- waited; failing that, the raised error is reported as it is.
local function raised_handshake_error(sock, raised)
  local ok, reason = pcall(function()
    local ffi = require "ffi"
    local base = require "resty.core.base"
    local session, code = ffi.new "void *[1]", ffi.new "int[1]"
    local errmsg = base.get_errmsg_ptr()
    local rc = ffi.C.ngx_http_lua_ffi_socket_tcp_get_sslhandshake_result(base.get_request(), sock[1], session,
      errmsg, code)
    if rc ~= base.FFI_ERROR or errmsg[0] == nil then
      return nil
    end
    local text = ffi.string(errmsg[0])
    return code[0] ~= 0 and code[0] .. ": " .. text or text
  end)
  if ok and reason then
    return reason
  end
  return "handshake failed (" .. tostring(raised) .. ")"
end

-- One attempt on one connection (pooled or new): status, headers, body, or
-- nil, err, stale where stale says the connection came from the pool and
-- failed before any answer (the server had closed it): the caller takes
-- another instead of counting a failed attempt.
local function exchange(req, u, settings, deadline)
  local where = u.host .. ":" .. u.port
  local sock = ngx.socket.tcp()
  sock:settimeouts(math.max(1, math.floor(req.connect_timeout * 1000)), left_ms(deadline),
    left_ms(deadline, req.stall_timeout))
  local ok, err = sock:connect(settings.hosts[u.host] or u.host, u.port, {
    pool = u.scheme .. "://" .. where,
    pool_size = settings.pool_size,
  })
  if not ok then
    return failure("connecting to " .. where, err)
  end
  local reused = (sock:getreusedtimes() or 0) > 0
  if u.scheme == "https" and not reused then
    -- verify on: the certificate must chain to lua_ssl_trusted_certificate
    -- and name the host
    local ran, session, herr = pcall(sock.sslhandshake, sock, nil, u.host, true)
    if not ran then
      session, herr = nil, raised_handshake_error(sock, session)
    end
    if not session then
      sock:close()
      if herr == "timeout" then
        return failure("TLS handshake with " .. where, herr)
      end
      -- a certificate that failed verification will fail again: not retried
      return nil,
        { kind = "network", retry = false, message = "TLS handshake with " .. where .. ": " .. tostring(herr) }
    end
  end
  local sent, serr = sock:send(request_text(u, req.headers))
  if not sent then
    sock:close()
    local _, why = failure("sending to " .. where, serr)
    return nil, why, reused and serr ~= "timeout"
  end
  local status, headers, version = read_head(sock, where, deadline, req.stall_timeout)
  if not status then
    sock:close()
    -- a timeout is a slow server, not a stale connection (timeouts are tables)
    return nil, headers, reused and type(headers) == "string"
  end
  sock:settimeout(left_ms(deadline, req.stall_timeout))
  local body, reusable = read_body(sock, status, headers, where, req.max_response_bytes + 1)
  if not body then
    sock:close()
    return nil, reusable
  end
  if reusable and keeps_alive(version, headers) then
    sock:setkeepalive(settings.keepalive_timeout * 1000, settings.pool_size)
  else
    sock:close()
  end
  return status, headers, body
end

local function send(req, settings)
  local u, err = parse_url(req.url)
  if not u then
    return nil, { kind = "network", retry = false, message = err }
  end
  -- req.timeout bounds the whole attempt, as libcurl's does
  local deadline = ngx.now() + req.timeout
  for _ = 1, settings.pool_size + 1 do
    local status, headers, body = exchange(req, u, settings, deadline)
    -- a pooled connection closed by the server fails before any answer:
    -- take another (a new one once the pool is empty)
    if status or not body then
      return status, headers, body
    end
  end
  return nil, "no usable connection to " .. u.host .. ":" .. u.port
end

local function sleep(seconds)
  return ngx.sleep(seconds)
end

--- A transport with its own settings: keepalive_timeout (seconds an idle
-- connection stays in the pool, default 60), pool_size (connections kept per
-- host and worker, default 30), hosts (host name -> address, connected to
-- without asking the resolver, as curl's --resolve; TLS still verifies the
-- name).
-- @return transport table, or nil and an error string
function M.new(options)
  local settings = {}
  for name, value in pairs(DEFAULTS) do
    settings[name] = value
  end
  for name, value in pairs(options or {}) do
    if DEFAULTS[name] == nil then
      return nil, "openai_usage.transport.resty: unknown option " .. tostring(name)
        .. " (keepalive_timeout, pool_size, hosts)"
    end
    if type(value) ~= type(DEFAULTS[name]) or (type(value) == "number" and value <= 0) then
      return nil, "openai_usage.transport.resty: " .. name
        .. (name == "hosts" and " must be a table of host name -> address" or " must be a positive number")
    end
    settings[name] = value
  end
  settings.pool_size = math.floor(settings.pool_size)
  return {
    request = function(req)
      return send(req, settings)
    end,
    sleep = sleep,
    gzip = false,
  }
end

-- for openresty_spec: the read-back, checked against a reported failure
M._raised_handshake_error = raised_handshake_error

local default = M.new()
M.request = default.request
M.sleep = sleep
M.gzip = false

return M
