-- Images of the last 7 days by model: the top 3 and the rest, with shares.
-- Run: OPENAI_ADMIN_KEY=sk-admin-... lua5.4 examples/plain/report.lua
local usage = require "openai_usage"
local report = require "openai_usage.report"

local client = assert(usage.new()) -- key and base URL from the environment
local rows = report.rows(client:results("images", {
  start_time = report.time "7d",
  bucket_width = "1d",
  group_by = { "model" },
}))
local by_model = report.group(rows, "model", { "images", "num_model_requests" })
local top = report.share(report.top(by_model, 3, "images"), "images", "share")
io.write(report.format(top, "table", { total = true }))
client:close()
