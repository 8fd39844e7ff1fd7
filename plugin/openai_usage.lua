-- openai-usage for Neovim: :OpenAIUsage [args] reads the OpenAI organization
-- Usage API without freezing the editor and opens the report in a scratch
-- buffer (openai-usage://ENDPOINT). The arguments are the command line's
-- (see `:OpenAIUsage --help`), e.g.
--   :OpenAIUsage images --since 7d --bucket 1d --group-by model
--   :vertical OpenAIUsage completions --since 24h --bucket 1h --format md
--   :OpenAIUsage!          cancels the reports still loading
--
-- Setup: put this repository on 'runtimepath' (a plugin manager, or
-- vim.opt.runtimepath:append "/path/to/openai-usage"; examples/neovim/init.lua)
-- and build the C module once for Neovim's LuaJIT, in the repository:
--   make LUA_VERSION=5.1 LUA=luajit OUTDIR=build/luajit
-- This file puts build/luajit (and build/5.1) on package.cpath; a module
-- installed in a LuaJIT tree (make install LUA_VERSION=5.1) is found as well.
--
-- Key: a profile (require("openai_usage.nvim").setup { profile = NAME }, or
-- --profile NAME), else vim.g.openai_usage_api_key (a string, or a function
-- returning one), else $OPENAI_ADMIN_KEY. Base URL: --base-url, else
-- vim.g.openai_usage_base_url, else $OPENAI_BASE_URL, else the API's.
-- The key never appears in a message.
if vim.g.loaded_openai_usage then
  return
end
vim.g.loaded_openai_usage = 1

-- the repository this file sits in: <root>/plugin/openai_usage.lua
local root = vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h:h")
for _, dir in ipairs { "/build/5.1/?.so;", "/build/luajit/?.so;" } do
  if not package.cpath:find(root .. dir, 1, true) then
    package.cpath = root .. dir .. package.cpath
  end
end

-- The module, or nil after saying how to build it.
local function module()
  local ok, nvim = pcall(require, "openai_usage.nvim")
  if ok then
    return nvim
  end
  local missing = tostring(nvim):find("openai_usage.core", 1, true)
  vim.notify("openai-usage: " .. (missing
    and ("the C module is not built for Neovim's LuaJIT: run `make LUA_VERSION=5.1 LUA=luajit OUTDIR=build/luajit` in "
      .. root)
    or tostring(nvim):gsub("[\r\n]+", " ")), vim.log.levels.ERROR)
end

vim.api.nvim_create_user_command("OpenAIUsage", function(cmd)
  local nvim = module()
  if nvim then
    nvim.command(cmd)
  end
end, {
  nargs = "*",
  bang = true,
  desc = "OpenAI usage report in a scratch buffer (! cancels)",
  complete = function(arglead, line)
    local nvim = module()
    return nvim and nvim.complete(arglead, line) or {}
  end,
})
