#!/usr/bin/env python3
"""The project's stand-in for the OpenAI organization Usage API.

A real HTTP/1.1 server (keep-alive, gzip) on 127.0.0.1 that answers every
usage endpoint (GET /v1/organization/usage/images, .../completions, ...) and
GET /v1/organization/costs like the API does, for one synthetic organization
whose usage is a pure function of absolute time and whose costs follow from
that usage, plus a control plane under /__standin/ that tests use to inject
faults and to read back every request received. The request rules and result
fields come from endpoints.json, which tools/gen-rules.lua writes from the
OpenAPI description. Standard library only. See standin/README.md.
"""

import argparse
import base64
import gzip
import itertools
import json
import os
import secrets
import select
import socket
import ssl
import struct
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote_plus

from directory import LOOPS, Directory

HISTORY_DAYS = 90
MIB = 1 << 20
GIB = 1 << 30

MODELS = ["dall-e-2", "dall-e-3", "gpt-image-1"]
SIZES = ["256x256", "512x512", "1024x1024", "1792x1792", "1024x1792"]
# gpt-image-1 makes its own sizes, which the description's list (DALL-E's)
# lacks: the API's vocabulary grows faster than its description.
GPT_IMAGE_SIZES = ["1024x1024", "1024x1536", "1536x1024", "auto"]
# Values the API knows beyond the described ones, per list parameter: a
# filter by them is answered; any other unknown value is still a 400.
UNDESCRIBED_VALUES = {"sizes": GPT_IMAGE_SIZES}
SOURCES = ["image.generation", "image.edit", "image.variation"]
CHAT_MODELS = ["gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18", "gpt-4.1-2025-04-14", "o3-mini-2025-01-31"]
EMBEDDING_MODELS = ["text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"]
MODERATION_MODELS = ["omni-moderation-latest", "text-moderation-latest"]
SPEECH_MODELS = ["tts-1", "tts-1-hd", "gpt-4o-mini-tts"]
TRANSCRIPTION_MODELS = ["whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"]
SERVICE_TIERS = ["default", "default", "flex", "priority"]
CONTEXT_LEVELS = ["low", "medium", "high"]

# The stand-in's price table, from which its costs follow (see README.md).
# Illustrative figures in US dollars, not OpenAI's price list; served as is
# by GET /__standin/prices so that tests derive costs from usage themselves.
PRICES = {
    "currency": "usd",
    "images": {
        "line_item": "Image models", "unit": "images",
        "per_image": {
            "dall-e-2": {"256x256": 0.016, "512x512": 0.018, "1024x1024": 0.02, "1792x1792": 0.03,
                         "1024x1792": 0.025},
            "dall-e-3": {"1024x1024": 0.04, "1792x1792": 0.08, "1024x1792": 0.08},
            "gpt-image-1": {"1024x1024": 0.042, "1024x1536": 0.063, "1536x1024": 0.063, "auto": 0.042},
        },
    },
    "completions": {
        "line_items": ["{model}, input", "{model}, cached input", "{model}, output"],
        "batch_line_items": ["{model}, batch input", "{model}, batch cached input", "{model}, batch output"],
        "unit": "tokens", "batch_factor": 0.5,
        "per_million_tokens": {
            "gpt-4o-2024-08-06": {"input": 2.5, "cached input": 1.25, "output": 10.0},
            "gpt-4o-mini-2024-07-18": {"input": 0.15, "cached input": 0.075, "output": 0.6},
            "gpt-4.1-2025-04-14": {"input": 2.0, "cached input": 0.5, "output": 8.0},
            "o3-mini-2025-01-31": {"input": 1.1, "cached input": 0.55, "output": 4.4},
        },
    },
    "embeddings": {
        "line_item": "{model}, input", "unit": "tokens",
        "per_million_tokens": {"text-embedding-3-small": 0.02, "text-embedding-3-large": 0.13,
                               "text-embedding-ada-002": 0.1},
    },
    "moderations": {"free": True},
    "audio_speeches": {
        "line_item": "{model}, characters", "unit": "characters",
        "per_million_characters": {"tts-1": 15.0, "tts-1-hd": 30.0, "gpt-4o-mini-tts": 12.0},
    },
    "audio_transcriptions": {
        "line_item": "{model}, audio", "unit": "duration_minutes",
        "per_minute": {"whisper-1": 0.006, "gpt-4o-transcribe": 0.006, "gpt-4o-mini-transcribe": 0.003},
    },
    "web_search_calls": {"line_item": "Web search tool calls", "unit": None, "per_call": 0.01},
    "file_search_calls": {"line_item": "File search tool calls", "unit": None, "per_call": 0.0025},
    "code_interpreter_sessions": {"line_item": "Code interpreter sessions", "unit": None, "per_session": 0.03},
    "vector_stores": {"line_item": "Vector store storage", "unit": "gibibyte_hours", "per_gibibyte_day": 0.1},
}


class Endpoint:
    """One endpoint's rules and result fields, as tools/gen-rules.lua wrote
    them from the OpenAPI description into endpoints.json."""

    def __init__(self, spec):
        self.name = spec["name"]
        self.path = "/v1" + spec["path"]
        self.result = spec["result"]
        self.default_width = spec["default_width"]
        self.width_names = [w["name"] for w in spec["widths"]]
        self.widths = {w["name"]: (w["seconds"], w["default_limit"], w["max_limit"]) for w in spec["widths"]}
        self.params = {p["name"]: p for p in spec["params"]}
        self.list_params = {p["name"]: p.get("values") for p in spec["params"] if p["kind"] == "list"}
        for name, extra in UNDESCRIBED_VALUES.items():
            if self.list_params.get(name) is not None and self.params[name].get("open"):
                self.list_params[name] = self.list_params[name] + [v for v in extra if v not in self.list_params[name]]
        self.scalar_params = [p["name"] for p in spec["params"] if p["kind"] != "list"]
        self.group_fields = self.params["group_by"]["values"]
        self.fields = spec["fields"]
        # the measured fields: all but the object and the ones to group by
        self.metrics = [f["name"] for f in self.fields if f["name"] != "object" and f["name"] not in self.group_fields]


def load_endpoints(path=None):
    path = path or os.path.join(os.path.dirname(os.path.abspath(__file__)), "endpoints.json")
    with open(path) as f:
        described = json.load(f)
    return {e.path: e for e in map(Endpoint, described["endpoints"])}


M64 = 0xFFFFFFFFFFFFFFFF


def mix_step(h, v):
    """One splitmix64-style round folding v into h."""
    h = (h ^ (v & M64)) * 0xBF58476D1CE4E5B9 & M64
    h ^= h >> 31
    h = h * 0x94D049BB133111EB & M64
    return h ^ (h >> 29)


def mix(*values):
    """A cheap deterministic 64-bit hash (splitmix64 over the values)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = mix_step(h, v)
    return h


class Streams:
    """The usage of one endpoint as a fixed list of streams. A stream is one
    combination of the endpoint's dimensions (a key, so a project and user;
    a model; ...) with fixed amounts per request (`metrics`) and fixed line
    items of cost per request (`items`); its requests per hour follow a daily
    and a weekly rhythm with noise, and an hour's requests are spread over
    its minutes deterministically.

    Per hour it keeps only the streams with requests, so a bucket costs as
    much as its usage, not streams x minutes."""

    def __init__(self, streams):
        self.streams = streams
        self._hours = {}
        self._minutes = {}

    def hour_table(self, hour):
        """((stream index, requests), ...) for the streams with requests in
        the hour starting at hour*3600."""
        table = self._hours.get(hour)
        if table is not None:
            return table
        hour_of_day = hour % 24
        weekday = (hour // 24 + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
        daily = 0.15 + 0.85 * max(0.0, 1.0 - abs(hour_of_day - 14) / 8.0)
        weekly = 0.35 if weekday >= 5 else 1.0
        rows = []
        for s in self.streams:
            noise = 0.5 + (mix_step(s["noise_seed"], hour) % 1000) / 1000.0
            requests = int(s["rate"] * daily * weekly * noise)
            if requests:
                rows.append((s["index"], requests))
        table = tuple(rows)
        if len(self._hours) > 200000:
            self._hours.clear()
        self._hours[hour] = table
        return table

    def minute_table(self, hour):
        """{minute of the hour: ((stream index, requests), ...)}: the hour's
        requests spread over its minutes, each request by its own hash."""
        table = self._minutes.get(hour)
        if table is not None:
            return table
        minutes = {}
        for index, requests in self.hour_table(hour):
            seed = mix_step(self.streams[index]["minute_seed"], hour)
            counts = {}
            for j in range(requests):
                m = mix_step(seed, j) % 60
                counts[m] = counts.get(m, 0) + 1
            for m, n in counts.items():
                minutes.setdefault(m, []).append((index, n))
        table = {m: tuple(rows) for m, rows in minutes.items()}
        if len(self._minutes) > 20000:
            self._minutes.clear()
        self._minutes[hour] = table
        return table

    def tables(self, a, b, lo, hi, spike=None):
        """The hour and minute tables that cover [a, b) within [lo, hi); a
        minute counts when it overlaps the range. Each entry of a table is
        (stream index, how many times its metrics count). spike: the
        `spike` setting, whose key's requests count `factor` times on its day."""
        a, b = max(a, lo), min(b, hi)
        tables = []
        t = a
        while t < b:
            hour = t // 3600
            hour_start = hour * 3600
            hour_end = hour_start + 3600
            if t == hour_start and hour_end <= b:
                tables.append(self.spiked(self.hour_table(hour), hour, spike))
                t = hour_end
            else:
                stop = min(hour_end, b)
                minutes = self.minute_table(hour)
                for m in range((t - hour_start) // 60, (stop - hour_start + 59) // 60):
                    rows = minutes.get(m)
                    if rows:
                        tables.append(self.spiked(rows, hour, spike))
                t = stop
        return tables

    def spiked(self, rows, hour, spike):
        """rows with the spike's key's requests multiplied, in an hour of its day."""
        if not spike or hour * 3600 // 86400 != spike["day"] // 86400:
            return rows
        key, factor = spike["api_key_id"], spike["factor"]
        return tuple((i, n * factor if self.streams[i]["dims"].get("api_key_id") == key else n) for i, n in rows)

    def line_items(self, a, b, lo, hi, spike=None):
        """[(stream, line item, unit, quantity, amount)] of the requests in [a, b)."""
        requests = {}
        for rows in self.tables(a, b, lo, hi, spike):
            for index, n in rows:
                requests[index] = requests.get(index, 0) + n
        out = []
        for index in sorted(requests):
            s = self.streams[index]
            for item, unit, per_request, price in s["items"]:
                quantity = requests[index] * per_request
                out.append((s, item, unit, quantity, quantity * price))
        return out


class Storage:
    """Vector stores: a level, not a flow. Each store holds a number of bytes
    for a whole UTC day (a sawtooth: it grows each day and is pruned every 45
    days); a bucket reports the bytes of the day it starts in, summed per
    project, and storage costs bytes x hours."""

    def __init__(self, stores):
        self.streams = stores

    def level(self, store, day):
        return store["base"] + store["growth"] * ((day + store["phase"]) % 45)

    def tables(self, a, b, lo, hi, spike=None):
        """One table: (store index, its bytes on the day a is in), when a is within [lo, hi)."""
        if not lo <= a < hi:
            return []
        day = a // 86400
        return [tuple((s["index"], self.level(s, day)) for s in self.streams)]

    def line_items(self, a, b, lo, hi, spike=None):
        """[(store, line item, unit, GiB-hours, amount)] of [a, b) within [lo, hi)."""
        a, b = max(a, lo), min(b, hi)
        if a >= b:
            return []
        out = []
        for s in self.streams:
            for item, unit, per_gibibyte_hour in s["items"]:
                quantity = self.level(s, a // 86400) / GIB * (b - a) / 3600.0
                out.append((s, item, unit, quantity, quantity * per_gibibyte_hour))
        return out


class Organization:
    """Projects, users and keys, and the usage of every endpoint by them:
    one organization, so usage and costs join on project, user and key.
    name: another organization (--org NAME=KEY), its every hash salted by
    the name and its ids prefixed by it; none is the default one."""

    def __init__(self, name=None):
        self.name = name
        self.mix = mix
        if name:
            salt = mix(*name.encode())
            self.mix = lambda *values: mix(salt, *values)
        prefix = name + "_" if name else ""
        self.projects = ["proj_%s%s" % (prefix, n) for n in ("atlas", "borealis", "cinder", "delta")]
        self.users = ["user-%s%s" % (prefix, n) for n in ("ada", "bo", "chen", "dara", "eli", "fumi")]
        self.keys = []  # (key id, project, user)
        for i in range(8):
            self.keys.append(("key_%016x" % self.mix(1, i), self.projects[i % 4], self.users[(i * 5) % 6]))
        # two vector stores per project
        self.vector_stores = [("vs_%016x" % self.mix(109, 1, i), self.projects[i // 2]) for i in range(8)]
        self.families = {
            "images": Streams(self.image_streams()),
            "completions": Streams(self.keyed_streams(101, 24, self.completion_stream)),
            "embeddings": Streams(self.keyed_streams(102, 12, self.embedding_stream)),
            "moderations": Streams(self.keyed_streams(103, 8, self.moderation_stream)),
            "audio_speeches": Streams(self.keyed_streams(104, 10, self.speech_stream)),
            "audio_transcriptions": Streams(self.keyed_streams(105, 10, self.transcription_stream)),
            "web_search_calls": Streams(self.keyed_streams(106, 10, self.web_search_stream)),
            "file_search_calls": Streams(self.keyed_streams(107, 10, self.file_search_stream)),
            "code_interpreter_sessions": Streams(self.session_streams()),
            "vector_stores": Storage(self.stores()),
        }

    def image_streams(self):
        price = PRICES["images"]
        streams = []
        for i in range(36):
            key, project, user = self.keys[self.mix(2, i) % 8]
            model = MODELS[self.mix(3, i) % 3]
            size = SIZES[self.mix(4, i) % 5]
            if model == "gpt-image-1":
                size = GPT_IMAGE_SIZES[self.mix(4, i) % 4]
            elif model == "dall-e-3" and size in ("256x256", "512x512"):
                size = "1024x1024"
            source = SOURCES[0] if self.mix(5, i) % 4 else SOURCES[1 + self.mix(6, i) % 2]
            per_request = 1 if model == "dall-e-3" else 1 + self.mix(7, i) % 4
            streams.append({
                "index": i,
                "dims": {"project_id": project, "user_id": user, "api_key_id": key, "model": model, "size": size,
                         "source": source},
                "metrics": {"images": per_request, "num_model_requests": 1},
                "items": [(price["line_item"], price["unit"], per_request, price["per_image"][model][size])],
                "rate": 2 + self.mix(8, i) % 30,  # requests in a busy hour
                # self.mix(9, i, hour) and self.mix(10, i, hour, j) without re-hashing the prefix
                "noise_seed": self.mix(9, i), "minute_seed": self.mix(10, i),
            })
        return streams

    def keyed_streams(self, salt, count, build):
        """count streams of one endpoint, each used by one key (the first
        eight by every key in turn, so every project and user appears);
        build(h, stream) adds the endpoint's dimensions, metrics, items and
        rate, h(n) being the stream's n-th hash."""
        streams = []
        for i in range(count):
            def h(n, i=i):
                return self.mix(salt, n, i)
            key, project, user = self.keys[i if i < 8 else h(1) % 8]
            s = {"index": i, "dims": {"project_id": project, "user_id": user, "api_key_id": key},
                 "noise_seed": h(9), "minute_seed": h(10)}
            build(h, s)
            streams.append(s)
        return streams

    def completion_stream(self, h, s):
        model = CHAT_MODELS[h(3) % len(CHAT_MODELS)]
        batch = h(4) % 5 == 0
        s["dims"].update(model=model, batch=batch, service_tier="default" if batch else SERVICE_TIERS[h(5) % 4])
        text, cached_text = 200 + h(6) % 3000, (h(7) % 3) * 512
        cache_write = 256 if h(8) % 4 == 0 else 0
        audio = model.startswith("gpt-4o") and h(11) % 4 == 0
        audio_in = 100 + h(12) % 400 if audio else 0
        cached_audio = audio_in // 4
        audio_out = 50 + h(13) % 300 if audio else 0
        image = 765 * (1 + h(14) % 2) if h(15) % 3 == 0 else 0
        cached_image = 85 if image and h(16) % 2 else 0
        text_out = 50 + h(17) % 800
        uncached = text + audio_in + image
        cached = cached_text + cached_audio + cached_image
        s["metrics"] = {
            "input_tokens": cached + cache_write + uncached, "input_cached_tokens": cached,
            "input_cache_write_tokens": cache_write, "input_uncached_tokens": uncached,
            "output_tokens": text_out + audio_out, "input_text_tokens": text, "output_text_tokens": text_out,
            "input_cached_text_tokens": cached_text, "input_audio_tokens": audio_in,
            "input_cached_audio_tokens": cached_audio, "output_audio_tokens": audio_out,
            "input_image_tokens": image, "input_cached_image_tokens": cached_image, "output_image_tokens": 0,
            "num_model_requests": 1,
        }
        price = PRICES["completions"]
        factor = price["batch_factor"] if batch else 1.0
        names = price["batch_line_items"] if batch else price["line_items"]
        per_million = price["per_million_tokens"][model]
        s["items"] = [(name.format(model=model), price["unit"], tokens, per_million[kind] * factor / 1e6)
                      for name, kind, tokens in zip(names, ("input", "cached input", "output"),
                                                    (uncached + cache_write, cached, text_out + audio_out))
                      if tokens]
        s["rate"] = 5 + h(2) % 60

    def embedding_stream(self, h, s):
        model = EMBEDDING_MODELS[h(3) % len(EMBEDDING_MODELS)]
        tokens = 100 + h(6) % 4000
        price = PRICES["embeddings"]
        s["dims"]["model"] = model
        s["metrics"] = {"input_tokens": tokens, "num_model_requests": 1}
        s["items"] = [(price["line_item"].format(model=model), price["unit"], tokens,
                       price["per_million_tokens"][model] / 1e6)]
        s["rate"] = 2 + h(2) % 40

    def moderation_stream(self, h, s):
        s["dims"]["model"] = MODERATION_MODELS[h(3) % len(MODERATION_MODELS)]
        s["metrics"] = {"input_tokens": 20 + h(6) % 1000, "num_model_requests": 1}
        s["items"] = []  # moderations are free
        s["rate"] = 2 + h(2) % 30

    def speech_stream(self, h, s):
        model = SPEECH_MODELS[h(3) % len(SPEECH_MODELS)]
        characters = 40 + h(6) % 2000
        price = PRICES["audio_speeches"]
        s["dims"]["model"] = model
        s["metrics"] = {"characters": characters, "num_model_requests": 1}
        s["items"] = [(price["line_item"].format(model=model), price["unit"], characters,
                       price["per_million_characters"][model] / 1e6)]
        s["rate"] = 1 + h(2) % 15

    def transcription_stream(self, h, s):
        model = TRANSCRIPTION_MODELS[h(3) % len(TRANSCRIPTION_MODELS)]
        seconds = 5 + h(6) % 600
        price = PRICES["audio_transcriptions"]
        s["dims"]["model"] = model
        s["metrics"] = {"seconds": seconds, "num_model_requests": 1}
        s["items"] = [(price["line_item"].format(model=model), price["unit"], seconds / 60.0,
                       price["per_minute"][model])]
        s["rate"] = 1 + h(2) % 12

    def web_search_stream(self, h, s):
        calls = 1 + h(6) % 3
        price = PRICES["web_search_calls"]
        s["dims"].update(model=CHAT_MODELS[h(3) % 3], context_level=CONTEXT_LEVELS[h(5) % 3])
        s["metrics"] = {"num_model_requests": 1, "num_requests": calls}
        s["items"] = [(price["line_item"], price["unit"], calls, price["per_call"])]
        s["rate"] = 1 + h(2) % 20

    def file_search_stream(self, h, s):
        calls = 1 + h(6) % 4
        stores = [vs for vs, project in self.vector_stores if project == s["dims"]["project_id"]]
        price = PRICES["file_search_calls"]
        s["dims"]["vector_store_id"] = stores[h(5) % len(stores)]
        s["metrics"] = {"num_requests": calls}
        s["items"] = [(price["line_item"], price["unit"], calls, price["per_call"])]
        s["rate"] = 1 + h(2) % 20

    def session_streams(self):
        """Code interpreter sessions belong to a project (the endpoint knows
        no user or key): two streams a project."""
        price = PRICES["code_interpreter_sessions"]
        return [{"index": i, "dims": {"project_id": self.projects[i % 4]}, "metrics": {"num_sessions": 1},
                 "items": [(price["line_item"], price["unit"], 1, price["per_session"])],
                 "rate": 1 + self.mix(108, 2, i) % 6, "noise_seed": self.mix(108, 9, i), "minute_seed": self.mix(108, 10, i)}
                for i in range(8)]

    def stores(self):
        price = PRICES["vector_stores"]
        return [{"index": i, "dims": {"project_id": project}, "metrics": {"usage_bytes": 1},
                 "items": [(price["line_item"], price["unit"], price["per_gibibyte_day"] / 24.0)],
                 "base": (5 + self.mix(109, 2, i) % 800) * MIB + self.mix(109, 5, i) % MIB,
                 "growth": (1 + self.mix(109, 3, i) % 20) * MIB, "phase": self.mix(109, 4, i) % 45}
                for i, (store, project) in enumerate(self.vector_stores)]

    def line_items(self, a, b, lo, hi, spike=None, billed_prices=None):
        """Every line item of cost in [a, b): (project, key or None, line
        item, unit, quantity, amount), endpoint by endpoint. billed_prices
        ({model: {size: price}}, the setting) bills those images at other
        prices than PRICES, as the API does once a price changes."""
        out = []
        for family in self.families.values():
            for s, item, unit, quantity, amount in family.line_items(a, b, lo, hi, spike):
                dims = s["dims"]
                if billed_prices and item == PRICES["images"]["line_item"]:
                    price = billed_prices.get(dims["model"], {}).get(dims["size"])
                    if price is not None:
                        amount = quantity * price
                out.append((dims["project_id"], dims.get("api_key_id"), item, unit, quantity, amount))
        return out


class BadRequest(Exception):
    def __init__(self, param, message):
        super().__init__(message)
        self.param = param


def spoken(values):
    """'a', 'b' and 'c'."""
    quoted = ["'%s'" % v for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def parse_query(endpoint, raw):
    """Both array syntaxes: name[]=v (the SDKs') and repeated name=v."""
    scalars, lists = {}, {}
    if not raw:
        return scalars, lists
    for part in raw.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        name, value = unquote_plus(name), unquote_plus(value)
        bracketed = name.endswith("[]")
        if bracketed:
            name = name[:-2]
        if name in endpoint.list_params:
            lists.setdefault(name, []).append(value)
        elif name in endpoint.scalar_params:
            if bracketed:
                raise BadRequest(name, "Invalid type for '%s': expected one value, not an array." % name)
            if name in scalars:
                raise BadRequest(name, "Invalid '%s': given more than once." % name)
            scalars[name] = value
        else:
            raise BadRequest(name, "Unknown parameter: '%s'." % name)
    return scalars, lists


def parse_int(scalars, name, required=False):
    if name not in scalars:
        if required:
            raise BadRequest(name, "Missing required parameter: '%s'." % name)
        return None
    value = scalars[name]
    try:
        if not value.lstrip("-").isdigit():
            raise ValueError
        return int(value)
    except ValueError:
        raise BadRequest(name, "Invalid type for '%s': expected an integer, but got '%s'." % (name, value))


def cursor_for(next_start, fingerprint):
    packed = struct.pack(">QI", next_start, fingerprint)
    return "page_" + base64.urlsafe_b64encode(packed).decode().rstrip("=")


def read_cursor(cursor):
    if not cursor.startswith("page_"):
        raise ValueError
    body = cursor[5:]
    packed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    if len(packed) != 12:
        raise ValueError
    return struct.unpack(">QI", packed)


class UsageQuery:
    def __init__(self, endpoint, raw, now, cursor_loop=False):
        scalars, lists = parse_query(endpoint, raw)
        self.start = parse_int(scalars, "start_time", required=True)
        if self.start < 0:
            raise BadRequest("start_time", "Invalid 'start_time': must be a non-negative integer.")
        end = parse_int(scalars, "end_time")
        self.end = now if end is None else end
        if self.end <= self.start:
            raise BadRequest("end_time", "Invalid 'end_time': must be greater than 'start_time'.")
        self.width_name = scalars.get("bucket_width", endpoint.default_width)
        if self.width_name not in endpoint.widths:
            raise BadRequest("bucket_width", "Invalid value for 'bucket_width': '%s'. Supported values are: %s."
                             % (self.width_name, spoken(endpoint.width_names)))
        self.width, default_limit, max_limit = endpoint.widths[self.width_name]
        limit = parse_int(scalars, "limit")
        self.limit = default_limit if limit is None else limit
        if not 1 <= self.limit <= max_limit:
            raise BadRequest("limit", "Invalid 'limit': must be between 1 and %d for bucket_width=%s."
                             % (max_limit, self.width_name))
        for name, values in lists.items():
            allowed = endpoint.list_params[name]
            for v in values:
                if allowed is not None and v not in allowed:
                    raise BadRequest(name, "Invalid value for '%s': '%s'. Supported values are: %s."
                                     % (name, v, ", ".join("'%s'" % a for a in allowed)))
        # filters: {result field: the values it keeps}
        self.filters = {}
        for name, param in endpoint.params.items():
            if "field" not in param:
                continue
            if param["kind"] == "bool" and name in scalars:
                if scalars[name] not in ("true", "false"):
                    raise BadRequest(name, "Invalid type for '%s': expected a boolean, but got '%s'."
                                     % (name, scalars[name]))
                self.filters[param["field"]] = {scalars[name] == "true"}
            elif name in lists:
                self.filters[param["field"]] = set(lists[name])
        self.group_by = [f for f in endpoint.group_fields if f in lists.get("group_by", [])]
        canonical = "&".join(sorted(p for p in raw.split("&") if p and not p.startswith("page=")))
        self.fingerprint = zlib.crc32(canonical.encode())
        self.position = self.start
        self.cursor = scalars.get("page")
        if self.cursor is not None and not (cursor_loop and self.cursor.startswith("page_LOOP")):
            try:
                position, fingerprint = read_cursor(self.cursor)
            except (ValueError, struct.error, base64.binascii.Error):
                raise BadRequest("page", "Invalid 'page': the cursor is not one this API returned.")
            if fingerprint != self.fingerprint or not self.start < position < self.end:
                raise BadRequest("page", "Invalid 'page': the cursor belongs to a different query.")
            self.position = position

    def keeps(self, dims):
        """Whether the filters keep a stream (or line item) of these dimensions."""
        return all(dims.get(field) in allowed for field, allowed in self.filters.items())

    def bucket_ends(self):
        """(start, end) of this page's buckets and the start of the next page."""
        buckets = []
        t = self.position
        while t < self.end and len(buckets) < self.limit:
            boundary = (t // self.width + 1) * self.width
            end = min(boundary, self.end)
            buckets.append((t, end))
            t = end
        return buckets, (t if t < self.end else None)


def group_order(key):
    """Rows in group-key order; a null value (a line item without a key)
    sorts first."""
    return tuple((0, "") if v is None else (1, v) for v in key)


def history_start(now):
    return (now // 86400 - HISTORY_DAYS) * 86400


FRESH_CURSORS = itertools.count(1)


def page_of(data, query, next_start, cursor_loop):
    if cursor_loop == "fresh":
        next_page = "page_LOOP%d" % next(FRESH_CURSORS)
    elif cursor_loop:
        next_page = "page_LOOP"
    elif next_start is not None:
        next_page = cursor_for(next_start, query.fingerprint)
    else:
        next_page = None
    return {"object": "page", "data": data, "has_more": next_page is not None, "next_page": next_page}


def usage_page(org, endpoint, query, now, cursor_loop=False, late=0, spike=None):
    """late: usage reaches the API late seconds after it happens, so a
    bucket's figures keep growing until late seconds after it ends; spike:
    the `spike` setting (one key's requests times factor on one day)."""
    family = org.families[endpoint.name]
    lo = history_start(now)
    # Per stream: its group key, or None when a filter drops it; its metrics per request.
    keys, units = [], []
    for s in family.streams:
        keys.append(tuple(s["dims"][f] for f in query.group_by) if query.keeps(s["dims"]) else None)
        units.append(tuple(s["metrics"][m] for m in endpoint.metrics))
    n_metrics = len(endpoint.metrics)
    metric_at = {m: j for j, m in enumerate(endpoint.metrics)}
    buckets, next_start = query.bucket_ends()
    data = []
    for start, end in buckets:
        # requests per stream first, then metrics once per stream
        counts = {}
        for rows in family.tables(start, end, lo, now - late, spike):
            for index, n in rows:
                counts[index] = counts.get(index, 0) + n
        groups = {}
        for index, n in counts.items():
            key = keys[index]
            if key is None:
                continue
            g = groups.get(key)
            if g is None:
                g = groups[key] = [0] * n_metrics + [index]
            unit = units[index]
            for j in range(n_metrics):
                g[j] += n * unit[j]
        results = []
        for key in sorted(groups, key=group_order):
            g = groups[key]
            dims = family.streams[g[-1]]["dims"]
            row = {}
            for f in endpoint.fields:
                name = f["name"]
                if name == "object":
                    row[name] = endpoint.result
                elif name in metric_at:
                    row[name] = g[metric_at[name]]
                else:
                    row[name] = dims[name] if name in query.group_by else None
            results.append(row)
        data.append({"object": "bucket", "start_time": start, "end_time": end, "results": results})
    return page_of(data, query, next_start, cursor_loop)


def costs_page(org, endpoint, query, now, cursor_loop=False, late=0, spike=None, billed_prices=None):
    """Costs follow from the usage: each stream's requests times its line
    items' quantity and price (see PRICES and README.md)."""
    lo = history_start(now)
    buckets, next_start = query.bucket_ends()
    by_line_item = "line_item" in query.group_by
    data = []
    for start, end in buckets:
        groups = {}
        for project, key, item, unit, quantity, amount in org.line_items(start, end, lo, now - late, spike,
                                                                          billed_prices):
            dims = {"project_id": project, "api_key_id": key, "line_item": item}
            if not query.keeps(dims):
                continue
            group = tuple(dims[f] for f in query.group_by)
            g = groups.get(group)
            if g is None:
                g = groups[group] = [0.0, 0.0, dims, unit]
            g[0] += amount
            g[1] += quantity
        results = []
        for group in sorted(groups, key=group_order):
            amount, quantity, dims, unit = groups[group]
            row = {}
            for f in endpoint.fields:
                name = f["name"]
                if name == "object":
                    row[name] = endpoint.result
                elif name == "amount":
                    row[name] = {"value": float(amount), "currency": PRICES["currency"]}
                elif name == "quantity":
                    row[name] = float(quantity) if by_line_item else None
                elif name == "quantity_unit":
                    row[name] = unit if by_line_item else None
                else:
                    row[name] = dims[name] if name in query.group_by else None
            results.append(row)
        data.append({"object": "bucket", "start_time": start, "end_time": end, "results": results})
    return page_of(data, query, next_start, cursor_loop)


def renamed(page, rename):
    """rename (a setting): each string value of a result that is a key of
    it (a project id, a model, a line item) is served as its value instead,
    e.g. an id holding quotes and line breaks, on every endpoint alike."""
    if not rename:
        return
    for bucket in page["data"]:
        for row in bucket["results"]:
            for name, value in row.items():
                if isinstance(value, str) and value in rename:
                    row[name] = rename[value]


def envelope(message, type_="invalid_request_error", param=None, code=None):
    return json.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()


def mask(key):
    return key[:6] + "*" * 3 + key[-4:] if len(key) > 12 else "*" * 3


def gzip_allowed(accept_encoding):
    """Whether an Accept-Encoding header admits gzip (q=0 refuses it)."""
    star = False
    for item in (accept_encoding or "").split(","):
        name, _, params = item.partition(";")
        name = name.strip().lower()
        q = 1.0
        for param in params.split(";"):
            k, _, v = param.partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        if name in ("gzip", "x-gzip"):
            return q > 0
        if name == "*":
            star = q > 0
    return star


# Envelope defaults for injected statuses: (type, code, message) as the API words them.
FAULT_ERRORS = {
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again in 1s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}

SETTING_TYPES = {
    "latency_ms": (int, float), "gzip": (bool,), "fixture_page": (str, type(None)),
    "fixture_pages": (int, type(None)), "cursor_loop": (bool,), "cursor_fresh": (bool,), "late_seconds": (int,),
    "late_until": (int,), "idle_close_ms": (int, float, type(None)), "spike": (dict, type(None)),
    "billed_prices": (dict,),
    "directory_loop": (str, type(None)), "directory_hide": (list, type(None)),
    "rename": (dict,),
}
SPIKE_TYPES = {"api_key_id": (str,), "day": (int,), "factor": (int,)}
FAULT_TYPES = {
    "status": (int,), "body": (str,), "body_hex": (str,), "headers": (dict,), "content_type": (str,),
    "retry_after": (str, int), "retry_after_ms": (str, int), "error_message": (str,),
    "error_type": (str, type(None)), "error_code": (str, type(None)), "error_param": (str, type(None)),
    "reset": (bool,), "truncate": (int,), "reset_after": (int,), "latency_ms": (int, float),
    "drip_bytes_per_sec": (int, float), "gzip_bomb": (int,), "close_after": (bool,), "times": (int,),
    "echo_key": (dict,), "null_bucket": (int,), "null_result": (list,), "empty_buckets": (int,),
    "stall_after": (int,), "org": (str,),
}


def check_fields(obj, types, what):
    """Refuses unknown fields and wrong types, so a typo in a spec fails loudly."""
    if not isinstance(obj, dict):
        raise ValueError("%s: expected a JSON object" % what)
    for name, value in obj.items():
        allowed = types.get(name)
        if allowed is None:
            raise ValueError("%s: unknown field '%s'; known: %s" % (what, name, ", ".join(sorted(types))))
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ValueError("%s: '%s' has the wrong type (%s)" % (what, name, type(value).__name__))


def check_spike(org, spike):
    """A leaked key's spike: a key of the organization, a whole factor >= 1, all three fields."""
    check_fields(spike, SPIKE_TYPES, "spike")
    missing = sorted(set(SPIKE_TYPES) - set(spike))
    if missing:
        raise ValueError("spike: missing %s" % ", ".join(missing))
    if spike["api_key_id"] not in [k for k, _, _ in org.keys]:
        raise ValueError("spike: '%s' is not a key of the organization" % spike["api_key_id"])
    if spike["factor"] < 1:
        raise ValueError("spike: 'factor' must be at least 1")


def check_organization(org, endpoints):
    """The synthetic data fits the generated rules: a family for every usage
    endpoint, every dimension and metric its result has, units of cost the
    description knows."""
    by_name = {e.name: e for e in endpoints.values()}
    assert set(org.families) | {"costs"} == set(by_name), sorted(set(org.families) ^ set(by_name))
    units = set(next(f for f in by_name["costs"].fields if f["name"] == "quantity_unit")["values"])
    for name, family in org.families.items():
        endpoint = by_name[name]
        for s in family.streams:
            assert set(s["dims"]) == set(endpoint.group_fields), (name, sorted(s["dims"]))
            assert set(s["metrics"]) == set(endpoint.metrics), (name, sorted(s["metrics"]))
            for item in s["items"]:
                assert item[1] is None or item[1] in units, (name, item)


class State:
    def __init__(self, key, now, late_seconds=0, orgs=()):
        self.key = key
        self.fixed_now = now
        self.late_seconds = late_seconds
        self.endpoints = load_endpoints()
        self.org = Organization()
        check_organization(self.org, self.endpoints)
        # the organization each key sees: --key the default one, --org NAME=KEY others
        self.orgs = {key: self.org}
        for name, org_key in orgs:
            self.orgs[org_key] = Organization(name)
            check_organization(self.orgs[org_key], self.endpoints)
        self.directory = Directory(self.org)
        self.lock = threading.Lock()
        self.records = []
        self.faults = []
        self.settings = {}
        self.next_connection = 0
        self.last_activity = time.time()
        self.fixture_cache = {}
        self.gzip_cache = {}
        self.active_drips = 0
        self.idle_closes = 0

    def now(self):
        return self.fixed_now if self.fixed_now is not None else int(time.time())

    def status(self):
        with self.lock:
            return {"ok": True, "requests": len(self.records), "active_drips": self.active_drips,
                    "faults_pending": sum(f.get("times", 1) for f in self.faults),
                    "settings": dict(self.settings), "now": self.now(), "connections": self.next_connection,
                    "idle_closes": self.idle_closes}

    def take_fault(self, org_name=None):
        """The first fault queued for any request, or for org_name's (a fault
        with an `org` is taken only by requests with that organization's key)."""
        with self.lock:
            for i, fault in enumerate(self.faults):
                if fault.get("org") not in (None, org_name):
                    continue
                remaining = fault.get("times", 1) - 1
                if remaining <= 0:
                    self.faults.pop(i)
                else:
                    fault["times"] = remaining
                return dict(fault)
            return None

    def org_of(self, authorization):
        """The organization a request's Authorization header sees, or None."""
        if authorization.startswith("Bearer "):
            return self.orgs.get(authorization[7:])
        return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "openai-usage-standin/1"
    # An idle keep-alive connection, or a send the client stopped reading, ends after this.
    timeout = 120

    def setup(self):
        super().setup()
        # headers and body go out in separate writes: without this, Nagle and
        # the client's delayed ACK stall every reused connection by ~40 ms
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        with self.server.state.lock:
            self.server.state.next_connection += 1
            self.connection_id = self.server.state.next_connection

    def handle_one_request(self):
        # idle_close_ms: a kept-alive connection idle for longer than that is
        # forgotten without a word, as a load balancer's idle timeout does: no
        # FIN that the client could see before reusing it; the next request on
        # it is met with a RST, unread and unanswered
        idle_ms = self.server.state.settings.get("idle_close_ms")
        answered = getattr(self, "answered_at", None)
        if idle_ms and answered is not None:
            try:
                select.select([self.connection], [], [], self.timeout)
            except (OSError, ValueError):
                pass
            if (time.time() - answered) * 1000 > idle_ms:
                with self.server.state.lock:
                    self.server.state.idle_closes += 1
                return self.abort_connection()
        super().handle_one_request()
        self.answered_at = time.time()

    def finish(self):
        try:
            super().finish()
        except (OSError, ValueError):
            pass

    def log_message(self, fmt, *args):
        if not self.server.quiet:
            sys.stderr.write("standin: %s\n" % (fmt % args))

    # --- plumbing -------------------------------------------------------

    def send_body(self, status, body, content_type="application/json", headers=None, gzip_ok=True,
                  request_id=None):
        compress = (gzip_ok and self.server.state.settings.get("gzip", True) is not False
                    and gzip_allowed(self.headers.get("Accept-Encoding")))
        if compress:
            # large fixture bodies are the same object each time: compress once
            cache = self.server.state.gzip_cache
            cached = cache.get(id(body))
            if cached is not None and cached[0] is body:
                body = cached[1]
            else:
                compressed = gzip.compress(body, compresslevel=5)
                if len(body) > 100000:
                    cache[id(body)] = (body, compressed)
                body = compressed
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if not any(name.lower() == "x-request-id" for name in (headers or {})):
            self.send_header("x-request-id", request_id or "req_" + secrets.token_hex(16))
        if compress:
            self.send_header("Content-Encoding", "gzip")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def read_json_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def abort_connection(self):
        """Close with RST: no response at all."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
        self.close_connection = True

    # --- control plane --------------------------------------------------

    def control(self, method):
        state = self.server.state
        name = self.path.split("?", 1)[0][len("/__standin/"):]
        try:
            if method == "GET" and name == "requests":
                with state.lock:
                    body = json.dumps(state.records).encode()
                return self.send_body(200, body, gzip_ok=False)
            if method == "GET" and name == "status":
                return self.send_body(200, json.dumps(state.status()).encode(), gzip_ok=False)
            if method == "GET" and name == "prices":
                return self.send_body(200, json.dumps(PRICES).encode(), gzip_ok=False)
            if method == "POST" and name == "reset":
                self.read_json_body()
                with state.lock:
                    state.records, state.faults, state.settings = [], [], {}
                return self.send_body(200, b'{"ok":true}', gzip_ok=False)
            if method == "POST" and name == "settings":
                settings = self.read_json_body() or {}
                check_fields(settings, SETTING_TYPES, "settings")
                if settings.get("spike") is not None:
                    check_spike(state.org, settings["spike"])
                if settings.get("directory_loop") not in (None,) + LOOPS:
                    raise ValueError("settings: directory_loop must be one of %s" % ", ".join(LOOPS))
                if not all(isinstance(v, str) for v in (settings.get("rename") or {}).values()):
                    raise ValueError("settings: 'rename' maps strings to strings")
                if settings.get("fixture_page") and not os.path.isfile(settings["fixture_page"]):
                    raise ValueError("settings: fixture_page '%s' is not a file" % settings["fixture_page"])
                for model, sizes in settings.get("billed_prices", {}).items():
                    if model not in PRICES["images"]["per_image"] or not isinstance(sizes, dict) or not all(
                            size in PRICES["images"]["per_image"][model] and isinstance(price, (int, float))
                            and not isinstance(price, bool) and price >= 0 for size, price in sizes.items()):
                        raise ValueError("settings: billed_prices is {model: {size: price >= 0}} over the models "
                                         "and sizes of PRICES['images']; '%s' is not" % model)
                with state.lock:
                    state.settings.update(settings)
                return self.send_body(200, b'{"ok":true}', gzip_ok=False)
            if method == "POST" and name == "faults":
                faults = self.read_json_body() or []
                if isinstance(faults, dict):
                    faults = [faults]
                if not isinstance(faults, list):
                    raise ValueError("faults: expected a JSON array of fault objects")
                for fault in faults:
                    check_fields(fault, FAULT_TYPES, "fault")
                    if fault.get("times", 1) < 1:
                        raise ValueError("fault: 'times' must be at least 1")
                with state.lock:
                    state.faults.extend(faults)
                return self.send_body(200, b'{"ok":true}', gzip_ok=False)
        except ValueError as e:  # json.JSONDecodeError included
            return self.send_body(400, json.dumps({"ok": False, "error": str(e)}).encode(), gzip_ok=False)
        return self.send_body(404, json.dumps({"ok": False, "error": "no control endpoint %s /__standin/%s"
                                                % (method, name)}).encode(), gzip_ok=False)

    # --- the API ----------------------------------------------------------

    def do_GET(self):
        self.handle_request("GET")

    def do_POST(self):
        self.handle_request("POST")

    def do_PUT(self):
        self.handle_request("PUT")

    def do_DELETE(self):
        self.handle_request("DELETE")

    def do_PATCH(self):
        self.handle_request("PATCH")

    def handle_request(self, method):
        state = self.server.state
        state.last_activity = time.time()
        if self.path.startswith("/__standin/"):
            return self.control(method)
        path, _, query = self.path.partition("?")
        headers = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = headers[name] + ", " + value if name in headers else value
        org = state.org_of(self.headers.get("Authorization", ""))
        org_name = org and (org.name or "default")
        with state.lock:
            state.records.append({
                "method": method, "path": path, "query": query, "headers": headers,
                "connection": self.connection_id, "time": time.time(), "org": org_name,
            })
        if method != "GET":
            self.read_json_body_safely()
        fault = state.take_fault(org_name) or {}
        delay = state.settings.get("latency_ms", 0) + fault.get("latency_ms", 0)
        if delay:
            time.sleep(delay / 1000.0)
        if fault.get("reset"):
            return self.abort_connection()
        if "gzip_bomb" in fault:
            return self.send_gzip_bomb(int(fault["gzip_bomb"]))
        if "status" in fault:
            return self.send_fault_status(fault)
        if fault.get("close_after"):
            self.close_connection = True
        if "empty_buckets" in fault:
            n = max(0, int(fault["empty_buckets"]))
            return self.send_body(200, b'{"object":"page","data":[' + b"{}," * (n - 1) + b"{}" * min(n, 1)
                                  + b'],"has_more":false,"next_page":null}')
        status, body = self.answer(method, path, query)
        if status == 200 and ("null_bucket" in fault or "null_result" in fault):
            body = with_hole(body, fault)
        if "truncate" in fault:
            return self.send_truncated(status, body, int(fault["truncate"]))
        if "reset_after" in fault:
            return self.send_truncated(status, body, int(fault["reset_after"]), reset=True)
        if "drip_bytes_per_sec" in fault:
            return self.send_drip(status, body, int(fault["drip_bytes_per_sec"]))
        if "stall_after" in fault:
            return self.send_stall(status, body, int(fault["stall_after"]))
        self.send_body(status, body)

    def read_json_body_safely(self):
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(min(length, 1 << 20))
        except (OSError, ValueError):
            pass

    def answer(self, method, path, query):
        state = self.server.state
        auth = self.headers.get("Authorization", "")
        endpoint = state.endpoints.get(path)
        listed = endpoint is None and state.directory.route(path) is not None
        if (endpoint is None and not listed) or method != "GET":
            return 404, envelope("Invalid URL (%s %s)" % (method, path))
        org = state.org_of(auth)
        if org is None:
            given = auth[7:] if auth.startswith("Bearer ") else ""
            message = ("Incorrect API key provided: %s. You can find your API key at "
                       "https://platform.openai.com/account/api-keys." % mask(given)) if given else (
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
            return 401, envelope(message, code="invalid_api_key")
        if listed:  # the organization's directory (standin/directory.py)
            return state.directory.answer(path, query, state.settings)
        fixture = state.settings.get("fixture_page")
        if fixture:
            try:
                return 200, self.fixture_body(fixture, query)
            except ValueError:
                return 400, envelope("Invalid 'page': not a cursor of this fixture chain.", param="page")
        now = state.now()
        cursor_loop = "fresh" if state.settings.get("cursor_fresh") else bool(state.settings.get("cursor_loop"))
        late = max(0, state.settings.get("late_seconds", state.late_seconds))
        if "late_until" in state.settings:
            # usage up to a fixed time, however long the client takes
            late = max(late, now - state.settings["late_until"])
        try:
            usage_query = UsageQuery(endpoint, query, now, cursor_loop)
        except BadRequest as e:
            return 400, envelope(str(e), param=e.param)
        spike = state.settings.get("spike")
        if endpoint.name == "costs":
            page = costs_page(org, endpoint, usage_query, now, cursor_loop, late, spike,
                              state.settings.get("billed_prices"))
        else:
            page = usage_page(org, endpoint, usage_query, now, cursor_loop, late, spike)
        renamed(page, state.settings.get("rename"))
        return 200, json.dumps(page, separators=(",", ":")).encode()

    def fixture_body(self, path, query):
        """The fixture verbatim; with fixture_pages: N, a chain of N copies
        whose cursors lead from one to the next (fixture_1 .. fixture_N-1)."""
        state = self.server.state
        pages = int(state.settings.get("fixture_pages", 0))
        index = 0
        for part in query.split("&"):
            if part.startswith("page="):
                cursor = unquote_plus(part[len("page="):])
                if not cursor.startswith("fixture_"):
                    raise ValueError(cursor)
                index = int(cursor[len("fixture_"):])
                if pages and not 0 < index < pages:
                    raise ValueError(cursor)
        key = (path, pages, index)
        body = state.fixture_cache.get(key)
        if body is None:
            with open(path, "rb") as f:
                body = f.read()
            if pages:
                tail = body.rfind(b'"has_more"')
                more = index + 1 < pages
                body = body[:tail] + (b'"has_more":true,"next_page":"fixture_%d"}' % (index + 1) if more
                                      else b'"has_more":false,"next_page":null}')
            with state.lock:
                state.fixture_cache[key] = body
        return body

    # --- faults -----------------------------------------------------------

    def send_fault_status(self, fault):
        status = int(fault["status"])
        headers = dict(fault.get("headers") or {})
        if "retry_after" in fault:
            headers["Retry-After"] = str(fault["retry_after"])
        if "retry_after_ms" in fault:
            headers["retry-after-ms"] = str(fault["retry_after_ms"])
        # a careless server: headers that carry the key it was sent
        auth = self.headers.get("Authorization", "")
        for name, template in (fault.get("echo_key") or {}).items():
            headers[name] = str(template).replace("{key}", auth[7:] if auth.startswith("Bearer ") else auth)
        content_type = fault.get("content_type", "application/json")
        for name in [n for n in headers if n.lower() == "content-type"]:
            content_type = headers.pop(name)
        if "body_hex" in fault:
            body = bytes.fromhex(fault["body_hex"])
        elif "body" in fault:
            body = fault["body"].encode()
        else:
            type_, code, message = FAULT_ERRORS.get(status, (
                "server_error" if status >= 500 else "invalid_request_error", None,
                "Injected failure with status %d" % status))
            body = envelope(fault.get("error_message", message), fault.get("error_type", type_),
                            fault.get("error_param"), fault.get("error_code", code))
        # a raw body goes out byte for byte; an envelope like any API answer
        raw = "body" in fault or "body_hex" in fault
        self.send_body(status, body, content_type, headers, gzip_ok=not raw)

    def promise_body(self, status, body):
        """The status and headers of a JSON answer whose Content-Length
        promises all of body; the connection closes after it."""
        self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-request-id", "req_" + secrets.token_hex(16))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()

    def send_truncated(self, status, body, keep, reset=False):
        self.promise_body(status, body)
        try:
            self.wfile.write(body[:keep])
            self.wfile.flush()
            if reset:
                self.abort_connection()
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def send_stall(self, status, body, keep):
        """Headers and `keep` bytes of the body, then silence on an open
        connection until the client goes away (or 120 s); counted as a drip."""
        state = self.server.state
        self.promise_body(status, body)
        with state.lock:
            state.active_drips += 1
        try:
            self.wfile.write(body[:keep])
            self.wfile.flush()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                ready, _, _ = select.select([self.connection], [], [], 0.1)
                if ready and not self.connection.recv(4096):
                    break
        except OSError:
            pass
        finally:
            with state.lock:
                state.active_drips -= 1

    def send_drip(self, status, body, rate):
        """The body at about `rate` bytes a second; stops when the client goes away."""
        state = self.server.state
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-request-id", "req_" + secrets.token_hex(16))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        rate = max(float(rate), 1.0)
        chunk = max(1, int(rate / 20))
        begin = time.monotonic()
        deadline = begin + 120
        with state.lock:
            state.active_drips += 1
        try:
            sent = 0
            while sent < len(body):
                if time.monotonic() > deadline:
                    self.close_connection = True
                    break
                self.wfile.write(body[sent:sent + chunk])
                self.wfile.flush()
                sent += chunk
                # pace by the total so far, so the average rate holds
                wait = begin + sent / rate - time.monotonic()
                if wait > 0 and sent < len(body):
                    time.sleep(wait)
        except OSError:
            self.close_connection = True
        finally:
            with state.lock:
                state.active_drips -= 1

    def send_gzip_bomb(self, size):
        body = gzip_bomb(max(0, size))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("x-request-id", "req_" + secrets.token_hex(16))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            self.close_connection = True


_bombs = {}
_bombs_lock = threading.Lock()


def with_hole(body, fault):
    """The page with a null where a bucket (null_bucket: i) or a result
    (null_result: [i, j]) was: the hole a broken server leaves."""
    page = json.loads(body)
    if "null_bucket" in fault:
        page["data"][int(fault["null_bucket"])] = None
    if "null_result" in fault:
        i, j = fault["null_result"]
        page["data"][int(i)]["results"][int(j)] = None
    return json.dumps(page, separators=(",", ":")).encode()


def gzip_bomb(size):
    """A gzip member that inflates to a JSON page holding `size` spaces in a
    string. A full flush ends a deflate run on a byte boundary with no back
    references, so one compressed mebibyte of spaces is simply repeated."""
    with _bombs_lock:
        body = _bombs.get(size)
        if body is not None:
            return body
        head, tail = b'{"object":"page","data":[],"padding":"', b'"}'
        block = 1 << 20
        spaces = b" " * block
        whole, rest = divmod(size, block)
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        parts = [c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)]
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        parts.append((c.compress(spaces) + c.flush(zlib.Z_FULL_FLUSH)) * whole)
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        parts.append(c.compress(spaces[:rest] + tail) + c.flush(zlib.Z_FINISH))
        crc = zlib.crc32(head)
        for _ in range(whole):
            crc = zlib.crc32(spaces, crc)
        crc = zlib.crc32(spaces[:rest] + tail, crc)
        length = len(head) + size + len(tail)
        body = (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + b"".join(parts)
                + struct.pack("<II", crc & 0xFFFFFFFF, length & 0xFFFFFFFF))
        if len(_bombs) >= 4:
            _bombs.clear()
        _bombs[size] = body
        return body


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def alive(pid):
    """Whether pid runs. A zombie counts as gone: an orphan's parent may be
    slow to reap it (some container inits take seconds)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def watch(pid, state, idle_limit):
    while True:
        time.sleep(0.5)
        if pid and not alive(pid):
            os._exit(0)
        if time.time() - state.last_activity > idle_limit:
            os._exit(0)


def main():
    parser = argparse.ArgumentParser(description="Stand-in for the OpenAI organization Usage API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    parser.add_argument("--watch-pid", type=int, default=0)
    parser.add_argument("--key", default="sk-admin-standin")
    parser.add_argument("--org", action="append", default=[], metavar="NAME=KEY",
                        help="another organization, seen by requests with KEY (repeatable)")
    parser.add_argument("--now", type=int, default=None, help="freeze 'now' (Unix seconds)")
    parser.add_argument("--late-seconds", type=int, default=0,
                        help="usage reaches the API this many seconds late (the setting late_seconds)")
    parser.add_argument("--idle", type=float, default=1800, help="exit after this many idle seconds")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    args = parser.parse_args()

    server = Server((args.host, args.port), Handler)
    scheme = "http"
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        # the handshake happens on the connection's own thread (bounded by the
        # handler's timeout), so a silent client cannot stall accept()
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        scheme = "https"
    orgs = []
    for item in args.org:
        name, _, org_key = item.partition("=")
        if not name.isidentifier() or not org_key or org_key == args.key:
            parser.error("--org %r: expected NAME=KEY, NAME a word, KEY not --key's" % item)
        orgs.append((name, org_key))
    server.state = State(args.key, args.now, args.late_seconds, orgs)
    server.quiet = args.quiet
    port = server.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.rename(tmp, args.port_file)
    sys.stderr.write("openai-usage stand-in listening on %s://%s:%d/v1\n" % (scheme, args.host, port))
    sys.stderr.flush()
    threading.Thread(target=watch, args=(args.watch_pid, server.state, args.idle), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
