-- Running the command line inside the suite's own interpreter (cli.run,
-- with a frozen now and a client of a stand-in: real libcurl, real
-- files), and looking at an HTML report in headless Chromium: its
-- screenshot, the pixels of colours in it (spec/support/png.py) and the DOM
-- it builds.
local cjson = require "cjson"
local util = require "spec.support.util"

local M = {}

local q, read = util.q, util.read

--- Runs `openai-usage argv...` through cli.run at now, against srv: its
-- stdout, stderr and exit code.
function M.run(srv, argv, now)
  local cli = require "openai_usage.cli"
  local base = os.tmpname()
  local stdout, stderr = assert(io.open(base .. ".out", "w+b")), assert(io.open(base .. ".err", "w+b"))
  local code = cli.run(argv, { now = now, stdout = stdout, stderr = stderr, client = srv:client_options() })
  stdout:close()
  stderr:close()
  local out, err = read(base .. ".out"), read(base .. ".err")
  os.remove(base .. ".out")
  os.remove(base .. ".err")
  os.remove(base)
  return out, err, code
end

local function chromium(dir, args, target)
  return ("env -u LD_PRELOAD timeout 60 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars "
    .. "--force-device-scale-factor=1 --no-first-run --user-data-dir=%s %s %s 2>/dev/null")
    :format(q(dir .. "/profile"), args, q("file://" .. target))
end

--- A screenshot by headless Chromium of a file, window w x h: the PNG's path.
function M.screenshot(path, w, h)
  local dir = util.tmpdir()
  local png = dir .. "/shot.png"
  local out, ok = util.popen_run(chromium(dir, ("--screenshot=%s --window-size=%d,%d"):format(q(png), w, h), path))
  assert(ok and util.read_if(png), "chromium wrote no picture:\n" .. out:sub(-2000))
  return png
end

--- The DOM Chromium builds from a file, serialised (--dump-dom).
function M.dom(path)
  local dir = util.tmpdir()
  local out = util.capture(chromium(dir, "--dump-dom", path))
  util.rm_rf(dir)
  return out
end

--- What spec/support/png.py finds in a picture: counts of the colours
-- asked for (within tolerance), in region {x0, y0, x1, y1} when given.
function M.pixels(png, colors, region, tolerance)
  local args = {}
  for _, c in ipairs(colors or {}) do
    args[#args + 1] = "--color " .. c:gsub("#", "")
  end
  if region then
    args[#args + 1] = "--region " .. table.concat(region, ",")
  end
  if tolerance then
    args[#args + 1] = "--tolerance " .. tolerance
  end
  local python = os.getenv "PYTHON" or "python3"
  local out = util.capture(("env -u LD_PRELOAD %s spec/support/png.py %s %s"):format(python, q(png),
    table.concat(args, " ")))
  local ok, stats = pcall(cjson.decode, out)
  assert(ok and not stats.error, "png.py: " .. out)
  return stats
end

return M
