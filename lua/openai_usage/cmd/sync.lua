--- `openai-usage sync --db FILE`: fills a history store from the API
-- (openai_usage.sync), then prints one line per endpoint: requests,
-- buckets, rows, time; with --names it then refreshes the directory (the
-- names reports join) in the store. Exit 0 when every endpoint (and the
-- names) is synced; 1 when one
-- stopped early (what it committed stays, and the next run resumes); 2 for
-- a bad argument; 130 on Ctrl-C.
local usage = require "openai_usage"
local core = require "openai_usage.core"
local store_module = require "openai_usage.store"
local time = require "openai_usage.time"

local M = {}

local OPTIONS = {
  { name = "--db", arg = "FILE", key = "store_file", help = "the store (SQLite; created when missing)" },
  { name = "--endpoints", arg = "E,E", key = "endpoints", help = "endpoints to sync, or all (default all)" },
  { name = "--bucket", arg = "WIDTH", key = "bucket",
    help = "bucket width: 1m, 1h or 1d (default 1d; costs are daily only)" },
  { name = "--since", arg = "TIME", key = "since", help = "where the first sync starts (default 90d)" },
  { name = "--until", arg = "TIME", key = "until", help = "end of the range, exclusive (default: now)" },
  { name = "--settle-after", arg = "T", key = "settle_after",
    help = "a bucket is settled T after it ends (default 1h for usage, 2d for costs)" },
  { name = "--base-url", arg = "URL", key = "base_url",
    help = "API base (default $OPENAI_BASE_URL or https://api.openai.com/v1)" },
  { name = "--timeout", arg = "SECONDS", key = "timeout", help = "give up an attempt after that long" },
  { name = "--names", key = "names",
    help = "also refresh the directory: projects, users, keys, service accounts (their names)" },
  { name = "--profile", arg = "NAME,NAME", key = "profile",
    help = "key and options from profiles; several fill one store, an organization each" },
  { name = "--profiles", arg = "FILE", key = "profiles", help = "the profiles file (must be 0600)" },
  { name = "--help", key = "help", help = "this help" },
}

--- The help text.
function M.help()
  local lines = { "usage: openai-usage sync --db FILE [--endpoints E,E|all] [--bucket 1h] [--since 90d]", "",
    "The first run backfills from --since; later runs ask only from the oldest unsettled bucket on.",
    "Every dimension of each endpoint is grouped by. Each page is committed with the sync state, so",
    "a run stopped midway (kill, Ctrl-C, rate limits) is resumed by the next one.", "" }
  for _, o in ipairs(OPTIONS) do
    lines[#lines + 1] = ("  %-22s %s"):format(o.name .. (o.arg and (" " .. o.arg) or ""), o.help)
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "Exit: 0 synced, 1 an endpoint stopped early (run again to resume), 2 bad arguments, 130 Ctrl-C."
  return table.concat(lines, "\n") .. "\n"
end

--- The job of argv: { db, endpoints, bucket, since, until, ... } or nil,
-- message.
function M.parse(argv)
  local job, by_name = {}, {}
  for _, o in ipairs(OPTIONS) do
    by_name[o.name] = o
  end
  by_name["-h"] = by_name["--help"]
  local i = 1
  while i <= #argv do
    local word = argv[i]
    local name, value = word:match "^(%-%-[%w-]+)=(.*)$"
    name = name or word
    local o = by_name[name]
    if not o then
      return nil, ("sync: unknown option %s (see openai-usage sync --help)"):format(word)
    end
    if o.arg then
      if value == nil then
        i = i + 1
        value = argv[i]
      end
      if value == nil or value == "" then
        return nil, ("sync: %s needs a value (%s)"):format(o.name, o.arg)
      end
      job[o.key] = value
    else
      job[o.key] = true
    end
    i = i + 1
  end
  if job.help then
    return job
  end
  if not job.store_file then
    return nil, "sync: --db FILE is required (the store to fill)"
  end
  if job.timeout then
    local seconds = tonumber(job.timeout)
    if not seconds or seconds <= 0 then
      return nil, ("sync: --timeout %s is not a positive number of seconds"):format(job.timeout)
    end
    job.timeout = seconds
  end
  return job
end

local function summary_line(s)
  local range = s.start_time and (" (%s .. %s)"):format(time.iso(s.start_time), time.iso(s.end_time)) or ""
  return ("%s %s: %d request%s, %d buckets, %d rows, %.1f s%s\n"):format(s.endpoint, s.width, s.requests,
    s.requests == 1 and "" or "s", s.buckets, s.rows, s.seconds or 0, range)
end

--- Runs the command (cli.COMMANDS' convention): returns the exit code.
function M.run(argv, options, cli)
  local stdout, stderr = options.stdout or io.stdout, options.stderr or io.stderr
  local job, message = M.parse(argv)
  if not job then
    stderr:write("openai-usage: ", usage.printable(message), "\n")
    return cli.EXIT.usage
  end
  if job.help then
    local ok = cli.write_stream(stdout, M.help())
    return ok and cli.EXIT.ok or cli.EXIT.output
  end
  -- the organizations to sync: each profile's (--profile a,b: one store,
  -- an organization column), else the one of OPENAI_ADMIN_KEY
  local members
  if job.profile then
    local perr
    members, perr = require("openai_usage.profiles").clients(job.profile, { path = job.profiles,
      over = { base_url = job.base_url, timeout = job.timeout, settle_after = job.settle_after },
      under = options.client })
    if not members then
      stderr:write("openai-usage: ", usage.printable(tostring(perr.message or perr)), "\n")
      return core.interrupted() and cli.EXIT.interrupted or cli.EXIT.usage
    end
  else
    local client = cli.open_client(job, options, stderr)
    if not client then
      return cli.EXIT.usage
    end
    members = { { client = client } }
  end
  local function close_clients()
    for _, m in ipairs(members) do
      m.client:close()
    end
  end
  local store, err = store_module.open(job.store_file)
  if not store then
    close_clients()
    stderr:write("openai-usage: ", usage.printable(tostring(err.message)), "\n")
    return cli.EXIT.failed
  end
  local failed, failed_member
  for _, member in ipairs(members) do
    local prefix = member.name and ("%s: "):format(member.organization) or ""
    local summaries, bad = store:sync(member.client, {
      endpoints = job.endpoints, width = job.bucket, since = job.since, ["until"] = job["until"],
      now = options.now,
      on_endpoint = function(s)
        if s.err then
          failed = s
        else
          cli.write_stream(stdout, prefix .. summary_line(s))
        end
      end,
    })
    if not summaries then
      close_clients()
      store:close()
      stderr:write("openai-usage: sync: ", usage.printable(tostring(bad.message)), "\n")
      return cli.EXIT.usage
    end
    if failed then -- the organizations after it are not synced: the next run does them all
      failed_member = member
      break
    end
  end
  if failed then
    close_clients()
    local state = store:state(failed.organization, failed.endpoint, failed.width)
    store:close()
    cli.write_stream(stdout, summary_line(failed))
    if core.interrupted() then
      stderr:write("openai-usage: interrupted\n")
      return cli.EXIT.interrupted
    end
    local kept = state and ("buckets through %s are stored, the next run starts at %s"):format(state.synced_iso,
      state.settled_iso) or "nothing of it is stored yet"
    local whose = failed_member.name and ('profile "%s" (%s): '):format(failed_member.name,
      failed_member.organization) or ""
    stderr:write(("openai-usage: %ssync %s stopped: %s; %s: run the same sync again to resume\n"):format(
      usage.printable(whose), failed.endpoint, usage.printable(tostring(failed.err)), kept))
    return cli.EXIT.failed
  end
  -- the names the store's reports join (openai_usage.directory), each organization's
  for _, member in ipairs(job.names and members or {}) do
    local organization = member.client.organization or "default"
    local counts, names_err = require("openai_usage.directory").refresh_store(store, member.client, organization)
    if not counts then
      store:close()
      close_clients()
      stderr:write("openai-usage: sync: the usage is stored; the names are not: ",
        usage.printable(tostring(names_err)), "\n")
      return cli.EXIT.failed
    end
    local prefix = member.name and ("%s: "):format(member.organization) or ""
    cli.write_stream(stdout, prefix .. ("directory: %d projects, %d users, %d api_keys, %d service_accounts\n")
      :format(counts.projects, counts.users, counts.api_keys, counts.service_accounts))
  end
  close_clients()
  store:close()
  return cli.EXIT.ok
end

return M
