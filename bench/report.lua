-- The CLI's report against its walk, on the stand-in: a 1-minute images
-- report grouped by all six fields, 4 pages and 40 pages of the same shape
-- (one page a day of 1440 buckets). Each run is its own process, measured
-- by /usr/bin/time (peak RSS, wall time); the best of three runs is shown.
-- Goals (issue 13.6): peak RSS for 40 pages within 1.5x of 4 pages; wall
-- time within 1.15x of the bare walk's (the same pages, rows stamped and
-- counted, no report).
--   lua5.4 bench/report.lua
local usage = require "openai_usage"
local standin = require "spec.support.standin"
local util = require "spec.support.util"

local KEY = "sk-admin-bench"
local NOW = 1732406400
local DAY = 86400
local lua = os.getenv("OPENAI_USAGE_LUA") or "lua5.4"
local q = util.q

-- The bare walk, run as its own process: the CLI's query, its pages walked
-- and their rows stamped, nothing shaped. Prints "pages rows".
if arg and arg[1] == "--bare-walk" then
  local cli = require "openai_usage.cli"
  local walk = require "openai_usage.walk"
  local argv = {}
  for i = 3, #arg do
    argv[#argv + 1] = arg[i]
  end
  local job = assert(cli.parse(argv, NOW))
  local c = assert(usage.new { api_key = KEY, base_url = arg[2] })
  local pages, rows = 0, 0
  for page in c:pages(job.endpoint, job.params) do
    pages, rows = pages + 1, rows + #walk.rows(page)
  end
  c:close()
  io.write(pages, " ", rows, "\n")
  os.exit(0)
end

if not io.open("/usr/bin/time") then
  error("bench/report.lua needs /usr/bin/time (Debian package time)")
end

local srv = standin.start { key = KEY, now = NOW }
local tmp = os.tmpname()

local function args_of(days)
  return { "images", "--since", tostring(NOW - days * DAY), "--until", tostring(NOW), "--bucket", "1m", "--group-by",
    "project_id,user_id,api_key_id,model,size,source", "--format", "csv" }
end

-- Runs a command under /usr/bin/time: peak RSS (KB), wall seconds, stdout.
local function timed(cmd)
  local ok = os.execute(("/usr/bin/time -f '%%M %%e' -o %s %s >%s 2>&1"):format(q(tmp .. ".time"), cmd, q(tmp .. ".out")))
  local out = util.read_if(tmp .. ".out") or ""
  assert(ok == true or ok == 0, "failed: " .. cmd .. "\n" .. out)
  local rss, wall = (util.read_if(tmp .. ".time") or ""):match "(%d+) ([%d.]+)%s*$"
  return tonumber(rss), tonumber(wall), out
end

local function quoted(list)
  local out = {}
  for i, a in ipairs(list) do
    out[i] = q(a)
  end
  return table.concat(out, " ")
end

local env = ("env OPENAI_ADMIN_KEY=%s OPENAI_BASE_URL=%s"):format(q(KEY), q(srv.url))

local function best(cmd)
  local rss, wall, out
  for _ = 1, 3 do
    local r, w, o = timed(cmd)
    rss, wall, out = math.min(rss or r, r), math.min(wall or w, w), o
  end
  return rss, wall, out
end

local function cli(days)
  return best(("%s %s bin/openai-usage %s --out %s"):format(env, lua, quoted(args_of(days)), q(tmp .. ".csv")))
end

local rss4, wall4 = cli(4)
local rss40, wall40 = cli(40)
local report_lines = 0
for _ in io.lines(tmp .. ".csv") do
  report_lines = report_lines + 1
end
local _, bare40, counted = best(("%s bench/report.lua --bare-walk %s %s"):format(lua, q(srv.url), quoted(args_of(40))))
local pages, rows = counted:match "(%d+) (%d+)"
srv:stop()
for _, suffix in ipairs { "", ".time", ".out", ".csv" } do
  os.remove(tmp .. suffix)
end

print(("report: images, 1m buckets, grouped by all six fields, csv; 40 pages = %s pages, %s rows, %d report lines")
  :format(pages, rows, report_lines - 1))
print(("  peak RSS  4 pages %8.1f MB   40 pages %8.1f MB   ratio %.2f (goal <= 1.5)"):format(rss4 / 1024,
  rss40 / 1024, rss40 / rss4))
print(("  wall      4 pages %8.2f s    40 pages %8.2f s    bare walk of 40 pages %.2f s   ratio %.2f (goal <= 1.15)")
  :format(wall4, wall40, bare40, wall40 / bare40))
