-- A report from the history store against the same report from the API
-- (issue 14.4): `openai-usage images ... --db FILE` and the live run over
-- the stand-in on 127.0.0.1 (real libcurl), in one process through
-- cli.run, for a 30-day 1d and a 7-day 1h report grouped by project and
-- model, each the median of RUNS runs after one warm-up. The outputs are
-- checked equal before anything is timed.
--   lua5.4 bench/db_report.lua
local usage = require "openai_usage"
local cli = require "openai_usage.cli"
local store_module = require "openai_usage.store"
local standin = require "spec.support.standin"
local util = require "spec.support.util"

local KEY = "sk-admin-bench-db"
local NOW = 1732406400 + 5400 -- 2024-11-24T01:30:00Z
local DAY = 86400
local RUNS = 7
local clock = usage.clock

local srv = standin.start { key = KEY, now = NOW }
local dir = util.tmpdir()
local db = dir .. "/bench.db"
do
  local client = assert(usage.new(srv:client_options()))
  local s = assert(store_module.open(db))
  local t = clock()
  assert(s:sync(client, { endpoints = { "images" }, width = "1d", since = NOW - 40 * DAY, now = NOW }))
  assert(s:sync(client, { endpoints = { "images" }, width = "1h", since = NOW - 10 * DAY, now = NOW }))
  print(("sync of images 1d over 40 days and 1h over 10 days: %.3f s"):format(clock() - t))
  s:close()
  client:close()
end

local function run(argv)
  local out, err = io.tmpfile(), io.tmpfile()
  local code = cli.run(argv, { now = NOW, stdout = out, stderr = err, client = srv:client_options() })
  out:seek "set"
  local text = out:read "*a"
  out:close()
  err:close()
  assert(code == 0, table.concat(argv, " "))
  return text
end

local function median(argv)
  run(argv)
  local times = {}
  for i = 1, RUNS do
    local t = clock()
    run(argv)
    times[i] = clock() - t
  end
  table.sort(times)
  return times[(RUNS + 1) // 2]
end

for _, case in ipairs {
  { "30 days at 1d", { "images", "--since", "2024-10-23", "--until", "2024-11-22", "--group-by", "project_id,model" } },
  { "7 days at 1h", { "images", "--bucket", "1h", "--since", "2024-11-16", "--until", "2024-11-23",
    "--group-by", "project_id,model" } },
} do
  local name, argv = case[1], case[2]
  local with_db = { "--db", db }
  for _, a in ipairs(argv) do
    with_db[#with_db + 1] = a
  end
  assert(run(argv) == run(with_db), name .. ": the outputs differ")
  local live, stored = median(argv), median(with_db)
  print(("report %-14s live (stand-in) %7.1f ms   --db %6.1f ms   live/db %.2f"):format(name, live * 1000,
    stored * 1000, live / stored))
end

srv:stop()
util.rm_rf(dir)
