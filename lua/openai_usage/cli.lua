--- The openai-usage command line: parse arguments into a job, walk the
-- pages, shape the rows into a report and write it. bin/openai-usage and
-- the Neovim plugin share this module. The filters it offers and their help
-- come from the rule table, so every endpoint gets its own.
local usage = require "openai_usage"
local core = require "openai_usage.core"
local report = require "openai_usage.report"
local time = require "openai_usage.time"
local format = require "openai_usage.format"

local M = {}

--- Exit codes, as documented in --help.
M.EXIT = { ok = 0, failed = 1, usage = 2, output = 3, interrupted = 130 }

local function fail(message)
  return nil, setmetatable({ kind = "usage", message = message }, {
    __tostring = function(e)
      return e.message
    end,
  })
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

local OPTIONS = {
  { "--since TIME", "start of the range (default 30d; 7d with --bucket 1h, 24h with 1m)" },
  { "--until TIME", "end of the range, exclusive (default: now)" },
  { "--bucket WIDTH", "bucket width: 1m, 1h or 1d, as the endpoint allows (default 1d)" },
  { "--group-by F,F", "fields to group by, sent to the API and kept in the report" },
  { "--by-time", "one row per bucket and group (default: totals over the range)" },
  { "--fields F,F", "the figures to show, in order (default: all of the endpoint's)" },
  { "--top N", 'keep the N largest groups; the rest add up to one "(other)" row' },
  { "--sort SPEC", "order of rows, e.g. -images,model (default: largest first)" },
  { "--share", "add each row's share of the first figure, in percent" },
  { "--cost", "add a cost column: real amounts from the costs endpoint where the\n"
    .. "grouping allows, else an estimate from a dated price table (images)" },
  { "--prices FILE", "a Lua price table to use instead of the bundled one" },
  { "--quality Q", "image quality the estimate assumes (default: the table's)" },
  { "--format F", "table, md, csv, json, jsonl, svg or html (default table)" },
  { "--out FILE", "write the report to FILE (atomically) instead of stdout" },
  { "--cache DIR", "keep pages of settled buckets in DIR; re-runs skip those requests" },
  { "--settle-after T", "a bucket is settled (cached) T after it ends: 3600, 90m, 2d\n"
    .. "(default 1h for usage, 2d for costs: the API revises late data)" },
  { "--max-pages N", "stop with an error after N pages if the API has more" },
  { "--base-url URL", "API base (default $OPENAI_BASE_URL or https://api.openai.com/v1)" },
  { "--timeout SECONDS", "give up an attempt after that long (default 600; also after 60 s\nwithout a byte)" },
  { "--progress", "show the progress line even when stderr is not a terminal" },
  { "--no-progress", "never show it" },
  { "-h, --help", "this help; with an endpoint, its filters too" },
  { "--version", "print the version" },
}

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

--- The --help text; with an endpoint, its own filters and group_by fields.
function M.help(endpoint)
  local lines = {
    "usage: openai-usage ENDPOINT [options]",
    "",
    "Reads the OpenAI organization Usage API and prints a report. The admin key",
    "comes from OPENAI_ADMIN_KEY.",
    "",
    "endpoints: " .. table.concat(endpoints(), ", "),
    "",
    "options:",
    wrap_rows(OPTIONS),
  }
  local rule = endpoint and rule_of(endpoint)
  if rule then
    local rows = {}
    for _, f in ipairs(filter_options(rule)) do
      local p = f.param
      local what = p.doc or ""
      if p.values then
        what = what .. " (" .. table.concat(p.values, ", ") .. ")"
      end
      rows[#rows + 1] = { f.option .. (p.type == "bool" and " true|false" or " A,B"), what }
    end
    lines[#lines + 1] = ""
    lines[#lines + 1] = ("filters of %s (%s):"):format(endpoint, rule.path)
    lines[#lines + 1] = #rows > 0 and wrap_rows(rows) or "  (none)"
    local group = param_rule(rule, "group_by")
    if group and group.values then
      lines[#lines + 1] = ""
      lines[#lines + 1] = "  --group-by takes: " .. table.concat(group.values, ", ")
    end
    local widths = {}
    for _, w in ipairs(rule.widths) do
      widths[#widths + 1] = ("%s (up to %d a page)"):format(w.width, w.max_limit)
    end
    lines[#lines + 1] = "  --bucket takes: " .. table.concat(widths, ", ")
  else
    lines[#lines + 1] = ""
    lines[#lines + 1] = "openai-usage ENDPOINT --help lists that endpoint's filters."
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "times: Unix seconds, 2024-11-01, 2024-11-01T12:00:00Z, or 90m, 24h, 7d before now (UTC)"
  lines[#lines + 1] = ""
  lines[#lines + 1] = "exit codes:"
  lines[#lines + 1] = "  0  the report was written"
  lines[#lines + 1] = "  1  a request failed (network, timeout, HTTP or API error)"
  lines[#lines + 1] = "  2  bad arguments or configuration (nothing was sent)"
  lines[#lines + 1] = "  3  the report could not be written (stdout or --out: a full disk, no permission)"
  lines[#lines + 1] = "  130  interrupted (Ctrl-C): the transfer stopped, nothing was written"
  lines[#lines + 1] = ""
  lines[#lines + 1] = "example: openai-usage images --since 30d --bucket 1d --group-by model,size --format html --out usage.html"
  return table.concat(lines, "\n") .. "\n"
end

local FLAGS = { ["--by-time"] = "by_time", ["--share"] = "share", ["--cost"] = "cost", ["--progress"] = "progress" }
local VALUED = {
  ["--since"] = "since",
  ["--until"] = "until",
  ["--bucket"] = "bucket",
  ["--group-by"] = "group_by",
  ["--top"] = "top",
  ["--sort"] = "sort",
  ["--fields"] = "fields",
  ["--prices"] = "prices",
  ["--quality"] = "quality",
  ["--format"] = "format",
  ["--out"] = "out",
  ["--cache"] = "cache",
  ["--settle-after"] = "settle_after",
  ["--max-pages"] = "max_pages",
  ["--base-url"] = "base_url",
  ["--timeout"] = "timeout",
}

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

local DEFAULT_SINCE = { ["1d"] = "30d", ["1h"] = "7d", ["1m"] = "24h" }

--- A job from arguments: { endpoint, params (the API query), group_by,
-- format, ... } or nil, err (err.kind "usage"; err.help when --help was
-- asked for, err.version for --version). now: Unix seconds (default now).
function M.parse(argv, now)
  now = now or os.time()
  local job = { format = "table", now = now }
  local filters = {}
  local i = 1
  while i <= #argv do
    local a = argv[i]
    local name, inline = a:match "^(%-%-[%w%-]+)=(.*)$"
    name = name or a
    if a == "-h" or a == "--help" then
      job.help = true
    elseif a == "--version" then
      job.version = true
    elseif a == "--no-progress" then
      job.progress = false
    elseif FLAGS[a] then
      job[FLAGS[a]] = true
    elseif VALUED[name] or (name:sub(1, 2) == "--" and not FLAGS[name]) then
      local value = inline
      if value == nil then
        i = i + 1
        value = argv[i]
        if value == nil then
          return fail(name .. ": needs a value")
        end
      end
      if VALUED[name] then
        job[VALUED[name]] = value
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
  if job.help or job.version then
    return job
  end
  if job.timeout ~= nil then
    local seconds = tonumber(job.timeout)
    if not seconds or seconds <= 0 or seconds ~= seconds then
      return fail(('--timeout: "%s" is not a number of seconds above 0'):format(job.timeout))
    end
    job.timeout = seconds
  end
  if not job.endpoint then
    return fail("name an endpoint: " .. table.concat(endpoints(), ", "))
  end
  local rule = rule_of(job.endpoint)
  if not rule then
    return fail(('"%s" is not an endpoint: %s'):format(job.endpoint, table.concat(endpoints(), ", ")))
  end
  local params = {}
  job.params = params
  -- Filters: only the endpoint's own list and boolean parameters.
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
  job.bucket = job.bucket or rule.default_width or "1d"
  local width_rule
  for _, w in ipairs(rule.widths) do
    if w.width == job.bucket then
      width_rule = w
    end
  end
  if not width_rule then
    local names = {}
    for _, w in ipairs(rule.widths) do
      names[#names + 1] = w.width
    end
    return fail(('--bucket: "%s" is not one of %s for %s'):format(job.bucket, table.concat(names, ", "), job.endpoint))
  end
  local width = assert(time.width(job.bucket))
  job.width = width
  local since, err = time.parse(job.since or DEFAULT_SINCE[job.bucket] or "30d", now)
  if not since then
    return fail("--since: " .. err)
  end
  if job.since == nil or not tostring(job.since):match "^%d+$" then
    -- a relative or default start snaps to a bucket boundary (UTC), so
    -- buckets are whole days, hours or minutes
    if job.since == nil or tostring(job.since):match "[smhdw]$" then
      since = since - since % width
    end
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
  params.start_time = since
  if job["until"] ~= now or job.cache then
    params.end_time = stop
  end
  params.bucket_width = job.bucket
  params.limit = width_rule.max_limit
  job.group_by = job.group_by and split(job.group_by) or {}
  if #job.group_by > 0 then
    params.group_by = job.group_by
  end
  if job.cost then
    if job.endpoint ~= "images" then
      return fail("--cost: estimates exist for images only; for amounts billed, report on costs (openai-usage costs)")
    end
    -- an estimate prices each model and size, so the API must split by them
    local api_group = {}
    for _, f in ipairs(job.group_by) do
      api_group[#api_group + 1] = f
    end
    for _, f in ipairs { "model", "size" } do
      if not has_field(api_group, f) then
        api_group[#api_group + 1] = f
      end
    end
    params.group_by = api_group
  end
  local figures = M.figures(job.endpoint)
  if job.fields then
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
  if job.settle_after then
    local seconds, message = time.duration(job.settle_after)
    if not seconds then
      return fail("--settle-after: " .. message)
    end
    job.settle_after = seconds
  end
  if job.max_pages then
    local n = tonumber(job.max_pages)
    if not n or n < 1 or n ~= math.floor(n) then
      return fail(('--max-pages: "%s" is not a whole number >= 1'):format(job.max_pages))
    end
    job.max_pages = math.tointeger and math.tointeger(n) or n
  end
  if job.top then
    local n = tonumber(job.top)
    if not n or n < 1 or n ~= math.floor(n) then
      return fail(('--top: "%s" is not a whole number >= 1'):format(job.top))
    end
    job.top = n
  end
  local known = {}
  for _, name in ipairs(format.NAMES) do
    known[name] = true
  end
  if not known[job.format] then
    return fail(('--format: "%s" is not one of %s'):format(job.format, table.concat(format.NAMES, ", ")))
  end
  -- Validate the whole query now, so a bad one fails before any request.
  local _, qerr = usage.encode_query(job.endpoint, params)
  if qerr then
    return fail(tostring(qerr.message or qerr))
  end
  job.notes = unlisted_notes(filter_options(rule), params)
  if job.cost then
    local cost = require "openai_usage.cost"
    local table_or_err, perr = cost.load(job.prices)
    if not table_or_err then
      return fail("--prices: " .. tostring(perr))
    end
    job.prices_table = table_or_err
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

--- The report rows of a job from result rows (each stamped with its
-- bucket's start_time and end_time), before formatting. decorate(rows),
-- when given, may add columns to the grouped rows before they are sorted,
-- cut to the top N and shared.
function M.shape(job, rows, decorate)
  rows = report.rows(rows)
  local by = job.group_by
  -- the figures in the API's order (or --fields'), then any the rows add
  -- (an estimated cost comes last)
  local sums, seen = {}, {}
  local present = {}
  for _, f in ipairs(report.numeric_fields(rows)) do
    present[f] = true
  end
  for _, f in ipairs(job.fields or M.figures(job.endpoint)) do
    if present[f] or job.fields then
      sums[#sums + 1], seen[f] = f, true
    end
  end
  if not job.fields then
    for _, f in ipairs(report.numeric_fields(rows)) do
      if not seen[f] and f ~= "cost" then
        sums[#sums + 1] = f
      end
    end
  end
  if #rows > 0 and rows[1].cost ~= nil then
    sums[#sums + 1] = "cost"
  end
  local shaped
  if job.by_time then
    shaped = report.series(rows, { start = job.since, stop = job["until"], width = job.width, by = by, value = sums })
  else
    shaped = report.group(rows, by, sums)
  end
  if decorate then
    decorate(shaped)
  end
  local first = sums[1]
  if job.sort then
    shaped = report.sort(shaped, job.sort)
  elseif first and not job.by_time then
    shaped = report.sort(shaped, "-" .. first)
  end
  if job.top and first and not job.by_time then
    shaped = report.top(shaped, job.top, first)
  end
  if job.share and first then
    shaped = report.share(shaped, first, "share")
  end
  return shaped
end

local function single_currency(rows)
  local currency
  for _, row in ipairs(rows) do
    if row.currency then
      if currency and currency ~= row.currency then
        return nil
      end
      currency = row.currency
    end
  end
  return currency
end

-- Words of text in lines of at most width bytes (a longer word stands alone).
local function wrap(text, width)
  local lines, line = {}, ""
  for word in text:gmatch "%S+" do
    if line ~= "" and #line + 1 + #word > width then
      lines[#lines + 1] = line
      line = word
    else
      line = line == "" and word or line .. " " .. word
    end
  end
  lines[#lines + 1] = line
  return table.concat(lines, "\n")
end

-- Figures whose unit (field name .. "_unit", as costs' quantity_unit)
-- differs between rows: their total would add tokens to images.
local function mixed_units(rows)
  local units, mixed = {}, {}
  for _, row in ipairs(rows) do
    for k, v in pairs(row) do
      local figure = type(k) == "string" and k:match "^(.+)_unit$"
      if figure then
        v = tostring(v)
        if units[figure] ~= nil and units[figure] ~= v then
          mixed[figure] = true
        end
        units[figure] = v
      end
    end
  end
  return mixed
end

local function describe_range(job)
  return ("%s, %s to %s, %s buckets"):format(job.endpoint, time.label(job.since), time.label(job["until"]), job.bucket)
end

--- The report text of a job over result rows. meta.cost (optional) is what
-- openai_usage.cost worked out: its rows carry the cost column.
function M.render(job, rows, meta)
  meta = meta or {}
  rows = report.rows(rows) -- costs' amount = { value, currency } lifted
  local currency = single_currency(rows)
  local shaped = meta.shaped or M.shape(job, rows)
  local headers = {}
  if currency then
    headers.amount = "amount_" .. currency
  end
  if meta.shaped and job.prices_table then
    headers.cost = "cost_" .. (job.prices_table.currency or "usd")
  end
  local title = "OpenAI usage: " .. describe_range(job)
  if #job.group_by > 0 then
    title = title .. ", by " .. table.concat(job.group_by, ", ")
  end
  local opts = {
    headers = headers,
    no_total = mixed_units(rows),
    total = not job.by_time and (job.format == "table" or job.format == "md" or job.format == "html"),
    width = job.width,
    title = (job.format == "table" or job.format == "md" or job.format == "html" or job.format == "svg") and title or nil,
    subtitle = ("GET %s · generated %s"):format(rule_of(job.endpoint).path, time.iso(job.now)),
    note = meta.note,
  }
  if job.format == "html" then
    return M.html(job, rows, shaped, opts)
  end
  local text = format.render(shaped, job.format, opts)
  if meta.note and (job.format == "table" or job.format == "md") then
    text = text .. "\n" .. wrap(meta.note, 100) .. "\n"
  end
  return text
end

-- The HTML report: the table, bars of its first figure and, for time data,
-- a stacked series by the first grouping field.
function M.html(job, rows, shaped, opts)
  local chart = require "openai_usage.chart"
  local sums = report.numeric_fields(shaped)
  local value = sums[1]
  local sections = {}
  if value and #shaped > 0 then
    if not job.by_time then
      sections[#sections + 1] = { svg = format.render(shaped, "svg", { chart = { kind = "bars" }, title = value .. " by " .. (#job.group_by > 0 and table.concat(job.group_by, ", ") or "range") }) }
    end
    local series = report.series(report.rows(rows), {
      start = job.since,
      stop = job["until"],
      width = job.width,
      by = job.group_by[1],
      value = value,
    })
    if #series > 0 then
      sections[#sections + 1] = {
        svg = chart.stacked(series, {
          series = job.group_by[1],
          value = value,
          title = value .. " per " .. job.bucket .. " bucket" .. (job.group_by[1] and " by " .. job.group_by[1] or ""),
          width_seconds = job.width,
        }),
      }
    end
  end
  return format.render(shaped, "html", {
    headers = opts.headers,
    total = opts.total,
    width = opts.width,
    title = opts.title,
    subtitle = opts.subtitle,
    note = opts.note,
    sections = sections,
  })
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
  local stdout, stderr = options.stdout or io.stdout, options.stderr or io.stderr
  local now = options.now or os.time()
  local job, err = M.parse(argv, now)
  if not job then
    stderr:write("openai-usage: ", usage.printable(tostring(err)), "\n")
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
  local client_options = {
    base_url = job.base_url, cache_dir = job.cache, settle_after = job.settle_after, max_pages = job.max_pages,
    timeout = job.timeout,
  }
  for k, v in pairs(options.client or {}) do
    client_options[k] = client_options[k] or v
  end
  local key = client_options.api_key or os.getenv "OPENAI_ADMIN_KEY"
  if key == nil or key == "" then
    stderr:write("openai-usage: OPENAI_ADMIN_KEY is not set (an admin key from platform.openai.com)\n")
    return M.EXIT.usage
  end
  local client, cerr = usage.new(client_options)
  if not client then
    stderr:write("openai-usage: ", usage.printable(tostring(cerr)), "\n")
    return M.EXIT.usage
  end
  local progress = job.progress
  if progress == nil then
    progress = is_terminal(2)
  end
  local started = usage.clock()
  local pages, buckets, rows = 0, 0, {}
  -- one line, rewritten after each page and erased at the end
  local function show(final)
    if progress then
      if final then
        stderr:write "\r\27[K"
      else
        stderr:write(("\r\27[Kpages %d · buckets %d · rows %d · %.1f s"):format(pages, buckets, #rows, usage.clock() - started))
      end
      stderr:flush()
    end
  end
  local ok, walk_err = pcall(function()
    for page in client:pages(job.endpoint, job.params) do
      pages, buckets = pages + 1, buckets + #(page.data or {})
      require("openai_usage.walk").rows(page, rows) -- stamped with their bucket's times
      show(false)
    end
  end)
  show(true)
  -- Ctrl-C (bin/openai-usage catches it): the transfer stopped; exit 130
  -- and write nothing, whichever step it came in
  local function interrupted()
    client:close()
    stderr:write("openai-usage: interrupted\n")
    return M.EXIT.interrupted
  end
  if core.interrupted() then
    return interrupted()
  end
  if not ok then
    client:close()
    stderr:write("openai-usage: ", usage.printable(tostring(walk_err)), "\n")
    return M.EXIT.failed
  end
  local meta = {}
  if job.cost then
    local cost = require "openai_usage.cost"
    local cost_err
    meta, cost_err = cost.apply(job, rows, client, M.shape)
    if not meta and core.interrupted() then
      return interrupted()
    elseif not meta then
      client:close()
      stderr:write("openai-usage: ", usage.printable(tostring(cost_err)), "\n")
      return M.EXIT.failed
    end
  end
  if core.interrupted() then
    return interrupted()
  end
  client:close()
  local text = M.render(job, rows, meta)
  if core.interrupted() then -- while the report was being shaped: nothing is written
    stderr:write("openai-usage: interrupted\n")
    return M.EXIT.interrupted
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

return M
