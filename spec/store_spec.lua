-- The history store (openai_usage.store over openai_usage.sqlite) on real
-- SQLite files: a store of another schema version, or a file that is no
-- store, is refused with a clear message; pages read back from the store
-- in the API's shape, summed over the dimensions not grouped by, equal to
-- the live API's answer to the same query; unknown figures stay unknown.
local usage = require "openai_usage"
local sqlite = require "openai_usage.sqlite"
local store_module = require "openai_usage.store"
local schema = require "openai_usage.store_schema"
local cli = require "openai_usage.cli"
local standin = require "spec.support.standin"
local util = require "spec.support.util"

local q = util.q
local HOUR, DAY = 3600, 86400
local T0 = 1732406400

-- A sink for cli.run's output.
local function sink()
  local parts = {}
  return { write = function(self, ...)
    for i = 1, select("#", ...) do
      parts[#parts + 1] = select(i, ...)
    end
    return self
  end, flush = function(self)
    return self
  end, text = function()
    return table.concat(parts)
  end }
end

local function page_of(buckets)
  return { object = "page", data = buckets, has_more = false }
end

describe("store", function()
  local dir
  setup(function()
    dir = util.tmpdir()
  end)
  teardown(function()
    util.rm_rf(dir)
  end)

  it("creates the generated schema in a new file and records its version", function()
    local path = dir .. "/new.db"
    local s = assert(store_module.open(path))
    local meta = assert(s:select "SELECT key, value FROM meta WHERE key = 'schema_version'")
    assert.are.same({ { key = "schema_version", value = tostring(schema.version) } }, meta)
    local tables = assert(s:select "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    local names = {}
    for _, row in ipairs(tables) do
      names[row.name] = true
    end
    for _, endpoint in ipairs(usage.rules()) do
      assert.is_true(names[endpoint], endpoint)
    end
    assert.is_true(names.sync_state and names.buckets and names.meta)
    -- private, as the cache is: the file and its write-ahead log
    assert.are.equal("600", util.mode(path))
    assert.are.equal("600", util.mode(path .. "-wal"))
    s:close()
    assert.is_true(s:close(), "closing twice is safe")
    -- sqlite3 reads it too: the file is plain SQLite
    assert.are.equal(tostring(schema.version) .. "\n",
      util.capture(("sqlite3 %s \"select value from meta where key = 'schema_version'\""):format(q(path))))
  end)

  it("refuses a store written by another schema version, naming both versions; sync sends nothing", function()
    local path = dir .. "/old.db"
    assert(store_module.open(path)):close()
    assert(util.execute(("sqlite3 %s \"update meta set value = '0' where key = 'schema_version'\""):format(q(path))))
    local s, err = store_module.open(path)
    assert.is_nil(s)
    assert.are.equal("store", err.kind)
    assert.is_truthy(tostring(err):find(path .. ": a store of schema version 0; this openai-usage reads schema "
      .. "version " .. schema.version, 1, true), tostring(err))
    s, err = store_module.open(path, { readonly = true })
    assert.is_nil(s)
    assert.is_truthy(tostring(err):find("schema version 0", 1, true))
    local srv = standin.start()
    local out, errout = sink(), sink()
    local code = cli.run({ "sync", "--db", path, "--endpoints", "images" }, {
      stdout = out, stderr = errout, client = srv:client_options() })
    local requests = #srv:requests()
    srv:stop()
    assert.are.equal(cli.EXIT.failed, code)
    assert.is_truthy(errout.text():find("a store of schema version 0; this openai-usage reads schema version "
      .. schema.version, 1, true), errout.text())
    assert.are.equal(0, requests)
  end)

  it("refuses a file that is no store: another database, or not SQLite at all", function()
    local other = dir .. "/other.db"
    assert(util.execute(("sqlite3 %s 'create table t (x)'"):format(q(other))))
    local s, err = store_module.open(other)
    assert.is_nil(s)
    assert.is_truthy(tostring(err):find("not an openai-usage store (it has tables but no meta table)", 1, true))
    local text = dir .. "/text.db"
    util.write(text, ("this is not a database\n"):rep(100))
    s, err = store_module.open(text)
    assert.is_nil(s)
    assert.is_truthy(tostring(err):find("file is not a database", 1, true), tostring(err))
    s, err = store_module.open(dir .. "/missing.db", { readonly = true })
    assert.is_nil(s)
    assert.is_truthy(tostring(err):find("cannot open", 1, true), tostring(err))
  end)

  it("reads pages back in the API's shape: buckets with and without rows, dimensions summed away, "
    .. "filters, booleans", function()
    local path = dir .. "/page.db"
    local s = assert(store_module.open(path))
    local function row(model, batch, tokens, cached)
      return { object = "organization.usage.completions.result", input_tokens = tokens, output_tokens = 1,
        num_model_requests = 1, input_cached_tokens = cached, project_id = "proj_a", user_id = nil,
        api_key_id = "key_a", model = model, batch = batch, service_tier = "default" }
    end
    assert(s:put_page("completions", page_of {
      { start_time = T0, end_time = T0 + HOUR, results = { row("gpt-4o", false, 10, 1), row("gpt-4o", true, 20, 2),
        row("o1", false, 5, 0) } },
      { start_time = T0 + HOUR, end_time = T0 + 2 * HOUR, results = {} },
      { start_time = T0 + 2 * HOUR, end_time = T0 + 3 * HOUR, results = { row("o1", false, 7, nil) } },
    }, { width = "1h", now = T0 + DAY }))
    local page = assert(s:page("completions", { bucket_width = "1h", start_time = T0, end_time = T0 + 3 * HOUR,
      group_by = { "model" } }))
    assert.are.equal(3, #page.data)
    assert.are.equal(false, page.has_more)
    local first = page.data[1]
    assert.are.same({ T0, T0 + HOUR }, { first.start_time, first.end_time })
    assert.are.same({ "gpt-4o", "o1" }, { first.results[1].model, first.results[2].model })
    assert.are.equal(30, first.results[1].input_tokens)
    assert.are.equal(3, first.results[1].input_cached_tokens)
    assert.is_nil(first.results[1].batch, "not grouped by batch: null, as the API's")
    assert.is_nil(first.results[1].api_key_id)
    assert.are.same({}, page.data[2].results, "a stored empty bucket is there, empty")
    -- a row without input_cached_tokens: unknown, never 0
    assert.are.equal(7, page.data[3].results[1].input_tokens)
    assert.is_nil(page.data[3].results[1].input_cached_tokens)
    -- the batch filter and grouping, booleans read back as booleans
    page = assert(s:page("completions", { bucket_width = "1h", start_time = T0, end_time = T0 + HOUR,
      group_by = { "batch" }, batch = true }))
    assert.are.equal(1, #page.data[1].results)
    assert.are.equal(true, page.data[1].results[1].batch)
    assert.are.equal(20, page.data[1].results[1].input_tokens)
    page = assert(s:page("completions", { bucket_width = "1h", start_time = T0, end_time = T0 + HOUR,
      models = { "o1" } }))
    assert.are.equal(5, page.data[1].results[1].input_tokens)
    local none, err = s:page("completions", { group_by = { "size" } })
    assert.is_nil(none)
    assert.is_truthy(tostring(err):find("completions cannot group by size", 1, true))
    s:close()
  end)

  it("keeps several organizations in one store: each read alone, summed, or grouped by organization", function()
    local path = dir .. "/orgs.db"
    local s = assert(store_module.open(path))
    local function images(n)
      return page_of { { start_time = T0, end_time = T0 + DAY, results = {
        { images = n, num_model_requests = 1, model = "dall-e-3" } } } }
    end
    assert(s:put_page("images", images(3), { organization = "org_a", width = "1d", now = T0 + 2 * DAY }))
    assert(s:put_page("images", images(4), { organization = "org_b", width = "1d", now = T0 + 2 * DAY }))
    local range = { start_time = T0, end_time = T0 + DAY }
    local function read(extra)
      local params = { start_time = range.start_time, end_time = range.end_time }
      for k, v in pairs(extra) do
        params[k] = v
      end
      return assert(s:page("images", params)).data
    end
    assert.are.equal(3, read({ organization = "org_a" })[1].results[1].images)
    assert.are.equal(7, read({ organization = { "org_a", "org_b" } })[1].results[1].images)
    local both = read { organization = { "org_a", "org_b" }, group_by = { "organization" } }
    assert.are.equal(1, #both)
    local r = both[1].results
    assert.are.same({ { "org_a", 3 }, { "org_b", 4 } }, { { r[1].organization, r[1].images },
      { r[2].organization, r[2].images } })
    assert.are.same({}, read { organization = "default" })
    assert.are.equal(T0 + DAY, assert(s:state("org_b", "images", "1d")).settled_until)
    s:close()
  end)

  it("sums a figure with a unit only over rows of one unit (costs' quantity), and amounts by currency", function()
    local path = dir .. "/costs.db"
    local s = assert(store_module.open(path))
    local function cost(item, value, quantity, unit)
      return { object = "organization.costs.result", amount = { value = value, currency = "usd" }, line_item = item,
        project_id = "proj_a", api_key_id = "key_a", quantity = quantity, quantity_unit = unit }
    end
    assert(s:put_page("costs", page_of { { start_time = T0, end_time = T0 + DAY, results = {
      cost("Image models", 1.5, 10, "images"), cost("gpt-4o, input", 0.25, 1000, "tokens") } } },
      { width = "1d", now = T0 + 10 * DAY }))
    local page = assert(s:page("costs", { start_time = T0, end_time = T0 + DAY, group_by = { "project_id" } }))
    local r = page.data[1].results[1]
    assert.are.same({ value = 1.75, currency = "usd" }, r.amount)
    assert.is_nil(r.quantity, "images + tokens is no quantity")
    assert.is_nil(r.quantity_unit)
    page = assert(s:page("costs", { start_time = T0, end_time = T0 + DAY, group_by = { "line_item" } }))
    assert.are.equal(10, page.data[1].results[1].quantity)
    assert.are.equal("images", page.data[1].results[1].quantity_unit)
    s:close()
  end)

  it("answers a query from a synced store as the live API does, grouped by a subset and filtered", function()
    local now = T0 + 1800
    local srv = standin.start { now = now }
    local path = dir .. "/live.db"
    local client = assert(usage.new(srv:client_options()))
    local s = assert(store_module.open(path))
    local summaries = assert(s:sync(client, { endpoints = "images", width = "1h", since = now - 2 * DAY, now = now }))
    assert.is_nil(summaries[1].err)
    local params = { bucket_width = "1h", start_time = T0 - 2 * DAY, end_time = T0, group_by = { "model", "size" } }
    -- a project the stand-in's organization has
    local one = assert(client:images { bucket_width = "1d", start_time = T0 - DAY, end_time = T0,
      group_by = { "project_id" } })
    params.project_ids = { one.data[1].results[1].project_id }
    local stored = assert(s:page("images", params))
    local live = {}
    for bucket in client:buckets("images", params) do
      live[#live + 1] = bucket
    end
    client:close()
    srv:stop()
    s:close()
    assert.are.equal(#live, #stored.data)
    local function keyed(results)
      local out = {}
      for _, r in ipairs(results) do
        out[("%s|%s"):format(r.model, r.size)] = { r.images, r.num_model_requests, r.project_id }
      end
      return out
    end
    local rows = 0
    for i, bucket in ipairs(live) do
      assert.are.same({ bucket.start_time, bucket.end_time }, { stored.data[i].start_time, stored.data[i].end_time })
      assert.are.same(keyed(bucket.results), keyed(stored.data[i].results))
      rows = rows + #bucket.results
    end
    assert.is_true(rows > 0)
  end)

  it("is read by Neovim's LuaJIT (the LuaJIT build of openai_usage.sqlite), read-only", function()
    local out, ok = util.make "LUA_VERSION=5.1 LUA=luajit LUA_PKG=luajit OUTDIR=build/luajit"
    assert(ok, "building the LuaJIT modules failed:\n" .. out)
    local path = dir .. "/nvim.db"
    local s = assert(store_module.open(path))
    assert(s:put_page("images", page_of { { start_time = T0, end_time = T0 + DAY, results = {
      { images = 7, num_model_requests = 3, model = "gpt-image-1" }, { images = 5, num_model_requests = 5 } } } },
      { width = "1d", now = T0 + 2 * DAY }))
    s:close()
    local root = util.capture("pwd"):gsub("%s+$", "")
    local script, result = dir .. "/read.lua", dir .. "/read.out"
    util.write(script, ([[
package.path = %q .. "/lua/?.lua;" .. %q .. "/lua/?/init.lua;" .. package.path
package.cpath = %q .. "/build/luajit/?.so;" .. package.cpath
local store = require "openai_usage.store"
local s = assert(store.open(%q, { readonly = true }))
local page = assert(s:page("images", { start_time = %d, end_time = %d }))
local f = assert(io.open(%q, "w"))
f:write(jit and jit.version or "no jit", "\n", page.data[1].results[1].images, "\n")
f:write(tostring(select(2, s:put_page("images", page, { width = "1d" }))), "\n")
f:close()
s:close()
]]):format(root, root, root, path, T0, T0 + DAY, result))
    local printed, ran = util.popen_run(("env -u LD_PRELOAD -u LUA_PATH -u LUA_CPATH timeout 60 nvim --headless "
      .. "--clean -u NONE -c %s -c 'qall!'"):format(q("luafile " .. script)))
    assert(ran, printed)
    local lines = util.words((util.read_if(result) or ""):gsub(" ", "_"))
    assert.is_truthy((lines[1] or ""):match "^LuaJIT", printed)
    assert.are.equal("12", lines[2])
    -- read-only: a write is refused by SQLite, not done
    assert.is_truthy((lines[3] or ""):find("readonly", 1, true), table.concat(lines, " "))
  end)

  it("refuses a page it cannot store whole, and stores none of it", function()
    local s = assert(store_module.open(dir .. "/bad.db"))
    local good = { start_time = T0, end_time = T0 + DAY, results = { { images = 1, num_model_requests = 1 } } }
    for _, case in ipairs {
      { "images", page_of { good, { start_time = T0 + DAY, end_time = T0 + 2 * DAY,
        results = { { images = "12", num_model_requests = 1 } } } }, "1d",
        "images is a string where the schema has integer" },
      { "images", page_of { good, { start_time = T0 + DAY, results = {} } }, "1d", "a bucket without start_time" },
      { "images", { object = "page" }, "1d", "not a page" },
      { "images", page_of { good }, "2d", "bucket width 2d is not one of 1m, 1h, 1d" },
      { "imagez", page_of { good }, "1d", "no table for endpoint imagez" },
    } do
      local ok, err = s:put_page(case[1], case[2], { width = case[3], now = T0 + 3 * DAY })
      assert.is_nil(ok)
      assert.are.equal("store", err.kind)
      assert.is_truthy(tostring(err):find(case[4], 1, true), tostring(err))
    end
    assert.are.same({ { n = 0 } }, assert(s:select "SELECT count(*) AS n FROM images"))
    assert.are.same({ { n = 0 } }, assert(s:select "SELECT count(*) AS n FROM buckets"))
    assert.is_nil(s:state("default", "images", "1d"))
    s:close()
  end)

  it("rolls a transaction back when its function fails or raises", function()
    local s = assert(store_module.open(dir .. "/tx.db"))
    local ok, err = s:transaction(function(self)
      assert(self.db:exec "INSERT INTO meta (key, value) VALUES ('a', '1')")
      return nil, "refused"
    end)
    assert.is_nil(ok)
    assert.are.equal("refused", err)
    assert.has_error(function()
      s:transaction(function(self)
        assert(self.db:exec "INSERT INTO meta (key, value) VALUES ('b', '1')")
        error("boom", 0)
      end)
    end, "boom")
    assert.are.same({}, assert(s:select "SELECT key FROM meta WHERE key IN ('a', 'b')"))
    s:close()
  end)
end)

describe("openai_usage.sqlite", function()
  it("owns its handles: close and finalize twice are safe, a closed database says so", function()
    local db = assert(sqlite.open ":memory:")
    assert(db:exec "CREATE TABLE t (i INTEGER, r REAL, s TEXT, b INTEGER, n)")
    local insert = assert(db:prepare "INSERT INTO t VALUES (?, ?, ?, ?, ?)")
    assert.are.equal(1, insert:run(2 ^ 40, 0.5, "x\0y", true, nil))
    -- run reads its strings in place and unbinds them before it returns: a
    -- bare step now inserts NULLs, never a string that may have been freed
    assert.are.equal(1, insert:run(1, 1, ("z"):rep(100), 1, 1))
    collectgarbage()
    assert.is_false(insert:step())
    insert:reset()
    local nulls = assert(db:prepare "SELECT count(*) FROM t WHERE s IS NULL AND i IS NULL")
    assert.is_true(nulls:step())
    assert.are.equal(1, (nulls:values()))
    nulls:finalize()
    assert(db:exec "DELETE FROM t WHERE i IS NOT 1099511627776")
    assert.has_error(function()
      insert:run({}, 1, 2, 3, 4)
    end, "sqlite: cannot bind a table (parameter 1)")
    assert.has_error(function()
      insert:run(1, 2)
    end, "sqlite: 2 values for 5 parameters")
    local select_all = assert(db:prepare "SELECT * FROM t")
    assert.is_true(select_all:step())
    local i, r, s, b, n = select_all:values()
    assert.are.equal(2 ^ 40, i)
    if math.type then
      assert.are.equal("integer", math.type(i))
    end
    assert.are.same({ 0.5, "x\0y", 1 }, { r, s, b })
    assert.is_nil(n)
    assert.is_false(select_all:step())
    local nothing, message = db:prepare "SELEKT 1"
    assert.is_nil(nothing)
    assert.is_truthy(message:find "syntax error")
    assert.is_true(insert:finalize())
    assert.is_true(insert:finalize())
    assert.has_error(function()
      insert:run(1, 2, 3, 4, 5)
    end, "sqlite: the statement is finalized")
    assert.is_true(db:close())
    assert.is_true(db:close())
    assert.has_error(function()
      select_all:step()
    end, "sqlite: the database is closed")
    select_all:finalize()
  end)
end)
