-- The organization's directory through the client: the admin API's list
-- pagination (limit, after, has_more, last_id) walked to its end across
-- pages, archived projects included, path parameters checked and encoded
-- before anything is sent, and every hostile list (endless has_more, a
-- repeated last_id, a null where an object belongs, no has_more) ending in
-- a clear error instead of a loop or a short list. The stand-in serves its
-- synthetic organization's directory (standin/directory.py).
local usage = require "openai_usage"
local directory = require "openai_usage.directory"
local schema = require "openai_usage.directory_schema"
local standin = require "spec.support.standin"

local KEY = "sk-admin-directory-spec"

describe("directory", function()
  local srv, client

  setup(function()
    srv = standin.start { key = KEY }
    client = assert(usage.new(srv:client_options()))
  end)

  teardown(function()
    client:close()
    srv:stop()
  end)

  before_each(function()
    srv:reset()
  end)

  -- The after= of each request the stand-in saw for path, in order.
  local function afters(path)
    local out = {}
    for _, r in ipairs(srv:requests()) do
      if r.path == "/v1/organization/" .. path then
        out[#out + 1] = r.query:match "after=([^&]*)" or ""
      end
    end
    return out
  end

  it("walks a list across pages of limit=2 to its end, each page asked for after the last one's last_id",
    function()
      local ids = {}
      for project, page in client:list("projects", { limit = 2, include_archived = true }) do
        assert.are.equal("list", page.object)
        ids[#ids + 1] = project.id
      end
      assert.are.same({ "proj_atlas", "proj_borealis", "proj_cinder", "proj_delta" }, ids)
      -- three requests would be wrong: the second page says has_more false
      assert.are.same({ "", "proj_borealis" }, afters "projects")
      local users = directory.all(client, "users", { limit = 2 })
      assert.are.equal(6, #users)
      assert.are.same({ "", "user-bo", "user-dara" }, afters "users")
      assert.are.equal("Ada Lovelace", users[1].name)
      assert.are.equal("ada@example.com", users[1].email)
    end)

  it("leaves archived projects out unless include_archived, as the API does", function()
    local active = directory.all(client, "projects", nil)
    assert.are.equal(3, #active)
    for _, p in ipairs(active) do
      assert.are.equal("active", p.status)
    end
    local all = directory.all(client, "projects", { include_archived = true })
    assert.are.equal(4, #all)
    assert.are.equal("proj_delta", all[4].id)
    assert.are.equal("archived", all[4].status)
    assert.is_number(all[4].archived_at)
    -- limit defaults to the most a page may hold (the rule table's 100)
    assert.truthy(srv:requests()[1].query:find("limit=100", 1, true))
  end)

  it("client:directory reads every project (the archived one too), user, key and service account", function()
    local dir = client:directory()
    assert.are.equal(4, #dir.projects)
    assert.are.equal(6, #dir.users)
    assert.are.equal(8, #dir.api_keys)
    -- the archived project's service accounts are not asked for: the API refuses them
    assert.are.equal(3, #dir.service_accounts)
    local projects_of = {}
    for _, k in ipairs(dir.api_keys) do
      assert.truthy(k.id:match "^key_")
      assert.is_string(k.name)
      projects_of[k.project_id] = true
    end
    assert.is_true(projects_of.proj_delta, "the archived project's keys are read")
    for _, r in ipairs(srv:requests()) do
      assert.is_nil(r.path:find("proj_delta/service_accounts", 1, true))
    end
    assert.is_number(dir.fetched_at)
  end)

  it("directory.rows shapes the directory for the store's generated tables (Unix seconds and ISO text)",
    function()
      local rows = directory.rows(client:directory(), "org-spec")
      for _, t in ipairs(schema.tables) do
        assert.is_table(rows[t.name], t.name)
        assert.truthy(t.ddl:find("CREATE TABLE IF NOT EXISTS " .. t.name, 1, true))
        -- every column of the DDL, in its order
        local names = {}
        for i, col in ipairs(t.columns) do
          names[i] = col.name
          assert.truthy(t.ddl:find("\n  " .. col.name .. " " .. col.type, 1, true), col.name)
        end
        assert.are.same(names, rows.columns[t.name])
      end
      assert.are.equal(4, #rows.projects)
      local delta = rows.projects[4]
      assert.are.same({ "org-spec", "proj_delta", "Delta", "archived", 1727740800, "2024-10-01T00:00:00Z" },
        { delta.organization, delta.id, delta.name, delta.status, delta.archived_at, delta.archived_at_iso })
      assert.is_nil(rows.projects[1].archived_at) -- unknown stays unknown, never 0
      local key = rows.api_keys[1]
      assert.are.equal("user-ada", key.owner_id)
      assert.are.equal("user", key.owner_type)
      assert.are.equal("proj_atlas", key.project_id)
      assert.are.equal("org-spec", rows.organizations[1].id)
      assert.is_string(rows.organizations[1].refreshed_at_iso)
    end)

  it("the generated DDL and directory.statements store the directory in SQLite; a refresh replaces it", function()
    local ok, DBI = pcall(require, "DBI")
    if not ok then
      return pending "lua-dbi-sqlite3 is not installed for this Lua"
    end
    local path = os.tmpname()
    local db = assert(DBI.Connect("SQLite3", path))
    for _, t in ipairs(schema.tables) do
      assert(db:prepare(t.ddl):execute())
    end
    local function store(dir)
      for _, st in ipairs(directory.statements(directory.rows(dir, "org-spec"), "org-spec")) do
        local sth = assert(db:prepare(st.sql))
        for _, v in ipairs(st.values) do
          assert(sth:execute((table.unpack or unpack)(v, 1, v.n)))
        end
      end
      db:commit()
    end
    local function select(sql)
      local sth = assert(db:prepare(sql))
      assert(sth:execute())
      local out = {}
      for row in sth:rows(false) do
        out[#out + 1] = row
      end
      return out
    end
    local dir = client:directory()
    store(dir)
    store(dir) -- again: the same rows, no duplicates
    assert.are.same({ { 4 } }, select "SELECT count(*) FROM projects")
    assert.are.same({ { 8 } }, select "SELECT count(*) FROM api_keys")
    assert.are.same({ { "Delta", "2024-10-01T00:00:00Z" } },
      select "SELECT name, archived_at_iso FROM projects WHERE id = 'proj_delta'")
    assert.are.same({ { 1 } }, select "SELECT count(*) FROM projects WHERE archived_at IS NULL AND id = 'proj_atlas'")
    -- keys join their project's and their owner's names
    local joined = select([[SELECT p.name, u.name FROM api_keys k JOIN projects p ON p.id = k.project_id
      JOIN users u ON u.id = k.owner_id WHERE k.id = ']] .. dir.api_keys[1].id .. "'")
    assert.are.equal(1, #joined)
    assert.are.equal("Atlas", joined[1][1])
    -- a project gone from the directory is gone from the store after a refresh
    srv:settings { directory_hide = { "proj_cinder" } }
    store(client:directory())
    assert.are.same({ { 3 } }, select "SELECT count(*) FROM projects")
    db:close()
    os.remove(path)
  end)

  it("path parameters are checked and percent-encoded; bad ones are refused before anything is sent", function()
    assert.are.equal(srv.url .. "/organization/projects/proj%2F..%2Fx/api_keys?limit=100",
      client:url("api_keys", { project_id = "proj/../x", limit = 100 }))
    for _, case in ipairs {
      { nil, "project_id: required" },
      { { project_id = ".." }, 'project_id: ".." is a path segment' },
      { { project_id = "" }, "project_id: expected an id of 1 to 256 bytes" },
      { { project_id = 7 }, "project_id: expected a string" },
      { { project_id = "proj_atlas", limit = 101 }, "limit: 101 is out of range 1..100 for api_keys" },
      { { project_id = "proj_atlas", owner_project_access = "all" }, 'owner_project_access: "all" is not one of' },
      { { project_id = "proj_atlas", page = "x" }, 'unknown parameter "page"' },
    } do
      local ok, err = pcall(function()
        for _ in client:list("api_keys", case[1]) do
          error "no object should come"
        end
      end)
      assert.is_false(ok)
      assert.are.equal("invalid_argument", err.kind)
      assert.truthy(tostring(err):find(case[2], 1, true), tostring(err))
    end
    local ok, err = pcall(client.list, client, "users", nil, { max_pages = 0 })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("max_pages: 0 is not a whole number", 1, true), tostring(err))
    ok, err = pcall(client.list, client, "spend_limit")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("not a directory list", 1, true))
    assert.are.equal(0, #srv:requests())
  end)

  it("an endless has_more (new objects on every page) ends at max_pages with an error", function()
    srv:settings { directory_loop = "endless" }
    local seen = 0
    local ok, err = pcall(function()
      for _ in client:list("users", { limit = 2 }, { max_pages = 5 }) do
        seen = seen + 1
      end
    end)
    assert.is_false(ok)
    assert.are.equal("api", err.kind)
    assert.truthy(tostring(err):find("reached max_pages (5)", 1, true), tostring(err))
    assert.are.equal(10, seen)
    assert.are.equal(5, #srv:requests())
  end)

  it("a repeated last_id (a server that ignores after) is an error after the second page, not a loop", function()
    srv:settings { directory_loop = "repeat" }
    local ok, err = pcall(directory.all, client, "projects", { limit = 2 })
    assert.is_false(ok)
    assert.are.equal("api", err.kind)
    assert.truthy(tostring(err):find("repeated the last_id of an earlier page", 1, true), tostring(err))
    assert.are.equal(2, #srv:requests())
  end)

  it("has_more on an empty page, or without a cursor, is an error", function()
    srv:faults { status = 200, body = '{"object":"list","data":[],"first_id":null,"last_id":null,"has_more":true}' }
    local ok, err = pcall(directory.all, client, "projects")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("has_more but holds no objects", 1, true), tostring(err))
    srv:faults { status = 200, body = '{"object":"list","data":[{"object":"organization.project"}],'
      .. '"last_id":null,"has_more":true}' }
    ok, err = pcall(directory.all, client, "projects")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("data[1] has no id", 1, true), tostring(err))
  end)

  it("a null where an object belongs, or a list without has_more, is an api error from the C core", function()
    srv:faults { null_bucket = 1 }
    local ok, err = pcall(directory.all, client, "users", { limit = 3 })
    assert.is_false(ok)
    assert.are.equal("api", err.kind)
    assert.truthy(tostring(err):find("data[1] is null; a list holds an object at every index", 1, true),
      tostring(err))
    srv:faults { status = 200, body = '{"object":"list","data":[{"id":"user-ada"}]}' }
    ok, err = pcall(directory.all, client, "users")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("not a list page", 1, true), tostring(err))
    srv:faults { status = 200, body = '{"object":"list","data":{"id":"user-ada"},"has_more":false}' }
    ok, err = pcall(directory.all, client, "users")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("data is an object; a list holds a list of objects", 1, true), tostring(err))
  end)

  it("a failing page is retried by the core's rules, then fails with its error value", function()
    srv:faults { { status = 503, times = 1 } }
    local users = directory.all(client, "users", { limit = 4 })
    assert.are.equal(6, #users)
    -- the first page twice (the 503, then its retry), then the second
    assert.are.same({ "", "", "user-dara" }, afters "users")
    srv:faults { { status = 401, times = 1 } }
    local ok, err = pcall(directory.all, client, "users")
    assert.is_false(ok)
    assert.are.equal("http", err.kind)
    assert.are.equal(401, err.status)
    assert.is_nil(tostring(err):find(KEY, 1, true))
  end)

  it("a client with a Lua transport (OpenResty's path) walks the same lists and gets the same errors", function()
    local via = assert(usage.new(srv:client_options { transport = require("spec.support.curl_transport").new() }))
    local ids = {}
    for user in via:list("users", { limit = 4 }) do
      ids[#ids + 1] = user.id
    end
    assert.are.same({ "user-ada", "user-bo", "user-chen", "user-dara", "user-eli", "user-fumi" }, ids)
    assert.are.same({ "", "user-dara" }, afters "users")
    srv:faults { null_bucket = 0 }
    local ok, err = pcall(directory.all, via, "projects")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("data[0] is null; a list holds an object at every index", 1, true),
      tostring(err))
    local limit = assert(via:usage("spend_limit"))
    assert.are.equal(300000, limit.threshold_amount)
    via:close()
  end)

  it("spend alerts are a list, the spend limit one object, as issue 15 reads them", function()
    local alerts = directory.all(client, "spend_alerts", { limit = 1 })
    assert.are.equal(3, #alerts)
    assert.are.equal(50000, alerts[1].threshold_amount)
    assert.are.equal("USD", alerts[1].currency)
    local limit = assert(client:usage("spend_limit"))
    assert.are.equal("organization.spend_limit", limit.object)
    assert.are.equal(300000, limit.threshold_amount)
    assert.are.equal("enforcing", limit.enforcement.status)
    srv:faults { status = 200, body = "[1, 2]" }
    local none, err = client:usage("spend_limit")
    assert.is_nil(none)
    assert.truthy(tostring(err):find("not an object", 1, true), tostring(err))
  end)

  it("the stand-in's directory objects have exactly the described fields (directory_schema)", function()
    local described = {}
    for _, e in ipairs(schema.endpoints) do
      local names = {}
      for _, f in ipairs(e.fields) do
        names[f.name] = f
      end
      described[e.name] = names
    end
    local dir = client:directory()
    for list, items in pairs { projects = dir.projects, users = dir.users, api_keys = dir.api_keys,
      service_accounts = dir.service_accounts } do
      for _, item in ipairs(items) do
        for k in pairs(item) do
          assert.truthy(described[list][k] or k == "project_id", list .. "." .. k .. " is not described")
        end
      end
    end
  end)
end)
