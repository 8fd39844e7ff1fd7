#!/usr/bin/env lua5.4
-- Writes the release rockspec from rockspec/openai-usage-scm-1.rockspec and
-- the version the module reports (OU_VERSION in src/, which core.version
-- and the User-Agent read): the same modules, sources and build, only the
-- version and the release tag differ, so the two never drift. The output
-- is committed, and spec/install_spec.lua checks it is what this writes.
--   lua5.4 tools/gen-rockspec.lua [OUT]
-- run from the repository's root; OUT defaults to
-- rockspec/openai-usage-VERSION-1.rockspec.

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read "*a"
  f:close()
  return text
end

-- The one definition of OU_VERSION among the C sources.
local function source_version()
  local found = {}
  local list = assert(io.popen "ls src/*.h src/*.c")
  for path in list:lines() do
    for version in read(path):gmatch '#define OU_VERSION "([^"]+)"' do
      found[#found + 1] = { path = path, version = version }
    end
  end
  list:close()
  assert(#found == 1, ("expected one #define OU_VERSION in src/, found %d"):format(#found))
  assert(found[1].version:match "^%d+%.%d+%.%d+$", found[1].path .. ": OU_VERSION is not MAJOR.MINOR.PATCH")
  return found[1].version
end

-- text with pattern replaced exactly once, or an error naming what
local function once(text, pattern, replacement, what)
  local out, n = text:gsub(pattern, replacement)
  assert(n == 1, ("scm-1 rockspec: expected one %s, found %d"):format(what, n))
  return out
end

local version = source_version()
local scm = read "rockspec/openai-usage-scm-1.rockspec"
local release = once(scm, '\nversion = "scm%-1"\n', ('\nversion = "%s-1"\n'):format(version), 'version = "scm-1"')
release = once(release, "\nsource = {\n(.-)\n}\n", function(body)
  return ("\nsource = {\n%s\n  tag = \"v%s\",\n}\n"):format(body, version)
end, "source table")
release = "-- Generated from openai-usage-scm-1.rockspec and OU_VERSION by tools/gen-rockspec.lua: edit those.\n"
  .. release

local out = arg[1] or ("rockspec/openai-usage-%s-1.rockspec"):format(version)
local f = assert(io.open(out, "wb"))
f:write(release)
f:close()
