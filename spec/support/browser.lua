-- An HTML or SVG file as headless Chromium shows it: its screenshot, the
-- pixels of colours in a picture (spec/support/png.py) and the DOM Chromium
-- builds from the file. The chart and forecast specs share these.
local cjson = require "cjson"
local util = require "spec.support.util"

local M = {}

local q = util.q

-- Debian's python3 (make deps installs it) starts fastest; $PYTHON overrides.
local PYTHON = os.getenv "PYTHON" or (util.read_if "/usr/bin/python3" and "/usr/bin/python3") or "python3"

-- Chromium's command line for a file; its profile goes in dir.
local function chromium(dir, args, path)
  return ("env -u LD_PRELOAD timeout 60 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars "
    .. "--force-device-scale-factor=1 --no-first-run --user-data-dir=%s %s %s"):format(q(dir .. "/profile"), args,
    q("file://" .. path))
end

--- A screenshot of a file, window w x h, written in dir (the caller's, which
-- it removes): the PNG's path.
function M.screenshot(path, w, h, dir)
  local png = dir .. "/shot.png"
  local out, ok = util.popen_run(chromium(dir, ("--screenshot=%s --window-size=%d,%d"):format(q(png), w, h), path))
  assert(ok and util.read_if(png), "chromium wrote no picture:\n" .. out:sub(-2000))
  return png
end

--- The DOM Chromium builds from a file, serialised (--dump-dom); its
-- profile goes in dir.
function M.dom(path, dir)
  return util.capture(chromium(dir, "--dump-dom", path) .. " 2>/dev/null")
end

--- What png.py finds in a picture: size, background, the colours seen and
-- counts of the colours asked for (within tolerance, default png.py's),
-- in region { x0, y0, x1, y1 } when given.
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
  local out, ok = util.popen_run(("env -u LD_PRELOAD %s spec/support/png.py %s %s"):format(PYTHON, q(png),
    table.concat(args, " ")))
  local decoded, stats = pcall(cjson.decode, out)
  assert(ok and decoded and not stats.error, "png.py: " .. out)
  return stats
end

return M
