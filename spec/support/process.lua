-- fork() for the specs: compiles spec/support/fork.c against the headers of
-- the Lua running the suite (once per run) and loads it. Runs on Lua 5.4,
-- 5.3, 5.1 and LuaJIT.
local util = require "spec.support.util"

local M = {}

local PKG = (jit and "luajit") or ({ ["Lua 5.1"] = "lua5.1", ["Lua 5.3"] = "lua5.3" })[_VERSION] or "lua5.4"

local loaded

--- The module: fork() -> pid (0 in the child), wait(pid, seconds) -> exit
-- code | nil, "timeout" | nil, "signal N", _exit(code).
function M.load()
  if loaded then
    return loaded
  end
  local dir = os.tmpname()
  os.remove(dir)
  assert(util.execute("mkdir -p " .. util.q(dir)))
  local so = dir .. "/ou_fork.so"
  local cmd = ("cc -std=c11 -D_GNU_SOURCE -O1 -shared -fPIC $(pkg-config --cflags %s) -o %s spec/support/fork.c 2>&1")
    :format(PKG, util.q(so))
  local out, ok = util.popen_run(cmd)
  assert(ok, "could not compile spec/support/fork.c: " .. out)
  loaded = assert(package.loadlib(so, "luaopen_ou_fork"))()
  util.rm_rf(dir) -- the mapping stays loaded
  return loaded
end

return M
