--- The private link from a client object to its C handle. The protocol the
-- walk drivers speak (request, prefetch, poll, collect, cancel) and a Lua
-- transport's two halves (transport_request, transport_answer) are the
-- handle's methods: openai_usage, openai_usage.walk and openai_usage.async
-- reach them through here, and they are no part of the client's API.
local M = {}

-- The field of a client object that holds its handle: a key no other code has.
local HANDLE = setmetatable({}, {
  __tostring = function()
    return "openai_usage.handle"
  end,
})

--- Makes client (a table) the owner of handle, the C userdata; returns client.
function M.attach(client, handle)
  client[HANDLE] = handle
  return client
end

--- The C handle of a client object; raises when given something else (a
-- method called with a dot, client.images{...}).
function M.of(client)
  local handle = type(client) == "table" and rawget(client, HANDLE)
  if not handle then
    error("openai_usage: expected a client (call its methods with a colon), got a " .. type(client), 3)
  end
  return handle
end

--- One page of endpoint for params (times already read: Unix seconds),
-- through the client's Lua transport when it has one (openai_usage.transport,
-- in the caller's thread so that the transport may yield), else libcurl.
-- @return page, or nil and an error table
function M.request(client, endpoint, params)
  local handle = M.of(client)
  if client.transport then
    return require("openai_usage.transport").request(handle, client.transport, endpoint, params)
  end
  return handle:request(endpoint, params)
end

return M
