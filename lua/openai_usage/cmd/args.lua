--- The arguments of a command (openai-usage check, reconcile): words into
-- fields by the command's option list, and its --help from the same list.
-- An option is { names = { "--budget" }, arg = "USD" (none for a flag),
-- key = the field it sets, help = text }.
local errors = require "openai_usage.errors"

local M = {}

--- A bad argument: the one error value, kind "usage" (exit 2).
function M.fail(message)
  return nil, errors.new { kind = "usage", message = message }
end

--- The options every command that reads the API shares.
M.CLIENT = {
  { names = { "--base-url" }, arg = "URL", key = "base_url",
    help = "API base (default $OPENAI_BASE_URL or https://api.openai.com/v1)" },
  { names = { "--db" }, arg = "FILE", key = "db", help = "read the history store FILE (openai-usage sync)" },
  { names = { "--timeout" }, arg = "SECONDS", key = "timeout", help = "give up an attempt after that long" },
  { names = { "-h", "--help" }, key = "help", help = "this help" },
}

--- fields from argv by options (a list of lists of options): { [key] =
-- value or true }, or nil, err. A value may follow as the next word or
-- after "=".
function M.read(argv, lists)
  local by_name = {}
  for _, list in ipairs(lists) do
    for _, o in ipairs(list) do
      for _, name in ipairs(o.names) do
        by_name[name] = o
      end
    end
  end
  local fields, i = {}, 1
  while i <= #argv do
    local word = argv[i]
    local name, inline = word:match "^(%-%-[%w%-]+)=(.*)$"
    name = name or word
    local o = by_name[name]
    if not o then
      if word:sub(1, 1) == "-" then
        return M.fail(('unknown option "%s" (see --help)'):format(word))
      end
      return M.fail(('unexpected argument "%s" (see --help)'):format(word))
    end
    if not o.arg then
      if inline ~= nil then
        return M.fail(name .. ": takes no value")
      end
      fields[o.key] = true
    else
      local value = inline
      if value == nil then
        i = i + 1
        value = argv[i]
        if value == nil then
          return M.fail(name .. ": needs a value")
        end
      end
      fields[o.key] = value
    end
    i = i + 1
  end
  return fields
end

--- A number from an option's text, or nil, err.
function M.number(option, text, what)
  local n = tonumber(text)
  if not n or n ~= n or n == math.huge or n == -math.huge then
    return M.fail(('%s: "%s" is not %s'):format(option, tostring(text), what))
  end
  return n
end

--- The help of a command: its usage line, what it does, its options.
function M.help(usage_line, about, lists, trailer)
  local lines = { "usage: " .. usage_line, "" }
  for _, line in ipairs(about) do
    lines[#lines + 1] = line
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "options:"
  for _, list in ipairs(lists) do
    for _, o in ipairs(list) do
      local left = table.concat(o.names, ", ") .. (o.arg and " " .. o.arg or "")
      local first = true
      for line in (o.help .. "\n"):gmatch "(.-)\n" do
        lines[#lines + 1] = ("  %-22s %s"):format(first and left or "", line)
        first = false
      end
    end
  end
  for _, line in ipairs(trailer or {}) do
    lines[#lines + 1] = line
  end
  return table.concat(lines, "\n") .. "\n"
end

--- Writes text to options.stdout (default io.stdout): the exit code of ok,
-- or of a failed write (after saying why on stderr).
function M.output(cli, options, text, ok_code)
  local stderr = options.stderr or io.stderr
  local written, err = cli.write_stream(options.stdout or io.stdout, text)
  if not written then
    stderr:write("openai-usage: cannot write to stdout: ", tostring(err), "\n")
    return cli.EXIT.output
  end
  return ok_code or cli.EXIT.ok
end

return M
