-- The README's host examples are files under examples/, shown verbatim;
-- the plain Lua one runs here against the stand-in (the OpenResty and
-- Neovim ones run in spec/openresty_spec.lua and spec/neovim_spec.lua).
local standin = require "spec.support.standin"
local util = require "spec.support.util"

local KEY = "sk-admin-examples-3c9d"
local LUA = util.LUA
local read = util.read

describe("README examples", function()
  local readme = read "README.md"

  for _, case in ipairs {
    { "examples/plain/report.lua", "lua" },
    { "examples/openresty/nginx.conf", "nginx" },
    { "examples/openresty/metrics.conf", "nginx" },
    { "examples/neovim/init.lua", "lua" },
  } do
    it(case[1] .. " is shown verbatim in a code block", function()
      local block = "```" .. case[2] .. "\n" .. read(case[1]) .. "```"
      assert.truthy(readme:find(block, 1, true), case[1] .. " differs from the README")
    end)
  end

  it("the OpenResty, metrics and Neovim specs run the example files themselves", function()
    assert.truthy(read("spec/openresty_spec.lua"):find("examples/openresty/nginx.conf", 1, true))
    assert.truthy(read("spec/neovim_spec.lua"):find("examples/neovim/init.lua", 1, true))
    assert.truthy(read("spec/metrics_openresty_spec.lua"):find("examples/openresty/metrics.conf", 1, true))
  end)

  it("the plain Lua example prints a consistent top-3 table from the API", function()
    local srv = standin.start { key = KEY }
    local p = assert(io.popen(("env OPENAI_ADMIN_KEY=%s OPENAI_BASE_URL=%s %s examples/plain/report.lua 2>&1")
      :format(KEY, srv.url, LUA)))
    local out = p:read "*a"
    p:close()
    local requests = #srv:requests()
    srv:stop()
    assert.is_true(requests >= 1)
    assert.matches("^model%s+images%s+num_model_requests%s+share\n", out)
    local sum, shares, rows = 0, 0, 0
    for line in out:gmatch "[^\n]+" do
      local name, images, _, share = line:match "^(%S+)%s+([%d,]+)%s+([%d,]+)%s+([%d.]+)%%$"
      if name and name ~= "Total" then
        rows = rows + 1
        sum = sum + tonumber((images:gsub(",", "")))
        shares = shares + tonumber(share)
      elseif name == "Total" then
        assert.are.equal(sum, tonumber((images:gsub(",", ""))))
      end
    end
    assert.is_true(rows >= 2 and rows <= 4, out) -- the top 3, and "(other)" when there are more
    assert.is_true(math.abs(shares - 100) < 0.3, out)
    assert.falsy(out:find(KEY, 1, true))
  end)
end)
