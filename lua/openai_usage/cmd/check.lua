--- openai-usage check: spend against budgets (openai_usage.budget). Prints
-- only the lines at risk (over, forecast over the threshold, or unknown:
-- part of the unsettled tail has no price) and exits 4 when there is one,
-- 0 and nothing printed when every scope is under; --format json gives every
-- line with its status, for scripts and cron.
local budget = require "openai_usage.budget"
local args = require "openai_usage.cmd.args"
local time = require "openai_usage.time"
local json = require "openai_usage.json"

local M = {}

M.OPTIONS = {
  { names = { "--budget" }, arg = "USD", key = "budget", help = "the amount per scope per period, in US dollars" },
  { names = { "--scope" }, arg = "S[=ID]", key = "scope",
    help = "organization (default), project_id, api_key_id or line_item: each value\n"
      .. "gets the budget, or only ID (--scope project_id=proj_abc)" },
  { names = { "--period" }, arg = "P", key = "period", help = "day, week (from Monday) or month (default), calendar" },
  { names = { "--offset" }, arg = "OFFSET", key = "offset",
    help = "where the period's days start: UTC (default) or a fixed offset, +02:00" },
  { names = { "--threshold" }, arg = "SHARE", key = "threshold",
    help = "at risk when the forecast reaches SHARE x budget (default 1; 0.8 = 80%)" },
  { names = { "--budgets" }, arg = "FILE", key = "budgets",
    help = "budgets from a Lua data file: return { { amount = 500, scope = \"project_id\",\n"
      .. "period = \"week\", offset = \"+02:00\", threshold = 0.8 }, ... }" },
  { names = { "--at" }, arg = "TIME", key = "at", help = "check as of TIME (default now): its periods, its tail" },
  { names = { "--settle-after" }, arg = "T", key = "settle_after",
    help = "a day of costs is settled T after it ends (default 2d); later days\n"
      .. "are estimated from images usage x the price table" },
  { names = { "--prices" }, arg = "FILE", key = "prices", help = "a Lua price table instead of the bundled one" },
  { names = { "--quality" }, arg = "Q", key = "quality", help = "image quality the estimate assumes" },
  { names = { "--all" }, key = "all", help = "print every line, those under budget too" },
  { names = { "--format" }, arg = "F", key = "format", help = "text (default) or json (every line, with status)" },
}

--- The plan of a check from its arguments: { budgets, at, settle_after,
-- prices, quality, format, all, base_url, timeout } (help = true for
-- --help), or nil, err (kind "usage").
function M.parse(argv, now)
  local f, err = args.read(argv, { M.OPTIONS, args.CLIENT })
  if not f then
    return nil, err
  end
  if f.help then
    return { help = true }
  end
  local plan = { format = f.format or "text", all = f.all, base_url = f.base_url, db = f.db, quality = f.quality }
  if plan.format ~= "text" and plan.format ~= "json" then
    return args.fail(('--format: "%s" is not one of text, json'):format(plan.format))
  end
  if f.timeout then
    plan.timeout = tonumber(f.timeout)
    if not plan.timeout or plan.timeout <= 0 or plan.timeout ~= plan.timeout then
      return args.fail(('--timeout: "%s" is not a number of seconds above 0'):format(f.timeout))
    end
  end
  plan.at = now or os.time()
  if f.at then
    local at, terr = time.parse(f.at, plan.at)
    if not at then
      return args.fail("--at: " .. terr)
    end
    plan.at = at
  end
  if f.settle_after then
    local seconds, serr = time.duration(f.settle_after)
    if not seconds then
      return args.fail("--settle-after: " .. serr)
    end
    plan.settle_after = seconds
  end
  local cost = require "openai_usage.cost"
  local prices, perr = cost.load(f.prices)
  if not prices then
    return args.fail("--prices: " .. tostring(perr))
  end
  plan.prices = prices
  local list = {}
  if f.budgets then
    local loaded, lerr = budget.load(f.budgets)
    if not loaded then
      return nil, lerr
    end
    for _, b in ipairs(loaded) do
      list[#list + 1] = b
    end
  end
  if f.budget then
    local amount, aerr = args.number("--budget", f.budget, "an amount of US dollars above 0")
    if not amount then
      return nil, aerr
    end
    local scope, id = (f.scope or "organization"):match "^([^=]+)=?(.*)$"
    local threshold
    if f.threshold then
      threshold, err = args.number("--threshold", f.threshold, "a share of the budget (0.8 is 80%)")
      if not threshold then
        return nil, err
      end
    end
    local checked, cerr = budget.check { { amount = amount, scope = scope, id = id ~= "" and id or nil,
      period = f.period, offset = f.offset, threshold = threshold } }
    if not checked then
      cerr.message = cerr.message:gsub("^budgets%[1%]%.(%w+)", function(field)
        return "--" .. (({ amount = "budget", id = "scope" })[field] or field)
      end)
      return nil, cerr
    end
    list[#list + 1] = checked[1]
  elseif f.scope or f.period or f.offset or f.threshold then
    return args.fail "--scope, --period, --offset and --threshold go with --budget USD"
  end
  if #list == 0 then
    return args.fail "name a budget: --budget USD [--scope S] [--period P], or --budgets FILE (see --help)"
  end
  plan.budgets = list
  return plan
end

M.ABOUT = {
  "Checks the spend of each scope in its period against its budget: what the",
  "Costs endpoint billed for the settled days, and for the last days (which the",
  "API still revises) an estimate from images usage x the price table, marked as",
  "such. The period's end is forecast with the weekly pattern of the weeks before",
  "(in UTC; the run-rate so far in another offset). Prints only the lines at risk:",
  "over budget, forecast over its threshold, or unknown (usage in the tail that",
  "the price table does not price: never counted as $0).",
}

M.TRAILER = {
  "",
  "exit codes: 0 every scope is under (nothing printed), 4 a line is at risk,",
  "  1 a request failed, 2 bad arguments, 3 the output could not be written, 130 interrupted",
  "",
  "example: openai-usage check --budget 500 --scope project_id --period month --threshold 0.8",
}

--- The text of a check: the lines at risk (every line with all), one each.
function M.text(result, all)
  local out, estimated = {}, false
  for _, line in ipairs(result.lines) do
    if all or budget.AT_RISK[line.status] then
      out[#out + 1] = budget.describe(line)
      estimated = estimated or line.tail ~= nil
    end
  end
  if #out == 0 then
    return ""
  end
  if estimated then
    out[#out + 1] = budget.estimate_note(result)
  end
  for _, line in ipairs(result.organization and budget.describe_organization(result.organization) or {}) do
    out[#out + 1] = line
  end
  return table.concat(out, "\n") .. "\n"
end

local LINE_FIELDS = { "status", "name", "scope", "id", "period", "label", "offset", "start", "stop", "amount",
  "threshold", "spend", "billed", "unsettled", "estimate", "tail", "forecast", "forecast_low", "forecast_high",
  "forecast_model", "forecast_note", "share", "unpriced_images", "unpriced", "no_amount" }

--- The JSON of a check: every line, each with its status; an unknown figure
-- (a forecast before any time has passed) is null.
function M.json(result)
  local lines = {}
  for i, line in ipairs(result.lines) do
    local copy = {}
    for k, v in pairs(line) do
      copy[k] = v
    end
    copy.offset = budget.offset_label(line.offset)
    copy.start, copy.stop = time.iso(line.start), time.iso(line.stop)
    copy.tail = line.tail and time.iso(line.tail) or nil
    copy.unpriced = setmetatable(copy.unpriced, json.array)
    lines[i] = json.encode(copy, LINE_FIELDS)
  end
  local prices = result.prices
  local org = result.organization or {}
  local alerts = {}
  for i, a in ipairs(org.alerts or {}) do
    alerts[i] = json.encode(a, { "amount", "currency", "interval" })
  end
  local organization = ('{"spend_limit":%s,"spend_alerts":%s,"error":%s}'):format(
    org.limit and json.encode(org.limit, { "amount", "currency", "interval", "enforcement" }) or "null",
    org.alerts and "[" .. table.concat(alerts, ",") .. "]" or "null", json.encode(org.error))
  return ('{"at":%s,"at_risk":%d,"prices":%s,"quality":%s,"lines":[%s],"organization":%s}\n'):format(
    json.string(time.iso(result.at)), result.at_risk, json.encode({ date = prices.date, file = prices.file },
      { "date", "file" }), json.string(result.quality), table.concat(lines, ","), organization)
end

--- openai-usage check ARGS: the exit code.
function M.run(argv, options, cli)
  local stderr = options.stderr or io.stderr
  local usage = require "openai_usage"
  local plan, err = M.parse(argv, options.now)
  if not plan then
    stderr:write("openai-usage: check: ", usage.printable(tostring(err.message)), "\n")
    return cli.EXIT.usage
  end
  if plan.help then
    return args.output(cli, options, args.help("openai-usage check [options]", M.ABOUT, { M.OPTIONS, args.CLIENT },
      M.TRAILER))
  end
  -- the client, the interrupt and a failed walk as the analysis commands have them
  local result, code = require("openai_usage.daily").with_client(cli, { base_url = plan.base_url, db = plan.db,
    timeout = plan.timeout }, options, function(client)
    plan.organization = true -- the platform's alerts and limit beside the budgets
    return budget.evaluate(client, plan.budgets, plan)
  end)
  if not result then
    return code
  end
  local text = plan.format == "json" and M.json(result) or M.text(result, plan.all)
  return args.output(cli, options, text, result.at_risk > 0 and cli.EXIT.at_risk or cli.EXIT.ok)
end

return M
