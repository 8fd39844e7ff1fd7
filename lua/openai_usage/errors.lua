--- Error values of the pure-Lua modules (report, format, chart, text): the
-- fields of the C core's openai_usage.error ({kind, message, ...}) and the
-- same one line from tostring, "openai_usage: invalid_argument: ...", without
-- loading the C core, so these modules stay pure Lua. Functions return
-- nil, err; report steps and charts raise err (see README, Errors).
local text = require "openai_usage.text"

local M = {}

local meta = { __name = "openai_usage.error" }

-- A status the C core prints: a number with an integer value.
local function whole(v)
  return type(v) == "number" and v == math.floor(v) and v >= -2 ^ 63 and v < 2 ^ 63
end

-- The shape of src/error.c's error_tostring: kind, status, (code), message,
-- [request_id], each text made printable (one line, no control bytes).
function meta.__tostring(e)
  local printable = text.printable
  local parts = { "openai_usage: ", type(e.kind) == "string" and printable(e.kind) or "error" }
  if whole(e.status) then
    parts[#parts + 1] = (" %d"):format(e.status)
  end
  if type(e.code) == "string" then
    parts[#parts + 1] = " (" .. printable(e.code) .. ")"
  end
  local message = e.message
  if type(message) == "number" then
    message = tostring(message)
  end
  parts[#parts + 1] = ": " .. (type(message) == "string" and printable(message) or "unknown error")
  if type(e.request_id) == "string" then
    parts[#parts + 1] = " [request_id " .. printable(e.request_id) .. "]"
  end
  return table.concat(parts)
end

--- An error value: fields is a table with at least kind and message; it
-- becomes the error (as core.error does).
function M.new(fields)
  if type(fields) ~= "table" or type(fields.kind) ~= "string" then
    error("errors.new: expected a table with a string kind", 2)
  end
  return setmetatable(fields, meta)
end

--- The metatable of every error value: the C core's errors take it too
-- (src/error.c), so tostring is this one function wherever an error is made.
M.metatable = meta

--- Whether v is an error value (made here or by the C core).
function M.is(v)
  return getmetatable(v) == meta
end

--- Raises an invalid_argument error: a program, not the data, gave a bad
-- argument. A table error carries no position, so no level is taken.
function M.invalid(message)
  error(M.new { kind = "invalid_argument", message = message })
end

return M
