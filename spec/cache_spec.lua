-- The on-disk page cache (cache_dir): settled pages are read from disk,
-- open buckets are always requested, files are whole or ignored, and the
-- key is never written.
local usage = require "openai_usage"
local cache = require "openai_usage.cache"
local standin = require "spec.support.standin"
local util = require "spec.support.util"

local KEY = "sk-admin-cache-5b1d0c"
local DAY = 86400

local q, read = util.q, util.read

local function files(dir)
  local p = assert(io.popen("ls -1 " .. q(dir) .. " 2>/dev/null"))
  local out = {}
  for name in p:lines() do
    if name:match "%.json$" then
      out[#out + 1] = dir .. "/" .. name
    end
  end
  p:close()
  return out
end

local function walk(client, params)
  local pages = {}
  for page in client:pages("images", params) do
    pages[#pages + 1] = page
  end
  return pages
end

local function bucket_starts(pages)
  local out = {}
  for _, page in ipairs(pages) do
    for _, b in ipairs(page.data) do
      out[#out + 1] = b.start_time
    end
  end
  return out
end

describe("page cache", function()
  local srv, dir

  setup(function()
    srv = standin.start { key = KEY } -- the real now: today's bucket is open
  end)

  teardown(function()
    srv:stop()
  end)

  before_each(function()
    srv:reset()
    dir = os.tmpname()
    os.remove(dir)
    dir = dir .. ".d"
  end)

  after_each(function()
    util.rm_rf(dir)
  end)

  it("splits a range at the open bucket: settled part first, the rest live", function()
    local now = 1000 * DAY + 5000
    local segs = cache.segments({ start_time = 990 * DAY, bucket_width = "1d" }, DAY, now)
    assert.are.equal(2, #segs)
    assert.are.same({ 990 * DAY, 1000 * DAY }, { segs[1].start_time, segs[1].end_time })
    assert.are.same({ 1000 * DAY }, { segs[2].start_time })
    assert.is_nil(segs[2].end_time)
    -- all settled, all open, or resuming from a cursor: one piece
    assert.are.equal(1, #cache.segments({ start_time = 990 * DAY, end_time = 995 * DAY }, DAY, now))
    assert.are.equal(1, #cache.segments({ start_time = 1000 * DAY }, DAY, now))
    assert.are.equal(1, #cache.segments({ start_time = 990 * DAY, page = "c" }, DAY, now))
  end)

  it("a re-walk of settled buckets sends no request and gives the same pages", function()
    local c = assert(usage.new(srv:client_options { cache_dir = dir }))
    local today = os.time() - os.time() % DAY
    local params = { start_time = today - 10 * DAY, end_time = today - DAY, bucket_width = "1h", limit = 24 }
    local first = walk(c, params)
    local sent = #srv:requests()
    assert.are.equal(9, sent) -- nine days of hours, a day a page
    assert.are.equal(sent, #files(dir))
    srv:reset()
    local second = walk(c, params)
    assert.are.same({}, srv:requests())
    assert.are.same(first, second)
    c:close()
  end)

  it("keeps integers integers and nulls absent through the disk", function()
    local c = assert(usage.new(srv:client_options { cache_dir = dir }))
    local today = os.time() - os.time() % DAY
    local params = { start_time = today - 3 * DAY, end_time = today, group_by = { "model", "project_id" } }
    local first = walk(c, params)
    local second = walk(c, params)
    assert.are.same(first, second)
    local row = second[1].data[1].results[1]
    if math.type then
      assert.are.equal("integer", math.type(row.images))
      assert.are.equal("integer", math.type(second[1].data[1].start_time))
    end
    assert.is_nil(row.user_id) -- null in the response, absent in Lua, both times
    c:close()
  end)

  it("always requests the open bucket, and the walk covers the same buckets as without a cache", function()
    local today = os.time() - os.time() % DAY
    local params = { start_time = today - 3 * DAY, bucket_width = "1d" }
    local plain = assert(usage.new(srv:client_options()))
    local expected = bucket_starts(walk(plain, params))
    plain:close()
    srv:reset()
    local c = assert(usage.new(srv:client_options { cache_dir = dir }))
    assert.are.same(expected, bucket_starts(walk(c, params)))
    assert.are.equal(2, #srv:requests()) -- settled days, then today
    srv:reset()
    assert.are.same(expected, bucket_starts(walk(c, params)))
    local records = srv:requests()
    assert.are.equal(1, #records) -- only today's, which can still change
    assert.truthy(records[1].query:find("start_time=" .. today, 1, true))
    assert.are.equal(1, #files(dir))
    c:close()
  end)

  it("an async walk (event loops, Neovim) reads and fills the same cache as client:pages", function()
    local async = require "openai_usage.async"
    local function drive(client, params)
      local walk = assert(async.pages(client, "images", params))
      local pages, deadline = {}, usage.clock() + 30
      while not walk.done do
        local page = walk:step()
        if page then
          pages[#pages + 1] = page
        else
          require("openai_usage.core").sleep(0.001)
        end
        assert(usage.clock() < deadline, "the walk did not finish")
      end
      assert.is_nil(walk.err)
      return pages, walk.cached
    end
    local today = os.time() - os.time() % DAY
    local c = assert(usage.new(srv:client_options { cache_dir = dir }))
    -- settled hours, a day a page: the second walk sends nothing
    local settled = { start_time = today - 4 * DAY, end_time = today - DAY, bucket_width = "1h", limit = 24 }
    local first, cached = drive(c, settled)
    assert.are.equal(0, cached)
    assert.are.equal(3, #srv:requests())
    srv:reset()
    local second
    second, cached = drive(c, settled)
    assert.are.same({}, srv:requests())
    assert.are.equal(3, cached)
    assert.are.same(first, second)
    assert.are.same(first, walk(c, settled)) -- as client:pages reads them
    -- a range reaching today: the settled days from disk, today requested
    local open = { start_time = today - 3 * DAY, bucket_width = "1d" }
    local expected = bucket_starts(walk(c, open))
    srv:reset()
    local pages
    pages, cached = drive(c, open)
    assert.are.same(expected, bucket_starts(pages))
    assert.are.equal(1, cached)
    local records = srv:requests()
    assert.are.equal(1, #records)
    assert.truthy(records[1].query:find("start_time=" .. today, 1, true))
    c:close()
  end)

  it("ignores a corrupt or foreign file, requests again and replaces it", function()
    local c = assert(usage.new(srv:client_options { cache_dir = dir }))
    local today = os.time() - os.time() % DAY
    local params = { start_time = today - 5 * DAY, end_time = today, bucket_width = "1d" }
    local first = walk(c, params)
    local paths = files(dir)
    assert.are.equal(1, #paths)
    local good = read(paths[1])
    for _, bad in ipairs { "", good:sub(1, #good - 40), "garbage\n{}", '"https://elsewhere"\n' .. good:match "\n(.*)$" } do
      local f = assert(io.open(paths[1], "wb"))
      f:write(bad)
      f:close()
      srv:reset()
      assert.are.same(first, walk(c, params))
      assert.are.equal(1, #srv:requests(), "a bad file is a miss")
      assert.are.equal(good, read(paths[1]), "and is replaced by a good one")
    end
    c:close()
  end)

  it("never writes the key, and keeps organizations apart", function()
    local c = assert(usage.new(srv:client_options { cache_dir = dir }))
    local today = os.time() - os.time() % DAY
    local params = { start_time = today - 2 * DAY, end_time = today }
    walk(c, params)
    for _, path in ipairs(files(dir)) do
      assert.falsy(read(path):find(KEY, 1, true))
      assert.falsy(path:find(KEY, 1, true))
    end
    c:close()
    srv:reset()
    local other = assert(usage.new(srv:client_options { cache_dir = dir, organization = "org-other" }))
    walk(other, params)
    assert.are.equal(1, #srv:requests())
    other:close()
  end)

  it("refuses a cache_dir it cannot create, before any request", function()
    local c, err = usage.new(srv:client_options { cache_dir = "/proc/openai-usage-cache" })
    assert.is_nil(c)
    assert.are.equal("cache_dir", err.param)
    assert.matches("cannot create", tostring(err))
    assert.are.same({}, srv:requests())
  end)
end)
