-- Reads a Prometheus text exposition (0.0.4) or OpenMetrics text back for
-- the specs, independently of openai_usage.metrics: a strict reader of the
-- lines the formats allow, raising on anything else. Runs on Lua 5.4, 5.3,
-- 5.1 and LuaJIT.
local M = {}

local UNESCAPE = { ["\\"] = "\\", ['"'] = '"', n = "\n" }

-- The labels of a sample from position i of line (just after "{"): a list
-- of {name, value} and the position after "}".
local function read_labels(line, i)
  local labels = {}
  while true do
    if line:sub(i, i) == "}" then
      return labels, i + 1
    end
    local name, after = line:match("^([%a_][%w_]*)=\"()", i)
    assert(name, "bad label at byte " .. i .. ": " .. line)
    i = after
    local value = {}
    while true do
      local c = line:sub(i, i)
      assert(c ~= "", "unterminated label value: " .. line)
      if c == "\\" then
        local e = UNESCAPE[line:sub(i + 1, i + 1)]
        assert(e, "bad escape in a label value: " .. line)
        value[#value + 1] = e
        i = i + 2
      elseif c == '"' then
        i = i + 1
        break
      else
        value[#value + 1] = c
        i = i + 1
      end
    end
    labels[#labels + 1] = { name, table.concat(value) }
    if line:sub(i, i) == "," then
      i = i + 1
    end
  end
end

--- The families and samples of an exposition: { families = { name ->
-- {help, type, unit} }, order = { family names as they came }, samples = {
-- {name, labels = {{k, v}...}, value (number), line} }, eof = true when it
-- ended with # EOF }.
function M.parse(text)
  assert(text:sub(-1) == "\n", "an exposition ends with a line feed")
  local out = { families = {}, order = {}, samples = {} }
  for line in text:gmatch "([^\n]*)\n" do
    assert(not out.eof, "a line after # EOF: " .. line)
    local kind, name, rest = line:match "^# (%u+) ([%a_:][%w_:]*) ?(.*)$"
    if line == "# EOF" then
      out.eof = true
    elseif kind then
      local f = out.families[name]
      if not f then
        f = {}
        out.families[name] = f
        out.order[#out.order + 1] = name
      end
      assert(kind == "HELP" or kind == "TYPE" or kind == "UNIT", "unknown comment: " .. line)
      assert(f[kind:lower()] == nil, "a second # " .. kind .. " for " .. name)
      f[kind:lower()] = rest
    else
      local metric, after = line:match "^([%a_:][%w_:]*)()"
      assert(metric, "not a sample line: " .. line)
      local labels = {}
      if line:sub(after, after) == "{" then
        labels, after = read_labels(line, after + 1)
      end
      local value = line:match("^ (%S+)$", after)
      assert(value, "a sample without one value (or with a timestamp): " .. line)
      local number = ({ NaN = 0 / 0, ["+Inf"] = math.huge, ["-Inf"] = -math.huge })[value] or tonumber(value)
      assert(number, "not a number: " .. line)
      out.samples[#out.samples + 1] = { name = metric, labels = labels, value = number, line = line }
    end
  end
  return out
end

--- The label value of a sample, or nil.
function M.label(sample, name)
  for _, l in ipairs(sample.labels) do
    if l[1] == name then
      return l[2]
    end
  end
end

--- The samples of family name whose labels include every pair of want.
function M.find(parsed, name, want)
  local out = {}
  for _, s in ipairs(parsed.samples) do
    if s.name == name then
      local ok = true
      for k, v in pairs(want or {}) do
        if M.label(s, k) ~= v then
          ok = false
        end
      end
      if ok then
        out[#out + 1] = s
      end
    end
  end
  return out
end

--- The value of the one sample of family name with labels want; an error
-- when there are none or several.
function M.value(parsed, name, want)
  local found = M.find(parsed, name, want)
  assert(#found == 1, ("%d samples of %s match"):format(#found, name))
  return found[1].value
end

return M
