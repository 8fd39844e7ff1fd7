-- Run as a child process (Linux): makes a fresh random key, uses it for one
-- request to the stand-in at arg[1] (a libcurl client), closes the client,
-- drops every reference and collects; then reads its own writable mappings
-- (/proc/self/maps, /proc/self/mem) and prints what it finds, one line:
--   bearer N raw M
-- N: copies of "Bearer <key>", the form of every copy the C core and
-- libcurl make (the client's, its header list, libcurl's request buffer);
-- M: copies of the key in any form, which also counts the Lua strings that
-- held it (the option table's, the concatenation's), outside the library's
-- reach. Each needle is searched as two halves, the second checked where the
-- first ends, so that no string this script holds is itself a hit.
local usage = require "openai_usage"

local url, start_time = arg[1], tonumber(arg[2])

local function random_hex(bytes)
  local f = assert(io.open("/dev/urandom", "rb"))
  local raw = f:read(bytes)
  f:close()
  return (raw:gsub(".", function(ch)
    return ("%02x"):format(ch:byte())
  end))
end

-- the key's two halves stay; the key itself lives only inside use_key
local head, tail = "sk-admin-" .. random_hex(12), random_hex(24)

local function use_key()
  local c = assert(usage.new { api_key = head .. tail, base_url = url, max_retries = 0 })
  local page = c:images { start_time = start_time }
  assert(page == nil or type(page) == "table")
  c:close()
end
use_key()
collectgarbage "collect"
collectgarbage "collect"

-- Counts the places where first is followed by second in the writable
-- mappings; first's own string is followed by its NUL, so never counts.
local function count(first, second)
  local maps = assert(io.open "/proc/self/maps")
  local regions = {}
  for line in maps:lines() do
    local from, to, perms = line:match "^(%x+)-(%x+) (%S+)"
    from, to = tonumber(from, 16), tonumber(to, 16)
    -- past 1 GiB a mapping is a reservation, not a heap (ASan's shadow
    -- memory is terabytes of it, which reading would take hours)
    if perms:sub(1, 2) == "rw" and not line:find("[vvar]", 1, true) and to - from <= 1073741824 then
      regions[#regions + 1] = { from, to }
    end
  end
  maps:close()
  local mem = assert(io.open("/proc/self/mem", "rb"))
  local hits, chunk = 0, 1048576
  for _, r in ipairs(regions) do
    local at = r[1]
    while at < r[2] do
      local n = math.min(chunk + #first + #second, r[2] - at)
      local text = mem:seek("set", at) and mem:read(n)
      if not text then
        break
      end
      local pos = 1
      while true do
        local s, e = text:find(first, pos, true)
        if not s or s > chunk then
          break
        end
        if text:sub(e + 1, e + #second) == second then
          hits = hits + 1
        end
        pos = s + 1
      end
      at = at + chunk
    end
  end
  mem:close()
  return hits
end

io.write(("bearer %d raw %d\n"):format(count("Bearer " .. head, tail), count(head, tail)))
