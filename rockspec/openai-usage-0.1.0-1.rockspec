-- Generated from openai-usage-scm-1.rockspec and OU_VERSION by tools/gen-rockspec.lua: edit those.
rockspec_format = "3.0"
package = "openai-usage"
version = "0.1.0-1"
source = {
  url = "git+file://.",
  tag = "v0.1.0",
}
description = {
  summary = "Read the OpenAI organization Usage API from Lua, with a C core on libcurl",
  detailed = [[
    A client for GET /v1/organization/usage/images and the other usage
    endpoints and costs: parameters validated and encoded in C from one rule
    table generated from the OpenAPI description, libcurl with keep-alive,
    gzip, timeouts and SDK-style retries, a one-pass JSON decoder straight
    into Lua tables that keeps integers exact; report steps, text, CSV, JSON,
    SVG and HTML output, and the openai-usage command.
  ]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.1",
}
external_dependencies = {
  -- by library only: Debian keeps curl/curl.h in the multiarch include
  -- directory, which LuaRocks' header probe does not search (the compiler does)
  CURL = {
    library = "curl",
  },
  -- the history store (openai_usage.store) links libsqlite3
  SQLITE = {
    header = "sqlite3.h",
    library = "sqlite3",
  },
}
build = {
  type = "builtin",
  modules = {
    ["openai_usage"] = "lua/openai_usage/init.lua",
    ["openai_usage.analysis"] = "lua/openai_usage/analysis.lua",
    ["openai_usage.async"] = "lua/openai_usage/async.lua",
    ["openai_usage.budget"] = "lua/openai_usage/budget.lua",
    ["openai_usage.cache"] = "lua/openai_usage/cache.lua",
    ["openai_usage.chart"] = "lua/openai_usage/chart.lua",
    ["openai_usage.cli"] = "lua/openai_usage/cli.lua",
    ["openai_usage.cmd.anomalies"] = "lua/openai_usage/cmd/anomalies.lua",
    ["openai_usage.cmd.args"] = "lua/openai_usage/cmd/args.lua",
    ["openai_usage.cmd.check"] = "lua/openai_usage/cmd/check.lua",
    ["openai_usage.cmd.compare"] = "lua/openai_usage/cmd/compare.lua",
    ["openai_usage.cmd.metrics"] = "lua/openai_usage/cmd/metrics.lua",
    ["openai_usage.cmd.reconcile"] = "lua/openai_usage/cmd/reconcile.lua",
    ["openai_usage.cmd.sync"] = "lua/openai_usage/cmd/sync.lua",
    ["openai_usage.cost"] = "lua/openai_usage/cost.lua",
    ["openai_usage.daily"] = "lua/openai_usage/daily.lua",
    ["openai_usage.directory"] = "lua/openai_usage/directory.lua",
    ["openai_usage.directory_schema"] = "lua/openai_usage/directory_schema.lua",
    ["openai_usage.errors"] = "lua/openai_usage/errors.lua",
    ["openai_usage.forecast"] = "lua/openai_usage/forecast.lua",
    ["openai_usage.format"] = "lua/openai_usage/format.lua",
    ["openai_usage.health"] = "lua/openai_usage/health.lua",
    ["openai_usage.html"] = "lua/openai_usage/html.lua",
    ["openai_usage.job"] = "lua/openai_usage/job.lua",
    ["openai_usage.json"] = "lua/openai_usage/json.lua",
    ["openai_usage.metrics"] = "lua/openai_usage/metrics.lua",
    ["openai_usage.metrics.resty"] = "lua/openai_usage/metrics/resty.lua",
    ["openai_usage.names"] = "lua/openai_usage/names.lua",
    ["openai_usage.nvim"] = "lua/openai_usage/nvim.lua",
    ["openai_usage.prices"] = "lua/openai_usage/prices.lua",
    ["openai_usage.profiles"] = "lua/openai_usage/profiles.lua",
    ["openai_usage.protocol"] = "lua/openai_usage/protocol.lua",
    ["openai_usage.reconcile"] = "lua/openai_usage/reconcile.lua",
    ["openai_usage.report"] = "lua/openai_usage/report.lua",
    ["openai_usage.store"] = "lua/openai_usage/store.lua",
    ["openai_usage.store_schema"] = "lua/openai_usage/store_schema.lua",
    ["openai_usage.svg"] = "lua/openai_usage/svg.lua",
    ["openai_usage.sync"] = "lua/openai_usage/sync.lua",
    ["openai_usage.text"] = "lua/openai_usage/text.lua",
    ["openai_usage.time"] = "lua/openai_usage/time.lua",
    ["openai_usage.transport"] = "lua/openai_usage/transport.lua",
    ["openai_usage.transport.resty"] = "lua/openai_usage/transport/resty.lua",
    ["openai_usage.transport.store"] = "lua/openai_usage/transport/store.lua",
    ["openai_usage.walk"] = "lua/openai_usage/walk.lua",
    ["openai_usage.core"] = {
      sources = {
        "src/buf.c",
        "src/client.c",
        "src/core.c",
        "src/curl_api.c",
        "src/decode.c",
        "src/error.c",
        "src/fs.c",
        "src/lua_transport.c",
        "src/options.c",
        "src/outcome.c",
        "src/query.c",
        "src/request.c",
        "src/response.c",
        "src/retry.c",
        "src/rules.c",
        "src/rules_table.c",
        "src/secret.c",
        "src/transfer.c",
      },
      defines = { "_GNU_SOURCE" },
      -- libcurl itself is loaded at run time (src/curl_api.c)
      libraries = { "dl", "m", "pthread" },
      incdirs = { "$(CURL_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)" },
    },
    ["openai_usage.sqlite"] = {
      sources = { "src/sqlite.c" },
      libraries = { "sqlite3" },
      incdirs = { "$(SQLITE_INCDIR)" },
      libdirs = { "$(SQLITE_LIBDIR)" },
    },
  },
  install = {
    bin = {
      ["openai-usage"] = "bin/openai-usage",
    },
  },
}
test_dependencies = {
  "busted",
  "lua-cjson",
}
test = {
  type = "busted",
}
