--- Daily series through a client, for the analysis commands (anomalies,
-- compare) and the reports' --forecast: the 1d pages of an endpoint walked
-- with client:pages (so a store-backed client serves them as the API
-- does), then openai_usage.analysis.daily. Also the small argument reader
-- those commands share.
local usage = require "openai_usage"
local analysis = require "openai_usage.analysis"
local errors = require "openai_usage.errors"
local format = require "openai_usage.format"
local time = require "openai_usage.time"

local M = {}

local DAY = analysis.DAY

local function fail(message)
  return nil, errors.new { kind = "usage", message = message }
end
M.fail = fail

--- The endpoint's rule, or nil when it has none.
function M.rule_of(endpoint)
  for _, name in ipairs(usage.rules()) do
    if name == endpoint then
      return usage.rules(endpoint)
    end
  end
end

--- The fields an endpoint can group by.
function M.group_fields(endpoint)
  for _, p in ipairs(M.rule_of(endpoint).params) do
    if p.name == "group_by" then
      return p.values or {}
    end
  end
  return {}
end

local function has(list, value)
  for _, v in ipairs(list) do
    if v == value then
      return true
    end
  end
  return false
end
M.has = has

--- The pages of endpoint's 1d buckets from start to stop (day-aligned),
-- grouped by the fields by, through client, with the other params given
-- (filters); a list, so several steps can read it.
function M.pages(client, endpoint, by, start, stop, params)
  local query = {}
  for k, v in pairs(params or {}) do
    query[k] = v
  end
  query.start_time, query.end_time, query.bucket_width = start, stop, "1d"
  for _, w in ipairs(M.rule_of(endpoint).widths) do
    if w.width == "1d" then
      query.limit = w.max_limit
    end
  end
  -- organization is no field of the API's: a walk over several profiles
  -- (openai_usage.profiles) marks each page with it, and its rows take it
  local api_by = {}
  for _, f in ipairs(by) do
    if f ~= "organization" then
      api_by[#api_by + 1] = f
    end
  end
  query.group_by = #api_by > 0 and api_by or nil
  local pages = {}
  for page in client:pages(endpoint, query) do
    for _, bucket in ipairs(page.organization and page.data or {}) do
      for _, row in ipairs(bucket.results or {}) do
        row.organization = page.organization
      end
    end
    pages[#pages + 1] = page
  end
  return pages
end

--- An iterator over a list of pages, for analysis.daily.
function M.each(pages)
  local i = 0
  return function()
    i = i + 1
    return pages[i]
  end
end

-- The options every analysis command takes, beside its own.
local COMMON = {
  { name = "--figure", arg = "F", key = "figure", help = "the figure to read (default: the endpoint's first)" },
  { name = "--format", arg = "F", key = "format", help = "table, md, csv, json or jsonl (default table)" },
  { name = "--out", arg = "FILE", key = "out", help = "write to FILE (atomically) instead of stdout" },
  { name = "--base-url", arg = "URL", key = "base_url", help = "API base (default $OPENAI_BASE_URL)" },
  { name = "--db", arg = "FILE", key = "db", help = "read the history store FILE (openai-usage sync), not the API" },
  { name = "--timeout", arg = "SECONDS", key = "timeout", help = "give up an attempt after that long" },
  { name = "--max-pages", arg = "N", key = "max_pages", help = "stop with an error after N pages" },
  { name = "--profile", arg = "NAME,NAME", key = "profile", help = "key and options from profiles (see README)" },
  { name = "--profiles", arg = "FILE", key = "profiles", help = "the profiles file (must be 0600)" },
  { name = "-h", key = "help", help = "this help" },
  { name = "--help", key = "help", help = "this help" },
}

M.FORMATS = { "table", "md", "csv", "json", "jsonl" }

--- Reads argv for a command: its own options (a list as COMMON's: name,
-- arg, key, help), then COMMON's; the first word not an option is the
-- endpoint (default "costs"). Returns a job or nil, err (kind "usage").
function M.parse(argv, own)
  local by_name = {}
  for _, list in ipairs { own, COMMON } do
    for _, o in ipairs(list) do
      by_name[o.name] = o
    end
  end
  local job = { format = "table" }
  local i = 1
  while i <= #argv do
    local a = argv[i]
    local name, inline = a:match "^(%-%-[%w%-]+)=(.*)$"
    name = name or a
    local o = by_name[name]
    if o and not o.arg then
      job[o.key] = true
    elseif o then
      local value = inline
      if value == nil then
        i = i + 1
        value = argv[i]
      end
      if value == nil then
        return fail(name .. ": needs a value")
      end
      job[o.key] = value
    elseif a:sub(1, 1) == "-" then
      return fail(('unknown option "%s" (see --help)'):format(a))
    elseif not job.endpoint then
      job.endpoint = a
    else
      return fail(('unexpected argument "%s": one endpoint at a time'):format(a))
    end
    i = i + 1
  end
  if job.help then
    return job
  end
  job.endpoint = job.endpoint or "costs"
  if not M.rule_of(job.endpoint) then
    local names = usage.rules()
    table.sort(names)
    return fail(('"%s" is not an endpoint: %s'):format(job.endpoint, table.concat(names, ", ")))
  end
  local figures = require("openai_usage.cli").figures(job.endpoint)
  job.figure = job.figure or figures[1]
  if not has(figures, job.figure) then
    return fail(('--figure: "%s" is not a figure of %s (%s)'):format(job.figure, job.endpoint,
      table.concat(figures, ", ")))
  end
  if not has(M.FORMATS, job.format) then
    return fail(('--format: "%s" is not one of %s'):format(job.format, table.concat(M.FORMATS, ", ")))
  end
  if job.timeout ~= nil then
    job.timeout = tonumber(job.timeout)
    if not job.timeout or job.timeout <= 0 then
      return fail "--timeout: not a number of seconds above 0"
    end
  end
  if job.max_pages ~= nil then
    local n = tonumber(job.max_pages)
    if not n or n < 1 or n ~= math.floor(n) then
      return fail(('--max-pages: "%s" is not a whole number >= 1'):format(job.max_pages))
    end
    job.max_pages = math.tointeger and math.tointeger(n) or n
  end
  return job
end

--- The help of a command: its usage line, what it does, its options.
function M.help(usage_line, what, own)
  local lines = { "usage: " .. usage_line, "", what, "", "options:" }
  for _, list in ipairs { own, COMMON } do
    for _, o in ipairs(list) do
      if o.name ~= "-h" then
        lines[#lines + 1] = ("  %-24s %s"):format(o.name .. (o.arg and " " .. o.arg or ""), o.help)
      end
    end
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "ENDPOINT defaults to costs (its figure: amount, in USD)."
  lines[#lines + 1] = "The admin key comes from OPENAI_ADMIN_KEY."
  return table.concat(lines, "\n") .. "\n"
end

--- A time option: Unix seconds from text (time.parse), or nil, err.
function M.time_option(name, value, now)
  local t, err = time.parse(value, now)
  if not t then
    return fail(name .. ": " .. err)
  end
  return t
end

--- Writes a command's text to job.out or stdout; returns the exit code.
function M.output(cli, job, options, text)
  local stdout, stderr = options.stdout or io.stdout, options.stderr or io.stderr
  if job.out then
    local ok, err = cli.write_atomically(job.out, text)
    if not ok then
      stderr:write("openai-usage: --out: ", usage.printable(tostring(err)), "\n")
      return cli.EXIT.output
    end
    return cli.EXIT.ok
  end
  local ok, err = cli.write_stream(stdout, text)
  if not ok then
    stderr:write("openai-usage: cannot write to stdout: ", tostring(err), "\n")
    return cli.EXIT.output
  end
  return cli.EXIT.ok
end

--- Runs a command's walk(client) through cli.open_client: the text it
-- returns, or nil and the exit code after saying why.
function M.with_client(cli, job, options, walk)
  local stderr = options.stderr or io.stderr
  local client = cli.open_client(job, options, stderr)
  if not client then
    return nil, cli.EXIT.usage
  end
  local ok, result = pcall(walk, client)
  client:close()
  local core = require "openai_usage.core"
  if core.interrupted() then
    stderr:write("openai-usage: interrupted\n")
    return nil, cli.EXIT.interrupted
  end
  if not ok then
    stderr:write("openai-usage: ", usage.printable(tostring(result)), "\n")
    return nil, cli.EXIT.failed
  end
  return result
end

--- Renders rows as the reports do (format.render), titled for people.
function M.render(rows, job, title, columns, headers)
  local people = job.format == "table" or job.format == "md"
  return format.render(rows, job.format, { columns = columns, headers = headers, width = DAY,
    title = people and title or nil })
end

return M
