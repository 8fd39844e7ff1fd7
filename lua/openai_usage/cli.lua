--- The openai-usage command line: parse arguments into a job, walk the
-- pages, shape the rows into a report and write it. bin/openai-usage and
-- the Neovim plugin share this module. The filters it offers and their help
-- come from the rule table, so every endpoint gets its own.
local usage = require "openai_usage"
local core = require "openai_usage.core"
local time = require "openai_usage.time"
local format = require "openai_usage.format"
local errors = require "openai_usage.errors"
local jobs = require "openai_usage.job"

local M = {}

--- Exit codes, as documented in --help.
M.EXIT = { ok = 0, failed = 1, usage = 2, output = 3, at_risk = 4, interrupted = 130 }

-- A bad argument: the one error value (openai_usage.errors), kind "usage";
-- M.run prints its message and exits 2.
local function fail(message)
  return nil, errors.new { kind = "usage", message = message }
end

local function endpoints()
  local names = usage.rules()
  table.sort(names)
  return names
end

local function rule_of(endpoint)
  for _, name in ipairs(usage.rules()) do
    if name == endpoint then
      return usage.rules(endpoint)
    end
  end
end

local function param_rule(rule, name)
  for _, p in ipairs(rule.params) do
    if p.name == name then
      return p
    end
  end
end

-- "project_ids" -> "--project-ids": every list and boolean parameter of the
-- endpoint (group_by aside) is a filter option.
local function filter_options(rule)
  local out = {}
  for _, p in ipairs(rule.params) do
    if (p.type == "list" or p.type == "bool") and p.name ~= "group_by" then
      out[#out + 1] = { option = "--" .. p.name:gsub("_", "-"), param = p }
    end
  end
  return out
end

-- The bucket widths the rule table allows on some endpoint, shortest first.
local function all_widths()
  local seen, out = {}, {}
  for _, name in ipairs(endpoints()) do
    for _, w in ipairs(usage.rules(name).widths) do
      if not seen[w.width] then
        seen[w.width] = true
        out[#out + 1] = w.width
      end
    end
  end
  table.sort(out, function(a, b)
    return time.width(a) < time.width(b)
  end)
  return out
end

local function or_list(list)
  if #list < 2 then
    return table.concat(list)
  end
  return table.concat(list, ", ", 1, #list - 1) .. " or " .. list[#list]
end

-- The command line's options, one entry each: names, the value's
-- placeholder (none for a flag), the job field it sets (and the value a
-- flag sets, default true), and its help. --help, completion and M.parse
-- read this list; an endpoint's filters come from the rule table.
local OPTIONS = {
  { names = { "--since" }, arg = "TIME", key = "since",
    help = "start of the range (default 30d; 7d with --bucket 1h, 24h with 1m)" },
  { names = { "--until" }, arg = "TIME", key = "until", help = "end of the range, exclusive (default: now)" },
  { names = { "--bucket" }, arg = "WIDTH", key = "bucket", help = function()
    return ("bucket width: %s, as the endpoint allows (default 1d)"):format(or_list(all_widths()))
  end },
  { names = { "--group-by" }, arg = "F,F", key = "group_by",
    help = "fields to group by, sent to the API and kept in the report" },
  { names = { "--by-time" }, key = "by_time", help = "one row per bucket and group (default: totals over the range)" },
  { names = { "--fields" }, arg = "F,F", key = "fields",
    help = "the figures to show, in order (default: all of the endpoint's)" },
  { names = { "--top" }, arg = "N", key = "top",
    help = 'keep the N largest groups; the rest add up to one "(other)" row' },
  { names = { "--sort" }, arg = "SPEC", key = "sort",
    help = "order of rows, e.g. -images,model (default: largest first)" },
  { names = { "--share" }, key = "share", help = "add each row's share of the first figure, in percent" },
  { names = { "--cost" }, key = "cost", help = "add a cost column: real amounts from the costs endpoint where the\n"
    .. "grouping allows, else an estimate from a dated price table (images)" },
  { names = { "--forecast" }, key = "forecast",
    help = "add the projection to the period's end, from the daily run-rate with the\n"
      .. "weekly pattern and a 95 % interval (needs --bucket 1d)" },
  { names = { "--forecast-to" }, arg = "P", key = "forecast_to",
    help = "the period --forecast ends: day, week or month (default)" },
  { names = { "--movers" }, key = "movers",
    help = "html: add the movers table, last complete week against the one before\n(openai-usage compare)" },
  { names = { "--prices" }, arg = "FILE", key = "prices",
    help = "a Lua price table to use instead of the bundled one" },
  { names = { "--quality" }, arg = "Q", key = "quality",
    help = "image quality the estimate assumes (default: the table's)" },
  { names = { "--names" }, key = "names",
    help = 'show project, user and key names: "Atlas (proj_atlas)"; CSV and JSON\n'
      .. "gain project_name, user_name, user_email, api_key_name columns" },
  { names = { "--format" }, arg = "F", key = "format", help = function()
    return ("%s (default table)"):format(or_list(format.NAMES))
  end },
  { names = { "--out" }, arg = "FILE", key = "out", help = "write the report to FILE (atomically) instead of stdout" },
  { names = { "--db" }, arg = "FILE", key = "db",
    help = "read the figures from the history store FILE (openai-usage sync), not\n"
      .. "the API; a range it does not hold whole is an error" },
  { names = { "--cache" }, arg = "DIR", key = "cache",
    help = "keep pages of settled buckets in DIR; re-runs skip those requests" },
  { names = { "--settle-after" }, arg = "T", key = "settle_after",
    help = "a bucket is settled (cached) T after it ends: 3600, 90m, 2d\n"
      .. "(default 1h for usage, 2d for costs: the API revises late data)" },
  { names = { "--max-pages" }, arg = "N", key = "max_pages",
    help = "stop with an error after N pages if the API has more" },
  { names = { "--base-url" }, arg = "URL", key = "base_url",
    help = "API base (default $OPENAI_BASE_URL or https://api.openai.com/v1)" },
  { names = { "--profile" }, arg = "NAME,NAME", key = "profile",
    help = "key, base URL and client options from these profiles; several:\n"
      .. "one report across their organizations (--group-by organization)" },
  { names = { "--profiles" }, arg = "FILE", key = "profiles",
    help = "the profiles file (default $OPENAI_USAGE_PROFILES, else\n"
      .. "~/.config/openai-usage/profiles.lua); must be 0600" },
  { names = { "--timeout" }, arg = "SECONDS", key = "timeout",
    help = "give up an attempt after that long (default 600; also after 60 s\nwithout a byte)" },
  { names = { "--progress" }, key = "progress", help = "show the progress line even when stderr is not a terminal" },
  { names = { "--no-progress" }, key = "progress", value = false, help = "never show it" },
  { names = { "-h", "--help" }, key = "help", help = "this help; with an endpoint, its filters too" },
  { names = { "--version" }, key = "version", help = "print the version" },
}

local OPTION_BY_NAME = {}
for _, o in ipairs(OPTIONS) do
  for _, name in ipairs(o.names) do
    OPTION_BY_NAME[name] = o
  end
end

local function help_of(o)
  return type(o.help) == "function" and o.help() or o.help
end

--- The options the command line takes, as { names, arg, key, help }
-- (help a string), then the endpoint's filters when one is named.
function M.options(endpoint)
  local out = {}
  for _, o in ipairs(OPTIONS) do
    out[#out + 1] = { names = o.names, arg = o.arg, key = o.key, help = help_of(o) }
  end
  local rule = endpoint and rule_of(endpoint)
  for _, f in ipairs(rule and filter_options(rule) or {}) do
    local p = f.param
    local what = p.doc or ""
    if p.values then
      what = what .. " (" .. table.concat(p.values, ", ") .. ")"
    end
    local arg = p.type == "bool" and "true|false" or "A,B"
    out[#out + 1] = { names = { f.option }, arg = arg, param = p.name, help = what, filter = true }
  end
  return out
end

local function wrap_rows(rows)
  local out = {}
  for _, r in ipairs(rows) do
    local left, text = r[1], r[2]
    local first = true
    for line in (text .. "\n"):gmatch "(.-)\n" do
      out[#out + 1] = ("  %-22s %s"):format(first and left or "", line)
      first = false
    end
  end
  return table.concat(out, "\n")
end

local function option_rows(options)
  local rows = {}
  for _, o in ipairs(options) do
    rows[#rows + 1] = { table.concat(o.names, ", ") .. (o.arg and " " .. o.arg or ""), o.help }
  end
  return rows
end

-- The help's part about one endpoint: its filters, group_by fields, widths.
local function endpoint_help(endpoint, rule)
  local filters = {}
  for _, o in ipairs(M.options(endpoint)) do
    if o.filter then
      filters[#filters + 1] = o
    end
  end
  local lines = { "", ("filters of %s (%s):"):format(endpoint, rule.path),
    #filters > 0 and wrap_rows(option_rows(filters)) or "  (none)" }
  local group = param_rule(rule, "group_by")
  if group and group.values then
    lines[#lines + 1] = ""
    lines[#lines + 1] = "  --group-by takes: " .. table.concat(group.values, ", ")
      .. ", and organization (with --profile)"
  end
  local widths = {}
  for _, w in ipairs(rule.widths) do
    widths[#widths + 1] = ("%s (up to %d a page)"):format(w.width, w.max_limit)
  end
  lines[#lines + 1] = "  --bucket takes: " .. table.concat(widths, ", ")
  return lines
end

local TRAILER = {
  "",
  "times: Unix seconds, 2024-11-01, 2024-11-01T12:00:00Z, or 90m, 24h, 7d before now (UTC)",
  "",
  "exit codes:",
  "  0  the report was written",
  "  1  a request failed (network, timeout, HTTP or API error), or a report step refused the data",
  "  2  bad arguments or configuration (nothing was sent)",
  "  3  the report could not be written (stdout or --out: a full disk, no permission)",
  "  4  check: a budget is over, forecast over its threshold or unknown; reconcile: the price table looks stale",
  "  130  interrupted (Ctrl-C): the transfer stopped, nothing was written",
  "",
  "example: openai-usage images --since 30d --bucket 1d --group-by model,size --format html --out usage.html",
}

-- The commands beside the endpoint reports, sorted.
local function command_names()
  local names = {}
  for name in pairs(M.COMMANDS) do
    names[#names + 1] = name
  end
  table.sort(names)
  return names
end

--- The --help text; with an endpoint, its own filters and group_by fields.
function M.help(endpoint)
  local lines = {
    "usage: openai-usage ENDPOINT [options]",
    "",
    "Reads the OpenAI organization Usage API and prints a report. The admin key",
    "comes from OPENAI_ADMIN_KEY, or from a profile (--profile).",
    "",
    "endpoints: " .. table.concat(endpoints(), ", "),
    "",
    "commands: " .. table.concat(command_names(), ", ") .. " (openai-usage COMMAND --help)",
    "",
    "options:",
    wrap_rows(option_rows(M.options())),
  }
  local rule = endpoint and rule_of(endpoint)
  local extra = rule and endpoint_help(endpoint, rule)
    or { "", "openai-usage ENDPOINT --help lists that endpoint's filters." }
  for _, list in ipairs { extra, TRAILER } do
    for _, line in ipairs(list) do
      lines[#lines + 1] = line
    end
  end
  return table.concat(lines, "\n") .. "\n"
end

--- A bash completion script for openai-usage, from the option list and
-- the rule table: endpoints first, then the options and the named
-- endpoint's filters (make install puts it in share/bash-completion).
function M.bash_completion()
  local cases = {}
  for _, name in ipairs(endpoints()) do
    local names = {}
    for _, o in ipairs(M.options(name)) do
      for _, option in ipairs(o.names) do
        names[#names + 1] = option
      end
    end
    cases[#cases + 1] = ("    %s) words=%q ;;"):format(name, table.concat(names, " "))
  end
  return table.concat({
    "# bash completion for openai-usage (written by make install from cli.lua's option list)",
    "_openai_usage() {",
    '  local cur="${COMP_WORDS[COMP_CWORD]}" words',
    "  if [ \"$COMP_CWORD\" -le 1 ]; then",
    ('    COMPREPLY=($(compgen -W %q -- "$cur"))'):format(table.concat(endpoints(), " ")),
    "    return",
    "  fi",
    '  case "${COMP_WORDS[1]}" in',
    table.concat(cases, "\n"),
    "    *) words= ;;",
    "  esac",
    '  COMPREPLY=($(compgen -W "$words" -- "$cur"))',
    "}",
    "complete -o default -F _openai_usage openai-usage",
    "",
  }, "\n")
end

-- One note for each value of an open filter (sizes, sources) that its
-- description does not list: sent as given (a near miss was refused).
local function unlisted_notes(filters, params)
  local notes, seen = {}, {}
  for _, f in ipairs(filters) do
    local p = f.param
    if p.open and type(params[p.name]) == "table" then
      local listed = {}
      for _, v in ipairs(p.values) do
        listed[v] = true
      end
      for _, v in ipairs(params[p.name]) do
        if not listed[v] and not seen[p.name .. "\0" .. v] then
          seen[p.name .. "\0" .. v] = true
          notes[#notes + 1] = ('note: %s "%s" is not in the described list (%s); sent as given'):format(f.option, v,
            table.concat(p.values, ", "))
        end
      end
    end
  end
  return notes
end

local function split(text)
  local out = {}
  for item in text:gmatch "[^,]+" do
    out[#out + 1] = item:match "^%s*(.-)%s*$"
  end
  return out
end

local function has_field(list, name)
  for _, v in ipairs(list) do
    if v == name then
      return true
    end
  end
  return false
end

-- The default range of each width: a CLI choice, not a rule of the API.
local DEFAULT_SINCE = { ["1d"] = "30d", ["1h"] = "7d", ["1m"] = "24h" }

-- The words of argv into job fields (from OPTIONS), the endpoint and the
-- --name value pairs left for the endpoint's filters.
local function read_words(argv, job)
  local filters = {}
  local i = 1
  while i <= #argv do
    local a = argv[i]
    local name, inline = a:match "^(%-%-[%w%-]+)=(.*)$"
    name = name or a
    local o = OPTION_BY_NAME[name]
    local valued = (o and o.arg) or (not o and name:sub(1, 2) == "--")
    if o and not o.arg and inline == nil then
      job[o.key] = o.value == nil or o.value
    elseif valued then
      local value = inline
      if value == nil then
        i = i + 1
        value = argv[i]
        if value == nil then
          return fail(name .. ": needs a value")
        end
      end
      if o then
        job[o.key] = value
      else
        filters[#filters + 1] = { option = name, value = value }
      end
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      return fail(('unknown option "%s" (see --help)'):format(a))
    elseif not job.endpoint then
      job.endpoint = a
    else
      return fail(('unexpected argument "%s": one endpoint at a time (see --help)'):format(a))
    end
    i = i + 1
  end
  return filters
end

-- A whole number >= 1 from option's text, or nil, err.
local function whole_number(option, text)
  local n = tonumber(text)
  if not n or n < 1 or n ~= math.floor(n) then
    return fail(('%s: "%s" is not a whole number >= 1'):format(option, text))
  end
  return math.tointeger and math.tointeger(n) or n
end

-- --timeout, --settle-after, --max-pages, --top: text to numbers.
local function check_numbers(job)
  if job.timeout ~= nil then
    local seconds = tonumber(job.timeout)
    if not seconds or seconds <= 0 or seconds ~= seconds then
      return fail(('--timeout: "%s" is not a number of seconds above 0'):format(job.timeout))
    end
    job.timeout = seconds
  end
  if job.settle_after then
    local seconds, message = time.duration(job.settle_after)
    if not seconds then
      return fail("--settle-after: " .. message)
    end
    job.settle_after = seconds
  end
  for _, o in ipairs { { "--max-pages", "max_pages" }, { "--top", "top" } } do
    if job[o[2]] then
      local n, err = whole_number(o[1], job[o[2]])
      if not n then
        return nil, err
      end
      job[o[2]] = n
    end
  end
  return job
end

-- The endpoint's rule, or nil, err naming the endpoints.
local function check_endpoint(job)
  if not job.endpoint then
    return fail("name an endpoint: " .. table.concat(endpoints(), ", "))
  end
  local rule = rule_of(job.endpoint)
  if not rule then
    return fail(('"%s" is not an endpoint: %s'):format(job.endpoint, table.concat(endpoints(), ", ")))
  end
  return rule
end

-- Filters into params: only the endpoint's own list and boolean parameters.
local function apply_filters(job, rule, filters, params)
  local allowed = {}
  for _, f in ipairs(filter_options(rule)) do
    allowed[f.option] = f.param
  end
  for _, f in ipairs(filters) do
    local p = allowed[f.option]
    if not p then
      local names = {}
      for option in pairs(allowed) do
        names[#names + 1] = option
      end
      table.sort(names)
      return fail(('%s: not an option of %s (its filters: %s)'):format(
        f.option, job.endpoint, #names > 0 and table.concat(names, ", ") or "none"))
    end
    if p.type == "bool" then
      if f.value ~= "true" and f.value ~= "false" then
        return fail(('%s: "%s" is not true or false'):format(f.option, f.value))
      end
      params[p.name] = f.value == "true"
    else
      params[p.name] = split(f.value)
    end
  end
  return params
end

-- The rule of the job's bucket width (job.bucket defaults to the
-- endpoint's), or nil, err listing the widths it allows.
local function width_rule_of(job, rule)
  job.bucket = job.bucket or rule.default_width or rule.widths[1].width
  for _, w in ipairs(rule.widths) do
    if w.width == job.bucket then
      return w
    end
  end
  local names = {}
  for _, w in ipairs(rule.widths) do
    names[#names + 1] = w.width
  end
  return fail(('--bucket: "%s" is not one of %s for %s'):format(job.bucket, table.concat(names, ", "), job.endpoint))
end

-- --since and --until into Unix seconds: job.since, job["until"].
local function resolve_range(job, now)
  local width = assert(time.width(job.bucket))
  job.width = width
  local since, err = time.parse(job.since or DEFAULT_SINCE[job.bucket] or "30d", now)
  if not since then
    return fail("--since: " .. err)
  end
  -- a relative or default start snaps to a bucket boundary (UTC), so
  -- buckets are whole days, hours or minutes
  if job.since == nil or tostring(job.since):match "[smhdw]$" then
    since = since - since % width
  end
  local stop = now
  if job["until"] then
    stop, err = time.parse(job["until"], now)
    if not stop then
      return fail("--until: " .. err)
    end
  end
  if stop <= since then
    return fail(("--until (%s) must be after --since (%s)"):format(time.iso(stop), time.iso(since)))
  end
  job.since, job["until"] = since, stop
  return job
end

-- --cost prices each model and size: the API must split by them.
local function cost_group_by(job, params)
  if job.endpoint ~= "images" then
    return fail("--cost: estimates exist for images only; for amounts billed, report on costs (openai-usage costs)")
  end
  local api_group = {}
  for _, f in ipairs(params.group_by or {}) do
    api_group[#api_group + 1] = f
  end
  for _, f in ipairs { "model", "size" } do
    if not has_field(api_group, f) then
      api_group[#api_group + 1] = f
    end
  end
  params.group_by = api_group
  return params
end

-- --fields and --format against what the endpoint and formats offer.
local function check_outputs(job)
  if job.fields then
    local figures = M.figures(job.endpoint)
    local known = {}
    for _, f in ipairs(figures) do
      known[f] = true
    end
    job.fields = split(job.fields)
    for _, f in ipairs(job.fields) do
      if not known[f] then
        return fail(('--fields: "%s" is not a figure of %s (%s)'):format(f, job.endpoint, table.concat(figures, ", ")))
      end
    end
  end
  if not has_field(format.NAMES, job.format) then
    return fail(('--format: "%s" is not one of %s'):format(job.format, table.concat(format.NAMES, ", ")))
  end
  return M.check_analysis(job)
end

--- --forecast, --forecast-to and --movers checked against the job.
function M.check_analysis(job)
  if job.forecast_to and not job.forecast then
    return fail "--forecast-to: only with --forecast"
  end
  if job.forecast then
    job.forecast_to = job.forecast_to or "month"
    if not has_field({ "day", "week", "month" }, job.forecast_to) then
      return fail(('--forecast-to: "%s" is not one of day, week, month'):format(job.forecast_to))
    end
    if job.bucket ~= "1d" then
      return fail(('--forecast: projects whole days; use --bucket 1d (not %s)'):format(job.bucket))
    end
    local figure = job.fields and job.fields[1] or M.figures(job.endpoint)[1]
    if require("openai_usage.report").LEVEL[figure] then
      return fail(("--forecast: %s is a level (what is held each day), not a flow; no period adds it up"):format(
        figure))
    end
  end
  if job.movers and job.format ~= "html" then
    return fail "--movers: a table of the HTML report (--format html); for the others, openai-usage compare"
  end
  return job
end

-- The grouping the CLI adds to the API's (openai_usage.profiles stamps it).
local ORGANIZATION = "organization"

-- The API query of the job: range, width, page size (the rule's most),
-- grouping; validated whole, so a bad one fails before any request.
local function build_query(job, rule, width_rule, params)
  params.start_time = job.since
  if job["until"] ~= job.now or job.cache then
    params.end_time = job["until"]
  end
  params.bucket_width = job.bucket
  params.limit = width_rule.max_limit
  job.group_by = job.group_by and split(job.group_by) or {}
  -- organization is the CLI's grouping: rows stamped with their profile's label
  local api_group = {}
  for _, f in ipairs(job.group_by) do
    if f ~= ORGANIZATION then
      api_group[#api_group + 1] = f
    end
  end
  if #api_group < #job.group_by and not job.profile then
    return fail("--group-by organization: needs --profile (each row gets its profile's organization label)")
  end
  if #api_group > 0 then
    params.group_by = api_group
  end
  if job.cost then
    local ok, err = cost_group_by(job, params)
    if not ok then
      return nil, err
    end
  end
  local _, qerr = usage.encode_query(job.endpoint, params)
  if qerr then
    return fail(tostring(qerr.message or qerr))
  end
  job.notes = unlisted_notes(filter_options(rule), params)
  return params
end

local function load_prices(job)
  local table_or_err, perr = require("openai_usage.cost").load(job.prices)
  if not table_or_err then
    return fail("--prices: " .. tostring(perr))
  end
  job.prices_table = table_or_err
  return job
end

--- The commands beside the endpoint reports (`openai-usage sync ...`): name
-- -> the module whose run(argv, options, cli) does it and returns the exit
-- code; argv is what follows the command's name, options as M.run's, cli
-- this module (its EXIT, parse, open_client, write_stream, write_atomically).
M.COMMANDS = {}
M.COMMANDS.anomalies = "openai_usage.cmd.anomalies"
M.COMMANDS.check = "openai_usage.cmd.check"
M.COMMANDS.compare = "openai_usage.cmd.compare"
M.COMMANDS.metrics = "openai_usage.cmd.metrics"
M.COMMANDS.reconcile = "openai_usage.cmd.reconcile"
M.COMMANDS.sync = "openai_usage.cmd.sync"

--- A job from arguments: { endpoint, params (the API query), group_by,
-- format, ... } or nil, err (err.kind "usage"; job.help when --help was
-- asked for, job.version for --version). now: Unix seconds (default now).
function M.parse(argv, now)
  now = now or os.time()
  local job = { format = "table", now = now }
  local filters, err = read_words(argv, job)
  if not filters then
    return nil, err
  end
  if job.help or job.version then
    return job
  end
  local ok, rule, width_rule
  ok, err = check_numbers(job)
  if ok then
    rule, err = check_endpoint(job)
  end
  if rule then
    job.params = {}
    ok, err = apply_filters(job, rule, filters, job.params)
  end
  if rule and ok then
    width_rule, err = width_rule_of(job, rule)
  end
  if not width_rule then
    return nil, err
  end
  for _, step in ipairs {
    function() return resolve_range(job, now) end,
    function() return build_query(job, rule, width_rule, job.params) end,
    function() return check_outputs(job) end,
    function()
      if job.cost then
        return load_prices(job)
      end
      return job
    end,
  } do
    ok, err = step()
    if not ok then
      return nil, err
    end
  end
  return job
end

--- The figures of an endpoint's rows, in the order the API writes them:
-- its numeric result fields, and objects holding an amount (costs').
function M.figures(endpoint)
  local out = {}
  for _, f in ipairs(rule_of(endpoint).fields) do
    if f.type == "integer" or f.type == "number" or f.type == "object" then
      out[#out + 1] = f.name
    end
  end
  return out
end

--- The report text of a job over a list of result rows (each stamped with
-- its bucket's times), as cli.run would write it; meta as jobs.cost gives.
function M.render(job, rows, meta)
  return jobs.text(job, jobs.fold_rows(job, rows), meta or {}, M.figures(job.endpoint), rule_of(job.endpoint).path)
end

local function is_terminal(fd)
  local ok, how, code = os.execute(("test -t %d"):format(fd))
  if type(ok) == "number" then -- Lua 5.1
    return ok == 0
  end
  return ok == true and how == "exit" and code == 0
end

-- Writes text to path through an exclusive temporary file beside it,
-- renamed over it (the C core's write_file), so a reader never sees half a
-- report: an existing file keeps its mode, a new one gets the mode a
-- shell's `>` gives (0666 & ~umask), a symlink's target is written.
local function write_atomically(path, text)
  local ok, err = core.write_file(path, text, "default", true)
  if not ok then
    return nil, err.message
  end
  return true
end

-- Writes text to a stream and flushes it: nil, message when it cannot be
-- written (a full disk, /dev/full), which a buffered write only tells then.
local function write_stream(stream, text)
  local ok, err = stream:write(text)
  if ok then
    ok, err = stream:flush()
  end
  if not ok then
    return nil, err
  end
  return true
end

-- The client of a job's history store (--db), or nil after saying why on
-- stderr.
local function open_store_client(job, options, stderr)
  local client, err = require("openai_usage.store").client(job.db, {
    now = function() return job.now or options.now or os.time() end,
    on_note = function(text)
      stderr:write("openai-usage: --db: ", usage.printable(text), "\n")
    end,
    client = { max_pages = job.max_pages },
  })
  if not client then
    stderr:write("openai-usage: --db: ", usage.printable(tostring(err)), "\n")
  end
  return client
end

-- The client of a job (client options under the command line's), or nil
-- after saying why on stderr. With --profile, the profiles' clients joined
-- (openai_usage.profiles): the command line's options over each profile's,
-- options.client under them, the profile's key.
local function open_client(job, options, stderr)
  if job.db then -- the history store answers, not the API: no key needed
    if job.profile then -- until the store's client reads a profile's organization, never the wrong one
      stderr:write("openai-usage: --db with --profile: not supported yet (the store is read as the organization "
        .. "\"default\"); query it with sqlite3 by its organization column\n")
      return nil
    end
    return open_store_client(job, options, stderr)
  end
  local client_options = {
    base_url = job.base_url, cache_dir = job.cache, settle_after = job.settle_after, max_pages = job.max_pages,
    timeout = job.timeout,
  }
  if job.profile then
    local profiles = require "openai_usage.profiles"
    local members, perr = profiles.clients(job.profile, { path = job.profiles, over = client_options,
      under = options.client })
    if not members then
      stderr:write("openai-usage: ", usage.printable(tostring(perr.message or perr)), "\n")
      return nil
    end
    return profiles.join(members)
  elseif job.profiles then
    stderr:write("openai-usage: --profiles FILE: name the profile to use (--profile NAME)\n")
    return nil
  end
  for k, v in pairs(options.client or {}) do
    client_options[k] = client_options[k] or v
  end
  local key = client_options.api_key or os.getenv "OPENAI_ADMIN_KEY"
  if key == nil or key == "" then
    stderr:write("openai-usage: OPENAI_ADMIN_KEY is not set (an admin key from platform.openai.com)\n")
    return nil
  end
  local client, cerr = usage.new(client_options)
  if not client then
    stderr:write("openai-usage: ", usage.printable(tostring(cerr)), "\n")
  end
  return client
end

-- The progress line: show(pages, fold) rewrites it after a page, show()
-- erases it; nothing when progress is off (default: on a terminal only).
local function progress_line(job, stderr)
  local progress = job.progress
  if progress == nil then
    progress = is_terminal(2)
  end
  local started = usage.clock()
  return function(pages, fold)
    if progress then
      if not pages then
        stderr:write "\r\27[K"
      else
        stderr:write(("\r\27[Kpages %d · buckets %d · rows %d · %.1f s"):format(pages, fold.buckets, fold.rows,
          usage.clock() - started))
      end
      stderr:flush()
    end
  end
end

-- The job's report text through client (closed here), or nil and the exit
-- code after saying why. Ctrl-C (bin/openai-usage catches it) stops the
-- transfer: exit 130 and nothing written, whichever step it came in.
local function report_text(client, job, stderr)
  local show, pages, fold = progress_line(job, stderr), 0, nil
  local ok, walk_err = pcall(function()
    fold = jobs.walk(client, job, function(f)
      pages, fold = pages + 1, f
      show(pages, fold)
    end)
  end)
  show()
  local meta, figures = {}, M.figures(job.endpoint)
  if ok and job.cost and not core.interrupted() then
    meta = jobs.cost(client, job, fold, figures)
  end
  if ok and (job.forecast or job.movers) and not core.interrupted() then
    ok, walk_err = pcall(jobs.analysis, client, job, meta, figures)
  end
  if ok and job.names and not core.interrupted() then
    ok, walk_err = pcall(jobs.names, client, job, fold, figures, meta)
  end
  client:close()
  if core.interrupted() then
    stderr:write("openai-usage: interrupted\n")
    return nil, M.EXIT.interrupted
  end
  if not ok then
    stderr:write("openai-usage: ", usage.printable(tostring(walk_err)), "\n")
    return nil, M.EXIT.failed
  end
  -- a report step that refuses the data (a chart of too many buckets) is
  -- one line and exit 1, not a traceback
  local shaped, text = pcall(jobs.text, job, fold, meta, figures, rule_of(job.endpoint).path)
  if not shaped and not core.interrupted() then
    stderr:write("openai-usage: ", usage.printable(tostring(text)), "\n")
    return nil, M.EXIT.failed
  end
  if core.interrupted() then -- while the report was being shaped: nothing is written
    stderr:write("openai-usage: interrupted\n")
    return nil, M.EXIT.interrupted
  end
  return text
end

--- Runs the command: argv (a list of strings); options.stdout/stderr (file
-- handles, default io's), options.now (Unix seconds), options.client (client
-- options under the command line's, e.g. api_key and base_url),
-- options.catch_sigint (bin/openai-usage's: Ctrl-C stops the transfer and
-- exits 130). Returns the exit code.
function M.run(argv, options)
  options = options or {}
  if options.catch_sigint then
    core.catch_sigint()
  end
  local command = argv[1] and M.COMMANDS[argv[1]]
  if command then
    local rest = {}
    for i = 2, #argv do
      rest[#rest + 1] = argv[i]
    end
    return require(command).run(rest, options, M)
  end
  local stdout, stderr = options.stdout or io.stdout, options.stderr or io.stderr
  local job, err = M.parse(argv, options.now or os.time())
  if not job then
    stderr:write("openai-usage: ", usage.printable(tostring(err.message)), "\n")
    return M.EXIT.usage
  end
  local function output(text)
    local written, werr = write_stream(stdout, text)
    if not written then
      stderr:write("openai-usage: cannot write to stdout: ", tostring(werr), "\n")
      return M.EXIT.output
    end
    return M.EXIT.ok
  end
  if job.help then
    return output(M.help(job.endpoint))
  end
  if job.version then
    return output(("openai-usage %s (libcurl %s)\n"):format(usage.version, usage.libcurl_version() or "?"))
  end
  for _, note in ipairs(job.notes or {}) do
    stderr:write("openai-usage: ", note, "\n")
  end
  local client = open_client(job, options, stderr)
  if not client then -- Ctrl-C while a profile's key_command ran is 130, as anywhere
    return core.interrupted() and M.EXIT.interrupted or M.EXIT.usage
  end
  local text, code = report_text(client, job, stderr)
  if not text then
    return code
  end
  if job.out then
    local written, werr = write_atomically(job.out, text)
    if not written then
      stderr:write("openai-usage: --out: ", usage.printable(tostring(werr)), "\n")
      return M.EXIT.output
    end
    return M.EXIT.ok
  end
  return output(text)
end

M.write_atomically = write_atomically
M.write_stream = write_stream
M.open_client = open_client
M.is_terminal = is_terminal

return M
