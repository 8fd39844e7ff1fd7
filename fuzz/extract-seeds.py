#!/usr/bin/env python3
"""Writes the decoder's seed corpus: every response and result example in the
upstream OpenAPI description, the seed document's example, and small pages
from bench/gen-page.lua. Needs python3-yaml. Run from the repository root:
    /usr/bin/python3 fuzz/extract-seeds.py ../shared
"""
import os
import subprocess
import sys

import yaml

shared = sys.argv[1] if len(sys.argv) > 1 else "../shared"
out = "fuzz/seeds/decode"
os.makedirs(out, exist_ok=True)


def write(name, text):
    with open(os.path.join(out, name), "w") as f:
        f.write(text)


def walk(node, path):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("response", "example") and isinstance(value, str) and value.lstrip().startswith("{"):
                write("upstream-%s.json" % "-".join(p for p in path if p)[-80:].replace("/", "_"), value)
            else:
                walk(value, path + [str(key)])
    elif isinstance(node, list):
        for i, value in enumerate(node):
            walk(value, path + [str(i)])


with open(os.path.join(shared, "upstream/openai-usage-openapi.yaml")) as f:
    walk(yaml.safe_load(f), [])

seed = open(os.path.join(shared, "seed/000_4c3ab4e76aa65678.txt")).read()
start = seed.index("Example:\n\n") + len("Example:\n\n")
write("seed-example.json", seed[start:seed.index("\nSCHEMAS")].strip() + "\n")

for buckets, per in ((2, 8), (10, 3), (5, 1)):
    page = subprocess.run(["lua5.4", "bench/gen-page.lua", str(buckets), str(per)], capture_output=True, check=True)
    write("gen-page-%dx%d.json" % (buckets, per), page.stdout.decode())
