"""Python with requests + json, as OpenAI's Usage API cookbook does it:
sums images by model over every page.
    python3 requests_json.py BASE_URL KEY START_TIME"""
import json
import sys

import requests

base_url, key, start = sys.argv[1:4]
headers = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}
params = {"start_time": int(start)}
totals, pages = {}, 0
while True:
    response = requests.get(base_url + "/organization/usage/images", headers=headers, params=params)
    response.raise_for_status()
    data = response.json()
    for bucket in data["data"]:
        for row in bucket["results"]:
            totals[row["model"]] = totals.get(row["model"], 0) + row["images"]
    pages += 1
    if not data["has_more"]:
        break
    params["page"] = data["next_page"]
print(json.dumps({"pages": pages, "totals": totals}))
