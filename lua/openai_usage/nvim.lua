--- :OpenAIUsage in Neovim: the CLI's arguments and report, fetched without
-- freezing the editor. A vim.loop timer steps an openai_usage.async task
-- that does what the command line does (each page's transfer runs on the
-- client's background thread; a step only asks whether it has landed), the
-- echo area shows the progress, and the finished report opens in a scratch
-- buffer named openai-usage://ENDPOINT.
-- plugin/openai_usage.lua defines the command; this module does the work.
local usage = require "openai_usage"
local async = require "openai_usage.async"

local M = {
  interval = 15, -- milliseconds between two steps of a walk
  config = {}, -- what setup was given
}

local levels = vim.log.levels
-- the event loop: vim.uv on Neovim 0.10+, vim.loop before
local uv = vim.uv or vim.loop

-- Reports still loading, so :OpenAIUsage! can cancel them.
local running = {}

local function notify(message, level)
  -- one line, and no byte the terminal would obey, whatever a message holds
  vim.notify("openai-usage: " .. usage.printable(tostring(message)), level or levels.INFO)
end

local function fail(err)
  notify(err, levels.ERROR)
  return nil, err
end

--- Splits a command line into words like a shell would, without expanding
-- anything (text.words).
M.split = require("openai_usage.text").words

local FILETYPES = { md = "markdown", csv = "csv", json = "json", jsonl = "json", html = "html", svg = "svg" }

local function buffer_named(name)
  for _, buf in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_valid(buf) and vim.api.nvim_buf_get_name(buf) == name then
      return buf
    end
  end
end

-- The current window holds nothing worth keeping (a fresh editor).
local function current_is_empty()
  local buf = vim.api.nvim_get_current_buf()
  return vim.api.nvim_buf_get_name(buf) == "" and not vim.bo[buf].modified
    and vim.api.nvim_buf_line_count(buf) == 1 and vim.api.nvim_buf_get_lines(buf, 0, 1, false)[1] == ""
end

--- Shows text in the scratch buffer called name (reused when it exists):
-- buftype=nofile, bufhidden=wipe, no swap file. mods are the command's
-- modifiers (:vertical, :tab, ...), used to open the window. Returns the buffer.
function M.show(name, text, options)
  options = options or {}
  local lines = vim.split(text, "\n", { plain = true })
  if lines[#lines] == "" then
    lines[#lines] = nil
  end
  local buf = buffer_named(name)
  if not buf then
    buf = vim.api.nvim_create_buf(false, true)
    vim.bo[buf].buftype = "nofile"
    vim.bo[buf].bufhidden = "wipe"
    vim.bo[buf].swapfile = false
    vim.api.nvim_buf_set_name(buf, name)
  end
  vim.bo[buf].modifiable = true
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.bo[buf].modified = false
  vim.bo[buf].filetype = options.filetype or ""
  local win = vim.fn.bufwinid(buf)
  if win ~= -1 then
    vim.api.nvim_set_current_win(win)
  elseif (options.mods or "") == "" and current_is_empty() then
    vim.api.nvim_win_set_buf(0, buf)
  else
    local mods = (options.mods or ""):gsub("^%s+", "")
    vim.cmd((mods ~= "" and mods .. " " or "") .. "sbuffer " .. buf)
  end
  return buf
end

--- Settings: profile (a profile's name: its key, base URL, organization
-- label and client options, as --profile NAME, which overrides it) and
-- profiles (the profiles file, as --profiles FILE; default
-- $OPENAI_USAGE_PROFILES or ~/.config/openai-usage/profiles.lua). Without
-- a profile the key is vim.g.openai_usage_api_key or $OPENAI_ADMIN_KEY.
function M.setup(options)
  options = options or {}
  for _, name in ipairs { "profile", "profiles" } do
    local value = options[name]
    if value ~= nil and (type(value) ~= "string" or value == "") then
      return fail(("setup: %s must be a non-empty string"):format(name))
    end
  end
  M.config = { profile = options.profile, profiles = options.profiles }
  return true
end

-- argv with setup's profile and profiles file where argv names none.
local function with_config(argv)
  local given = {}
  for _, a in ipairs(argv) do
    local name = a:match "^(%-%-[%w%-]+)"
    if name then
      given[name] = true
    end
  end
  local out = {}
  for i, a in ipairs(argv) do
    out[i] = a
  end
  for option, value in pairs { ["--profile"] = M.config.profile, ["--profiles"] = M.config.profiles } do
    if value and not given[option] and (option == "--profile" or not given["--profile"]) then
      out[#out + 1], out[#out + 2] = option, value
    end
  end
  return out
end

-- The clients of a job, as profiles.clients gives them ({ name,
-- organization, client }): its profiles' (--profile, or setup's), else one
-- with the key of M.api_key. nil, err when there is none.
local function open_clients(job)
  if job.profile then
    local members, err = require("openai_usage.profiles").clients(job.profile, {
      path = job.profiles,
      over = { base_url = job.base_url, cache_dir = job.cache, settle_after = job.settle_after,
        max_pages = job.max_pages },
      under = { base_url = vim.g.openai_usage_base_url },
    })
    if not members then
      return nil, err
    end
    if #members > 1 and (job.cost or job.forecast or job.movers or job.names) then
      for _, m in ipairs(members) do
        m.client:close()
      end
      return nil, "--cost, --forecast, --movers and --names over several profiles: use the command line "
        .. "(openai-usage ... --profile " .. job.profile .. ")"
    end
    return members
  end
  local key = M.api_key()
  if not key then
    return nil, "no admin key: set $OPENAI_ADMIN_KEY or vim.g.openai_usage_api_key, or a profile "
      .. "(require('openai_usage.nvim').setup { profile = NAME })"
  end
  local client, err = usage.new {
    api_key = key,
    base_url = job.base_url or vim.g.openai_usage_base_url,
    cache_dir = job.cache,
    settle_after = job.settle_after,
    max_pages = job.max_pages,
  }
  if not client then
    return nil, err
  end
  return { { client = client } }
end

--- The admin key and where it was found: vim.g.openai_usage_api_key (a
-- string, or a function that returns one), else $OPENAI_ADMIN_KEY.
function M.api_key()
  local key, source = vim.g.openai_usage_api_key, "vim.g.openai_usage_api_key"
  if type(key) == "function" then
    key = key()
  end
  if key == nil or key == "" then
    key, source = os.getenv "OPENAI_ADMIN_KEY", "$OPENAI_ADMIN_KEY"
  end
  if key ~= nil and key ~= "" then
    return key, source
  end
end

-- Steps task (an openai_usage.async task over client) on a timer until it
-- ends, then releases both: hooks.progress(seconds) after a step that
-- landed a page, hooks.complete(result, seconds) once it succeeded (returns
-- the buffer shown, or nil and an error), options.on_done(buf | nil, err)
-- at the end. Returns the handle ({task, cancel = fn}); what names the
-- work in messages.
local function drive(clients, task, what, options, hooks)
  local started = uv.hrtime()
  local timer = uv.new_timer()
  local handle = { task = task }
  running[handle] = true
  local shown_pages = -1

  local function seconds()
    return (uv.hrtime() - started) / 1e9
  end

  -- Stops the timer and closes the clients (a cancelled transfer has been
  -- aborted by then: closing does not wait on the network).
  local function release()
    timer:stop()
    timer:close()
    for _, c in ipairs(clients) do
      c:close()
    end
  end

  local function finish(buf, ferr)
    if not running[handle] then
      return
    end
    running[handle] = nil
    task:cancel()
    release()
    if options.on_done then
      options.on_done(buf, ferr)
    end
  end

  local function step()
    if not running[handle] then
      return
    end
    task:step()
    if task.pages ~= shown_pages then
      shown_pages = task.pages
      hooks.progress(seconds())
    end
    if task.done then
      local following, next_err
      if task.err == nil and hooks.next then -- the next organization's task, or none
        following, next_err = hooks.next()
      end
      if following then
        task, handle.task = following, following
      elseif task.err ~= nil or next_err ~= nil then
        fail(task.err or next_err)
        finish(nil, task.err or next_err)
      else
        local ok, buf, show_err = pcall(hooks.complete, task.result, seconds())
        if not ok then -- a bug, not a failed request: say so once and stop
          fail(buf)
          finish(nil, buf)
        else
          finish(buf, show_err)
        end
      end
    end
  end

  function handle.cancel()
    if running[handle] then
      notify(("%s: cancelled after %d pages"):format(what, task.pages), levels.WARN)
      finish(nil, usage.error { kind = "cancelled", message = "cancelled" })
    end
  end

  -- the first step starts the first transfer; the timer's run in the main
  -- loop (vim.schedule), where buffers may change
  step()
  if running[handle] then
    timer:start(M.interval, M.interval, vim.schedule_wrap(step))
  end
  return handle
end

-- The client of a command's run (the key from M.api_key), or nil after
-- saying why.
local function open_client(base_url, fields)
  local key = M.api_key()
  if not key then
    return fail("no admin key: set $OPENAI_ADMIN_KEY or vim.g.openai_usage_api_key")
  end
  local options = { api_key = key, base_url = base_url or vim.g.openai_usage_base_url }
  for k, v in pairs(fields or {}) do
    options[k] = v
  end
  local client, cerr = usage.new(options)
  if not client then
    return fail(cerr)
  end
  return client
end

-- :OpenAIUsage check ARGS: every budget line (openai_usage.budget), those at
-- risk first, in the scratch buffer openai-usage://check.
local function run_check(argv, options)
  local check = require "openai_usage.cmd.check"
  local budget = require "openai_usage.budget"
  local plan, err = check.parse(argv)
  if not plan then
    return fail(err)
  end
  if plan.help then
    local args = require "openai_usage.cmd.args"
    M.show("openai-usage://help", args.help("openai-usage check [options]", check.ABOUT,
      { check.OPTIONS, args.CLIENT }, check.TRAILER), options)
    return true
  end
  local client, cerr = open_client(plan.base_url, { timeout = plan.timeout })
  if not client then
    return nil, cerr
  end
  local task, terr = async.task(client, function(c)
    return budget.evaluate(c, plan.budgets, plan)
  end)
  if not task then
    client:close()
    return fail(terr)
  end
  local function progress(seconds)
    vim.api.nvim_echo({ { ("openai-usage: check · pages %d · %.1f s"):format(task.pages, seconds) } }, false, {})
  end
  local function complete(result, seconds)
    local buf = M.show("openai-usage://check", M.check_text(result), { mods = options.mods })
    notify(("check: %d of %d budget lines at risk (%d pages in %.1f s)"):format(result.at_risk, #result.lines,
      task.pages, seconds), result.at_risk > 0 and levels.WARN or levels.INFO)
    return buf
  end
  return drive({ client }, task, "check", options, { progress = progress, complete = complete })
end

--- The text :OpenAIUsage check shows: the lines at risk, then those under
-- budget (every line, as openai-usage check --all prints them).
function M.check_text(result)
  local budget = require "openai_usage.budget"
  local risky, under = {}, {}
  for _, line in ipairs(result.lines) do
    local list = budget.AT_RISK[line.status] and risky or under
    list[#list + 1] = line
  end
  local lines, estimated = {}, false
  for _, list in ipairs { risky, under } do
    for _, line in ipairs(list) do
      lines[#lines + 1] = budget.describe(line)
      estimated = estimated or line.tail ~= nil
    end
  end
  if estimated then
    lines[#lines + 1] = budget.estimate_note(result)
  end
  return table.concat(lines, "\n") .. "\n"
end

--- Runs a report: argv as for the command line (a list of strings), or a
-- string split like a shell would. options: mods (window modifiers),
-- on_done(buf | nil, err) called when it ends. Returns the handle of the
-- running report ({task, job, cancel = fn}), or nil and the error (already
-- shown); --help and --version return true.
function M.run(argv, options)
  options = options or {}
  if type(argv) == "string" then
    argv = M.split(argv)
  end
  if argv[1] == "check" then
    local rest = {}
    for i = 2, #argv do
      rest[#rest + 1] = argv[i]
    end
    return run_check(rest, options)
  end
  local cli = require "openai_usage.cli"
  local job, err = cli.parse(with_config(argv))
  if not job then
    return fail(err)
  end
  if job.help then
    M.show("openai-usage://help", cli.help(job.endpoint), options)
    return true
  end
  if job.version then
    notify(("%s (%s)"):format(usage.version, usage.libcurl_version() or "libcurl"))
    return true
  end
  local members, merr = open_clients(job)
  if not members then
    return fail(merr)
  end

  local jobs = require "openai_usage.job"
  local figures, path = cli.figures(job.endpoint), usage.rules(job.endpoint).path
  local fold = jobs.fold(job) -- the job's rows so far, of every organization
  -- the command line's job, as tasks (one an organization, in turn, into
  -- one fold): their walks yield to the timer; the last writes the text
  local index, done_pages, done_cached = 0, 0, 0
  local function next_task()
    index = index + 1
    local member, last = members[index], index == #members
    return async.task(member.client, function(c)
      local ok, werr = pcall(function()
        for page in c:pages(job.endpoint, job.params) do
          page.organization = member.organization -- a profile's label, for --group-by organization
          fold:page(page)
        end
      end)
      if not ok then -- over several organizations the error names the profile
        error(#members > 1 and require("openai_usage.profiles").blame(member, werr) or werr, 0)
      end
      if not last then
        return true
      end
      local meta = job.cost and jobs.cost(c, job, fold, figures) or {}
      if job.forecast or job.movers then -- their daily walks through the same task
        jobs.analysis(c, job, meta, figures)
      end
      if job.names then
        meta = jobs.names(c, job, fold, figures, meta)
      end
      return jobs.text(job, fold, meta, figures, path)
    end)
  end
  local task, terr = next_task()
  if not task then
    for _, m in ipairs(members) do
      m.client:close()
    end
    return fail(terr)
  end

  local function progress(seconds)
    vim.api.nvim_echo({ { ("openai-usage: %s · pages %d · buckets %d · rows %d · %.1f s")
      :format(job.endpoint, done_pages + task.pages, fold.buckets, fold.rows, seconds) } }, false, {})
  end

  local function pages()
    return done_pages + task.pages, done_cached + task.cached
  end

  local function complete(text, seconds)
    if job.out then
      local written, write_err = cli.write_atomically(job.out, text)
      if not written then
        fail("--out: " .. tostring(write_err))
        return nil, write_err
      end
      notify(("%s: %d rows written to %s in %.1f s"):format(job.endpoint, fold.rows, job.out, seconds))
      return nil
    end
    local buf = M.show("openai-usage://" .. job.endpoint, text,
      { mods = options.mods, filetype = FILETYPES[job.format] })
    local n, cached = pages()
    local from_cache = cached > 0 and (" (%d from the cache)"):format(cached) or ""
    notify(("%s: %d pages%s, %d rows in %.1f s"):format(job.endpoint, n, from_cache, fold.rows, seconds))
    return buf
  end

  local clients = {}
  for i, m in ipairs(members) do
    clients[i] = m.client
  end
  local handle = drive(clients, task, job.endpoint, options, {
    progress = progress,
    complete = complete,
    next = function() -- after an organization's walk, the next one's
      if index >= #members then
        return nil
      end
      done_pages, done_cached = pages()
      local t, next_err = next_task()
      if not t then
        return nil, next_err
      end
      task = t
      return t
    end,
  })
  handle.job = job
  return handle
end

--- Cancels every report still loading; returns how many there were.
function M.cancel()
  local n = 0
  for handle in pairs(running) do
    handle.cancel()
    n = n + 1
  end
  return n
end

--- The command: :OpenAIUsage [args] runs a report, :OpenAIUsage! cancels.
function M.command(cmd)
  if cmd.bang then
    if M.cancel() == 0 then
      notify "no report is loading"
    end
    return
  end
  return M.run(M.split(cmd.args), { mods = cmd.mods })
end

--- Completes the command line: endpoints (and check) first, then the CLI's
-- options (check's after check).
function M.complete(arglead, line)
  local words = M.split(line)
  local typed = #words - ((arglead ~= "" and 1) or 0) -- words before the one being typed
  local candidates = {}
  if typed <= 1 then
    candidates = usage.rules()
    candidates[#candidates + 1] = "check"
  elseif words[2] == "check" then
    local args = require "openai_usage.cmd.args"
    for _, list in ipairs { require("openai_usage.cmd.check").OPTIONS, args.CLIENT } do
      for _, o in ipairs(list) do
        candidates[#candidates + 1] = o.names[#o.names]
      end
    end
  else
    -- the CLI's option list, with the filters of the endpoint named
    for _, o in ipairs(require("openai_usage.cli").options(words[2])) do
      for _, name in ipairs(o.names) do
        if name:sub(1, 2) == "--" then
          candidates[#candidates + 1] = name
        end
      end
    end
  end
  local matches, seen = {}, {}
  for _, c in ipairs(candidates) do
    if c:sub(1, #arglead) == arglead and not seen[c] then
      matches[#matches + 1], seen[c] = c, true
    end
  end
  table.sort(matches)
  return matches
end

return M
