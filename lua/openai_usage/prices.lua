-- Image generation prices per image, in US dollars, as OpenAI's pricing
-- page listed them on the date below. The Usage API reports images by model
-- and size but not by quality, so an estimate assumes one quality
-- (default_quality, or the CLI's --quality). Copy this file, edit it and
-- pass it with --prices FILE (or cost.load(path)) to use other figures.
-- gpt-image-1 is priced at its own sizes (1024x1024, 1024x1536, 1536x1024);
-- a row it reports as "auto" has no price here, since the row does not say
-- which size was made: the estimate counts those images as unpriced and
-- says so, rather than guess.
return {
  date = "2025-10-06",
  source = "https://openai.com/api/pricing/ (image generation, price per image)",
  currency = "usd",
  default_quality = "medium",
  -- For a model without the assumed quality, the nearest one it has.
  quality_fallback = {
    low = { "standard" },
    medium = { "standard" },
    high = { "hd", "standard" },
    standard = { "medium" },
    hd = { "high" },
  },
  images = {
    ["gpt-image-1"] = {
      low = { ["1024x1024"] = 0.011, ["1024x1536"] = 0.016, ["1536x1024"] = 0.016 },
      medium = { ["1024x1024"] = 0.042, ["1024x1536"] = 0.063, ["1536x1024"] = 0.063 },
      high = { ["1024x1024"] = 0.167, ["1024x1536"] = 0.25, ["1536x1024"] = 0.25 },
    },
    ["gpt-image-1-mini"] = {
      low = { ["1024x1024"] = 0.005, ["1024x1536"] = 0.006, ["1536x1024"] = 0.006 },
      medium = { ["1024x1024"] = 0.011, ["1024x1536"] = 0.015, ["1536x1024"] = 0.015 },
      high = { ["1024x1024"] = 0.036, ["1024x1536"] = 0.052, ["1536x1024"] = 0.052 },
    },
    ["dall-e-3"] = {
      standard = { ["1024x1024"] = 0.04, ["1024x1792"] = 0.08, ["1792x1024"] = 0.08 },
      hd = { ["1024x1024"] = 0.08, ["1024x1792"] = 0.12, ["1792x1024"] = 0.12 },
    },
    ["dall-e-2"] = {
      standard = { ["256x256"] = 0.016, ["512x512"] = 0.018, ["1024x1024"] = 0.02 },
    },
  },
}
