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
      .. [[LUA_CPATH='%s/lib/lua/%s/?.so;;' %s/bin/openai-usage images --help]])
      :format(prefix, V, prefix, V, prefix, V, prefix)
    local out, ok = run(cmd)
    assert.is_true(ok, out)
    assert.matches("usage: openai%-usage ENDPOINT", out)
    assert.matches("%-%-sizes", out)
  end)

  it("installs a bash completion offering the endpoints, then the option list and that endpoint's filters", function()
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

-- The version the module reports, as the C sources define it (OU_VERSION).
local function module_version()
  return require("openai_usage").version
end

local RELEASE = "rockspec/openai-usage-" .. module_version() .. "-1.rockspec"

-- Builds and installs rockspec with `luarocks make` from a copy of the
-- sources into a fresh tree; returns what a fresh Lua prints of the
-- installed module's version and decode("[5000]"), and the installed
-- command's --help.
local function luarocks_make(rockspec_path, version)
  local tree = os.tmpname()
  os.remove(tree)
  -- the builtin backend builds in place: use a copy, never the working tree
  local copy = tree .. ".src"
  local p = io.popen(("mkdir -p '%s' && cp -r src lua rockspec bin '%s' && cd '%s' && luarocks --lua-version %s make "
    .. "--tree='%s' --deps-mode=none %s 2>&1; rm -rf '%s'")
    :format(copy, copy, copy, V, tree, rockspec_path, copy))
  local out = p:read "*a"
  p:close()
  assert.matches("openai-usage " .. version .. " is now installed", out, 1, true)
  local env = ([[cd / && env LUA_PATH='%s/share/lua/%s/?.lua;%s/share/lua/%s/?/init.lua;;' ]]
    .. [[LUA_CPATH='%s/lib/lua/%s/?.so;;' ]]):format(tree, V, tree, V, tree, V)
  p = io.popen(env .. util.suite_lua()
    .. [[ -e 'local u = require "openai_usage"; io.write(u.version, " ", tostring(u.decode("[5000]")[1]))' 2>&1]])
  local loaded = p:read "*a"
  p:close()
  -- the command is installed into the tree's bin
  p = io.popen(env .. tree .. "/bin/openai-usage --help 2>&1")
  local help = p:read "*a"
  p:close()
  util.rm_rf(tree)
  return loaded, help
end

describe("the rockspec", function()
  it("names every Lua module under its dotted name", function()
    local rockspec = assert(io.open "rockspec/openai-usage-scm-1.rockspec"):read "*a"
    for _, path in ipairs(lua_modules()) do
      local name = path:gsub("^lua/", ""):gsub("/init%.lua$", ""):gsub("%.lua$", ""):gsub("/", ".")
      assert.truthy(rockspec:find(('["%s"] = "%s"'):format(name, path), 1, true),
        path .. " is missing from the rockspec")
    end
  end)

  it("builds and installs the same module with LuaRocks, loadable from its tree", function()
    local loaded, help = luarocks_make("rockspec/openai-usage-scm-1.rockspec", "scm-1")
    assert.are.equal(module_version() .. " 5000", loaded)
    assert.matches("usage: openai%-usage ENDPOINT", help)
  end)
end)

describe("the release", function()
  it("has a rockspec for the version the module reports, scm-1's as tools/gen-rockspec.lua writes it", function()
    local committed = util.read_if(RELEASE)
    assert.is_string(committed, RELEASE .. " is missing: run lua5.4 tools/gen-rockspec.lua")
    local fresh = os.tmpname()
    local out, ok = util.popen_run(util.suite_lua() .. " tools/gen-rockspec.lua " .. util.q(fresh) .. " 2>&1")
    local generated = util.read_if(fresh)
    os.remove(fresh)
    assert.is_true(ok, out)
    assert.are.equal(generated, committed, RELEASE .. " is stale: run lua5.4 tools/gen-rockspec.lua")
    -- what luarocks reads from it: the version, the same modules as scm-1
    local function load_rockspec(path)
      local fields = {}
      local chunk = assert((loadstring or load)(util.read(path), path, "t", fields))
      if setfenv then
        setfenv(chunk, fields)
      end
      chunk()
      return fields
    end
    local release, scm = load_rockspec(RELEASE), load_rockspec "rockspec/openai-usage-scm-1.rockspec"
    assert.are.equal(module_version() .. "-1", release.version)
    assert.are.equal("v" .. module_version(), release.source.tag)
    assert.are.same(scm.build, release.build)
    assert.are.same(scm.dependencies, release.dependencies)
  end)

  it("installs with luarocks make from the release rockspec, and reports its version", function()
    local loaded, help = luarocks_make(RELEASE, module_version() .. "-1")
    assert.are.equal(module_version() .. " 5000", loaded)
    assert.matches("usage: openai%-usage ENDPOINT", help)
  end)

  it("is in CHANGELOG.md, under its version", function()
    local changelog = assert(util.read_if "CHANGELOG.md", "CHANGELOG.md is missing")
    local heading = "\n## %[" .. module_version():gsub("%.", "%%.") .. "%] %- %d%d%d%d%-%d%d%-%d%d\n"
    assert.truthy(changelog:find(heading),
      "CHANGELOG.md has no section for " .. module_version())
    assert.truthy(changelog:find("\n## [Unreleased]\n", 1, true))
  end)
end)
