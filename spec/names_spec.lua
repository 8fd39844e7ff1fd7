-- Names in reports (--names): bin/openai-usage run as a real process
-- against the stand-in shows "Atlas (proj_atlas)" in the table, Markdown and
-- HTML, and adds project_name, user_name, user_email and api_key_name
-- beside the ids in CSV and JSON; the figures are the same as without
-- names; an id the directory does not know is shown alone (never a wrong
-- name); with --cache the names are kept in a private (0600) file, read
-- again when a report meets an unknown id or the file is a day old.
local usage = require "openai_usage"
local names = require "openai_usage.names"
local standin = require "spec.support.standin"
local cjson = require "cjson"
local util = require "spec.support.util"

local KEY = "sk-admin-names-spec"
local NOW = 1732406400 -- 2024-11-24T00:00:00Z, the stand-in's now
local RANGE = { "--since", "2024-11-01", "--until", "2024-11-21" }

local q, read, exit_code = util.q, util.read_if, util.exit_code

describe("names in reports", function()
  local srv, tmp, dir_names

  -- Runs the CLI with args (RANGE added, unless against another server,
  -- live: one whose clock is not frozen); returns stdout, stderr, exit code.
  local function run(args, live)
    local quoted = {}
    for i, a in ipairs(args) do
      quoted[i] = q(a)
    end
    for _, a in ipairs(live and {} or RANGE) do
      quoted[#quoted + 1] = q(a)
    end
    local cmd = ("env OPENAI_ADMIN_KEY=%s OPENAI_BASE_URL=%s %s bin/openai-usage %s >%s 2>%s"):format(
      q((live or srv).key), q((live or srv).url), util.LUA, table.concat(quoted, " "), q(tmp .. ".out"),
      q(tmp .. ".err"))
    local code = exit_code(os.execute(cmd))
    return read(tmp .. ".out"), read(tmp .. ".err"), code
  end

  -- How many directory requests (projects, users, keys, service accounts) the stand-in saw.
  local function directory_requests()
    local n = 0
    for _, r in ipairs(srv:requests()) do
      if not r.path:find("/usage/", 1, true) and not r.path:find("/costs", 1, true) then
        n = n + 1
      end
    end
    return n
  end

  setup(function()
    srv = standin.start { key = KEY, now = NOW }
    tmp = os.tmpname()
    -- the names, read here through the library, independently of the CLI
    local client = assert(usage.new(srv:client_options()))
    local dir = client:directory()
    client:close()
    dir_names = { project_id = {}, user_id = {}, email = {}, api_key_id = {} }
    for _, p in ipairs(dir.projects) do
      dir_names.project_id[p.id] = p.name
    end
    for _, u in ipairs(dir.users) do
      dir_names.user_id[u.id], dir_names.email[u.id] = u.name, u.email
    end
    for _, k in ipairs(dir.api_keys) do
      dir_names.api_key_id[k.id] = k.name
    end
  end)

  teardown(function()
    srv:stop()
    for _, suffix in ipairs { "", ".out", ".err", ".html" } do
      os.remove(tmp .. suffix)
    end
  end)

  before_each(function()
    srv:reset()
  end)

  local GROUP = { "images", "--group-by", "project_id,user_id,api_key_id" }

  local function with(list, ...)
    local out = {}
    for _, v in ipairs(list) do
      out[#out + 1] = v
    end
    for _, v in ipairs { ... } do
      out[#out + 1] = v
    end
    return out
  end

  it("JSON gains project_name, user_name, user_email, api_key_name beside the ids; the figures are unchanged",
    function()
      local plain = assert(cjson.decode((run(with(GROUP, "--format", "json")))))
      local out, err, code = run(with(GROUP, "--format", "json", "--names"))
      assert.are.equal(0, code, err)
      local named = assert(cjson.decode(out))
      assert.is_true(#named >= 8)
      assert.are.equal(#plain, #named)
      for i, row in ipairs(named) do
        assert.are.equal(dir_names.project_id[row.project_id], row.project_name)
        assert.are.equal(dir_names.user_id[row.user_id], row.user_name)
        assert.are.equal(dir_names.email[row.user_id], row.user_email)
        assert.are.equal(dir_names.api_key_id[row.api_key_id], row.api_key_name)
        assert.is_string(row.project_name)
        -- the same rows and figures as the report without names
        for k, v in pairs(plain[i]) do
          assert.are.equal(v, row[k], k)
        end
      end
      -- the name columns sit beside their ids, in that order
      local order = {}
      for key in out:match("%b{}"):gmatch '"([%w_]+)":' do
        order[#order + 1] = key
      end
      assert.are.same({ "project_id", "project_name", "user_id", "user_name", "user_email", "api_key_id",
        "api_key_name" }, { (table.unpack or unpack)(order, 1, 7) })
    end)

  it("CSV gains the name columns; the table and Markdown show \"Name (id)\"", function()
    local out, _, code = run(with(GROUP, "--format", "csv", "--names"))
    assert.are.equal(0, code)
    local lines = {}
    for line in out:gmatch "([^\r\n]+)" do
      lines[#lines + 1] = line
    end
    assert.are.equal("project_id,project_name,user_id,user_name,user_email,api_key_id,api_key_name,images,"
      .. "num_model_requests", lines[1])
    for i = 2, #lines do
      local f = {}
      for field in lines[i]:gmatch "[^,]+" do
        f[#f + 1] = field
      end
      assert.are.equal(dir_names.project_id[f[1]], f[2])
      assert.are.equal(dir_names.user_id[f[3]], f[4])
      assert.are.equal(dir_names.api_key_id[f[6]], f[7])
    end
    for _, format in ipairs { "table", "md" } do
      local text
      text, _, code = run(with(GROUP, "--format", format, "--names"))
      assert.are.equal(0, code)
      local labels = 0
      for id, name in pairs(dir_names.project_id) do
        local at = text:find(name .. " (" .. id .. ")", 1, true)
        if at then
          labels = labels + 1
        end
        -- an id is never shown bare when its name is known
        assert.is_nil(text:find("[ |]" .. id:gsub("%p", "%%%0") .. "[ |]"), format .. ": " .. id .. " bare")
      end
      assert.are.equal(4, labels, format)
      for id, name in pairs(dir_names.user_id) do
        assert.truthy(text:find(name .. " (" .. id .. ")", 1, true), format .. ": " .. id)
      end
    end
  end)

  it("the HTML report shows the names in its table, its bars and its stacked series' legend", function()
    local _, err, code = run { "images", "--group-by", "project_id", "--names", "--format", "html", "--out",
      tmp .. ".html" }
    assert.are.equal(0, code, err)
    local html = read(tmp .. ".html")
    for id, name in pairs(dir_names.project_id) do
      local label = name .. " (" .. id .. ")"
      local _, times = html:gsub(label:gsub("%p", "%%%0"), "")
      -- a table cell, a bar's label and a series in the legend
      assert.is_true(times >= 3, ("%s: %d times"):format(label, times))
      assert.is_nil(html:find(">" .. id .. "<", 1, true), id .. " shown bare")
    end
  end)

  it("an id the directory does not know is shown alone, its name columns empty, after one fresh read", function()
    srv:settings { directory_hide = { "proj_cinder" } }
    local out, _, code = run { "images", "--group-by", "project_id", "--names" }
    assert.are.equal(0, code)
    assert.truthy(out:find("\nproj_cinder ", 1, true), out)
    assert.is_nil(out:find("Cinder", 1, true))
    assert.truthy(out:find("Atlas (proj_atlas)", 1, true))
    out = run { "images", "--group-by", "project_id", "--names", "--format", "json" }
    for _, row in ipairs(cjson.decode(out)) do
      if row.project_id == "proj_cinder" then
        assert.are.equal(cjson.null, row.project_name)
      else
        assert.are.equal(dir_names.project_id[row.project_id], row.project_name)
      end
    end
  end)

  it("--cache keeps the names in a 0600 file, refreshed when an id is unknown or the file is a day old",
    function()
      local dir = util.tmpdir()
      local args = { "images", "--group-by", "project_id", "--names", "--cache", dir }
      srv:settings { directory_hide = { "proj_cinder" } }
      local out, _, code = run(args)
      assert.are.equal(0, code)
      assert.truthy(out:find("\nproj_cinder ", 1, true))
      local first = directory_requests()
      assert.is_true(first >= 2)
      local p = assert(io.popen("ls " .. q(dir) .. "/names-*.json"))
      local file = p:read "*l"
      p:close()
      assert.truthy(file, "no names file in the cache")
      assert.are.equal("600", util.mode(file))
      -- the file knows no proj_cinder: a report that meets it reads the directory again
      srv:reset()
      out = run(args)
      assert.truthy(out:find("Cinder (proj_cinder)", 1, true), out)
      -- the whole directory again: one project (its keys, its service accounts) more
      local full = directory_requests()
      assert.is_true(full > first)
      assert.are.equal("600", util.mode(file))
      -- now every id is known: the names come from the file, nothing is asked
      srv:reset()
      out = run(args)
      assert.truthy(out:find("Cinder (proj_cinder)", 1, true))
      assert.are.equal(0, directory_requests())
      -- a file older than a day is read again
      local text = read(file)
      local at = tonumber(text:match "^openai%-usage%-names 1 (%d+)\n")
      util.write(file, (text:gsub("^openai%-usage%-names 1 %d+", "openai-usage-names 1 " .. (at - names.MAX_AGE - 1))))
      srv:reset()
      out = run(args)
      assert.truthy(out:find("Cinder (proj_cinder)", 1, true))
      assert.are.equal(full, directory_requests())
      -- and a file that does not read back whole is a miss, replaced
      util.write(file, "openai-usage-names 1 " .. at .. "\n{\"project_id\":")
      srv:reset()
      out = run(args)
      assert.truthy(out:find("Atlas (proj_atlas)", 1, true))
      assert.are.equal(full, directory_requests())
      assert.truthy(read(file):find('"proj_atlas"', 1, true))
      util.rm_rf(dir)
    end)

  it("--forecast with --names: the projection's groups by name too, in the table and in CSV", function()
    local live = standin.start { key = KEY } -- the forecast projects from the real today
    finally(function()
      live:stop()
    end)
    local out, err, code = run({ "images", "--since", "30d", "--group-by", "project_id", "--forecast", "--names" },
      live)
    assert.are.equal(0, code, err)
    local forecast = out:match "\nForecast of images.*$"
    assert.truthy(forecast, out)
    for id, name in pairs(dir_names.project_id) do
      assert.truthy(forecast:find(name .. " (" .. id .. ")", 1, true), id)
    end
    out = run({ "images", "--since", "30d", "--group-by", "project_id", "--forecast", "--names", "--format", "csv" },
      live)
    local projected = 0
    for line in out:gmatch "[^\r\n]+" do
      local kind, id, name = line:match "^([%w_]+),[^,]*,[^,]*,([^,]*),([^,]*),"
      if kind and kind:match "^forecast" and id ~= "" then
        assert.are.equal(dir_names.project_id[id], name)
        projected = projected + 1
      end
    end
    assert.are.equal(4, projected)
  end)

  it("--movers with --names: the HTML report's movers by name", function()
    local live = standin.start { key = KEY } -- movers compare the last whole weeks before today
    finally(function()
      live:stop()
    end)
    local _, err, code = run({ "images", "--since", "30d", "--group-by", "project_id", "--movers", "--names",
      "--format", "html", "--out", tmp .. ".html" }, live)
    assert.are.equal(0, code, err)
    local html = read(tmp .. ".html")
    local movers = html:match "Movers: .*$"
    assert.truthy(movers, "no movers section")
    for id, name in pairs(dir_names.project_id) do
      assert.truthy(movers:find(name .. " (" .. id .. ")", 1, true), id)
    end
  end)

  it("sync --names stores the directory beside the usage: sqlite3 joins the names, a refresh replaces them",
    function()
      local dir = util.tmpdir()
      local db = dir .. "/usage.db"
      local out, err, code = run { "sync", "--db", db, "--endpoints", "images", "--names" }
      assert.are.equal(0, code, err)
      assert.truthy(out:find("directory: 4 projects, 6 users, 8 api_keys, 3 service_accounts", 1, true), out)
      -- images by project name, in SQL, as the report by project_id gives them
      local sql = "SELECT p.name, sum(i.images) FROM images i JOIN projects p ON p.id = i.project_id AND "
        .. "p.organization = i.organization GROUP BY p.name ORDER BY p.name"
      local by_name = {}
      for line in util.capture("sqlite3 -separator ' ' " .. q(db) .. " " .. q(sql)):gmatch "[^\n]+" do
        local name, images = line:match "^(.-) (%d+)$"
        by_name[name] = tonumber(images)
      end
      local report = cjson.decode((run { "images", "--group-by", "project_id", "--format", "json" }))
      assert.are.equal(4, #report)
      for _, row in ipairs(report) do
        assert.are.equal(row.images, by_name[dir_names.project_id[row.project_id]], row.project_id)
      end
      -- the next sync replaces the directory: a project gone is gone
      srv:settings { directory_hide = { "proj_cinder" } }
      out, err, code = run { "sync", "--db", db, "--endpoints", "images", "--names" }
      assert.are.equal(0, code, err)
      assert.truthy(out:find("directory: 3 projects", 1, true), out)
      assert.are.equal("3", util.capture("sqlite3 " .. q(db) .. " 'SELECT count(*) FROM projects'"):match "%d+")
      -- a directory that cannot be read leaves the store's as it was: exit 1, the usage stored
      srv:settings { directory_loop = "repeat" }
      out, err, code = run { "sync", "--db", db, "--endpoints", "images", "--names" }
      assert.are.equal(1, code, err)
      assert.truthy(err:find("the usage is stored; the names are not", 1, true), err)
      assert.truthy(out:find("^images 1d: "), out)
      assert.are.equal("3", util.capture("sqlite3 " .. q(db) .. " 'SELECT count(*) FROM projects'"):match "%d+")
      -- without --names, sync reads no directory
      srv:reset()
      local _, plain_err, plain_code = run { "sync", "--db", db, "--endpoints", "images" }
      assert.are.equal(0, plain_code, plain_err)
      assert.are.equal(0, directory_requests())
      util.rm_rf(dir)
    end)

  it("a report that groups by no id reads no directory", function()
    local plain = run { "images", "--group-by", "model" }
    local out, _, code = run { "images", "--group-by", "model", "--names" }
    assert.are.equal(0, code)
    assert.are.equal(plain, out)
    assert.are.equal(0, directory_requests())
  end)

  it("a directory list that would not end fails the report with its error, exit 1, the key nowhere", function()
    srv:settings { directory_loop = "repeat" }
    local out, err, code = run { "images", "--group-by", "project_id", "--names" }
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.truthy(err:find("repeated the last_id", 1, true), err)
    assert.is_nil(err:find(KEY, 1, true))
  end)
end)
