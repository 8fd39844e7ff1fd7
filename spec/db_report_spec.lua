-- Reports from the history store (--db FILE): after a sync of the
-- stand-in, the same report read from the store is byte for byte the live
-- one over a settled range, in every format, grouping and width synced,
-- with no request sent; a range the store does not hold whole, a start off
-- a bucket boundary, a width it was not synced at, or a file that is no
-- store is an error, never a shorter total; buckets synced before they
-- settled are said on stderr.
local usage = require "openai_usage"
local store_module = require "openai_usage.store"
local standin = require "spec.support.standin"
local commands = require "spec.support.commands"
local util = require "spec.support.util"

local q = util.q
local KEY = "sk-admin-standin-dbreport"
local DAY = 86400
local T0 = 1732406400 -- 2024-11-24T00:00:00Z
local NOW = T0 + 5400 -- 01:30: today's bucket is open
local LUA = util.suite_lua()

describe("reports from the history store (--db)", function()
  local srv, dir, db
  setup(function()
    srv = standin.start { key = KEY, now = NOW }
    dir = util.tmpdir()
    db = dir .. "/usage.db"
    local client = assert(usage.new(srv:client_options()))
    local s = assert(store_module.open(db))
    assert(s:sync(client, { endpoints = { "images", "costs", "completions" }, width = "1d", since = T0 - 21 * DAY,
      now = NOW }))
    assert(s:sync(client, { endpoints = { "images" }, width = "1h", since = T0 - 2 * DAY, now = NOW }))
    assert(require("openai_usage.directory").refresh_store(s, client))
    client:close()
    s:close()
  end)
  teardown(function()
    srv:stop()
    util.rm_rf(dir)
  end)
  before_each(function()
    srv:reset()
  end)

  local function run(argv)
    return commands.run(srv, argv, NOW)
  end

  local function with_db(argv)
    local out = { "--db", db }
    for _, a in ipairs(argv) do
      out[#out + 1] = a
    end
    return out
  end

  local SETTLED = { "--since", "2024-11-03", "--until", "2024-11-22" } -- costs settle in 2 days
  local function settled(words)
    local argv = util.words(words)
    for _, a in ipairs(SETTLED) do
      argv[#argv + 1] = a
    end
    return argv
  end

  -- stdout, stderr and exit code of argv, live and from the store; the
  -- live run sends requests, the stored one none
  local function both(argv)
    local what = table.concat(argv, " ")
    srv:reset()
    local live, live_err, live_code = run(argv)
    assert.are.equal(0, live_code, what .. ": " .. live_err)
    assert.is_true(#srv:requests() > 0, what)
    srv:reset()
    local stored, stored_err, stored_code = run(with_db(argv))
    assert.are.equal(0, stored_code, what .. ": " .. stored_err)
    assert.are.same({}, srv:requests(), what)
    assert.are.equal(live_err, stored_err, what)
    return live, stored, what
  end

  it("gives byte for byte the live report over a settled range, in every format and grouping, sending nothing",
    function()
      local cases = {
        settled "images",
        settled "images --group-by project_id,model --format csv",
        settled "images --group-by model,size --by-time --format json",
        settled "images --group-by api_key_id --sizes 1024x1024 --models gpt-image-1 --format md",
        settled "images --group-by model,size --cost --quality high",
        settled "images --group-by model,size --cost --quality high --format csv",
        settled "images --group-by user_id,source --top 3 --share",
        settled "images --group-by project_id --by-time --format html",
        settled "images --group-by project_id --cost",
        settled "costs --group-by project_id,line_item",
        settled "costs --group-by line_item",
        settled "costs --by-time --format md",
        settled "completions --group-by model,batch --format csv",
        util.words "images --bucket 1h --since 2024-11-22T00:00:00Z --until 2024-11-23T12:00:00Z --group-by model",
        util.words("images --bucket 1h --since 2024-11-22T06:00:00Z --until 2024-11-23T00:00:00Z --by-time"
          .. " --group-by project_id,size --format csv"),
      }
      for _, argv in ipairs(cases) do
        local live, stored, what = both(argv)
        assert.are.equal(live, stored, what)
      end
    end)

  -- Costs' amounts are floats the API sums itself: a store summing its
  -- rows over the dimensions a report does not group by adds them in
  -- another order, so the last bits of a sum can differ (2089.65 against
  -- 2089.6499999999996). Shown for people (2 decimals) they are the same
  -- bytes (above); written exactly (csv, json), each number agrees to 1e-12
  -- of itself, and every other cell to the byte.
  it("gives the live amounts of costs summed over other dimensions to 1e-12, every other cell to the byte",
    function()
      for _, argv in ipairs {
        settled "costs --group-by project_id --format csv",
        settled "costs --group-by project_id,line_item --format csv",
        settled "costs --format csv",
        settled "images --group-by project_id --cost --format csv",
        settled "costs --group-by line_item --by-time --format csv",
      } do
        local live, stored, what = both(argv)
        local live_lines, stored_lines = {}, {}
        for line in live:gmatch "[^\n]+" do
          live_lines[#live_lines + 1] = line
        end
        for line in stored:gmatch "[^\n]+" do
          stored_lines[#stored_lines + 1] = line
        end
        assert.are.equal(#live_lines, #stored_lines, what)
        assert.is_true(#live_lines > 1, what)
        for i, line in ipairs(live_lines) do
          local a, b = {}, {}
          for cell in (line .. ","):gmatch "([^,]*)," do
            a[#a + 1] = cell
          end
          for cell in (stored_lines[i] .. ","):gmatch "([^,]*)," do
            b[#b + 1] = cell
          end
          assert.are.equal(#a, #b, what)
          for j, cell in ipairs(a) do
            local x, y = tonumber(cell), tonumber(b[j])
            if x and y and (cell:find("%.") or b[j]:find("%.")) then
              assert.is_true(math.abs(x - y) <= 1e-12 * math.max(math.abs(x), 1), what .. ": " .. cell .. " " .. b[j])
            else
              assert.are.equal(cell, b[j], what)
            end
          end
        end
      end
    end)

  it("shows the names a sync --names stored, as the live report shows the directory's, and says when it has none",
    function()
      for _, argv in ipairs {
        settled "images --group-by project_id,user_id --names",
        settled "images --group-by api_key_id --names --format csv",
        settled "costs --group-by project_id --names --format md",
      } do
        local live, stored, what = both(argv)
        assert.are.equal(live, stored, what)
        assert.truthy(live:find("Atlas", 1, true) or live:find("atlas", 1, true), what)
      end
      -- a store synced without --names: an error naming the fix, no request, no bare ids passed off as named
      local bare = dir .. "/bare.db"
      local client = assert(usage.new(srv:client_options()))
      local s = assert(store_module.open(bare))
      assert(s:sync(client, { endpoints = { "images" }, width = "1d", since = T0 - 21 * DAY, now = NOW }))
      s:close()
      client:close()
      srv:reset()
      local out, err, code = run({ "--db", bare, "images", "--group-by", "project_id", "--names",
        table.unpack(SETTLED) })
      assert.are.same({}, srv:requests())
      assert.are.equal(1, code, out)
      assert.truthy(err:find("holds no names", 1, true), err)
      assert.truthy(err:find("sync --names", 1, true), err)
    end)

  it("answers from the store alone as a process: no key, no API reachable", function()
    local argv = settled "images --group-by project_id,model --format csv"
    local live = run(argv)
    local words = {}
    for i, a in ipairs(with_db(argv)) do
      words[i] = q(a)
    end
    local cmd = ("env -u OPENAI_ADMIN_KEY OPENAI_BASE_URL=http://127.0.0.1:9/v1 %s bin/openai-usage %s")
      :format(LUA, table.concat(words, " "))
    srv:reset()
    local out, ok = util.popen_run(cmd)
    assert.is_true(ok, out)
    assert.are.equal(live, out)
    assert.are.same({}, srv:requests())
  end)

  it("refuses a range the store does not hold whole, naming what it holds, and sends nothing", function()
    local cases = {
      -- before the first bucket synced
      { util.words "images --since 2024-10-22 --until 2024-11-23", "does not hold 12 of the 32 images 1d buckets" },
      -- the hour buckets were synced for two days only
      { util.words "images --bucket 1h --since 2024-11-20 --until 2024-11-23", "images 1h" },
      -- an endpoint never synced
      { settled "embeddings", "holds no embeddings 1d buckets" },
    }
    for _, c in ipairs(cases) do
      local argv = c[1]
      srv:reset()
      local out, err, code = run(with_db(argv))
      local what = table.concat(argv, " ")
      assert.are.equal(1, code, what)
      assert.are.equal("", out, what)
      assert.truthy(err:find(c[2], 1, true), what .. ": " .. err)
      assert.truthy(err:find("run openai-usage sync", 1, true), err)
      assert.are.same({}, srv:requests(), what)
    end
    -- what it does hold is named
    local _, err = run(with_db(util.words "images --since 2024-10-22 --until 2024-11-23"))
    assert.truthy(err:find("it holds images 1d from 2024-11-03T00:00:00Z", 1, true), err)
  end)

  it("refuses a start off the bucket boundary, and a file that is not a store", function()
    local _, err, code = run(with_db(util.words "images --since 2024-11-10T05:00:00Z --until 2024-11-20"))
    assert.are.equal(1, code)
    assert.truthy(err:find("whole 1d buckets", 1, true), err)
    assert.truthy(err:find("2024-11-10T05:00:00Z", 1, true), err)
    local junk = dir .. "/junk.db"
    util.write(junk, "not a database, just text\n")
    local _, jerr, jcode = run({ "--db", junk, "images" })
    assert.are_not.equal(0, jcode)
    assert.truthy(jerr:find("--db", 1, true), jerr)
    local _, merr, mcode = run({ "--db", dir .. "/missing.db", "images" })
    assert.are_not.equal(0, mcode)
    assert.truthy(merr:find("missing.db", 1, true), merr)
    assert.is_nil(io.open(dir .. "/missing.db"), "a report never creates a store")
    assert.are.same({}, srv:requests())
  end)

  it("says on stderr which buckets were synced before they settled, and still shows the stored figures", function()
    -- today's bucket (open at the sync) and yesterday's (ended 1.5 h before it, settled)
    local out, err, code = run(with_db(util.words "images --since 2024-11-20 --group-by model --format csv"))
    assert.are.equal(0, code, err)
    assert.truthy(err:find("1 images 1d bucket(s) (2024-11-24T00:00:00Z to 2024-11-25T00:00:00Z) were not yet "
      .. "settled when synced", 1, true), err)
    -- the figures are those of the sync: the live API's at the sync's now
    local live = run(util.words "images --since 2024-11-20 --group-by model --format csv")
    assert.are.equal(live, out)
  end)

  it("reads from a store with the library too: store.client pages equal the API's", function()
    local params = { start_time = T0 - 10 * DAY, end_time = T0 - DAY, bucket_width = "1d",
      group_by = { "project_id", "size" }, limit = 3 }
    local live = assert(usage.new(srv:client_options()))
    local stored = assert(store_module.client(db, { now = function() return NOW end }))
    local a, b = {}, {}
    for bucket in live:buckets("images", params) do
      a[#a + 1] = bucket
    end
    srv:reset()
    for bucket in stored:buckets("images", params) do
      b[#b + 1] = bucket
    end
    assert.are.same({}, srv:requests())
    assert.are.equal(9, #a)
    local function totals(buckets)
      local t = {}
      for _, bucket in ipairs(buckets) do
        for _, r in ipairs(bucket.results) do
          local k = ("%d|%s|%s"):format(bucket.start_time, tostring(r.project_id), tostring(r.size))
          t[k] = { r.images, r.num_model_requests }
        end
      end
      return t
    end
    assert.are.same(totals(a), totals(b))
    live:close()
    stored:close()
  end)
end)
