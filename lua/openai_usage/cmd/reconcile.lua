--- openai-usage reconcile: the price table's estimate (images usage x
-- prices) against what the Costs endpoint billed, per line item and project
-- over settled days (openai_usage.reconcile); says when the table looks
-- stale, and exits 4 then.
local reconcile = require "openai_usage.reconcile"
local args = require "openai_usage.cmd.args"
local time = require "openai_usage.time"
local json = require "openai_usage.json"
local text = require "openai_usage.text"

local M = {}

M.OPTIONS = {
  { names = { "--since" }, arg = "TIME", key = "since", help = "start of the range (default 30d, at a UTC midnight)" },
  { names = { "--until" }, arg = "TIME", key = "until",
    help = "end of the range (default now); only its settled days are compared" },
  { names = { "--at" }, arg = "TIME", key = "at", help = "as of TIME (default now): which days have settled" },
  { names = { "--settle-after" }, arg = "T", key = "settle_after",
    help = "a day of costs is settled T after it ends (default 2d)" },
  { names = { "--prices" }, arg = "FILE", key = "prices", help = "a Lua price table instead of the bundled one" },
  { names = { "--quality" }, arg = "Q", key = "quality", help = "image quality the estimate assumes" },
  { names = { "--tolerance" }, arg = "SHARE", key = "tolerance",
    help = "stale when an estimate is off by more than SHARE of the billed amount\n(default 0.01: 1%)" },
  { names = { "--format" }, arg = "F", key = "format", help = "text (default) or json" },
}

M.ABOUT = {
  "Compares what the price table estimates (images usage x prices) with what the",
  "Costs endpoint billed, per line item and project, over the settled days of the",
  "range: the difference and its share of the billed amount. Says when the table",
  "looks stale: an estimate off by more than the tolerance, or images of a model",
  "and size the table does not price.",
}

M.TRAILER = {
  "",
  "exit codes: 0 the table agrees, 4 it looks stale, 1 a request failed, 2 bad arguments,",
  "  3 the output could not be written, 130 interrupted",
}

--- The plan of a reconcile from its arguments, or nil, err (kind "usage").
function M.parse(argv, now)
  local f, err = args.read(argv, { M.OPTIONS, args.CLIENT })
  if not f then
    return nil, err
  end
  if f.help then
    return { help = true }
  end
  now = now or os.time()
  if f.at then
    local at, aerr = time.parse(f.at, now)
    if not at then
      return args.fail("--at: " .. aerr)
    end
    now = at
  end
  local plan = { format = f.format or "text", now = now, base_url = f.base_url, db = f.db, quality = f.quality }
  if plan.format ~= "text" and plan.format ~= "json" then
    return args.fail(('--format: "%s" is not one of text, json'):format(plan.format))
  end
  local since, serr = time.parse(f.since or "30d", now)
  if not since then
    return args.fail("--since: " .. serr)
  end
  if f.since == nil or f.since:match "[smhdw]$" then
    since = since - since % 86400
  end
  plan.since = since
  if f["until"] then
    local stop, uerr = time.parse(f["until"], now)
    if not stop then
      return args.fail("--until: " .. uerr)
    end
    if stop <= since then
      return args.fail(("--until (%s) must be after --since (%s)"):format(time.iso(stop), time.iso(since)))
    end
    plan["until"] = stop
  end
  if f.settle_after then
    local seconds, derr = time.duration(f.settle_after)
    if not seconds then
      return args.fail("--settle-after: " .. derr)
    end
    plan.settle_after = seconds
  end
  if f.tolerance then
    plan.tolerance, err = args.number("--tolerance", f.tolerance, "a share of the billed amount (0.01 is 1%)")
    if not plan.tolerance then
      return nil, err
    end
    if plan.tolerance < 0 then
      return args.fail(('--tolerance: "%s" is below 0'):format(f.tolerance))
    end
  end
  if f.timeout then
    plan.timeout = tonumber(f.timeout)
    if not plan.timeout or plan.timeout <= 0 or plan.timeout ~= plan.timeout then
      return args.fail(('--timeout: "%s" is not a number of seconds above 0'):format(f.timeout))
    end
  end
  local prices, perr = require("openai_usage.cost").load(f.prices)
  if not prices then
    return args.fail("--prices: " .. tostring(perr))
  end
  plan.prices = prices
  return plan
end

local function money(v)
  return require("openai_usage.budget").usd(v)
end

-- Columns of text, the first two left-aligned, the rest right-aligned.
local function columns(rows)
  local widths = {}
  for _, row in ipairs(rows) do
    for i, cell in ipairs(row) do
      widths[i] = math.max(widths[i] or 0, text.width(cell))
    end
  end
  local out = {}
  for _, row in ipairs(rows) do
    local cells = {}
    for i, cell in ipairs(row) do
      local pad = (" "):rep(widths[i] - text.width(cell))
      cells[i] = i <= 2 and cell .. pad or pad .. cell
    end
    out[#out + 1] = (table.concat(cells, "  "):gsub("%s+$", ""))
  end
  return out
end

--- The text of a reconciliation: a table of the estimated line items, then
-- what looks stale and what the table does not estimate.
function M.text(result)
  local lines = {
    ("reconciliation: %s to %s (settled days), prices of %s from %s"):format(time.iso(result.since),
      time.iso(result.settled), result.prices.date, result.prices.file or "the bundled table"),
    "",
  }
  local rows = { { "line_item", "project_id", "estimated", "billed", "difference", "share" } }
  for _, r in ipairs(result.rows) do
    rows[#rows + 1] = { text.printable(r.line_item), r.project_id and text.printable(r.project_id) or "(all projects)",
      money(r.estimated), money(r.billed), money(r.difference),
      r.share and text.percent(100 * r.share, 2) or "n/a" }
  end
  for _, line in ipairs(columns(rows)) do
    lines[#lines + 1] = line
  end
  lines[#lines + 1] = ""
  if #result.stale == 0 then
    lines[#lines + 1] = ("the price table agrees with the billed amounts (within %s)"):format(
      text.percent(100 * result.tolerance, 2))
  end
  for _, message in ipairs(result.stale) do
    lines[#lines + 1] = "stale: " .. text.printable(message)
  end
  local other = result.not_estimated
  if other.count > 0 then
    lines[#lines + 1] = ("not estimated: %d other line items, %s billed (the price table prices images only)")
      :format(other.count, money(other.billed))
  end
  return table.concat(lines, "\n") .. "\n"
end

local ROW_FIELDS = { "line_item", "project_id", "estimated", "billed", "difference", "share", "stale",
  "unpriced_images", "unpriced", "no_amount" }

--- The JSON of a reconciliation; an unknown figure is null.
function M.json(result)
  local rows = {}
  for i, r in ipairs(result.rows) do
    r.unpriced = setmetatable(r.unpriced, json.array)
    rows[i] = json.encode(r, ROW_FIELDS)
  end
  local other = result.not_estimated
  return ('{"since":%s,"settled":%s,"prices":%s,"tolerance":%s,"rows":[%s],"stale":%s,"not_estimated":%s}\n')
    :format(json.string(time.iso(result.since)), json.string(time.iso(result.settled)),
      json.encode({ date = result.prices.date, file = result.prices.file }, { "date", "file" }),
      json.number(result.tolerance), table.concat(rows, ","), json.encode(setmetatable(result.stale, json.array)),
      json.encode({ count = other.count, billed = other.billed,
        line_items = setmetatable(other.line_items, json.array) }, { "count", "billed", "line_items" }))
end

--- openai-usage reconcile ARGS: the exit code.
function M.run(argv, options, cli)
  local stderr = options.stderr or io.stderr
  local usage = require "openai_usage"
  local plan, err = M.parse(argv, options.now)
  if not plan then
    stderr:write("openai-usage: reconcile: ", usage.printable(tostring(err.message)), "\n")
    return cli.EXIT.usage
  end
  if plan.help then
    return args.output(cli, options, args.help("openai-usage reconcile [options]", M.ABOUT,
      { M.OPTIONS, args.CLIENT }, M.TRAILER))
  end
  -- the client, the interrupt and a failed walk as the analysis commands have them
  local result, code = require("openai_usage.daily").with_client(cli, { base_url = plan.base_url, db = plan.db,
    timeout = plan.timeout }, options, function(client)
    return assert(reconcile.run(client, plan))
  end)
  if not result then
    return code
  end
  result.prices, result.tolerance = plan.prices, plan.tolerance or reconcile.TOLERANCE
  local out = plan.format == "json" and M.json(result) or M.text(result)
  return args.output(cli, options, out, #result.stale > 0 and cli.EXIT.at_risk or cli.EXIT.ok)
end

return M
