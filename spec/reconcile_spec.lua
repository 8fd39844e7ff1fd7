-- openai-usage reconcile against the stand-in, and reconcile.compare on a
-- hand-computed case: the estimate (images usage x a price table) against
-- what Costs billed per line item and project, exact differences when the
-- stand-in bills other prices than the table's (its billed_prices switch),
-- and a stale table detected: a price off, a model and size unpriced.
local usage = require "openai_usage"
local cost = require "openai_usage.cost"
local reconcile = require "openai_usage.reconcile"
local standin = require "spec.support.standin"
local cjson = require "cjson"
local util = require "spec.support.util"

local KEY = "sk-admin-reconcile-93aa"
local NOW = 1732406400 -- 2024-11-24T00:00:00Z
local SINCE, UNTIL = 1730419200, 1730419200 + 20 * 86400 -- 2024-11-01 .. 2024-11-21
local q, read, exit_code = util.q, util.read_if, util.exit_code

describe("openai-usage reconcile", function()
  local srv, tmp, client, prices_file

  local function run(args)
    local quoted = {}
    for i, a in ipairs(args) do
      quoted[i] = q(a)
    end
    local cmd = ("env OPENAI_ADMIN_KEY=%s OPENAI_BASE_URL=%s %s bin/openai-usage reconcile %s >%s 2>%s"):format(
      q(srv.key), q(srv.url), util.LUA, table.concat(quoted, " "), q(tmp .. ".out"), q(tmp .. ".err"))
    local code = exit_code(os.execute(cmd))
    return read(tmp .. ".out"), read(tmp .. ".err"), code
  end

  local RANGE = { "--since", tostring(SINCE), "--until", tostring(UNTIL) }

  local function run_json(extra)
    local args = { "--format", "json" }
    for _, list in ipairs { RANGE, extra } do
      for _, a in ipairs(list) do
        args[#args + 1] = a
      end
    end
    local out, err, code = run(args)
    assert(out and out ~= "", "no JSON; stderr: " .. tostring(err))
    return cjson.decode(out), code
  end

  -- The rows of a result by project ("*" for the total).
  local function by_project(json)
    local out = {}
    for _, r in ipairs(json.rows) do
      out[r.project_id == cjson.null and "*" or r.project_id] = r
    end
    return out
  end

  -- Images of the range by project, for rows keep(row) keeps.
  local function images(keep)
    local out, total = {}, 0
    for row in client:results("images", { start_time = SINCE, end_time = UNTIL, bucket_width = "1d",
      group_by = { "project_id", "model", "size" }, limit = 31 }) do
      if keep(row) then
        out[row.project_id] = (out[row.project_id] or 0) + row.images
        total = total + row.images
      end
    end
    return out, total
  end

  setup(function()
    srv = standin.start { key = KEY, now = NOW }
    client = assert(usage.new(srv:client_options()))
    tmp = os.tmpname()
    prices_file = tmp .. ".prices.lua"
    util.write(prices_file, srv:image_price_table())
  end)

  teardown(function()
    if client then
      client:close()
    end
    if srv then
      srv:stop()
    end
    for _, suffix in ipairs { "", ".out", ".err", ".prices.lua" } do
      os.remove(tmp .. suffix)
    end
  end)

  before_each(function()
    srv:reset()
  end)

  it("a table that prices images as they are billed agrees: every difference 0, exit 0", function()
    local billed = {}
    for row in client:results("costs", { start_time = SINCE, end_time = UNTIL, bucket_width = "1d",
      group_by = { "project_id", "line_item" }, limit = 180 }) do
      if row.line_item == "Image models" then
        billed[row.project_id] = (billed[row.project_id] or 0) + row.amount.value
        billed["*"] = (billed["*"] or 0) + row.amount.value
      end
    end
    local json, code = run_json { "--prices", prices_file }
    assert.are.equal(0, code)
    assert.are.same({}, json.stale)
    assert.are.equal(5, #json.rows) -- the total and four projects
    for project, r in pairs(by_project(json)) do
      assert.are.equal("Image models", r.line_item)
      util.near(billed[project], r.billed, project)
      util.near(billed[project], r.estimated, project)
      util.near(0, r.difference, project)
      assert.is_false(r.stale)
    end
    assert.are.same({ "2024-11-01T00:00:00Z", "2024-11-21T00:00:00Z" }, { json.since, json.settled })
    assert.is_true(json.not_estimated.count > 10, "the other line items are counted, not estimated")
    local out = run { "--since", tostring(SINCE), "--until", tostring(UNTIL), "--prices", prices_file }
    assert.truthy(out:find("the price table agrees with the billed amounts", 1, true), out)
  end)

  it("billed prices changed on the stand-in: the exact differences, and the table called stale", function()
    local table_price, new_price = 0.042, 0.05
    assert.are.equal(table_price, assert(cost.load(prices_file)).images["gpt-image-1"].standard["1024x1024"])
    srv:settings { billed_prices = { ["gpt-image-1"] = { ["1024x1024"] = new_price } } }
    local changed, total = images(function(row)
      return row.model == "gpt-image-1" and row.size == "1024x1024"
    end)
    assert.is_true(total > 0)
    local json, code = run_json { "--prices", prices_file }
    assert.are.equal(4, code)
    local rows = by_project(json)
    util.near(total * (table_price - new_price), rows["*"].difference, "all projects")
    local stale = 0
    for project, n in pairs(changed) do
      local r = rows[project]
      util.near(n * (table_price - new_price), r.difference, project)
      util.near(r.difference / r.billed, r.share, project)
      assert.is_true(r.stale, project)
      stale = stale + 1
    end
    -- a message per stale project and one for the total, each naming where
    assert.are.equal(stale + 1, #json.stale)
    local out = run { "--since", tostring(SINCE), "--until", tostring(UNTIL), "--prices", prices_file }
    for project in pairs(changed) do
      assert.truthy(out:find("stale: Image models in " .. project .. ": the estimate is off by -$", 1, true), out)
    end
    -- a tolerance wider than the change: no longer stale
    local share = math.abs(rows["*"].share)
    local wide = 0
    for _, r in pairs(rows) do
      wide = math.max(wide, math.abs(r.share))
    end
    local _, code2 = run_json { "--prices", prices_file, "--tolerance", ("%.6f"):format(wide * 1.01) }
    assert.are.equal(0, code2)
    assert.is_true(share > 0)
    -- the switch refuses what it cannot apply
    assert.has_error(function()
      srv:settings { billed_prices = { ["gpt-image-9"] = { ["1024x1024"] = 1 } } }
    end)
  end)

  it("a model and size the table does not price: named, with its images, and stale", function()
    local bundled = assert(cost.load())
    local _, total = images(function(row)
      return not cost.price(bundled, row.model, row.size, bundled.default_quality)
    end)
    assert.is_true(total > 0)
    local json, code = run_json {}
    assert.are.equal(4, code)
    local all = by_project(json)["*"]
    assert.are.equal(total, all.unpriced_images)
    local found = false
    for _, message in ipairs(json.stale) do
      if message:find("has no price for", 1, true) and message:find("gpt-image-1 auto", 1, true) then
        found = message:find(("(%d images)"):format(total), 1, true) ~= nil
      end
    end
    assert.is_true(found, table.concat(json.stale, "\n"))
  end)

  it("compares settled days only", function()
    local out, err, code = run { "--since", tostring(NOW - 86400), "--until", tostring(NOW), "--at", tostring(NOW) }
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.truthy(err:find("no day from 2024-11-23T00:00:00Z has settled yet", 1, true), err)
    local json = run_json { "--until", tostring(NOW), "--at", tostring(NOW), "--prices", prices_file }
    assert.are.equal("2024-11-22T00:00:00Z", json.settled)
    local _, bad, code2 = run { "--tolerance", "-1" }
    assert.are.equal(2, code2)
    assert.truthy(bad:find("--tolerance", 1, true))
  end)

  it("reconcile.compare: a hand-computed case", function()
    local prices = { date = "test", default_quality = "standard",
      images = { ["dall-e-2"] = { standard = { ["256x256"] = 0.11 } } } }
    local costs = {
      { line_item = "Image models", project_id = "p1", amount = { value = 1.0, currency = "usd" } },
      { line_item = "Image models", project_id = "p2", amount = { value = 0.5, currency = "usd" } },
      { line_item = "gpt-4o, input", project_id = "p1", amount = { value = 2.0, currency = "usd" } },
    }
    local rows = {
      { project_id = "p1", model = "dall-e-2", size = "256x256", images = 10 }, -- 1.10 against 1.00
      { project_id = "p2", model = "dall-e-2", size = "256x256", images = 4 }, -- 0.44 against 0.50
      { project_id = "p2", model = "dall-e-9", size = "256x256", images = 3 }, -- no price
    }
    local result = reconcile.compare(costs, rows, { prices = prices, tolerance = 0.05 })
    local all, p1, p2 = result.rows[1], result.rows[2], result.rows[3]
    assert.are.same({ "Image models", "p1", "p2" }, { all.line_item, p1.project_id, p2.project_id })
    assert.is_nil(all.project_id)
    util.near(1.54, all.estimated)
    util.near(1.5, all.billed)
    util.near(0.1, p1.difference)
    util.near(0.1, p1.share)
    util.near(-0.06, p2.difference)
    util.near(-0.12, p2.share)
    assert.are.same({ false, true, true }, { all.stale, p1.stale, p2.stale }) -- 2.7% is within 5%
    assert.are.same({ 3, { "dall-e-9 256x256" } }, { all.unpriced_images, all.unpriced })
    assert.are.same({ count = 1, billed = 2.0, line_items = { "gpt-4o, input" } }, result.not_estimated)
    assert.are.equal(3, #result.stale) -- p1, p2 and the unpriced model
  end)
end)
