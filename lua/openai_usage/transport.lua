-- openai_usage.transport: one request through a Lua transport.
-- The C core builds what is sent (validation, query, headers) and judges
-- every answer (size cap, the retry policy and its delays, decoding); this
-- loop only calls the transport and sleeps when told to try again. Both
-- happen here, in Lua, so that both may yield: OpenResty's cosockets and
-- ngx.sleep suspend the request's coroutine, which a C call could not allow.
local core = require "openai_usage.core"

local M = {}

-- A transport is a function (blocking retry sleeps), or a table
-- {request = fn, sleep = fn, gzip = boolean}; core.new checked its shape.
local function parts(transport)
  if type(transport) == "function" then
    return transport, core.sleep
  end
  return transport.request, transport.sleep or core.sleep
end

--- Sends one request of a client's for endpoint and params through
-- transport, retrying as the client is configured to. handle is the
-- client's C handle (openai_usage.protocol), which builds and judges.
-- @return page, or nil and an error table
function M.request(handle, transport, endpoint, params)
  local send, sleep = parts(transport)
  -- record: this request's own (URL, answer, attempts, delays), so that
  -- requests sharing a client (cosockets) never mix their counters
  local req, record = handle:transport_request(endpoint, params)
  if not req then
    return nil, record
  end
  local attempt = 1
  while true do
    -- pcall: an error raised in the transport comes back as kind "transport"
    local page, result = handle:transport_answer(record, pcall(send, req))
    if page ~= false then
      return page, result
    end
    local slept, why = pcall(sleep, result)
    if not slept then
      return nil, core.error {
        kind = "transport",
        attempts = attempt,
        message = "the transport's sleep function raised an error: " .. tostring(why),
      }
    end
    attempt = attempt + 1
  end
end

return M
