--- Profiles: named organizations in a config file, each with its admin key
-- (or a command that prints it), base URL, organization label and client
-- options; and one client over several of them, for reports across
-- organizations (`--profile a,b`).
--
--   -- ~/.config/openai-usage/profiles.lua (chmod 600)
--   return {
--     acme = { key_command = "pass openai/acme-admin", organization = "Acme" },
--     beta = { key = "sk-admin-...", organization = "Beta", options = { timeout = 60 } },
--   }
--
-- The file is data: loaded as Lua text (bytecode refused) with no globals at
-- all, under an instruction budget, and it must be the user's own and
-- private (no group or other permission bits; a symlink's target likewise),
-- since it may hold keys. A key_command runs without a shell: its words
-- are split as a shell splits them, nothing is expanded; the first line of
-- its stdout is the key. No message ever holds a key.
local core = require "openai_usage.core"
local errors = require "openai_usage.errors"
local text = require "openai_usage.text"
local walk = require "openai_usage.walk"

local M = {}

--- The fields a profile may have.
M.FIELDS = {
  key = "the admin key itself",
  key_command = 'a command printing the key on its first line: "pass openai/admin" or { "pass", "openai/admin" }',
  base_url = "the API base (default $OPENAI_BASE_URL or the API's)",
  organization = "the organization's label in reports (default: the profile's name)",
  options = "client options (timeout, max_retries, organization, project, ca_file, ...)",
}

-- Client options a profile sets with its own fields, not under options.
local OWN_FIELD = { api_key = "key or key_command", base_url = "base_url" }

-- The instructions a profiles file may take to run: data needs few.
local BUDGET = 1000000

--- Seconds a key_command may take (a password manager asking for its
-- passphrase included) before it is killed.
M.KEY_TIMEOUT = 120

local function fail(message)
  return nil, errors.new { kind = "usage", message = message }
end

local function env(name)
  local value = os.getenv(name)
  if value ~= nil and value ~= "" then
    return value
  end
end

--- The profiles file to read: given (--profiles), else $OPENAI_USAGE_PROFILES,
-- else $XDG_CONFIG_HOME/openai-usage/profiles.lua, else
-- ~/.config/openai-usage/profiles.lua. Returns the path, or nil, err.
function M.path(given)
  if given ~= nil and given ~= "" then
    return given
  end
  local from_env = env "OPENAI_USAGE_PROFILES"
  if from_env then
    return from_env
  end
  local config = env "XDG_CONFIG_HOME"
  if not config then
    local home = env "HOME"
    if not home then
      return fail "profiles: neither $XDG_CONFIG_HOME nor $HOME is set: give the file with --profiles FILE"
    end
    config = home .. "/.config"
  end
  return config .. "/openai-usage/profiles.lua"
end

-- The file's text, or nil, err when it is not the user's own private file.
local function read_private(path)
  local file, err = core.read_private(path)
  if not file then
    return fail(("profiles: %s"):format(err.message))
  end
  local what = file.link and (path .. " (a symlink: its target)") or path
  if not file.regular then
    return fail(("profiles: %s is not a regular file"):format(what))
  end
  if file.uid ~= file.euid then
    return fail(("profiles: %s is owned by uid %d, not by you (uid %d): it may hold keys, so only a file of your "
      .. "own is read (chown it, or give another with --profiles)"):format(what, file.uid, file.euid))
  end
  if file.mode % 64 ~= 0 then -- any permission for group or others
    return fail(("profiles: %s is mode %04o: others may read it, and it may hold keys; it must be 0600 or stricter: "
      .. "chmod 600 %s"):format(what, file.mode, path))
  end
  return file.text
end

-- Whether value holds only data: strings, numbers, booleans and tables of
-- them (no functions: a profiles file is data, not code).
local function only_data(value, where, seen)
  local kind = type(value)
  if kind == "table" then
    if seen[value] then
      return true
    end
    seen[value] = true
    for k, v in pairs(value) do
      local ok, err = only_data(k, where, seen)
      if ok then
        ok, err = only_data(v, where .. "." .. tostring(k), seen)
      end
      if not ok then
        return nil, err
      end
    end
    return true
  end
  if kind == "string" or kind == "number" or kind == "boolean" then
    return true
  end
  return nil, ("%s is a %s: a profiles file holds data only (strings, numbers, booleans, tables)"):format(where, kind)
end

-- Runs the file's text with no globals (the 5.1/LuaJIT way, setfenv, or the
-- 5.2+ way, an env) under an instruction budget: true and what it returns,
-- or nil, message.
local function run_sandboxed(source, chunkname)
  if source:sub(1, 1) == "\27" then
    return nil, "is precompiled bytecode: only Lua text is read"
  end
  local globals = {} -- none: the file sees no os, io, require, ...
  local fn, err
  if setfenv then -- Lua 5.1, LuaJIT (whose loadstring would take bytecode: refused above)
    fn, err = loadstring(source, chunkname)
    if fn then
      setfenv(fn, globals)
    end
  else
    fn, err = load(source, chunkname, "t", globals)
  end
  if not fn then
    return nil, err
  end
  if jit then -- compiled code would not count instructions
    jit.off(fn, true)
  end
  local hook, mask, count = debug.gethook()
  debug.sethook(function()
    error("runs for more than " .. BUDGET .. " instructions: a profiles file is data", 0)
  end, "", BUDGET)
  local ok, value = pcall(fn)
  debug.sethook(hook, mask, count)
  if not ok then
    return nil, tostring(value)
  end
  return true, value
end

-- A profile's fields checked; nil, message when one is wrong.
local function check_profile(name, p)
  if type(p) ~= "table" then
    return nil, ('profile "%s" is a %s, not a table of fields'):format(name, type(p))
  end
  local names = {}
  for field in pairs(M.FIELDS) do
    names[#names + 1] = field
  end
  table.sort(names)
  for field in pairs(p) do
    if M.FIELDS[field] == nil then
      return nil, ('profile "%s": unknown field "%s" (its fields: %s)'):format(name, tostring(field),
        table.concat(names, ", "))
    end
  end
  if (p.key == nil) == (p.key_command == nil) then
    return nil, ('profile "%s": give it either key or key_command (one of them)'):format(name)
  end
  if p.key ~= nil and (type(p.key) ~= "string" or p.key == "") then
    return nil, ('profile "%s": key must be a non-empty string'):format(name)
  end
  local kc = p.key_command
  if kc ~= nil then
    local words = type(kc) == "string" and text.words(kc) or kc
    local good = type(words) == "table" and #words > 0
    for _, w in ipairs(good and words or {}) do
      good = good and type(w) == "string"
    end
    if not good then
      return nil, ('profile "%s": key_command must be a command line or a list of strings'):format(name)
    end
  end
  for _, field in ipairs { "base_url", "organization" } do
    if p[field] ~= nil and (type(p[field]) ~= "string" or p[field] == "") then
      return nil, ('profile "%s": %s must be a non-empty string'):format(name, field)
    end
  end
  if p.options ~= nil then
    if type(p.options) ~= "table" then
      return nil, ('profile "%s": options must be a table of client options'):format(name)
    end
    for option in pairs(p.options) do
      if OWN_FIELD[option] then
        return nil, ('profile "%s": options.%s: give it as the profile\'s %s'):format(name, option, OWN_FIELD[option])
      end
    end
  end
  return true
end

--- The profiles of a file (the result of M.path when path is nil): a table
-- name -> profile, or nil, err (kind "usage": a missing, public, foreign or
-- malformed file, a profile with a bad field).
function M.load(path)
  local err
  if path == nil then
    path, err = M.path()
    if not path then
      return nil, err
    end
  end
  local source
  source, err = read_private(path)
  if not source then
    return nil, err
  end
  local ran, value = run_sandboxed(source, "@" .. path)
  if not ran then
    return fail(("profiles: %s %s"):format(path, tostring(value)))
  end
  if value == nil then
    return fail(("profiles: %s returns nothing: it must return a table of profiles"):format(path))
  end
  if type(value) ~= "table" then
    return fail(("profiles: %s returns a %s: it must return a table of profiles"):format(path, type(value)))
  end
  local ok, message = only_data(value, "the profiles", {})
  if not ok then
    return fail(("profiles: %s: %s"):format(path, message))
  end
  for name, p in pairs(value) do
    if type(name) ~= "string" or not name:match "^[%w_.%-]+$" then
      return fail(("profiles: %s: %s is not a profile name (letters, digits, _ . -)"):format(path, tostring(name)))
    end
    ok, message = check_profile(name, p)
    if not ok then
      return fail(("profiles: %s: %s"):format(path, message))
    end
  end
  return value
end

-- The last line of a command's stderr with text, one line, printable, short,
-- and with no copy of what it printed on stdout (which may be a key).
local function said(stderr, printed)
  local last
  for line in stderr:gmatch "[^\r\n]+" do
    if line:match "%S" then
      last = line
    end
  end
  if not last then
    return ""
  end
  if printed and #printed >= 8 then
    local at = last:find(printed, 1, true)
    while at do
      last = last:sub(1, at - 1) .. "[redacted]" .. last:sub(at + #printed)
      at = last:find(printed, at + 10, true)
    end
  end
  last = text.printable(last)
  if #last > 200 then
    last = last:sub(1, 200) .. "..."
  end
  return ": " .. last
end

--- A profile's key: its key, or the first line of its key_command's stdout
-- (blanks around it dropped). nil, err when the command cannot run, fails
-- or prints no key; the message names the profile and the command, never
-- what it printed.
function M.key(name, profile)
  if profile.key then
    return profile.key
  end
  local kc = profile.key_command
  local argv = type(kc) == "string" and text.words(kc) or kc
  local shown = text.printable(table.concat(argv, " "))
  local where = ('profile "%s": key_command "%s"'):format(name, shown)
  local run, err = core.run_command(argv, nil, nil, M.KEY_TIMEOUT)
  if not run then
    return fail(("%s: %s"):format(where, err.message))
  end
  local first = run.stdout:match "^[^\n]*":match "^%s*(.-)%s*$"
  if run.interrupted then
    return nil, errors.new { kind = "interrupted", message = where .. ": interrupted" }
  end
  if run.timed_out then
    return fail(("%s did not finish within %g s (was it waiting for input it could not ask for?)")
      :format(where, M.KEY_TIMEOUT))
  end
  if run.status ~= 0 then
    local how = run.status and ("exited with status %d"):format(run.status)
      or run.signal and ("was killed by signal %d"):format(run.signal) or "ended with no exit status"
    return fail(("%s %s%s"):format(where, how, said(run.stderr, first)))
  end
  if first == "" then
    local what = run.stdout == "" and "printed nothing" or "printed no key on its first line"
    return fail(("%s %s (the key is the first line of its output)%s"):format(where, what, said(run.stderr, nil)))
  end
  return first
end

-- "a,b" or { "a", "b" } -> a list of names, or nil, err.
local function names_of(names)
  local list = {}
  if type(names) == "string" then
    for name in names:gmatch "[^,]+" do
      list[#list + 1] = name:match "^%s*(.-)%s*$"
    end
  elseif type(names) == "table" then
    for i, name in ipairs(names) do
      list[i] = name
    end
  end
  if #list == 0 then
    return fail "--profile: name a profile (or several: a,b)"
  end
  local seen = {}
  for _, name in ipairs(list) do
    if seen[name] then
      return fail(('--profile: "%s" is named twice: its organization would be counted twice'):format(name))
    end
    seen[name] = true
  end
  return list
end

local function sorted_names(profiles)
  local out = {}
  for name in pairs(profiles) do
    out[#out + 1] = name
  end
  table.sort(out)
  return #out > 0 and table.concat(out, ", ") or "none"
end

--- The named profiles, resolved: a list of { name, organization, key,
-- options (the client options: under, the profile's, over, its key and base
-- URL) }, or nil, err. names: "a,b" or a list. options: path (the file,
-- M.path's rules), under (client options a profile's own override: the
-- caller's defaults), over (options that override the profile's: the
-- command line's). Two profiles with one key or one label are refused: the
-- report would count one organization twice or merge two.
function M.resolve(names, options)
  options = options or {}
  local list, err = names_of(names)
  if not list then
    return nil, err
  end
  local path
  path, err = M.path(options.path)
  if not path then
    return nil, err
  end
  local profiles
  profiles, err = M.load(path)
  if not profiles then
    return nil, err
  end
  local out, by_label, by_key = {}, {}, {}
  for _, name in ipairs(list) do
    local p = profiles[name]
    if not p then
      return fail(('--profile: no profile "%s" in %s (its profiles: %s)'):format(name, path, sorted_names(profiles)))
    end
    local label = p.organization or name
    if by_label[label] then
      return fail(('profiles "%s" and "%s" have one organization label, "%s": a report by organization would merge '
        .. "them"):format(by_label[label], name, label))
    end
    by_label[label] = name
    local key
    key, err = M.key(name, p)
    if not key then
      return nil, err
    end
    if by_key[key] then
      return fail(('profiles "%s" and "%s" have the same key: that organization would be counted twice')
        :format(by_key[key], name))
    end
    by_key[key] = name
    local client = {}
    for k, v in pairs(options.under or {}) do
      client[k] = v
    end
    for k, v in pairs(p.options or {}) do
      client[k] = v
    end
    client.base_url = p.base_url or client.base_url
    for k, v in pairs(options.over or {}) do
      client[k] = v
    end
    client.api_key = key
    out[#out + 1] = { name = name, organization = label, options = client }
  end
  return out
end

--- Clients of the named profiles: a list of { name, organization, client }
-- (in the order named), or nil, err (nothing opened is left open). options
-- as M.resolve takes them. The sync (`sync --profile a,b`) loops over
-- these; reports join them (M.join).
function M.clients(names, options)
  local resolved, err = M.resolve(names, options)
  if not resolved then
    return nil, err
  end
  local usage = require "openai_usage"
  local out = {}
  for _, r in ipairs(resolved) do
    local client, cerr = usage.new(r.options)
    if not client then
      for _, m in ipairs(out) do
        m.client:close()
      end
      local message = type(cerr) == "table" and cerr.message or tostring(cerr)
      return nil, errors.new { kind = type(cerr) == "table" and cerr.kind or "usage", param = cerr and cerr.param,
        message = ('profile "%s": %s'):format(r.name, tostring(message)) }
    end
    -- whose usage the client reads, as the history store records it (the
    -- organization column) and reports group it: the profile's label
    client.organization = r.organization
    out[#out + 1] = { name = r.name, organization = r.organization, client = client }
  end
  return out
end

--- err as the error of a member (of M.clients): the same fields, the
-- message naming the profile (so a report that fails says which
-- organization failed).
function M.blame(member, err)
  local fields = {}
  if type(err) == "table" then
    for k, v in pairs(err) do
      fields[k] = v
    end
  else
    fields.message = tostring(err)
  end
  fields.kind = type(fields.kind) == "string" and fields.kind or "error"
  fields.message = ('profile "%s" (%s): %s'):format(member.name, member.organization, tostring(fields.message))
  fields.profile = member.name
  return errors.new(fields)
end

local function raise(member, err)
  error(M.blame(member, err), 0)
end

-- Closes what a generic for's fourth value holds (a walk left early).
local function close_value(value)
  local mt = value ~= nil and getmetatable(value)
  if type(mt) == "table" and mt.__close then
    mt.__close(value)
  end
end

local Joined = {}

--- One client over several organizations (members as M.clients gives
-- them): pages, buckets and results walk each member's in turn, every page
-- marked with its organization (page.organization) and every result row
-- stamped with it (row.organization). A member's walk that fails raises its
-- error with the profile named: no figures from the others are given as a
-- whole. close() closes every member. With one member, its client's other
-- methods are at hand too.
function M.join(members)
  local joined = { members = members }
  return setmetatable(joined, {
    __index = function(_, name)
      if Joined[name] then
        return Joined[name]
      end
      local only = #members == 1 and members[1].client
      local value = only and only[name]
      if type(value) == "function" then
        return function(_, ...)
          return value(only, ...)
        end
      end
      return value
    end,
  })
end

function Joined:pages(endpoint, params, options)
  local members, i, current, current_closer = self.members, 0, nil, nil
  local function next_page()
    while true do
      if not current then
        i = i + 1
        local member = members[i]
        if not member then
          return nil
        end
        local ok, iter, _, _, closer = pcall(member.client.pages, member.client, endpoint, params, options)
        if not ok then
          raise(member, iter)
        end
        current, current_closer = iter, closer
      end
      local ok, page = pcall(current)
      if not ok then
        raise(members[i], page)
      end
      if page == nil then
        current, current_closer = nil, nil
      else
        if type(page) == "table" then
          page.organization = members[i].organization
        end
        return page
      end
    end
  end
  local closer = setmetatable({}, { __close = function()
    close_value(current_closer)
  end })
  return next_page, nil, nil, closer
end

function Joined:buckets(endpoint, params, options)
  local next_page, _, _, closer = self:pages(endpoint, params, options)
  return walk.buckets(next_page), nil, nil, closer
end

function Joined:results(endpoint, params, options)
  local next_bucket, _, _, closer = self:buckets(endpoint, params, options)
  local organization
  local rows = walk.results(function()
    local bucket, page = next_bucket()
    organization = page and page.organization
    return bucket, page
  end)
  return function()
    local row, bucket = rows()
    if type(row) == "table" then
      row.organization = organization
    end
    return row, bucket
  end, nil, nil, closer
end

function Joined:close()
  for _, m in ipairs(self.members) do
    m.client:close()
  end
end

return M
