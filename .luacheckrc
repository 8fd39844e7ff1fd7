-- luacheck (Debian lua-check) over the Lua the project ships and tests:
-- make lint runs `luacheck .` from the root, which reads this file.
-- The code runs on Lua 5.1 to 5.4 and LuaJIT: "max" allows the globals of
-- any of them (code that needs one picks it at run time).
std = "max"
include_files = { "lua/**/*.lua", "bin/*.lua", "bin/openai-usage", "plugin/*.lua", "spec/**/*.lua" }
exclude_files = { "build/" }

-- the hosts' globals, where the code runs inside them (Neovim's buffer
-- options are set through vim.bo, so vim is writable there)
files["lua/openai_usage/nvim.lua"] = { globals = { "vim" } }
files["lua/openai_usage/health.lua"] = { read_globals = { "vim" } }
files["plugin/"] = { globals = { "vim" } }
files["lua/openai_usage/transport/"] = { read_globals = { "ngx" } }
-- /metrics sets ngx.status and ngx.header
files["lua/openai_usage/metrics/"] = { globals = { "ngx" } }
files["spec/"] = { std = "+busted" }
