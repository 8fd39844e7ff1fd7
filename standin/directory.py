"""The directory of the stand-in's synthetic organization: its projects
(one archived), users, project API keys and service accounts, and its spend
alerts and spend limit, served with the admin API's list pagination (limit,
after, has_more, first_id, last_id). The ids are the ones the usage streams
use (server.Organization), so names join the figures."""

import json
from urllib.parse import parse_qs

PROJECT_NAMES = {"proj_atlas": "Atlas", "proj_borealis": "Borealis", "proj_cinder": "Cinder",
                 "proj_delta": "Delta"}
ARCHIVED = {"proj_delta": 1727740800}  # 2024-10-01: archived, its usage stays in the history
USER_NAMES = {"user-ada": "Ada Lovelace", "user-bo": "Bo Andersen", "user-chen": "Chen Wei",
              "user-dara": "Dara \u00d3 Briain", "user-eli": "Eli Cohen", "user-fumi": "Fumi Sato"}
CREATED = 1704067200  # 2024-01-01

# The lists a switch makes hostile (setting directory_loop): "repeat" hands
# out the same page, has_more and last_id, whatever after says; "endless"
# has more pages forever, each with new objects.
LOOPS = ("repeat", "endless")


class BadList(Exception):
    def __init__(self, param, message):
        Exception.__init__(self, message)
        self.param = param


class Directory:
    def __init__(self, org):
        self.projects = []
        for i, pid in enumerate(org.projects):
            archived = ARCHIVED.get(pid)
            self.projects.append({
                "id": pid, "object": "organization.project", "name": PROJECT_NAMES[pid],
                "created_at": CREATED + i * 86400, "archived_at": archived,
                "status": "archived" if archived else "active", "external_key_id": None,
                "residency": "GLOBAL",
            })
        self.users = []
        for i, uid in enumerate(org.users):
            first = uid[len("user-"):]
            self.users.append({
                "object": "organization.user", "id": uid, "name": USER_NAMES[uid],
                "email": "%s@example.com" % first, "role": "owner" if i == 0 else "reader",
                "added_at": CREATED + i * 3600,
            })
        users = {u["id"]: u for u in self.users}
        self.service_accounts = {}
        for i, pid in enumerate(org.projects):
            self.service_accounts[pid] = [{
                "object": "organization.project.service_account", "id": "svc_acct_%s" % pid[len("proj_"):],
                "name": "%s CI" % PROJECT_NAMES[pid], "role": "member", "created_at": CREATED + i * 86400 + 60,
            }]
        self.api_keys = {pid: [] for pid in org.projects}
        for i, (kid, pid, uid) in enumerate(org.keys):
            user = users[uid]
            self.api_keys[pid].append({
                "object": "organization.project.api_key", "redacted_value": "sk-proj-...%s" % kid[-4:],
                "name": "%s %s %d" % (PROJECT_NAMES[pid].lower(), uid[len("user-"):], i),
                "created_at": CREATED + i * 7200, "last_used_at": None, "id": kid,
                "owner_project_access": "active",
                "owner": {"type": "user", "user": {"id": uid, "name": user["name"], "email": user["email"],
                                                   "role": "owner", "created_at": user["added_at"]}},
            })
        channel = {"type": "email", "recipients": ["finance@example.com"], "subject_prefix": "OpenAI spend alert"}
        self.spend_alerts = [{
            "id": "alert_%d" % (cents // 100), "object": "organization.spend_alert", "threshold_amount": cents,
            "currency": "USD", "interval": "month", "notification_channel": channel,
        } for cents in (50000, 100000, 200000)]
        self.spend_limit = {"object": "organization.spend_limit", "threshold_amount": 300000, "currency": "USD",
                            "interval": "month", "enforcement": {"status": "enforcing"}}

    def route(self, path):
        """(list name, project id) of a directory path under /v1, or None."""
        parts = path.split("/")
        if len(parts) == 4 and parts[:3] == ["", "v1", "organization"] and parts[3] in (
                "projects", "users", "spend_alerts", "spend_limit"):
            return parts[3], None
        if len(parts) == 6 and parts[:4] == ["", "v1", "organization", "projects"] and parts[5] in (
                "api_keys", "service_accounts"):
            return parts[5], parts[4]
        return None

    def answer(self, path, query, settings):
        """(status, body) for a directory path, or None when it is not one."""
        where = self.route(path)
        if where is None:
            return None
        name, project = where
        try:
            raw = parse_qs(query, keep_blank_values=True, strict_parsing=False)
        except ValueError:
            raw = {}
        hidden = set(settings.get("directory_hide") or [])
        if name == "spend_limit":
            return 200, dumps(self.spend_limit)
        if name in ("api_keys", "service_accounts"):
            if project not in self.api_keys:
                return 404, envelope("No such project: %s" % project, param="project_id")
            if name == "service_accounts" and project in ARCHIVED:
                return 400, envelope("Project %s is archived" % project)
            items = (self.api_keys if name == "api_keys" else self.service_accounts)[project]
        elif name == "projects":
            archived = one(raw, "include_archived", "false")
            if archived not in ("true", "false"):
                return 400, envelope("Invalid 'include_archived': expected true or false", param="include_archived")
            items = [p for p in self.projects if archived == "true" or p["archived_at"] is None]
        elif name == "users":
            items = self.users
        else:
            items = self.spend_alerts
        items = [x for x in items if x["id"] not in hidden]
        try:
            return 200, dumps(page(items, raw, settings.get("directory_loop"), name))
        except BadList as e:
            return 400, envelope(str(e), param=e.param)


def one(raw, name, default=None):
    values = raw.get(name)
    return values[-1] if values else default


def page(items, raw, loop, name):
    text = one(raw, "limit", "20")
    try:
        limit = int(text)
    except ValueError:
        raise BadList("limit", "Invalid 'limit': '%s' is not an integer" % text)
    if not 1 <= limit <= 100:
        raise BadList("limit", "Invalid 'limit': %d is out of range 1..100" % limit)
    after = one(raw, "after")
    start = 0
    if loop == "endless":
        # new objects after every cursor: the list never ends
        n = int(after.rsplit("_", 1)[-1]) + 1 if after else 0
        data = [dict(items[0], id="%s_gen_%d" % (name, n + i)) for i in range(limit)] if items else []
        return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None, "has_more": True}
    if after is not None and loop != "repeat":
        ids = [x["id"] for x in items]
        if after not in ids:
            raise BadList("after", "Invalid 'after': no object %s in this list" % after)
        start = ids.index(after) + 1
    data = items[start:start + limit]
    more = start + limit < len(items) or loop == "repeat"
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": more}


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def envelope(message, type_="invalid_request_error", param=None, code=None):
    return json.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()
