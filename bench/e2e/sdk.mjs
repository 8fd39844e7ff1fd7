// The official OpenAI Node SDK, paging by hand: sums images by model.
//   node sdk.mjs BASE_URL KEY START_TIME
import OpenAI from "openai";

const [baseURL, key, start] = process.argv.slice(2);
const client = new OpenAI({ apiKey: "unused", adminAPIKey: key, baseURL, maxRetries: 0 });
const totals = {};
let pages = 0;
let page;
do {
  const r = await client.admin.organization.usage.images({ start_time: Number(start), ...(page ? { page } : {}) });
  for (const bucket of r.data) for (const row of bucket.results) totals[row.model] = (totals[row.model] || 0) + row.images;
  pages++;
  page = r.has_more ? r.next_page : undefined;
} while (page);
console.log(JSON.stringify({ pages, totals }));
