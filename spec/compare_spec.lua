-- Movers: analysis.movers (new and vanished scopes, unknown figures, the
-- order by absolute and relative change), then `openai-usage compare`
-- against the stand-in, its figures checked against plain sums of the
-- library's rows, and run as a real process.
local analysis = require "openai_usage.analysis"
local time = require "openai_usage.time"
local standin = require "spec.support.standin"
local commands = require "spec.support.commands"
local util = require "spec.support.util"
local cjson = require "cjson"

local DAY = 86400
local NOW = 1732406400 -- 2024-11-24T00:00:00Z, a Sunday: the stand-in's now

describe("analysis.movers", function()
  local function scope(id, value)
    return { fields = { project_id = id }, value = value }
  end

  it("shows something from nothing as new (no percentage, not inf) and something gone as vanished", function()
    local previous = { a = scope("a", 100), b = scope("b", 0), c = scope("c", 50), d = scope("d", 10) }
    local current = { a = scope("a", 130), b = scope("b", 40), c = scope("c", 0), e = scope("e", 5) }
    local rows = analysis.movers(previous, current)
    local by = {}
    for _, r in ipairs(rows) do
      by[r.fields.project_id] = r
    end
    assert.same({ "c", "b", "a", "d", "e" }, (function()
      local ids = {}
      for i, r in ipairs(rows) do
        ids[i] = r.fields.project_id
      end
      return ids
    end)())
    assert.equal("new", by.b.status)
    assert.is_nil(by.b.change_pct)
    assert.equal(40, by.b.change)
    assert.equal("new", by.e.status) -- absent before: 0
    assert.equal("vanished", by.c.status)
    assert.equal(-100, by.c.change_pct)
    assert.equal("vanished", by.d.status) -- absent now: 0
    assert.equal("up", by.a.status)
    util.near(30, by.a.change_pct, "a's change")
  end)

  it("orders by relative change on asking, new ones first, and keeps unknown figures unknown", function()
    local previous = { a = scope("a", 100), b = scope("b", 1), u = scope("u", nil), n = scope("n", 0) }
    local current = { a = scope("a", 200), b = scope("b", 3), u = scope("u", 10), n = scope("n", 1) }
    local rows = analysis.movers(previous, current, { relative = true })
    assert.equal("n", rows[1].fields.project_id)
    assert.equal("b", rows[2].fields.project_id) -- +200 %
    assert.equal("a", rows[3].fields.project_id) -- +100 %
    assert.equal("u", rows[4].fields.project_id)
    assert.equal("unknown", rows[4].status)
    assert.is_nil(rows[4].change)
    assert.is_nil(rows[4].previous)
  end)
end)

describe("openai-usage compare against the stand-in", function()
  local srv

  setup(function()
    srv = standin.start { now = NOW }
  end)

  teardown(function()
    srv:stop()
  end)

  -- Sums of images by field over [start, stop), by plain loops over the library's rows.
  local function sums(field, start, stop)
    local usage = require "openai_usage"
    local c = assert(usage.new(srv:client_options()))
    local out = {}
    for row in c:results("images", { start_time = start, end_time = stop, bucket_width = "1d", group_by = { field },
      limit = 31 }) do
      local id = row[field] or "(none)"
      out[id] = (out[id] or 0) + row.images
    end
    c:close()
    return out
  end

  it("compares the last complete week with the one before, per project, model and key", function()
    local out, err, code = commands.run(srv, { "compare", "images", "--format", "json", "--top", "100" }, NOW)
    assert.equal(0, code, err)
    local rows = cjson.decode(out)
    -- now is Sunday 2024-11-24: the week of Monday 18 is not complete yet
    local cur, prev = NOW - 6 * DAY - 7 * DAY, NOW - 6 * DAY - 14 * DAY
    assert.equal("2024-11-11T00:00:00Z", time.iso(cur))
    local seen = { project_id = 0, model = 0, api_key_id = 0 }
    for _, field in ipairs { "project_id", "model", "api_key_id" } do
      local before, after = sums(field, prev, cur), sums(field, cur, cur + 7 * DAY)
      local last
      for _, row in ipairs(rows) do
        if row.dimension == field then
          seen[field] = seen[field] + 1
          assert.equal(before[row.id], row.previous)
          assert.equal(after[row.id], row.current)
          assert.equal(after[row.id] - before[row.id], row.change)
          util.near((after[row.id] - before[row.id]) / before[row.id] * 100, row.change_pct, row.id)
          if last then
            assert.is_true(math.abs(row.change) <= last, "biggest change first")
          end
          last = math.abs(row.change)
        end
      end
      local n = 0
      for _ in pairs(after) do
        n = n + 1
      end
      assert.equal(n, seen[field])
    end
    assert.equal(4, seen.project_id)
    assert.equal(3, seen.model)
    assert.equal(8, seen.api_key_id)
  end)

  it("puts a key whose use jumped in the last week at the top of its dimension", function()
    local keys = sums("api_key_id", NOW - 7 * DAY, NOW)
    local names = {}
    for k in pairs(keys) do
      names[#names + 1] = k
    end
    table.sort(names)
    srv:settings { spike = { api_key_id = names[5], day = NOW - 10 * DAY, factor = 20 } }
    finally(function()
      srv:reset()
    end)
    local out, err, code = commands.run(srv, { "compare", "--by", "api_key_id", "--top", "1", "--format", "json" },
      NOW)
    assert.equal(0, code, err)
    local rows = cjson.decode(out)
    assert.equal(1, #rows)
    assert.equal(names[5], rows[1].id)
    assert.equal("up", rows[1].status)
    assert.is_true(rows[1].change_pct > 100)
  end)

  it("takes --period day and month, complete periods only", function()
    local out, err, code = commands.run(srv, { "compare", "images", "--period", "day", "--by", "model",
      "--format", "json" }, NOW)
    assert.equal(0, code, err)
    local day = cjson.decode(out)
    local before, after = sums("model", NOW - 2 * DAY, NOW - DAY), sums("model", NOW - DAY, NOW)
    for _, row in ipairs(day) do
      assert.equal(before[row.id], row.previous)
      assert.equal(after[row.id], row.current)
    end
    out, err, code = commands.run(srv, { "compare", "images", "--period", "month", "--by", "model" }, NOW)
    assert.equal(0, code, err)
    assert.matches("^Movers: images images, 2024%-10 against 2024%-09\n", out)
    local october = sums("model", time.days_from_civil(2024, 10, 1) * DAY, time.days_from_civil(2024, 11, 1) * DAY)
    assert.matches(require("openai_usage.text").number(october["dall-e-2"], 0), out, 1, true)
  end)

  it("refuses bad options before any request", function()
    local before = #srv:requests()
    for _, case in ipairs {
      { { "compare", "--period", "year" }, "%-%-period: \"year\" is not one of day, week, month" },
      { { "compare", "--by", "model" }, "%-%-by: costs does not group by \"model\"" },
      { { "compare", "--top", "0" }, "%-%-top: \"0\" is not a whole number >= 1" },
      { { "compare", "--wat" }, "unknown option \"%-%-wat\"" },
      { { "compare", "vector_stores" }, "usage_bytes is a level" },
    } do
      local _, err, code = commands.run(srv, case[1], NOW)
      assert.equal(2, code, err)
      assert.matches(case[2], err)
    end
    assert.equal(before, #srv:requests())
  end)

  it("runs as bin/openai-usage compare, a real process on the real clock", function()
    local live = standin.start {}
    finally(function()
      live:stop()
    end)
    local out, ok = util.popen_run(("env OPENAI_ADMIN_KEY=%s %s bin/openai-usage compare images --by project_id "
      .. "--format csv --base-url %s"):format(util.q(live.key), util.LUA, util.q(live.url)))
    assert.is_true(ok, out)
    assert.matches("^dimension,id,previous,current,change,change_pct,status\r\n", out)
    local lines = 0
    for line in out:gmatch "project_id,proj_[%w_]+,%d+,%d+,%-?%d+,[^,]*,%a+\r\n" do
      lines = lines + (line and 1 or 0)
    end
    assert.equal(4, lines)
  end)
end)
