-- make install writes the standard tree, and a fresh Lua process loads the
-- module from it with nothing but LUA_PATH and LUA_CPATH.
local V = os.getenv("OPENAI_USAGE_LUA_VERSION") or "5.4"
local MAKE_ARGS = os.getenv("OPENAI_USAGE_MAKE_ARGS") or ""
local util = require "spec.support.util"

-- Every Lua file of the module, as lua/openai_usage/....lua paths.
local function lua_modules()
  local p = assert(io.popen "find lua -name '*.lua' | sort")
  local out = {}
  for line in p:lines() do
    out[#out + 1] = line
  end
  p:close()
  return out
end
describe("make install", function()
  local prefix

  setup(function()
    prefix = os.tmpname()
    os.remove(prefix)
  end)

  teardown(function()
    util.rm_rf(prefix)
  end)

  local run = util.popen_run

  it("installs the Lua files and core.so where LUA_PATH and LUA_CPATH find them", function()
    local out, ok = util.make("install PREFIX='" .. prefix .. "' " .. MAKE_ARGS)
    assert.is_true(ok, out)
    assert.is_not_nil(io.open(prefix .. "/share/lua/" .. V .. "/openai_usage/init.lua"))
    assert.is_not_nil(io.open(prefix .. "/lib/lua/" .. V .. "/openai_usage/core.so"))
    local lua = util.suite_lua()
    local cmd = ([[cd / && env LUA_PATH='%s/share/lua/%s/?.lua;%s/share/lua/%s/?/init.lua;;' ]]
      .. [[LUA_CPATH='%s/lib/lua/%s/?.so;;' %s -e 'local u = require "openai_usage"; ]]
      .. [[io.write(u.version, " ", tostring(u.decode("[5000]")[1]))']])
      :format(prefix, V, prefix, V, prefix, V, lua)
    out, ok = run(cmd)
    assert.is_true(ok, out)
    assert.are.equal(require("openai_usage").version .. " 5000", out)
  end)

  it("installs every Lua module and an openai-usage command that runs from the tree", function()
    for _, path in ipairs(lua_modules()) do
      assert.is_not_nil(io.open(prefix .. "/share/lua/" .. V .. "/" .. path:gsub("^lua/", "")), path)
    end
    local cmd = ([[cd / && env LUA_PATH='%s/share/lua/%s/?.lua;%s/share/lua/%s/?/init.lua;;' ]]
      .. [[LUA_CPATH='%s/lib/lua/%s/?.so;;' %s/bin/openai-usage images --help]]):format(prefix, V, prefix, V, prefix, V, prefix)
    local out, ok = run(cmd)
    assert.is_true(ok, out)
    assert.matches("usage: openai%-usage ENDPOINT", out)
    assert.matches("%-%-sizes", out)
  end)

  it("installs a bash completion that offers the endpoints, then the option list and that endpoint's filters", function()
    local script = prefix .. "/share/bash-completion/completions/openai-usage"
    assert.is_not_nil(io.open(script), script)
    local function complete(...)
      local words = { "openai-usage", ... }
      local out, ok = run(("bash -c %s"):format(util.q(("source %s; COMP_WORDS=(%s); COMP_CWORD=%d; _openai_usage; "
        .. 'echo "${COMPREPLY[*]}"'):format(util.q(script), table.concat(words, " "), #words - 1))))
      assert.is_true(ok, out)
      return out:gsub("\n$", "")
    end
    assert.are.equal("images", complete "ima")
    assert.are.equal("--group-by", complete("images", "--group"))
    assert.are.equal("--sizes", complete("images", "--siz"))
    assert.are.equal("", complete("costs", "--siz")) -- costs has no size filter
    local cli = require "openai_usage.cli"
    local names = {}
    for _, o in ipairs(cli.options "images") do
      for _, name in ipairs(o.names) do
        if name:match "^%-%-" then
          names[#names + 1] = name
        end
      end
    end
    table.sort(names)
    local offered = {}
    for w in complete("images", "--"):gmatch "%S+" do
      offered[#offered + 1] = w
    end
    table.sort(offered)
    assert.are.same(names, offered)
  end)
end)

describe("the bundled reference-page generator", function()
  it("is the project's reference copy, byte for byte, where the shared original is present", function()
    local read = util.read_if
    local ours = read "bench/gen-page.lua"
    assert.is_string(ours)
    local original = read((os.getenv("OPENAI_USAGE_SHARED") or "../shared") .. "/bench/gen-page.lua")
    if original == nil then
      return pending "../shared is not beside this clone"
    end
    assert.are.equal(original, ours)
  end)
end)

describe("the rockspec", function()
  it("builds and installs the same module with LuaRocks, loadable from its tree", function()
    local tree = os.tmpname()
    os.remove(tree)
    -- the builtin backend builds in place: use a copy, never the working tree
    local copy = tree .. ".src"
    -- the rockspec names every Lua module under its dotted name
    local rockspec = assert(io.open "rockspec/openai-usage-scm-1.rockspec"):read "*a"
    for _, path in ipairs(lua_modules()) do
      local name = path:gsub("^lua/", ""):gsub("/init%.lua$", ""):gsub("%.lua$", ""):gsub("/", ".")
      assert.truthy(rockspec:find(('["%s"] = "%s"'):format(name, path), 1, true), path .. " is missing from the rockspec")
    end
    local p = io.popen(("mkdir -p '%s' && cp -r src lua rockspec bin '%s' && cd '%s' && luarocks --lua-version %s make "
      .. "--tree='%s' --deps-mode=none rockspec/openai-usage-scm-1.rockspec 2>&1; rm -rf '%s'")
      :format(copy, copy, copy, V, tree, copy))
    local out = p:read "*a"
    p:close()
    assert.matches("openai-usage scm-1 is now installed", out, 1, true)
    local lua = util.suite_lua()
    p = io.popen(([[cd / && env LUA_PATH='%s/share/lua/%s/?.lua;%s/share/lua/%s/?/init.lua;;' ]]
      .. [[LUA_CPATH='%s/lib/lua/%s/?.so;;' %s -e 'local u = require "openai_usage"; ]]
      .. [[io.write(u.version, " ", tostring(u.decode("[5000]")[1]))' 2>&1]]):format(tree, V, tree, V, tree, V, lua))
    out = p:read "*a"
    p:close()
    assert.are.equal(require("openai_usage").version .. " 5000", out)
    -- the command is installed into the tree's bin
    p = io.popen(([[cd / && env LUA_PATH='%s/share/lua/%s/?.lua;%s/share/lua/%s/?/init.lua;;' ]]
      .. [[LUA_CPATH='%s/lib/lua/%s/?.so;;' %s/bin/openai-usage --help 2>&1]]):format(tree, V, tree, V, tree, V, tree))
    local help = p:read "*a"
    p:close()
    util.rm_rf(tree)
    assert.matches("usage: openai%-usage ENDPOINT", help)
  end)
end)
