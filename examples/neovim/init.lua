-- ~/.config/nvim/init.lua: the openai-usage plugin from a clone of the
-- repository (build its module once: make LUA_VERSION=5.1 LUA=luajit OUTDIR=build/luajit).
local clone = os.getenv "OPENAI_USAGE_DIR" or vim.fn.expand "~/src/openai-usage"
vim.opt.runtimepath:append(clone)

-- The admin key: $OPENAI_ADMIN_KEY is read by default; or name it here,
-- e.g. from a password manager:
-- vim.g.openai_usage_api_key = function() return vim.fn.system({ "pass", "openai/admin" }):gsub("%s+$", "") end

-- Or a profile of ~/.config/openai-usage/profiles.lua (key or key_command,
-- base URL, client options; see the README's Profiles):
-- require("openai_usage.nvim").setup { profile = "acme" }

-- <leader>ou: images of the last 7 days by model, in a split
vim.keymap.set("n", "<leader>ou", "<cmd>OpenAIUsage images --since 7d --bucket 1d --group-by model<cr>")
