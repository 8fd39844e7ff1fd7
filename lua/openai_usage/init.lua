-- openai_usage: read the OpenAI organization Usage API from Lua.
local core = require "openai_usage.core"

local M = {
  version = core.version,
}

--- Decodes a UsageResponse JSON text offline with the same decoder the client uses.
-- @return page table, or nil and an error table
function M.decode(text, max_depth)
  return core.decode(text, max_depth)
end

return M
