-- bin/openai-usage run as a real process against the stand-in: help,
-- formats (CSV through Python's strict csv reader, JSON through lua-cjson,
-- SVG through an XML parser), exit codes, the progress line only on a
-- terminal (a pty), --out, --cache, and the key in no output.
local usage = require "openai_usage"
local standin = require "spec.support.standin"
local cjson = require "cjson"
local util = require "spec.support.util"

local KEY = "sk-admin-cli-7f3e9a"
local NOW = 1732406400 -- 2024-11-24T00:00:00Z, the stand-in's now
local SINCE, UNTIL = "2024-11-01", "2024-11-21"
local RANGE = " --since " .. SINCE .. " --until " .. UNTIL
local T_SINCE, T_UNTIL = 1730419200, 1730419200 + 20 * 86400

-- The interpreter running this suite runs the CLI too (the matrix).
local LUA = util.LUA
local q, read, write, exit_code = util.q, util.read_if, util.write, util.exit_code

describe("openai-usage CLI", function()
  local srv, tmp

  -- Runs the CLI; returns stdout, stderr, exit code. env: extra variables
  -- (false unsets one); shell: a command run first in the same shell
  -- (umask 027, ulimit -f 4).
  local function run(args, env, shell)
    local vars = { OPENAI_ADMIN_KEY = srv.key, OPENAI_BASE_URL = srv.url }
    for k, v in pairs(env or {}) do
      vars[k] = v
    end
    local unset, set = {}, {}
    for k, v in pairs(vars) do
      if v == false then
        unset[#unset + 1] = "-u " .. k -- env takes -u before any NAME=value
      else
        set[#set + 1] = k .. "=" .. q(v)
      end
    end
    local prefix = { "env", table.concat(unset, " "), table.concat(set, " ") }
    local quoted = {}
    for i, a in ipairs(args) do
      quoted[i] = q(a)
    end
    local cmd = ("%s%s %s bin/openai-usage %s >%s 2>%s"):format(shell and shell .. " && " or "",
      table.concat(prefix, " "), LUA, table.concat(quoted, " "), q(tmp .. ".out"), q(tmp .. ".err"))
    local code = exit_code(os.execute(cmd))
    return read(tmp .. ".out"), read(tmp .. ".err"), code
  end

  local split_args = util.words

  -- The same totals worked out from the library directly, by plain loops.
  local function expected_totals(fields)
    local c = assert(usage.new(srv:client_options()))
    local totals, order = {}, {}
    for row in c:results("images", {
      start_time = T_SINCE, end_time = T_UNTIL, bucket_width = "1d", group_by = fields, limit = 31,
    }) do
      local key = {}
      for i, f in ipairs(fields) do
        key[i] = tostring(row[f] or "(none)")
      end
      key = table.concat(key, "|")
      if not totals[key] then
        totals[key] = { images = 0, num_model_requests = 0 }
        order[#order + 1] = key
      end
      totals[key].images = totals[key].images + row.images
      totals[key].num_model_requests = totals[key].num_model_requests + row.num_model_requests
    end
    c:close()
    return totals, order
  end

  setup(function()
    srv = standin.start { key = KEY, now = NOW }
    tmp = os.tmpname()
  end)

  teardown(function()
    srv:stop()
    for _, suffix in ipairs { "", ".out", ".err", ".csv", ".json", ".tty", ".html" } do
      os.remove(tmp .. suffix)
    end
  end)

  before_each(function()
    srv:reset()
  end)

  it("--help lists the endpoints, the options, the times and the exit codes", function()
    local out, err, code = run { "--help" }
    assert.are.equal(0, code)
    assert.are.equal("", err)
    for _, endpoint in ipairs(usage.rules()) do
      assert.truthy(out:find(endpoint, 1, true), endpoint)
    end
    local options = {
      "--since", "--until", "--bucket", "--group-by", "--format", "--out", "--cache", "--cost", "--top",
    }
    for _, option in ipairs(options) do
      assert.truthy(out:find(option, 1, true), option)
    end
    assert.truthy(out:find("exit codes", 1, true))
    assert.truthy(out:find("90m, 24h, 7d", 1, true))
    assert.are.same({}, srv:requests())
  end)

  it("ENDPOINT --help lists that endpoint's filters and group_by fields from the rule table", function()
    local out, _, code = run { "images", "--help" }
    assert.are.equal(0, code)
    local rule = usage.rules "images"
    for _, p in ipairs(rule.params) do
      if p.type == "list" and p.name ~= "group_by" then
        assert.truthy(out:find("--" .. p.name:gsub("_", "-"), 1, true), p.name)
      elseif p.name == "group_by" then
        for _, v in ipairs(p.values) do
          assert.truthy(out:find(v, 1, true), v)
        end
      end
    end
    local costs = run { "costs", "--help" }
    assert.truthy(costs:find("line_item", 1, true))
    assert.falsy(costs:find("--sizes", 1, true))
  end)

  it("--help, validation and completion read one option list; --bucket's widths come from the rule table", function()
    local cli = require "openai_usage.cli"
    local errors = require "openai_usage.errors"
    local out, _, code = run { "images", "--help" }
    assert.are.equal(0, code)
    local options = cli.options "images"
    local filters = 0
    for _, o in ipairs(options) do
      local left = table.concat(o.names, ", ") .. (o.arg and " " .. o.arg or "")
      local first = (o.help .. "\n"):match "^(.-)\n"
      assert.truthy(out:find("  " .. left .. (" "):rep(math.max(1, 23 - #left)) .. first, 1, true), left)
      -- parse takes every listed name; a value where the list names one
      local argv = { "images", o.names[#o.names] }
      if o.arg then
        argv[3] = "x"
      end
      local _, err = cli.parse(argv, NOW)
      assert.is_falsy(err and err.message:find("unknown option", 1, true), left)
      filters = filters + (o.filter and 1 or 0)
    end
    local images = usage.rules "images"
    assert.is_true(filters > 0)
    local widths, seen = {}, {}
    for _, name in ipairs(usage.rules()) do
      for _, w in ipairs(usage.rules(name).widths) do
        if not seen[w.width] then
          seen[w.width], widths[#widths + 1] = true, w.width
        end
      end
    end
    local bucket_help
    for _, o in ipairs(options) do
      bucket_help = o.names[1] == "--bucket" and o.help or bucket_help
    end
    for _, w in ipairs(widths) do
      assert.truthy(bucket_help:find(w, 1, true), w)
    end
    assert.truthy(out:find("--bucket takes: " .. images.widths[1].width, 1, true))
    local _, err = cli.parse({ "images", "--bogus-flag-x" }, NOW)
    assert.is_true(errors.is(err))
    assert.are.equal("usage", err.kind)
    assert.matches("--bogus-flag-x", err.message, 1, true)
  end)

  it("--version names the module and libcurl", function()
    local out, _, code = run { "--version" }
    assert.are.equal(0, code)
    assert.matches("^openai%-usage " .. usage.version:gsub("%p", "%%%0"), out)
    assert.matches("libcurl", out)
  end)

  it("prints a table whose totals match the API's rows", function()
    local out, err, code = run(split_args("images --since " .. SINCE .. " --until " .. UNTIL .. " --group-by model"))
    assert.are.equal(0, code, err)
    assert.are.equal("", err) -- not a terminal: no progress line
    local totals = expected_totals { "model" }
    local all = 0
    for model, t in pairs(totals) do
      local line = out:match("\n(" .. model:gsub("%p", "%%%0") .. " [^\n]*)")
      assert.truthy(line, model)
      local figures = {}
      for n in line:gmatch "[%d,]+" do
        figures[#figures + 1] = tonumber((n:gsub(",", "")))
      end
      assert.are.equal(t.images, figures[#figures - 1])
      assert.are.equal(t.num_model_requests, figures[#figures])
      all = all + t.images
    end
    local total_line = out:match "\n(Total[^\n]*)"
    assert.truthy(total_line)
    local grouped = ("%d"):format(all):reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
    assert.truthy(total_line:find(grouped, 1, true))
  end)

  it("writes CSV that Python's strict csv reader reads back to the same figures", function()
    local out, err, code = run(split_args("images --since " .. SINCE .. " --until " .. UNTIL
      .. " --group-by model,size --format csv --out " .. tmp .. ".csv"))
    assert.are.equal(0, code, err)
    assert.are.equal("", out)
    local p = assert(io.popen(("python3 -c %s %s"):format(q [[
import csv, json, sys
with open(sys.argv[1], newline="") as f:
    raw = f.read()
assert raw.endswith("\r\n") and "\n" not in raw.replace("\r\n", ""), "records end in CRLF"
rows = list(csv.reader(raw.splitlines(keepends=True), strict=True))
print(json.dumps(rows))
]], q(tmp .. ".csv"))))
    local parsed = cjson.decode(p:read "*a")
    p:close()
    assert.are.same({ "model", "size", "images", "num_model_requests" }, parsed[1])
    local totals, order = expected_totals { "model", "size" }
    assert.are.equal(#order, #parsed - 1)
    for i = 2, #parsed do
      local r = parsed[i]
      local t = totals[r[1] .. "|" .. r[2]]
      assert.truthy(t, r[1] .. " " .. r[2])
      assert.are.equal(t.images, tonumber(r[3]))
      assert.are.equal(t.num_model_requests, tonumber(r[4]))
    end
  end)

  it("writes JSON and JSON Lines that lua-cjson reads back", function()
    local base = "images --since " .. SINCE .. " --until " .. UNTIL .. " --group-by model --by-time"
    local out, err, code = run(split_args(base .. " --format json"))
    assert.are.equal(0, code, err)
    local rows = cjson.decode(out)
    local models = 0
    for _ in pairs(expected_totals { "model" }) do
      models = models + 1
    end
    assert.are.equal(20 * models, #rows) -- every day x every model, zeros filled
    for _, r in ipairs(rows) do
      assert.are.equal(86400, r.end_time - r.start_time)
      assert.is_string(r.model)
    end
    local lines, _, code2 = run(split_args(base .. " --format jsonl"))
    assert.are.equal(0, code2)
    local n = 0
    for line in lines:gmatch "([^\n]+)\n" do
      n = n + 1
      assert.are.same(rows[n], cjson.decode(line))
    end
    assert.are.equal(#rows, n)
  end)

  it("writes Markdown, SVG and HTML", function()
    local base = "images --since " .. SINCE .. " --until " .. UNTIL .. " --group-by model"
    local md = run(split_args(base .. " --format md"))
    assert.matches("| model | images | num_model_requests |\n| --- | ---: | ---: |", md, 1, true)
    local svg, err, code = run(split_args(base .. " --format svg"))
    assert.are.equal(0, code, err)
    write(tmp .. ".out", svg)
    local ok = util.execute(("python3 -c 'import sys, xml.dom.minidom as m; d = m.parse(sys.argv[1]); "
      .. "assert d.documentElement.tagName == \"svg\"; assert len(d.getElementsByTagName(\"rect\")) > 3' %s")
      :format(q(tmp .. ".out")))
    assert.is_truthy(ok)
    local html, _, code3 = run(split_args(base .. " --format html"))
    assert.are.equal(0, code3)
    assert.matches("^<!DOCTYPE html>", html)
    assert.truthy(html:find("<svg", 1, true))
    assert.truthy(html:find("<table", 1, true))
  end)

  it("exits 2 on bad arguments, naming the problem, and sends nothing", function()
    local cases = {
      { "imagez", "not an endpoint" },
      { "images --bucket 2d", '"2d" is not one of 1m, 1h, 1d' },
      { "images --since tomorrow", "--since" },
      { "images --sizez 1", "--sizez: not an option of images" },
      { "costs --models x", "--models: not an option of costs" },
      { "images --group-by colour", "colour" },
      { "images --format xlsx", "--format" },
      { "images --top 0", "--top" },
      { "images --since 2024-11-02 --until 2024-11-01", "must be after" },
      { "completions --cost", "--cost" },
      { "", "name an endpoint" },
    }
    for _, case in ipairs(cases) do
      local out, err, code = run(split_args(case[1]))
      assert.are.equal(2, code, case[1])
      assert.are.equal("", out, case[1])
      assert.truthy(err:find(case[2], 1, true), case[1] .. " -> " .. err)
      local lines = select(2, err:gsub("\n", ""))
      assert.are.equal(1, lines, "one line: " .. err)
    end
    local _, err, code = run({ "images" }, { OPENAI_ADMIN_KEY = false })
    assert.are.equal(2, code)
    assert.matches("OPENAI_ADMIN_KEY is not set", err)
    assert.are.same({}, srv:requests())
  end)

  it("exits 1 on an API error, on one line, without the key", function()
    srv:faults { { status = 401, error_message = "Incorrect API key provided: " .. KEY, times = 5 } }
    local out, err, code = run(split_args("images --since " .. SINCE .. " --until " .. UNTIL))
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.matches("401", err)
    assert.falsy(err:find(KEY, 1, true))
    assert.are.equal(1, select(2, err:gsub("\n", "")))
  end)

  it("exits 1 with the message when a page has a null where a bucket belongs, never \"(no rows)\"", function()
    for _, extra in ipairs { "", " --cache " .. tmp .. ".cache" } do
      srv:faults { { null_bucket = 0 } }
      local out, err, code = run(split_args("images --since " .. SINCE .. " --until " .. UNTIL .. extra))
      assert.are.equal(1, code, err)
      assert.are.equal("", out)
      assert.matches("data[0] is null", err, 1, true)
      assert.falsy(err:find("no rows", 1, true))
    end
    util.rm_rf(tmp .. ".cache")
  end)

  it("filters by a size the description does not list, noting it once on stderr; refuses a near miss", function()
    local base = "images --since " .. SINCE .. " --until " .. UNTIL .. " --group-by model,size --format json"
    local out, err, code = run(split_args(base .. " --sizes 1536x1024,1024x1024,1536x1024"))
    assert.are.equal(0, code, err)
    local notes = {}
    for line in err:gmatch "[^\n]+" do
      notes[#notes + 1] = line
    end
    assert.are.same({ 'openai-usage: note: --sizes "1536x1024" is not in the described list '
      .. "(256x256, 512x512, 1024x1024, 1792x1792, 1024x1792); sent as given" }, notes)
    assert.truthy(srv:last_request().query:find("sizes[]=1536x1024", 1, true))
    -- the stand-in's gpt-image-1 makes 1536x1024 images: they are the rows, and the totals agree
    local totals = expected_totals { "model", "size" }
    local seen = {}
    for _, r in ipairs(cjson.decode(out)) do
      assert.truthy(r.size == "1536x1024" or r.size == "1024x1024", r.size)
      seen[r.size] = (seen[r.size] or 0) + r.images
      assert.are.equal(totals[r.model .. "|" .. r.size].images, r.images)
    end
    assert.is_true((seen["1536x1024"] or 0) > 0)
    -- and the bundled price table prices them, per quality
    local prices = require "openai_usage.prices"
    local priced, _, code3 = run(split_args(base .. " --sizes 1536x1024 --cost --quality high"))
    assert.are.equal(0, code3)
    for _, r in ipairs(cjson.decode(priced)) do
      assert.are.equal("gpt-image-1", r.model)
      local price = prices.images["gpt-image-1"].high["1536x1024"]
      assert.are.equal(("%.4f"):format(r.images * price), ("%.4f"):format(r.cost))
    end
    srv:reset()
    local _, typo, code2 = run(split_args(base .. " --sizes 1024x1O24"))
    assert.are.equal(2, code2)
    assert.matches('did you mean "1024x1024"', typo, 1, true)
    assert.are.same({}, srv:requests())
  end)

  it("--cost leaves blank what it cannot price (gpt-image-1's auto), and every sum that includes it", function()
    local prices = require "openai_usage.prices"
    local totals = expected_totals { "model", "size" }
    -- the stand-in makes gpt-image-1 "auto" images, which the table has no price for
    assert.is_true((totals["gpt-image-1|auto"] or { images = 0 }).images > 0)
    assert.is_nil(prices.images["gpt-image-1"].high.auto)
    local out, err, code = run(split_args("images" .. RANGE .. " --group-by model,size --cost --quality high"
      .. " --format json"))
    assert.are.equal(0, code, err)
    local seen = 0
    for _, r in ipairs(cjson.decode(out)) do
      local price = require("openai_usage.cost").price(prices, r.model, r.size, "high")
      if price then
        assert.are.equal(("%.4f"):format(r.images * price), ("%.4f"):format(r.cost))
      else
        seen = seen + 1
        assert.are.equal(cjson.null, r.cost, r.model .. " " .. r.size .. " priced as " .. tostring(r.cost))
      end
    end
    assert.is_true(seen > 0)
    -- by model, gpt-image-1's group holds unpriced images: its cost is unknown, and so is the total
    local function split_csv(line) -- the stand-in's models and sizes hold no commas or quotes
      local cells = {}
      for cell in (line:gsub("\r$", "") .. ","):gmatch "([^,]*)," do
        cells[#cells + 1] = cell
      end
      return cells
    end
    local by_model = run(split_args("images" .. RANGE .. " --group-by model --cost --quality high --format csv"))
    local header = by_model:match "^([^\n]*)"
    local cost_col
    for i, name in ipairs(split_csv(header)) do
      cost_col = name == "cost_usd" and i or name == "cost" and i or cost_col
    end
    assert.is_truthy(cost_col, header)
    for line in by_model:gmatch "[^\n]+" do
      local cells = split_csv(line)
      if cells[1] == "gpt-image-1" then
        assert.are.equal("", cells[cost_col], line)
      end
    end
    local table_out = run(split_args("images" .. RANGE .. " --group-by model --cost --quality high"))
    local gpt = table_out:match "\ngpt%-image%-1 [^\n]*"
    assert.is_truthy(gpt, table_out)
    assert.falsy(gpt:find("0.00", 1, true), gpt)
    assert.matches("images had no price", table_out)
  end)

  it("exits 3 when --out cannot be written, and leaves no partial file", function()
    local _, err, code = run(split_args("images" .. RANGE .. " --out /nonexistent/dir/report.txt"))
    assert.are.equal(3, code)
    assert.matches("%-%-out", err)
  end)

  describe("output that cannot be written", function()
    local REPORT = "images" .. RANGE .. " --bucket 1h --group-by model --by-time --format csv"

    it("exits 3 with one line when stdout is full (> /dev/full), the report and --help alike", function()
      for _, args in ipairs { REPORT, "--help", "images --help" } do
        local quoted = {}
        for i, a in ipairs(split_args(args)) do
          quoted[i] = q(a)
        end
        local cmd = ("env OPENAI_ADMIN_KEY=%s OPENAI_BASE_URL=%s %s bin/openai-usage %s >/dev/full 2>%s"):format(
          q(srv.key), q(srv.url), LUA, table.concat(quoted, " "), q(tmp .. ".err"))
        assert.are.equal(3, exit_code(os.execute(cmd)), args)
        local err = read(tmp .. ".err")
        assert.matches("^openai%-usage: cannot write to stdout: No space left on device\n$", err)
      end
    end)

    it("exits 3 when --out fills the file size limit (ulimit -f): one line, no partial file, nothing left over",
      function()
      local dir = util.tmpdir()
      local full = run(split_args(REPORT))
      assert.is_true(#full > 8192, "the report must outgrow the limit") -- 4 blocks of 512 (dash) or 1024 (bash) bytes
      local out, err, code = run(split_args(REPORT .. " --out " .. dir .. "/report.csv"), nil, "ulimit -f 4")
      assert.are.equal(3, code)
      assert.are.equal("", out)
      assert.matches("^openai%-usage: %-%-out: cannot write .*/report.csv: File too large\n$", err)
      assert.are.equal("", util.capture("ls -A " .. q(dir)))
      -- an existing report stays whole
      write(dir .. "/report.csv", "the previous report\n")
      code = select(3, run(split_args(REPORT .. " --out " .. dir .. "/report.csv"), nil, "ulimit -f 4"))
      assert.are.equal(3, code)
      assert.are.equal("the previous report\n", read(dir .. "/report.csv"))
      assert.are.equal("report.csv\n", util.capture("ls -A " .. q(dir)))
      util.rm_rf(dir)
    end)

    it("exits 3 when --out is a directory", function()
      local dir = util.tmpdir()
      local _, err, code = run(split_args(REPORT .. " --out " .. dir))
      assert.are.equal(3, code)
      assert.matches("Is a directory\n$", err)
      assert.are.equal("", util.capture("ls -A " .. q(dir)))
      util.rm_rf(dir)
    end)
  end)

  describe("--out files", function()
    local ARGS = "images --since " .. SINCE .. " --until " .. UNTIL .. " --group-by size --format csv --out "
    local dir

    before_each(function()
      dir = util.tmpdir()
    end)

    after_each(function()
      util.rm_rf(dir)
    end)

    it("keeps an existing file's mode (0600 stays 0600)", function()
      write(dir .. "/r.csv", "old")
      assert(util.execute("chmod 600 " .. q(dir .. "/r.csv")))
      local _, _, code = run(split_args(ARGS .. dir .. "/r.csv"))
      assert.are.equal(0, code)
      assert.are.equal("600", util.mode(dir .. "/r.csv"))
      assert.matches("^size,", read(dir .. "/r.csv"))
    end)

    it("creates a new file with the mode a shell's > gives: 0666 less the umask", function()
      for _, case in ipairs { { "022", "644" }, { "027", "640" }, { "077", "600" } } do
        local path = ("%s/r%s.csv"):format(dir, case[1])
        local _, _, code = run(split_args(ARGS .. path), nil, "umask " .. case[1])
        assert.are.equal(0, code)
        assert.are.equal(case[2], util.mode(path), "umask " .. case[1])
      end
    end)

    it("writes through a symlinked --out to its target, and the link stays", function()
      assert(util.execute(("mkdir %s/real && ln -s real/r.csv %s/link.csv"):format(q(dir), q(dir))))
      local _, _, code = run(split_args(ARGS .. dir .. "/link.csv"))
      assert.are.equal(0, code)
      assert.is_true(util.is_symlink(dir .. "/link.csv"))
      assert.matches("^size,", read(dir .. "/real/r.csv"))
      assert.are.equal("r.csv\n", util.capture("ls -A " .. q(dir .. "/real")))
    end)

    it("never follows a symlink planted at the temporary name LuaJIT's unseeded math.random gives", function()
      require("spec.support.nginx").build_module()
      local first = util.capture "luajit -e 'io.write(math.random(1, 1e9))'"
      local now = os.time()
      for t = now, now + 5 do
        local planted = ("%s/r.csv.tmp-%d-%s"):format(dir, t, first)
        assert(util.execute(("ln -s %s %s"):format(q(dir .. "/victim"), q(planted))))
      end
      local quoted = {}
      for i, a in ipairs(split_args(ARGS .. dir .. "/r.csv")) do
        quoted[i] = q(a)
      end
      local cmd = ("env OPENAI_ADMIN_KEY=%s OPENAI_BASE_URL=%s LUA_PATH='lua/?.lua;lua/?/init.lua;;' "
        .. "LUA_CPATH='build/luajit/?.so;;' luajit bin/openai-usage %s >/dev/null 2>&1"):format(
        q(srv.key), q(srv.url), table.concat(quoted, " "))
      assert.are.equal(0, exit_code(os.execute(cmd)))
      assert.is_nil(read(dir .. "/victim"), "the planted symlink was followed")
      assert.is_false(util.is_symlink(dir .. "/r.csv"))
      assert.matches("^size,", read(dir .. "/r.csv"))
    end)
  end)

  it("--out writes exactly what stdout would show", function()
    local args = "images --since " .. SINCE .. " --until " .. UNTIL .. " --group-by size --format md"
    local shown = run(split_args(args))
    local out, _, code = run(split_args(args .. " --out " .. tmp .. ".json"))
    assert.are.equal(0, code)
    assert.are.equal("", out)
    assert.are.equal(shown, read(tmp .. ".json"))
  end)

  it("shows a live progress line on a terminal, and nothing on a pipe", function()
    local args = { "images", "--since", SINCE, "--until", UNTIL, "--bucket", "1h", "--group-by", "model" }
    local quoted = {}
    for i, a in ipairs(args) do
      quoted[i] = q(a)
    end
    local cmd = ("env OPENAI_ADMIN_KEY=%s OPENAI_BASE_URL=%s python3 spec/support/pty_run.py %s %s -- %s"
      .. " bin/openai-usage %s"):format(
      q(srv.key), q(srv.url), q(tmp .. ".out"), q(tmp .. ".tty"), LUA, table.concat(quoted, " "))
    local code = exit_code(os.execute(cmd))
    assert.are.equal(0, code)
    local tty = read(tmp .. ".tty")
    local pages = #srv:requests()

    assert.is_true(pages >= 3, "20 days of hours take several pages")
    -- one update per page, each overwriting the line, the last one cleared
    local updates = {}
    for p, b, r in tty:gmatch "pages (%d+) · buckets (%d+) · rows (%d+)" do
      updates[#updates + 1] = { tonumber(p), tonumber(b), tonumber(r) }
    end
    assert.are.equal(pages, #updates)
    assert.are.equal(pages, updates[#updates][1])
    assert.are.equal(20 * 24, updates[#updates][2])
    assert.truthy(tty:find("\r\27[K", 1, true))
    assert.truthy(read(tmp .. ".out"):find("Total", 1, true)) -- the report went to stdout
    local _, err = run(args)
    assert.are.equal("", err)
    local _, forced = run { "images", "--since", SINCE, "--until", UNTIL, "--progress" }
    assert.matches("pages 1 · buckets 20", forced)
  end)

  it("--cache: a re-run of a settled range sends no request and prints the same report", function()
    local dir = tmp .. ".cache"
    local args = split_args("images" .. RANGE .. " --bucket 1h --group-by model --cache " .. dir)
    local first, err, code = run(args)
    assert.are.equal(0, code, err)
    local sent = #srv:requests()
    assert.is_true(sent >= 3)
    srv:reset()
    local second, _, code2 = run(args)
    assert.are.equal(0, code2)
    assert.are.same({}, srv:requests())
    assert.are.equal(first, second)
    util.rm_rf(dir)
  end)

  it("--settle-after T: buckets that ended less than T ago are asked again on every run; --max-pages N", function()
    local dir = tmp .. ".settle"
    local base = "images --since " .. SINCE .. " --until " .. UNTIL .. " --group-by model --cache " .. dir
    -- the range ended about two years before this machine's now (the stand-in's is frozen)
    local ago = os.time() - T_UNTIL
    local window = math.ceil((ago + 86400) / 86400) .. "d"
    for _, case in ipairs { { window, 1 }, { tostring(ago - 86400), 0 }, { "90m", 0 } } do
      util.rm_rf(dir)
      local args = split_args(base .. " --settle-after " .. case[1])
      local first, err, code = run(args)
      assert.are.equal(0, code, err)
      srv:reset()
      local second, _, code2 = run(args)
      assert.are.equal(0, code2)
      assert.are.equal(case[2], #srv:requests(), "--settle-after " .. case[1])
      assert.are.equal(first, second)
    end
    util.rm_rf(dir)
    for _, bad in ipairs { "soon", "-5", "1.5h", "" } do
      local _, err, code = run { "images", "--since", SINCE, "--settle-after", bad }
      assert.are.equal(2, code)
      assert.matches("%-%-settle%-after: .* is not a duration", err)
    end
    srv:reset()
    local _, err, code = run(split_args("images" .. RANGE .. " --bucket 1h --max-pages 2"))
    assert.are.equal(1, code)
    assert.matches("max_pages %(2%)", err)
    assert.are.equal(2, #srv:requests())
    local _, _, ok_code = run(split_args("images" .. RANGE .. " --bucket 1h --max-pages 3"))
    assert.are.equal(0, ok_code)
    _, err, code = run { "images", "--max-pages", "0" }
    assert.are.equal(2, code)
    assert.truthy(err:find("--max-pages", 1, true))
  end)

  it("--cost estimates from the price table and says what it assumed", function()
    local out, err, code = run(split_args("images" .. RANGE .. " --group-by model,size --cost --quality high"))
    assert.are.equal(0, code, err)
    assert.matches("cost_usd", out)
    assert.matches("estimate at high quality", out)
    local prices = require "openai_usage.prices"
    assert.truthy(out:find(prices.date, 1, true))
    -- a gpt-image-1 1024x1024 row costs images x the table's high price
    local totals = expected_totals { "model", "size" }
    local t = totals["gpt-image-1|1024x1024"]
    if t then
      local line = out:match "\ngpt%-image%-1%s+1024x1024%s+([^\n]*)"
      local cost = tonumber((line:match "([%d,]+%.%d%d)%s*$":gsub(",", "")))
      local price = prices.images["gpt-image-1"].high["1024x1024"]
      assert.are.equal(("%.2f"):format(t.images * price), ("%.2f"):format(cost))
    end
    local mine = tmp .. ".json"
    write(mine, 'return { date = "2030-01-01", currency = "usd", '
      .. 'images = { ["gpt-image-1"] = { medium = { ["1024x1024"] = 1 } } } }')
    local custom = run(split_args("images" .. RANGE .. " --cost --group-by model,size --prices " .. mine))
    assert.matches("2030%-01%-01", custom)
    assert.truthy(custom:find(mine, 1, true))
    write(mine, "return 42")
    local _, bad, code3 = run(split_args("images --cost --prices " .. mine))
    assert.are.equal(2, code3)
    assert.matches("%-%-prices", bad)
  end)

  it("runs through openai_usage.job: each page folded as it lands; --cost asks Costs per the rule table", function()
    local cli = require "openai_usage.cli"
    local jobs = require "openai_usage.job"
    local args = split_args("images --since " .. SINCE .. " --until " .. UNTIL .. " --cost --format csv")
    for _, group in ipairs { "model,size", "project_id" } do
      local argv = split_args(table.concat(args, " ") .. " --group-by " .. group)
      srv:reset()
      local out, err, code = run(argv)
      assert.are.equal(0, code, err)
      local costs = {}
      for _, r in ipairs(srv:requests()) do
        if r.path:find("/costs", 1, true) then
          costs[#costs + 1] = r
        end
      end
      local width = usage.rules("costs").widths[#usage.rules("costs").widths]
      if group == "project_id" then -- actual amounts: one Costs walk, at the rule's width and page size
        assert.is_true(#costs > 0)
        assert.truthy(costs[1].query:find("bucket_width=" .. width.width, 1, true), costs[1].query)
        assert.truthy(costs[1].query:find("limit=" .. width.max_limit, 1, true), costs[1].query)
      else
        assert.are.equal(0, #costs) -- an estimate: Costs is not asked
      end
      local job = assert(cli.parse(argv, NOW))
      local client = assert(usage.new(srv:client_options()))
      local fold = jobs.walk(client, job)
      local figures = cli.figures "images"
      local meta = jobs.cost(client, job, fold, figures)
      client:close()
      assert.are.equal(out, jobs.text(job, fold, meta, figures, usage.rules("images").path))
      local rows = 0
      for _ in pairs(expected_totals { "model", "size", "project_id" }) do
        rows = rows + 1
      end
      assert.is_true(fold.rows >= rows and #fold.shape.groups < fold.rows, "groups kept, not rows")
    end
  end)

  it("a report step that refuses the data (an HTML chart of too many buckets): one line on stderr, exit 1", function()
    local out, err, code = run(split_args("images --since 2024-11-20 --until 2024-11-23 --bucket 1m --group-by model"
      .. " --format html --out " .. tmp .. ".html"))
    assert.are.equal(1, code, err)
    assert.are.equal("", out)
    assert.matches("^openai%-usage: .*chart.stacked: .* too many to draw", err)
    assert.are.equal(1, select(2, err:gsub("\n", "")), err)
    assert.is_nil(read(tmp .. ".html"))
  end)

  it("make report's demo runs with no key: prints the tables and writes the charts", function()
    local dir = tmp .. ".demo"
    local cmd = ("env -u OPENAI_ADMIN_KEY -u OPENAI_BASE_URL %s bin/report.lua 30 %s >%s 2>%s"):format(LUA, q(dir),
      q(tmp .. ".out"), q(tmp .. ".err"))
    local code = exit_code(os.execute(cmd))
    local out = read(tmp .. ".out")
    assert.are.equal(0, code, read(tmp .. ".err"))
    assert.matches("OPENAI_ADMIN_KEY is not set", read(tmp .. ".err"))
    assert.matches("by model, size", out)
    assert.matches("by project_id", out)
    assert.truthy(out:find("Atlas (proj_atlas)", 1, true), "the projects by name")
    assert.matches("cost_usd", out)
    assert.matches("\nTotal ", out)
    local html = read(dir .. "/report.html")
    local svg = read(dir .. "/report.svg")
    assert.matches("^<!DOCTYPE html>", html)
    assert.truthy(select(2, html:gsub("<svg", "")) >= 2, "a bar chart and a time series")
    assert.matches("^<svg", svg)
    -- the history store: synced with names, and the usage by project read back from it equal to the live table's
    assert.matches("\nimages 1d: 1 request, %d+ buckets", out)
    assert.matches("\ndirectory: 4 projects", out)
    assert.are.equal("600", util.mode(dir .. "/usage.db"))
    local live = out:match "(by project_id\n.-\nTotal [^\n]*)"
    local stored = out:match "from the history store[^\n]*\n[^\n]*(by project_id\n.-\nTotal [^\n]*)"
    assert.is_truthy(stored, out)
    -- the same images and requests per project as the live table (which has the cost column too)
    assert.truthy(stored:find("Atlas (proj_atlas)", 1, true), stored)
    local n = 0
    for project, figures in live:gmatch "(%(proj_%w+%))%s+([%d,]+%s+[%d,]+)" do
      n = n + 1
      local pattern = project:gsub("%p", "%%%0") .. "%s+" .. figures:gsub("%p", "%%%0"):gsub("%s+", "%%s+")
      assert.truthy(stored:find(pattern), project .. " " .. figures)
    end
    assert.are.equal(4, n)
    util.rm_rf(dir)
  end)

  it("reports on every endpoint of the rule table, figures matching the API's rows", function()
    local levels = require("openai_usage.report").LEVEL
    local c = assert(usage.new(srv:client_options()))
    for _, endpoint in ipairs(usage.rules()) do
      local rule = usage.rules(endpoint)
      local day_limit
      for _, w in ipairs(rule.widths) do
        if w.width == "1d" then
          day_limit = w.max_limit
        end
      end
      local group
      for _, p in ipairs(rule.params) do
        if p.name == "group_by" and p.values then
          group = p.values[1]
        end
      end
      local args = { endpoint, "--since", SINCE, "--until", UNTIL, "--format", "json" }
      if group then
        args[#args + 1] = "--group-by"
        args[#args + 1] = group
      end
      local out, err, code = run(args)
      assert.are.equal(0, code, endpoint .. ": " .. tostring(err))
      local shown = {}
      for _, r in ipairs(cjson.decode(out)) do
        shown[tostring(group and r[group] or "*")] = r
      end
      -- the same figures, by plain loops over the client's rows
      local want, latest = {}, {}
      for row in c:results(endpoint, { start_time = T_SINCE, end_time = T_UNTIL, bucket_width = "1d",
        group_by = group and { group } or nil, limit = day_limit }) do
        local key = group and tostring(row[group] or "(none)") or "*"
        want[key] = want[key] or {}
        latest[key] = latest[key] or {}
        for f, v in pairs(row) do
          if type(v) == "table" and type(v.value) == "number" then
            f, v = f, v.value
          end
          if type(v) == "number" and f ~= "start_time" and f ~= "end_time" then
            if levels[f] then
              if (latest[key][f] or -1) < row.start_time then
                latest[key][f], want[key][f] = row.start_time, v
              elseif latest[key][f] == row.start_time then
                want[key][f] = want[key][f] + v
              end
            else
              want[key][f] = (want[key][f] or 0) + v
            end
          end
        end
      end
      local groups = 0
      for key, figures in pairs(want) do
        groups = groups + 1
        assert.truthy(shown[key], endpoint .. " " .. key)
        for f, v in pairs(figures) do
          local got = shown[key][f]
          assert.is_number(got, endpoint .. " " .. key .. " " .. f)
          assert.is_true(math.abs(got - v) <= 1e-9 * math.max(1, math.abs(v)),
            ("%s %s %s: %s ~= %s"):format(endpoint, key, f, got, v))
        end
      end
      assert.is_true(groups > 0, endpoint .. " has rows on the stand-in")
    end
    c:close()
  end)

  it("names costs' currency in the amount column and leaves a total of mixed units blank", function()
    local out, err, code = run(split_args("costs" .. RANGE .. " --group-by project_id,line_item"))
    assert.are.equal(0, code, err)
    assert.matches("amount_usd", out)
    local header = out:match "\n(project_id[^\n]*)"
    local total = out:match "\n(Total[^\n]*)"
    assert.truthy(header:find("quantity", 1, true))
    local figures = select(2, total:gsub("[%d,]+%.%d%d", ""))
    assert.are.equal(1, figures, "the amount is totalled, the quantity (tokens, images, seconds...) is not: " .. total)
  end)

  it("--fields picks the figures and their order, from the endpoint's result fields", function()
    local out, err, code = run(split_args("completions --since " .. SINCE .. " --until " .. UNTIL
      .. " --group-by model --fields output_tokens,input_tokens --format csv"))
    assert.are.equal(0, code, err)
    assert.are.equal("model,output_tokens,input_tokens", out:match "^([^\r]*)")
    -- without it, every figure in the order the API writes them
    local all = run(split_args("completions --since " .. SINCE .. " --until " .. UNTIL .. " --format csv"))
    local header, expected = all:match "^([^\r]*)", {}
    for _, f in ipairs(usage.rules("completions").fields) do
      if f.type == "integer" then
        expected[#expected + 1] = f.name
      end
    end
    assert.are.equal(table.concat(expected, ","), header)
    local _, bad, code2 = run(split_args("images --fields tokens"))
    assert.are.equal(2, code2)
    assert.matches('%-%-fields: "tokens" is not a figure of images %(images, num_model_requests%)', bad)
  end)
end)
