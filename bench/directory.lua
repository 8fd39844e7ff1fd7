-- The directory's cost against the stand-in: client:directory() (requests,
-- time a walk), a list walked at limit=2, and a report with --names cold
-- (the directory read) and warm (the names file in --cache), beside the same
-- report without names. Not part of `make bench` (timings of a local
-- stand-in, for the README's figures):
--   LUA_PATH="lua/?.lua;lua/?/init.lua;./?.lua;;" LUA_CPATH="./?.so;;" lua5.4 bench/directory.lua
local usage = require "openai_usage"
local standin = require "spec.support.standin"
local util = require "spec.support.util"

local ROUNDS = 20
local srv = standin.start { key = "sk-admin-bench-directory" }
local client = assert(usage.new(srv:client_options()))

local function timed(fn)
  srv:reset()
  local t0 = usage.clock()
  local result
  for _ = 1, ROUNDS do
    result = fn()
  end
  return result, (usage.clock() - t0) / ROUNDS * 1000, #srv:requests() / ROUNDS
end

local objects, ms, requests = timed(function()
  local dir = client:directory()
  return #dir.projects + #dir.users + #dir.api_keys + #dir.service_accounts
end)
print(("client:directory(): %d objects in %d requests, %.1f ms a walk (mean of %d)"):format(objects, requests, ms,
  ROUNDS))
local users
users, ms, requests = timed(function()
  local n = 0
  for _ in client:list("users", { limit = 2 }) do
    n = n + 1
  end
  return n
end)
print(("client:list(\"users\", { limit = 2 }): %d users in %d requests, %.1f ms a walk"):format(users, requests, ms))

local dir = util.tmpdir()
local function run(extra)
  local t0 = usage.clock()
  local cmd = ("env OPENAI_ADMIN_KEY=%s OPENAI_BASE_URL=%s %s bin/openai-usage images --since 30d --group-by "
    .. "project_id,user_id,api_key_id --cache %s%s >/dev/null 2>&1"):format(srv.key, srv.url, util.LUA, util.q(dir),
    extra)
  assert(util.exit_code(os.execute(cmd)) == 0, cmd)
  return (usage.clock() - t0) * 1000
end
run "" -- the settled pages into the cache, for every case alike
for _, case in ipairs { { "without --names", "" }, { "--names, cold", " --names" }, { "--names, warm", " --names" } } do
  if case[1] == "--names, cold" then
    os.execute("rm -f " .. util.q(dir) .. "/names-*.json")
  end
  srv:reset()
  local took = run(case[2])
  print(("report %-16s %5.0f ms, %d requests"):format(case[1], took, #srv:requests()))
end
util.rm_rf(dir)
client:close()
srv:stop()
