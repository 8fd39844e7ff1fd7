#!/usr/bin/env python3
"""The project's stand-in for the OpenAI organization Usage API.

A real HTTP/1.1 server (keep-alive, gzip) on 127.0.0.1 that answers
GET /v1/organization/usage/images like the API does, for a synthetic
organization whose usage is a pure function of absolute time, plus a
control plane under /__standin/ that tests use to inject faults and to read
back every request received. Standard library only. See standin/README.md.
"""

import argparse
import base64
import gzip
import json
import os
import secrets
import socket
import ssl
import struct
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote_plus

MODELS = ["dall-e-2", "dall-e-3", "gpt-image-1"]
SIZES = ["256x256", "512x512", "1024x1024", "1792x1792", "1024x1792"]
SOURCES = ["image.generation", "image.edit", "image.variation"]
GROUP_FIELDS = ["project_id", "user_id", "api_key_id", "model", "size", "source"]
WIDTHS = {"1m": (60, 60, 1440), "1h": (3600, 24, 168), "1d": (86400, 7, 31)}  # seconds, default, max
LIST_PARAMS = {
    "sources": SOURCES,
    "sizes": SIZES,
    "project_ids": None,
    "user_ids": None,
    "api_key_ids": None,
    "models": None,
    "group_by": GROUP_FIELDS,
}
SCALAR_PARAMS = ["start_time", "end_time", "bucket_width", "limit", "page"]
HISTORY_DAYS = 90


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


class Organization:
    """Projects, users, keys and a fixed list of usage streams. A stream is
    one key (so one project and user) using one model, size and source; its
    requests per hour follow a daily and a weekly rhythm with noise, and an
    hour's requests are spread over its minutes deterministically.

    Per hour the organization keeps only the streams with requests, so a
    bucket costs as much as its usage, not streams x minutes."""

    def __init__(self):
        self.projects = ["proj_%s" % n for n in ("atlas", "borealis", "cinder", "delta")]
        self.users = ["user-%s" % n for n in ("ada", "bo", "chen", "dara", "eli", "fumi")]
        self.keys = []  # (key id, project, user)
        for i in range(8):
            self.keys.append(("key_%016x" % mix(1, i), self.projects[i % 4], self.users[(i * 5) % 6]))
        self.streams = []
        for i in range(36):
            key, project, user = self.keys[mix(2, i) % 8]
            model = MODELS[mix(3, i) % 3]
            size = SIZES[mix(4, i) % 5]
            if model == "dall-e-3" and size in ("256x256", "512x512"):
                size = "1024x1024"
            source = SOURCES[0] if mix(5, i) % 4 else SOURCES[1 + mix(6, i) % 2]
            per_request = 1 if model == "dall-e-3" else 1 + mix(7, i) % 4
            rate = 2 + mix(8, i) % 30  # requests in a busy hour
            self.streams.append({
                "index": i, "api_key_id": key, "project_id": project, "user_id": user,
                "model": model, "size": size, "source": source,
                "per_request": per_request, "rate": rate,
                # mix(9, i, hour) and mix(10, i, hour, j) without re-hashing the prefix
                "noise_seed": mix(9, i), "minute_seed": mix(10, i),
            })
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

    def tables_between(self, a, b, lo, hi):
        """The hour and minute tables that cover [a, b) within [lo, hi); a
        minute counts when it overlaps the range."""
        a, b = max(a, lo), min(b, hi)
        tables = []
        t = a
        while t < b:
            hour = t // 3600
            hour_start = hour * 3600
            hour_end = hour_start + 3600
            if t == hour_start and hour_end <= b:
                tables.append(self.hour_table(hour))
                t = hour_end
            else:
                stop = min(hour_end, b)
                minutes = self.minute_table(hour)
                for m in range((t - hour_start) // 60, (stop - hour_start + 59) // 60):
                    rows = minutes.get(m)
                    if rows:
                        tables.append(rows)
                t = stop
        return tables

    def requests_between(self, stream, a, b, lo, hi):
        """Requests of a stream in [a, b), counting only time within [lo, hi)."""
        index = stream["index"]
        return sum(n for rows in self.tables_between(a, b, lo, hi) for i, n in rows if i == index)


class BadRequest(Exception):
    def __init__(self, param, message):
        super().__init__(message)
        self.param = param


def parse_query(raw):
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
        if name in LIST_PARAMS:
            lists.setdefault(name, []).append(value)
        elif name in SCALAR_PARAMS:
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
    def __init__(self, raw, now, cursor_loop=False):
        scalars, lists = parse_query(raw)
        self.start = parse_int(scalars, "start_time", required=True)
        if self.start < 0:
            raise BadRequest("start_time", "Invalid 'start_time': must be a non-negative integer.")
        end = parse_int(scalars, "end_time")
        self.end = now if end is None else end
        if self.end <= self.start:
            raise BadRequest("end_time", "Invalid 'end_time': must be greater than 'start_time'.")
        self.width_name = scalars.get("bucket_width", "1d")
        if self.width_name not in WIDTHS:
            raise BadRequest("bucket_width", "Invalid value for 'bucket_width': '%s'. Supported values are: "
                             "'1m', '1h' and '1d'." % self.width_name)
        self.width, default_limit, max_limit = WIDTHS[self.width_name]
        limit = parse_int(scalars, "limit")
        self.limit = default_limit if limit is None else limit
        if not 1 <= self.limit <= max_limit:
            raise BadRequest("limit", "Invalid 'limit': must be between 1 and %d for bucket_width=%s."
                             % (max_limit, self.width_name))
        for name, values in lists.items():
            allowed = LIST_PARAMS[name]
            for v in values:
                if allowed is not None and v not in allowed:
                    raise BadRequest(name, "Invalid value for '%s': '%s'. Supported values are: %s."
                                     % (name, v, ", ".join("'%s'" % a for a in allowed)))
        self.filters = {
            "source": set(lists["sources"]) if "sources" in lists else None,
            "size": set(lists["sizes"]) if "sizes" in lists else None,
            "project_id": set(lists["project_ids"]) if "project_ids" in lists else None,
            "user_id": set(lists["user_ids"]) if "user_ids" in lists else None,
            "api_key_id": set(lists["api_key_ids"]) if "api_key_ids" in lists else None,
            "model": set(lists["models"]) if "models" in lists else None,
        }
        self.group_by = [f for f in GROUP_FIELDS if f in lists.get("group_by", [])]
        canonical = "&".join(sorted(p for p in raw.split("&") if p and not p.startswith("page=")))
        self.fingerprint = zlib.crc32(canonical.encode())
        self.position = self.start
        self.cursor = scalars.get("page")
        if self.cursor is not None and not (cursor_loop and self.cursor == "page_LOOP"):
            try:
                position, fingerprint = read_cursor(self.cursor)
            except (ValueError, struct.error, base64.binascii.Error):
                raise BadRequest("page", "Invalid 'page': the cursor is not one this API returned.")
            if fingerprint != self.fingerprint or not self.start < position < self.end:
                raise BadRequest("page", "Invalid 'page': the cursor belongs to a different query.")
            self.position = position

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


def usage_page(org, query, now, cursor_loop=False):
    history_start = (now // 86400 - HISTORY_DAYS) * 86400
    # Per stream: its group key, or None when a filter drops it.
    keys = []
    for s in org.streams:
        if all(allowed is None or s[field] in allowed for field, allowed in query.filters.items()):
            keys.append(tuple(s[f] for f in query.group_by))
        else:
            keys.append(None)
    per_request = [s["per_request"] for s in org.streams]
    buckets, next_start = query.bucket_ends()
    data = []
    for start, end in buckets:
        groups = {}
        for rows in org.tables_between(start, end, history_start, now):
            for index, requests in rows:
                key = keys[index]
                if key is None:
                    continue
                g = groups.get(key)
                if g is None:
                    groups[key] = [requests * per_request[index], requests, index]
                else:
                    g[0] += requests * per_request[index]
                    g[1] += requests
        results = []
        for key in sorted(groups):
            images, requests, index = groups[key]
            s = org.streams[index]
            row = {"object": "organization.usage.images.result", "images": images, "num_model_requests": requests}
            for field in ("size", "source", "project_id", "user_id", "api_key_id", "model"):
                row[field] = s[field] if field in query.group_by else None
            results.append(row)
        data.append({"object": "bucket", "start_time": start, "end_time": end, "results": results})
    if cursor_loop:
        next_page = "page_LOOP"
    elif next_start is not None:
        next_page = cursor_for(next_start, query.fingerprint)
    else:
        next_page = None
    return {"object": "page", "data": data, "has_more": next_page is not None, "next_page": next_page}


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
    "fixture_pages": (int, type(None)), "cursor_loop": (bool,),
}
FAULT_TYPES = {
    "status": (int,), "body": (str,), "body_hex": (str,), "headers": (dict,), "content_type": (str,),
    "retry_after": (str, int), "retry_after_ms": (str, int), "error_message": (str,),
    "error_type": (str, type(None)), "error_code": (str, type(None)), "error_param": (str, type(None)),
    "reset": (bool,), "truncate": (int,), "reset_after": (int,), "latency_ms": (int, float),
    "drip_bytes_per_sec": (int, float), "gzip_bomb": (int,), "close_after": (bool,), "times": (int,),
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


class State:
    def __init__(self, key, now):
        self.key = key
        self.fixed_now = now
        self.org = Organization()
        self.lock = threading.Lock()
        self.records = []
        self.faults = []
        self.settings = {}
        self.next_connection = 0
        self.last_activity = time.time()
        self.fixture_cache = {}
        self.gzip_cache = {}
        self.active_drips = 0

    def now(self):
        return self.fixed_now if self.fixed_now is not None else int(time.time())

    def status(self):
        with self.lock:
            return {"ok": True, "requests": len(self.records), "active_drips": self.active_drips,
                    "faults_pending": sum(f.get("times", 1) for f in self.faults),
                    "settings": dict(self.settings), "now": self.now(), "connections": self.next_connection}

    def take_fault(self):
        with self.lock:
            if not self.faults:
                return None
            fault = self.faults[0]
            remaining = fault.get("times", 1) - 1
            if remaining <= 0:
                self.faults.pop(0)
            else:
                fault["times"] = remaining
            return dict(fault)


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
            if method == "POST" and name == "reset":
                self.read_json_body()
                with state.lock:
                    state.records, state.faults, state.settings = [], [], {}
                return self.send_body(200, b'{"ok":true}', gzip_ok=False)
            if method == "POST" and name == "settings":
                settings = self.read_json_body() or {}
                check_fields(settings, SETTING_TYPES, "settings")
                if settings.get("fixture_page") and not os.path.isfile(settings["fixture_page"]):
                    raise ValueError("settings: fixture_page '%s' is not a file" % settings["fixture_page"])
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
        with state.lock:
            state.records.append({
                "method": method, "path": path, "query": query, "headers": headers,
                "connection": self.connection_id, "time": time.time(),
            })
        if method != "GET":
            self.read_json_body_safely()
        fault = state.take_fault() or {}
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
        status, body = self.answer(method, path, query)
        if "truncate" in fault:
            return self.send_truncated(status, body, int(fault["truncate"]))
        if "reset_after" in fault:
            return self.send_truncated(status, body, int(fault["reset_after"]), reset=True)
        if "drip_bytes_per_sec" in fault:
            return self.send_drip(status, body, int(fault["drip_bytes_per_sec"]))
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
        if path != "/v1/organization/usage/images" or method != "GET":
            return 404, envelope("Invalid URL (%s %s)" % (method, path))
        if auth != "Bearer " + state.key:
            given = auth[7:] if auth.startswith("Bearer ") else ""
            message = ("Incorrect API key provided: %s. You can find your API key at "
                       "https://platform.openai.com/account/api-keys." % mask(given)) if given else (
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
            return 401, envelope(message, code="invalid_api_key")
        fixture = state.settings.get("fixture_page")
        if fixture:
            try:
                return 200, self.fixture_body(fixture, query)
            except ValueError:
                return 400, envelope("Invalid 'page': not a cursor of this fixture chain.", param="page")
        now = state.now()
        cursor_loop = bool(state.settings.get("cursor_loop"))
        try:
            usage_query = UsageQuery(query, now, cursor_loop)
        except BadRequest as e:
            return 400, envelope(str(e), param=e.param)
        page = usage_page(state.org, usage_query, now, cursor_loop)
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
        self.send_body(status, body, fault.get("content_type", "application/json"), headers, gzip_ok=not raw)

    def send_truncated(self, status, body, keep, reset=False):
        self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-request-id", "req_" + secrets.token_hex(16))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body[:keep])
            self.wfile.flush()
            if reset:
                self.abort_connection()
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

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
    parser.add_argument("--now", type=int, default=None, help="freeze 'now' (Unix seconds)")
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
    server.state = State(args.key, args.now)
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
