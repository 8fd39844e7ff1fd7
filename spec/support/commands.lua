-- Running the command line inside the suite's own interpreter (cli.run,
-- with a frozen now and a client of a stand-in: real libcurl, real
-- files), for the analysis commands' specs, whose days depend on now.
local util = require "spec.support.util"

local M = {}

local read = util.read

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

return M
