#!/usr/bin/env lua5.4
-- The README's main job: a 30-day images report. With OPENAI_ADMIN_KEY
-- unset it starts the bundled stand-in server on 127.0.0.1 and reports on
-- its synthetic organization, offline, where usage arrives half an hour late
-- as the real API's does (--late-seconds), through a page cache in
-- OUTDIR/cache: the runs after the first read the settled days from disk and
-- ask again for the buckets still inside the settle window. It prints the usage by model and size
-- and the cost by project (named: "Atlas (proj_atlas)"), and writes the charts:
--   build/report.html  the usage table, a bar chart and a stacked daily series
--   build/report.svg   the stacked daily series alone
--   build/usage.db     the history store: the same days synced (openai-usage sync),
--                      whose usage by project it then prints, read offline
--   lua5.4 bin/report.lua [DAYS=30] [OUTDIR=build]
-- The same reports come from the command line: openai-usage images --help.
local cli = require "openai_usage.cli"

local days = tonumber(arg[1]) or 30
local outdir = arg[2] or "build"

local function started_standin()
  local base = os.tmpname()
  os.remove(base)
  local port_file = base .. ".port"
  local python = os.getenv("PYTHON") or "python3"
  local stat = assert(io.open("/proc/self/stat")):read("*l")
  local cmd = ("%s standin/server.py --port 0 --port-file %s --watch-pid %s --late-seconds 1800 --quiet"
    .. " >/dev/null 2>&1 & echo $!")
    :format(python, port_file, stat:match("^(%d+)"))
  local p = assert(io.popen(cmd))
  local server_pid = p:read("*l")
  p:close()
  for _ = 1, 200 do
    local f = io.open(port_file)
    if f then
      local port = f:read("*l")
      f:close()
      if port and port ~= "" then
        os.remove(port_file)
        return ("http://127.0.0.1:%s/v1"):format(port), server_pid
      end
    end
    os.execute("sleep 0.05")
  end
  error("the stand-in server did not start (is python3 installed?)")
end

local client, server_pid = {}, nil
if not os.getenv("OPENAI_ADMIN_KEY") then
  client.api_key = "sk-admin-standin"
  client.base_url, server_pid = started_standin()
  io.stderr:write("OPENAI_ADMIN_KEY is not set: reporting on the bundled stand-in at ", client.base_url, "\n")
end
-- mkdir -p, without a shell: 0777 less the umask, as mkdir(1) makes it
assert(require("openai_usage.core").mkdir_p(outdir, tonumber("777", 8)))

local since = ("%dd"):format(days)
local runs = {
  { "images", "--since", since, "--group-by", "model,size", "--top", "10", "--share" },
  { "images", "--since", since, "--group-by", "project_id", "--cost", "--names" },
  { "images", "--since", since, "--group-by", "model", "--format", "html", "--out", outdir .. "/report.html" },
  { "images", "--since", since, "--group-by", "model", "--by-time", "--format", "svg",
    "--out", outdir .. "/report.svg" },
}
local status = 0
for i, argv in ipairs(runs) do
  if server_pid then
    argv[#argv + 1] = "--cache"
    argv[#argv + 1] = outdir .. "/cache"
  end
  if i > 1 and i <= 2 then
    io.write("\n")
  end
  status = cli.run(argv, { client = client })
  if status ~= 0 then
    break
  end
end
-- the history store: the same days synced into OUTDIR/usage.db (with the
-- names), and the usage by project read back from it, offline
local db = outdir .. "/usage.db"
if status == 0 then
  io.write("\n")
  status = cli.run({ "sync", "--db", db, "--endpoints", "images,costs", "--since", since, "--names" },
    { client = client })
end
if status == 0 then
  io.write("\nfrom the history store (openai-usage images --db ", db, " ...):\n")
  io.stdout:flush()
  status = cli.run({ "images", "--db", db, "--since", since, "--group-by", "project_id", "--names" })
end
if server_pid then
  os.execute("kill " .. server_pid .. " 2>/dev/null")
end
if status == 0 then
  io.write("\nwrote ", outdir, "/report.html, ", outdir, "/report.svg and the history store ", db, "\n")
end
os.exit(status)
