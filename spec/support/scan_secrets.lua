-- Scans what the suite printed for every API key the specs use: the keys
-- are the "sk-..." literals in spec/*.lua; none may appear in the output.
--   lua5.4 spec/support/scan_secrets.lua OUTPUT_FILE
local output_path = assert(arg[1], "usage: scan_secrets.lua OUTPUT_FILE")

local keys, count = {}, 0
local ls = assert(io.popen "ls spec/*.lua")
for path in ls:lines() do
  local f = assert(io.open(path))
  for key in f:read("*a"):gmatch "[\"'](sk%-[%w%-]+)[\"']" do
    if #key >= 12 and not keys[key] then
      keys[key] = true
      count = count + 1
    end
  end
  f:close()
end
ls:close()

local f = assert(io.open(output_path, "rb"))
local output = f:read "*a"
f:close()

local leaks = 0
for key in pairs(keys) do
  local at = output:find(key, 1, true)
  if at then
    leaks = leaks + 1
    local line = select(2, output:sub(1, at):gsub("\n", "")) + 1
    io.stderr:write(("secrets scan: a key (%s...) appears at line %d of the output\n"):format(key:sub(1, 8), line))
  end
end
if count == 0 then
  io.stderr:write "secrets scan: found no keys in spec/*.lua to look for\n"
  os.exit(1)
end
print(("secrets scan: %d keys looked for in %d bytes of output: %s"):format(count, #output,
  leaks == 0 and "none found" or (leaks .. " found")))
os.exit(leaks == 0 and 0 or 1)
