-- openai-usage check --budgets examples/budgets.lua: budgets as Lua data
-- (loaded with no globals: no io, os or require). Amounts in US dollars.
return {
  { amount = 500 }, -- the organization, per calendar month (UTC)
  { name = "team atlas", amount = 100, scope = "project_id", id = "proj_atlas", period = "week",
    offset = "+02:00", threshold = 0.8 },
  { amount = 20, scope = "api_key_id", period = "day" },
}
