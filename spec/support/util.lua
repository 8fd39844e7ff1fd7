-- Small helpers the specs and spec/support modules share: files, shell
-- quoting, exit codes, the interpreters to run, clocks, temporary trees,
-- assertions. Runs on Lua 5.4, 5.3, 5.1 and LuaJIT.
local M = {}

--- A file's whole content; raises when it cannot be opened.
function M.read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read "*a"
  f:close()
  return text
end

--- A file's whole content, or nil when it cannot be opened.
function M.read_if(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local text = f:read "*a"
  f:close()
  return text
end

--- Writes text as a file's whole content; raises when it cannot be opened.
function M.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

--- A string as one single-quoted word for sh.
function M.q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- The exit code from os.execute's results: 5.1 and LuaJIT return the raw
-- wait status alone, 5.2+ true|nil, "exit"|"signal", code.
function M.exit_code(ok, _how, code)
  if type(ok) == "number" then -- 5.1: the raw wait status
    return ok >= 256 and math.floor(ok / 256) or ok
  end
  return code
end

--- Whether a shell command exits with 0 (os.execute on any version).
function M.execute(cmd)
  return M.exit_code(os.execute(cmd)) == 0
end

--- A command's stdout, the pipe's close ignored.
function M.capture(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read "*a"
  p:close()
  return out
end

--- A command's stdout and stderr together, and whether it exited with 0 as
-- the pipe's close reports it (5.1's close gives no status: true).
function M.popen_run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read "*a"
  local ok, _, code = p:close()
  return out, ok == true or ok == 0 or code == 0
end

--- The interpreter running this suite, as a command (the matrix runs the
-- CLI and the examples on it too).
M.LUA = (jit and "luajit") or ({ ["Lua 5.1"] = "lua5.1", ["Lua 5.3"] = "lua5.3" })[_VERSION] or "lua5.4"

--- The interpreter named by $OPENAI_USAGE_LUA (make test sets it), lua5.4 when unset.
function M.suite_lua()
  return os.getenv "OPENAI_USAGE_LUA" or "lua5.4"
end

--- Wall-clock seconds with sub-second precision (plain Lua has none).
function M.wall()
  local p = io.popen "date +%s.%N"
  local t = tonumber(p:read "*l")
  p:close()
  return t
end

--- Runs make in the checkout as a user would type it: without what an
-- enclosing make hands its sub-makes (MAKEFLAGS carries that make's command
-- line, LUA_PKG=lua5.4 say, into this one) or a sanitizer preload.
-- Returns the output (stdout and stderr) and whether make exited with 0.
function M.make(args)
  return M.popen_run("env -u MAKEFLAGS -u MFLAGS -u MAKEOVERRIDES -u MAKELEVEL -u LD_PRELOAD "
    .. "make --no-print-directory " .. args)
end

--- A file's permission bits in octal ("600"), nil when it does not exist;
-- a symlink's are its target's.
function M.mode(path)
  local out = M.capture("stat -L -c %a " .. M.q(path) .. " 2>/dev/null"):match "%d+"
  return out
end

--- Whether path is a symlink (itself, not its target).
function M.is_symlink(path)
  return M.execute("test -L " .. M.q(path))
end

--- A fresh empty directory (mktemp -d: 0700); remove it with rm_rf.
function M.tmpdir()
  return (M.capture "mktemp -d":gsub("%s+$", ""))
end

--- Removes a file or a tree (rm -rf, the path quoted).
function M.rm_rf(path)
  return os.execute("rm -rf " .. M.q(path))
end

--- The whitespace-separated words of a line.
function M.words(text)
  local out = {}
  for word in text:gmatch "%S+" do
    out[#out + 1] = word
  end
  return out
end

--- Asserts that two numbers agree to 1e-9, relative to the larger (at least 1).
function M.near(expected, actual, what)
  local scale = math.max(1, math.abs(expected), math.abs(actual))
  assert(math.abs(expected - actual) <= 1e-9 * scale, ("%s: expected %.17g, got %.17g"):format(what or "", expected,
    actual))
end

--- Asserts (luassert) that key appears in no string of value: keys, values
-- and tostring of every table reachable from it.
function M.assert_no_key(key, value, seen)
  local luassert = require "luassert"
  seen = seen or {}
  if type(value) == "string" then
    luassert.is_nil(value:find(key, 1, true), "the API key leaked into: " .. value)
  elseif type(value) == "table" and not seen[value] then
    seen[value] = true
    for k, v in pairs(value) do
      M.assert_no_key(key, k, seen)
      M.assert_no_key(key, v, seen)
    end
    M.assert_no_key(key, tostring(value), seen)
  end
end

--- Where text holds a run of at least least (default 12) bytes of key, any
-- part of it (a key cut at a string cap leaves its start): the run found and
-- its position, or nil.
function M.find_key_run(key, text, least)
  least = math.min(least or 12, #key)
  for i = 1, #key - least + 1 do
    local at = text:find(key:sub(i, i + least - 1), 1, true)
    if at then
      return key:sub(i, i + least - 1), at
    end
  end
end

return M
