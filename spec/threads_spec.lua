-- Two Lua states on two threads of one process (an embedding program, a
-- thread pool), each requiring the module and making a client and a request
-- at the same moment: both get their page; libcurl is loaded once.
-- spec/support/two_states.c is that program; make check-tsan builds it and
-- the module with ThreadSanitizer (OPENAI_USAGE_TEST_CFLAGS).
local standin = require "spec.support.standin"
local util = require "spec.support.util"

local KEY = "sk-admin-spec-threads-0123456789"
local NOW = 1732406400
local PKG = (jit and "luajit") or ({ ["Lua 5.1"] = "lua5.1", ["Lua 5.3"] = "lua5.3" })[_VERSION] or "lua5.4"

describe("two Lua states on two threads", function()
  local srv, bin

  setup(function()
    srv = standin.start { key = KEY, now = NOW }
    bin = os.tmpname()
    local cmd = ("cc -std=c11 -D_GNU_SOURCE -g -O1 -pthread %s $(pkg-config --cflags %s) -o %s "
      .. "spec/support/two_states.c $(pkg-config --libs %s)"):format(os.getenv "OPENAI_USAGE_TEST_CFLAGS" or "", PKG,
      util.q(bin), PKG)
    local out, ok = util.popen_run(cmd)
    assert(ok, "could not build spec/support/two_states.c: " .. out)
  end)

  teardown(function()
    srv:stop()
    os.remove(bin)
  end)

  it("each require the module, make a client and get its page, at the same moment", function()
    for _ = 1, 5 do -- a fresh process each time: the first load is the race
      local out, ok = util.popen_run(("%s %s %s %d %d"):format(util.q(bin), util.q(srv.url), util.q(KEY),
        NOW - 3 * 86400, NOW))
      assert(ok, out)
      assert.are.equal(2, select(2, out:gsub("page from " .. (NOW - 3 * 86400), "")), out)
    end
  end)
end)
