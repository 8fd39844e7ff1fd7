--- openai-usage metrics: today's and this month's figures as a Prometheus
-- exposition (openai_usage.metrics), on stdout or written atomically to a
-- file, for node_exporter's textfile collector and cron. The figures come
-- through cli.open_client, so whatever client it opens (the API, or the
-- history store with --db) serves them.
local metrics = require "openai_usage.metrics"
local text = require "openai_usage.text"

local M = {}

local OPTIONS = {
  { names = { "--db" }, arg = "FILE", key = "db", help = "read the figures from the history store FILE" },
  { names = { "--format" }, arg = "F", key = "format",
    help = "prometheus (the text format 0.0.4, default) or openmetrics (OpenMetrics 1.0)" },
  { names = { "--out" }, arg = "FILE", key = "out",
    help = "write the exposition to FILE atomically (e.g. node_exporter's\ntextfile directory, *.prom)" },
  { names = { "--endpoints" }, arg = "A,B", key = "endpoints",
    help = "the endpoints to gather (default " .. table.concat(metrics.SOURCES, ",") .. "; all: every one)" },
  { names = { "--base-url" }, arg = "URL", key = "base_url",
    help = "API base (default $OPENAI_BASE_URL or https://api.openai.com/v1)" },
  { names = { "--timeout" }, arg = "SECONDS", key = "timeout",
    help = "give up an attempt after that long (default 600)" },
  { names = { "--profile" }, arg = "NAME,NAME", key = "profile", help = "key and options from profiles (see README)" },
  { names = { "--profiles" }, arg = "FILE", key = "profiles", help = "the profiles file (must be 0600)" },
  { names = { "-h", "--help" }, key = "help", help = "this help" },
}

local function help_text()
  local lines = {
    "usage: openai-usage metrics [--db FILE] [--format openmetrics] [--out FILE] [options]",
    "",
    "Prints today's and this month's (UTC) images, tokens, requests and cost per",
    "project, model and line item as Prometheus gauges, with the refresh's health.",
    "",
    "options:",
  }
  for _, o in ipairs(OPTIONS) do
    local left = table.concat(o.names, ", ") .. (o.arg and " " .. o.arg or "")
    local first = true
    for line in (o.help .. "\n"):gmatch "(.-)\n" do
      lines[#lines + 1] = ("  %-22s %s"):format(first and left or "", line)
      first = false
    end
  end
  for _, line in ipairs {
    "",
    "exit codes:",
    "  0  every endpoint's figures were gathered and the exposition written",
    "  1  an endpoint's request failed: the exposition is written without its",
    "     figures (openai_usage_refresh_success 0), one line on stderr each",
    "  2  bad arguments or configuration (nothing was sent)",
    "  3  the exposition could not be written",
    "  130  interrupted (Ctrl-C): nothing was written",
  } do
    lines[#lines + 1] = line
  end
  return table.concat(lines, "\n") .. "\n"
end

-- argv into { db, format, out, endpoints, base_url, timeout, help }, or
-- nil, message.
local function parse(argv)
  local by_name = {}
  for _, o in ipairs(OPTIONS) do
    for _, name in ipairs(o.names) do
      by_name[name] = o
    end
  end
  local job, i = {}, 1
  while i <= #argv do
    local word = argv[i]
    local name, inline = word:match "^(%-%-[%w%-]+)=(.*)$"
    local o = by_name[name or word]
    if not o then
      return nil, ('unknown argument "%s" (see openai-usage metrics --help)'):format(word)
    end
    if o.arg then
      local value = inline
      if value == nil then
        i = i + 1
        value = argv[i]
      end
      if value == nil then
        return nil, o.names[1] .. ": needs a value"
      end
      job[o.key] = value
    elseif inline ~= nil then
      return nil, o.names[#o.names] .. ": takes no value"
    else
      job[o.key] = true
    end
    i = i + 1
  end
  return job
end

-- The gather options of a job: its endpoints checked, or nil, message.
local function gather_options(job)
  local opts = {}
  if job.endpoints == "all" then
    opts.sources = require("openai_usage").rules()
    table.sort(opts.sources)
  elseif job.endpoints then
    opts.sources = {}
    for name in job.endpoints:gmatch "[^,]+" do
      opts.sources[#opts.sources + 1] = name:match "^%s*(.-)%s*$"
    end
  end
  local ok, err = metrics.sources(opts)
  if not ok then
    return nil, "--endpoints: " .. tostring(err.message):gsub("^metrics: ", "")
  end
  return opts
end

local function check(job)
  job.format = job.format or "prometheus"
  if not metrics.CONTENT_TYPE[job.format] then
    return nil, ('--format: "%s" is not one of %s'):format(job.format, table.concat(metrics.FORMATS, ", "))
  end
  if job.timeout ~= nil then
    local seconds = tonumber(job.timeout)
    if not seconds or seconds <= 0 or seconds ~= seconds then
      return nil, ('--timeout: "%s" is not a number of seconds above 0'):format(job.timeout)
    end
    job.timeout = seconds
  end
  return job
end

function M.run(argv, options, cli)
  options = options or {}
  local stdout, stderr = options.stdout or io.stdout, options.stderr or io.stderr
  local job, err = parse(argv)
  if job then
    job, err = check(job)
  end
  local opts
  if job and not job.help then
    opts, err = gather_options(job)
  end
  if not job or (not job.help and not opts) then
    stderr:write("openai-usage: metrics: ", text.printable(tostring(err)), "\n")
    return cli.EXIT.usage
  end
  if job.help then
    local ok, werr = cli.write_stream(stdout, help_text())
    if not ok then
      stderr:write("openai-usage: cannot write to stdout: ", tostring(werr), "\n")
      return cli.EXIT.output
    end
    return cli.EXIT.ok
  end
  local client = cli.open_client(job, options, stderr)
  if not client then
    return cli.EXIT.usage
  end
  local core = require "openai_usage.core"
  opts.now = options.now
  opts.stop = core.interrupted
  local snapshot = assert(metrics.gather(client, opts))
  client:close()
  if core.interrupted() then
    stderr:write("openai-usage: interrupted\n")
    return cli.EXIT.interrupted
  end
  for _, s in ipairs(snapshot.sources) do
    if not s.ok then
      stderr:write("openai-usage: metrics: ", s.endpoint, ": ", text.printable(s.error), "\n")
    end
  end
  local exposition = metrics.render(snapshot, job.format)
  local written, werr
  if job.out then
    written, werr = cli.write_atomically(job.out, exposition)
  else
    written, werr = cli.write_stream(stdout, exposition)
  end
  if not written then
    stderr:write("openai-usage: metrics: cannot write ", job.out and "--out" or "to stdout", ": ",
      text.printable(tostring(werr)), "\n")
    return cli.EXIT.output
  end
  return metrics.ok(snapshot) and cli.EXIT.ok or cli.EXIT.failed
end

return M
