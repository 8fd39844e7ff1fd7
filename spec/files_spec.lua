-- The files the library writes (the page cache, the CLI's --out, through
-- the C core's write_file): created exclusively and privately beside their
-- target, so a symlink planted at a name an attacker can predict is never
-- followed; the cache is private (directory 0700, files 0600); an existing
-- file keeps its mode; a symlinked target is written through.
local core = require "openai_usage.core"
local cache = require "openai_usage.cache"
local usage = require "openai_usage"
local standin = require "spec.support.standin"
local util = require "spec.support.util"

local KEY = "sk-admin-files-3c9d21"
local q, read, write = util.q, util.read_if, util.write
local DAY = 86400

-- A page whose buckets ended long ago: settled under any settle rule.
local function old_page()
  local start = 1700000000 - 1700000000 % DAY
  return {
    object = "page",
    data = { { object = "bucket", start_time = start, end_time = start + DAY, results = {} } },
    has_more = false,
  }
end

local function listing(dir)
  return util.capture("ls -A " .. q(dir))
end

describe("files the library writes", function()
  local dir

  before_each(function()
    dir = util.tmpdir()
  end)

  after_each(function()
    util.rm_rf(dir)
  end)

  describe("core.write_file", function()
    it("writes a private new file (0600) by default and the umask's mode with \"default\"", function()
      assert.is_true(core.write_file(dir .. "/a", "one", "private"))
      assert.are.equal("600", util.mode(dir .. "/a"))
      assert.are.equal("one", read(dir .. "/a"))
      -- the mode a shell's > gives, under two umasks, read in a child that sets them
      for _, case in ipairs { { "022", "644" }, { "027", "640" } } do
        local lua = ("package.cpath = %q .. ';' .. package.cpath; "
          .. "assert(require('openai_usage.core').write_file(%q, 'two', 'default'))"):format(
          package.cpath, dir .. "/b" .. case[1])
        assert(util.execute(("umask %s && %s -e %s"):format(case[1], util.LUA, q(lua))))
        assert.are.equal(case[2], util.mode(dir .. "/b" .. case[1]))
      end
      assert.are.equal("a\nb022\nb027\n", listing(dir)) -- no temporary file left
    end)

    it("keeps an existing file's mode, and writes a symlink's target, leaving the link", function()
      write(dir .. "/kept", "old")
      assert(util.execute("chmod 600 " .. q(dir .. "/kept")))
      assert.is_true(core.write_file(dir .. "/kept", "new", "default"))
      assert.are.equal("600", util.mode(dir .. "/kept"))
      assert.are.equal("new", read(dir .. "/kept"))

      assert(util.execute(("mkdir %s/elsewhere && ln -s elsewhere/target %s/link"):format(q(dir), q(dir))))
      assert.is_true(core.write_file(dir .. "/link", "through a dangling link", "default"))
      assert.is_true(util.is_symlink(dir .. "/link"))
      assert.are.equal("through a dangling link", read(dir .. "/elsewhere/target"))
      assert.is_true(core.write_file(dir .. "/link", "again", "default"))
      assert.are.equal("again", read(dir .. "/elsewhere/target"))
      assert.are.equal("target\n", listing(dir .. "/elsewhere"))
    end)

    it("fails with an io error naming the file, and leaves nothing behind", function()
      local ok, err = core.write_file(dir .. "/missing/x", "text")
      assert.is_nil(ok)
      assert.are.equal("io", err.kind)
      assert.matches(dir .. "/missing", err.message, 1, true)
      ok, err = core.write_file("/dev/full", "text", "default")
      assert.is_nil(ok)
      assert.matches("No space left on device", err.message, 1, true)
      assert(util.execute("mkdir " .. q(dir .. "/d")))
      ok, err = core.write_file(dir .. "/d", "text")
      assert.is_nil(ok)
      assert.matches("Is a directory", err.message, 1, true)
      assert.are.equal("d\n", listing(dir))
    end)

    it("turns a write past the file size limit (ulimit -f) into an error, not SIGXFSZ", function()
      local lua = ("package.cpath = %q .. ';' .. package.cpath; "
        .. "local ok, err = require('openai_usage.core').write_file(%q, ('x'):rep(100000)); "
        .. "io.write(tostring(ok), ' ', err and err.message or ''); os.exit(ok and 0 or 7)"):format(
        package.cpath, dir .. "/big")
      local out = util.capture(("ulimit -f 8 && %s -e %s; echo \" exit $?\""):format(util.LUA, q(lua)))
      assert.matches("^nil cannot write .*/big: File too large exit 7", out)
      assert.are.equal("", listing(dir))
    end)
  end)

  describe("the page cache", function()
    local srv

    setup(function()
      srv = standin.start { key = KEY }
    end)

    teardown(function()
      srv:stop()
    end)

    it("creates its directory 0700 (parents too) and its files 0600", function()
      local where = dir .. "/a/b/cache"
      local c = assert(usage.new(srv:client_options { cache_dir = where }))
      local midnight = os.time() - os.time() % DAY
      for _ in c:pages("images", { start_time = midnight - 5 * DAY, bucket_width = "1d" }) do
      end
      c:close()
      for _, d in ipairs { dir .. "/a", dir .. "/a/b", where } do
        assert.are.equal("700", util.mode(d), d)
      end
      local names = util.words(listing(where))
      assert.is_true(#names >= 1, "the settled days were cached")
      for _, name in ipairs(names) do
        assert.matches("^%x+%.json$", name)
        assert.are.equal("600", util.mode(where .. "/" .. name), name)
      end
    end)

    it("creates its directory without a shell (an empty PATH finds no mkdir)", function()
      local lua = ("package.path = %q; package.cpath = %q; "
        .. "local c, err = require('openai_usage.cache').open(%q, 'id', function() end); "
        .. "os.exit(c and 0 or 9)"):format(package.path, package.cpath, dir .. "/x/y")
      local interpreter = util.capture("command -v " .. util.LUA):gsub("%s+$", "")
      assert.is_true(util.execute(("env PATH= %s -e %s"):format(q(interpreter), q(lua))))
      assert.are.equal("700", util.mode(dir .. "/x/y"))
    end)

    it("probes its directory without following a symlink planted at a fixed name", function()
      -- the probe used to append to <dir>/.openai-usage-cache, creating whatever that named
      assert(util.execute(("ln -s %s %s"):format(q(dir .. "/victim"), q(dir .. "/.openai-usage-cache"))))
      assert(cache.open(dir, "id", core.decode))
      assert.is_nil(read(dir .. "/victim"))
      assert.are.equal(".openai-usage-cache\n", listing(dir))
    end)

    it("never follows a symlink planted at the temporary name LuaJIT's unseeded math.random gives", function()
      require("spec.support.nginx").build_module()
      local store = assert(cache.open(dir, "id", core.decode))
      local url = "http://127.0.0.1:1/v1/organization/usage/images?start_time=1699920000"
      local path = store:path(url)
      local first = util.capture "luajit -e 'io.write(math.random(1, 1000000000))'"
      local now = os.time()
      for t = now, now + 5 do
        assert(util.execute(("ln -s %s %s"):format(q(dir .. "/victim"), q(("%s.tmp-%d-%s"):format(path, t, first)))))
      end
      local lua = ("local cache = require 'openai_usage.cache'; local core = require 'openai_usage.core'; "
        .. "local page = %s; "
        .. "local c = assert(cache.open(%q, 'id', core.decode)); os.exit(c:put(%q, page) and 0 or 5)"):format(
        "{ object = 'page', data = { { object = 'bucket', start_time = " .. old_page().data[1].start_time
          .. ", end_time = " .. old_page().data[1].end_time .. ", results = {} } }, has_more = false }",
        dir, url)
      assert.is_true(util.execute(("cd %s && LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/luajit/?.so;;' "
        .. "luajit -e %s"):format(q(util.capture("pwd"):gsub("%s+$", "")), q(lua))))
      assert.is_nil(read(dir .. "/victim"), "the planted symlink was followed")
      assert.are.equal("600", util.mode(path))
      assert.are.equal(old_page().data[1].start_time, store:get(url).data[1].start_time)
    end)
  end)
end)
