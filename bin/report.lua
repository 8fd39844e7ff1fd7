#!/usr/bin/env lua5.4
-- The README's main job: images usage of the last 30 days, totals by model
-- and size. With OPENAI_ADMIN_KEY unset it starts the bundled stand-in
-- server on 127.0.0.1 and reports on its synthetic organization, offline.
--   lua5.4 bin/report.lua [DAYS=30]
local usage = require "openai_usage"

local days = tonumber(arg[1]) or 30
local DAY = 86400

local function started_standin()
  local dir = os.tmpname()
  os.remove(dir)
  local port_file = dir .. ".port"
  local python = os.getenv("PYTHON") or "python3"
  local pid_line = assert(io.open("/proc/self/stat")):read("*l")
  local self_pid = pid_line:match("^(%d+)")
  local cmd = ("%s standin/server.py --port 0 --port-file %s --watch-pid %s --quiet >/dev/null 2>&1 & echo $!")
    :format(python, port_file, self_pid)
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

local options, server_pid = {}, nil
if not os.getenv("OPENAI_ADMIN_KEY") then
  options.api_key = "sk-admin-standin"
  options.base_url, server_pid = started_standin()
  io.stderr:write("OPENAI_ADMIN_KEY is not set: reporting on the bundled stand-in at ", options.base_url, "\n")
end

local client = assert(usage.new(options))
local now = os.time()
local start = (math.floor(now / DAY) - days) * DAY
local clock = os.clock()
local totals, models, grand = {}, {}, { images = 0, requests = 0 }
local buckets, rows = 0, 0
local ok, err = pcall(function()
  local last_bucket
  for row, bucket in client:results("images", { start_time = start, bucket_width = "1d", limit = 31,
    group_by = { "model", "size" } }) do
    if bucket ~= last_bucket then
      buckets, last_bucket = buckets + 1, bucket
    end
    rows = rows + 1
    local model, size = row.model or "(none)", row.size or "(none)"
    local key = model .. "\0" .. size
    local t = totals[key]
    if not t then
      t = { model = model, size = size, images = 0, requests = 0 }
      totals[key] = t
      models[#models + 1] = t
    end
    t.images = t.images + row.images
    t.requests = t.requests + row.num_model_requests
    grand.images = grand.images + row.images
    grand.requests = grand.requests + row.num_model_requests
  end
end)
client:close()
if server_pid then
  os.execute("kill " .. server_pid .. " 2>/dev/null")
end
if not ok then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end

table.sort(models, function(a, b)
  if a.images ~= b.images then
    return a.images > b.images
  end
  return a.model .. a.size < b.model .. b.size
end)

local function thousands(n)
  local s = tostring(n)
  return (s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", ""))
end

print(("Images usage, %s to %s (UTC), by model and size"):format(os.date("!%Y-%m-%d", start),
  os.date("!%Y-%m-%d %H:%M", now)))
print()
print(("%-16s %-10s %12s %12s %7s"):format("model", "size", "images", "requests", "share"))
for _, t in ipairs(models) do
  print(("%-16s %-10s %12s %12s %6.1f%%"):format(t.model, t.size, thousands(t.images), thousands(t.requests),
    grand.images > 0 and 100 * t.images / grand.images or 0))
end
print(("%-16s %-10s %12s %12s %6.1f%%"):format("total", "", thousands(grand.images), thousands(grand.requests), 100))
print()
print(("%d daily buckets, %d rows, %.0f ms of CPU"):format(buckets, rows, (os.clock() - clock) * 1000))
