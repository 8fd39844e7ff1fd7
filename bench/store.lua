-- The history store's insert rate (issue 14.6): the same rows — a 90-day
-- 1h images sync grouped by every dimension, walked from the stand-in — put
-- into the store's images table (the generated schema, its key index
-- included) through each candidate binding, one transaction, against the
-- floor: the sqlite3 command-line tool's .import of the same rows as CSV.
-- Each figure is the best of three runs, each into a fresh file; ratios
-- are rows per second over the floor's (goal: the sync's path >= 0.5x).
--   lua5.4 bench/store.lua
local usage = require "openai_usage"
local sqlite = require "openai_usage.sqlite"
local schema = require "openai_usage.store_schema"
local store_module = require "openai_usage.store"
local standin = require "spec.support.standin"
local util = require "spec.support.util"

local KEY = "sk-admin-bench"
local NOW = 1732406400
local HOUR = 3600
local RUNS = 3
local clock = usage.clock
local q = util.q

local srv = standin.start { key = KEY, now = NOW }
local client = assert(usage.new(srv:client_options()))
local group_by = {}
for _, p in ipairs(usage.rules("images").params) do
  if p.name == "group_by" then
    group_by = p.values
  end
end
local params = { start_time = NOW - 90 * 24 * HOUR, end_time = NOW, bucket_width = "1h", limit = 168,
  group_by = group_by }

-- The pages, as the sync gets them, and the same rows flattened to the
-- table's columns (bucket columns, then the generated ones).
local pages, rows = {}, {}
local columns = { "organization", "width", "start_time", "end_time", "start_iso", "end_iso" }
for _, c in ipairs(schema.tables.images.columns) do
  columns[#columns + 1] = c.name
end
local function iso(t)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", t)
end
for page in client:pages("images", params) do
  pages[#pages + 1] = page
  for _, bucket in ipairs(page.data) do
    for _, result in ipairs(bucket.results) do
      local row = { "default", "1h", bucket.start_time, bucket.end_time, iso(bucket.start_time), iso(bucket.end_time) }
      for _, c in ipairs(schema.tables.images.columns) do
        row[#row + 1] = result[c.field]
      end
      rows[#rows + 1] = row
    end
  end
end
client:close()
srv:stop()
local ncol = #columns

local dir = util.tmpdir()
local function fresh_db(name)
  local path = dir .. "/" .. name .. ".db"
  os.remove(path)
  os.remove(path .. "-journal")
  os.remove(path .. "-wal")
  local db = assert(sqlite.open(path))
  assert(db:exec(schema.sql))
  db:close()
  return path
end

local placeholders = ("?, "):rep(ncol - 1) .. "?"
local INSERT = ("INSERT INTO images (%s) VALUES (%s)"):format(table.concat(columns, ", "), placeholders)

local function count(path)
  local db = assert(sqlite.open(path, "ro"))
  local st = assert(db:prepare "SELECT count(*), sum(images) FROM images")
  assert(st:step())
  local n, images = st:values()
  st:finalize()
  db:close()
  return n, images
end

local images_at
for i, name in ipairs(columns) do
  images_at = name == "images" and i or images_at
end
local expected_images = 0
for _, row in ipairs(rows) do
  expected_images = expected_images + row[images_at]
end

local candidates = {}

-- The floor: sqlite3's own .import of the rows as CSV (NULLs as empty
-- fields, which .import reads as empty text: the floor does less).
do
  local csv = dir .. "/rows.csv"
  local f = assert(io.open(csv, "w"))
  for _, row in ipairs(rows) do
    local cells = {}
    for i = 1, ncol do
      cells[i] = row[i] == nil and "" or tostring(row[i])
    end
    f:write(table.concat(cells, ","), "\n")
  end
  f:close()
  candidates[#candidates + 1] = { name = "sqlite3 .import (floor)", run = function(path)
    assert(util.execute(("sqlite3 %s '.import --csv %s images'"):format(q(path), q(csv))))
  end }
end

candidates[#candidates + 1] = { name = "openai_usage.sqlite (ours)", run = function(path)
  local db = assert(sqlite.open(path))
  assert(db:exec "BEGIN")
  local st = assert(db:prepare(INSERT))
  local unpack = table.unpack or unpack
  for _, row in ipairs(rows) do
    assert(st:run(unpack(row, 1, ncol)))
  end
  st:finalize()
  assert(db:exec "COMMIT")
  db:close()
end }

local has_dbi, DBI = pcall(require, "DBI")
if has_dbi then
  candidates[#candidates + 1] = { name = "lua-dbi-sqlite3 (prepared)", run = function(path)
    local dbh = assert(DBI.Connect("SQLite3", path))
    dbh:autocommit(false)
    local sth = assert(dbh:prepare(INSERT))
    local unpack = table.unpack or unpack
    for _, row in ipairs(rows) do
      assert(sth:execute(unpack(row, 1, ncol)))
    end
    sth:close()
    assert(dbh:commit())
    dbh:close()
  end }
end

local has_luasql, luasql = pcall(require, "luasql.sqlite3")
if has_luasql then
  candidates[#candidates + 1] = { name = "lua-sql-sqlite3 (SQL text)", run = function(path)
    local env = assert(luasql.sqlite3())
    local conn = assert(env:connect(path))
    conn:setautocommit(false)
    local prefix = ("INSERT INTO images (%s) VALUES ("):format(table.concat(columns, ", "))
    for _, row in ipairs(rows) do
      local values = {}
      for i = 1, ncol do
        local v = row[i]
        values[i] = v == nil and "NULL" or type(v) == "number" and tostring(v) or ("'" .. conn:escape(v) .. "'")
      end
      assert(conn:execute(prefix .. table.concat(values, ", ") .. ")"))
    end
    assert(conn:commit())
    conn:close()
    env:close()
  end }
end

-- The sync's own path: openai_usage.store putting the pages, one
-- transaction a page, each bucket's rows replaced, the buckets and the
-- sync state written.
candidates[#candidates + 1] = { name = "openai_usage.store (sync)", run = function(path)
  os.remove(path)
  local store = assert(store_module.open(path))
  for _, page in ipairs(pages) do
    assert(store:put_page("images", page, { organization = "default", width = "1h", now = NOW }))
  end
  store:close()
end }

print(("store: %d rows of a 90-day 1h images sync grouped by %s (%d pages); best of %d"):format(#rows,
  table.concat(group_by, ","), #pages, RUNS))
local floor_rate
for i, c in ipairs(candidates) do
  local best = math.huge
  for run = 1, RUNS do
    local path = fresh_db(("c%d-%d"):format(i, run))
    local t = clock()
    c.run(path)
    best = math.min(best, clock() - t)
    local n, images = count(path)
    assert(n == #rows, ("%s: %d rows stored, %d given"):format(c.name, n, #rows))
    assert(images == expected_images, ("%s: %s images stored, %d given"):format(c.name, tostring(images),
      expected_images))
  end
  local rate = #rows / best
  floor_rate = floor_rate or rate
  print(("  %-28s %8.1f ms  %9.0f rows/s  %.2fx the floor"):format(c.name, best * 1000, rate, rate / floor_rate))
end
util.rm_rf(dir)
