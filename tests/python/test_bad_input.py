"""Malformed input against every endpoint of the running binary: each
answer is a 4xx with the documented error body (or a success), never a
5xx or a panic, and the server is still healthy at the end.

Every JSON field of each endpoint is replaced in turn by values of the
wrong type, out of range, empty, huge or hostile; whole bodies are
truncated, nested thousands deep or sent with the wrong content type;
query strings, OAuth forms, path ids and credentials get the same."""

import json
import urllib.parse

import requests

from conftest import ADMIN_PASSWORD, MODEL

WEIRD = [None, 0, -1, 1.5, 2**63, 2**64, -(2**63) - 1, 10**30, 1e308, -1e308, True, "",
         "a" * 70000, "\u0000", "\ud7ff\ue000", "😀" * 300, "../../etc/passwd",
         "'; DROP TABLE users;--", [], {}, [1, "x"], {"a": {"b": [None]}},
         "2026-13-45T99:99:99Z", "NaN", " ", "*", "a.b.c.d.e.f", ":own", "x" * 300]
QUERY_WEIRD = ["-1", "0", "99999999999999999999", "abc", "", "x" * 5000, "1e3",
               "2026-13-45T99:99:99Z", "-9223372036854775809", "1.5", "true", "null", "[]"]
RAW_BODIES = [b"", b"{", b"null", b"[]", b"123", b'"s"', b"[" * 5000 + b"]" * 5000,
              b'{"a":' * 3000 + b"1" + b"}" * 3000, b"\xff\xfe\x00"]
LIMITS = {"rpm": 5, "tpm": 100, "tokens_per_day": 1000, "max_concurrent": 2,
          "max_agents": 2, "on_limit": "reject"}


def _endpoints(victim):
    """(method, path, a valid body); the admin acts on `victim`, never on
    itself, and logins name nobody who exists, so no lockout or demotion
    reaches the rest of the suite (conftest lifts the login and
    registration rates, so these reach validation)."""
    return [
        ("POST", "/auth/register", {"username": "fz_user", "email": "fz@example.com",
                                    "password": "SecurePassword123!", "full_name": "F"}),
        ("POST", "/auth/login", {"username": "fz_nobody", "password": "x"}),
        ("POST", "/auth/refresh", {"refresh_token": "abc"}),
        ("POST", "/auth/verify-permission", {"permission": "tasks.read", "resource": "tasks:1"}),
        ("POST", "/auth/api-keys", {"name": "k", "permissions": ["tasks.read"], "expires_in_days": 3,
                                    "models": [MODEL], "limits": LIMITS}),
        ("PATCH", f"/admin/users/{victim}", {"role": "user", "disabled": False, "full_name": "x"}),
        ("PUT", f"/admin/users/{victim}/limits", LIMITS),
        ("POST", "/agents/sessions", {"name": "a", "model": MODEL, "budget": {"tokens": 100, "rpm": 5},
                                      "ttl_seconds": 60, "permissions": ["models.*"]}),
        ("POST", "/admin/clients", {"name": "c", "grant_types": ["client_credentials"],
                                    "scopes": ["tasks.read"], "token_endpoint_auth_method": "private_key_jwt",
                                    "jwks": {"keys": []}, "jwks_uri": "https://example.com/jwks"}),
        ("POST", "/auth/nodes/token", {"node_id": "n1", "ttl_minutes": 5}),
        ("POST", "/nodes/register", {"node_id": "n1", "address": "1.2.3.4", "labels": {"a": "b"}}),
        ("POST", "/nodes/heartbeat", {"node_id": "n1"}),
        ("POST", "/api/metrics/report", {"node_id": "n1", "metrics": {"cpu": 1}}),
        ("POST", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                                          "max_tokens": 5, "n": 1, "stream": False,
                                          "stream_options": {"include_usage": True}}),
        ("POST", "/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 5}),
        ("POST", "/v1/embeddings", {"model": MODEL, "input": "hi"}),
        ("POST", "/v1/messages", {"model": "claude-mock", "max_tokens": 5,
                                  "messages": [{"role": "user", "content": "hi"}]}),
    ]


QUERIES = [
    ("/admin/users", ["limit", "cursor", "q"]),
    ("/admin/audit", ["event", "user_id", "since", "limit", "cursor"]),
    ("/agents/sessions", ["all", "include_released", "limit", "cursor"]),
    ("/usage", ["since", "until", "group_by"]),
    ("/auth/api-keys", ["limit", "cursor"]),
]
FORMS = [
    ("/auth/token", {"grant_type": "client_credentials", "client_id": "c", "client_secret": "s",
                     "scope": "a", "client_assertion_type":
                     "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                     "client_assertion": "x.y.z", "refresh_token": "r"}),
    ("/auth/introspect", {"token": "x", "token_type_hint": "access_token"}),
    ("/auth/revoke", {"token": "x", "token_type_hint": "refresh_token"}),
]
IDS = ["%00", "..", "x" * 3000, "%F0%9F%98%80", "'%20OR%201=1",
       "00000000-0000-0000-0000-000000000000", "-1", "%2F", "a%20b"]
ID_PATHS = [("GET", "/admin/users/{}"), ("DELETE", "/admin/users/{}"),
            ("POST", "/admin/users/{}/unlock"), ("DELETE", "/auth/api-keys/{}"),
            ("GET", "/agents/sessions/{}"), ("DELETE", "/agents/sessions/{}"),
            ("POST", "/agents/sessions/{}/heartbeat"), ("DELETE", "/admin/clients/{}"),
            ("POST", "/auth/nodes/{}/revoke")]


def _mutations(template):
    """(label, body): each field of `template` replaced by each WEIRD value,
    then left out; a field holding an object (or a list of them) has each
    of that first object's fields replaced the same way."""
    for field, valid in template.items():
        for value in WEIRD:
            yield f"{field}={str(value)[:30]!r}", {**template, field: value}
        yield f"without {field}", {k: v for k, v in template.items() if k != field}
        listed = isinstance(valid, list) and bool(valid) and isinstance(valid[0], dict)
        if not (listed or isinstance(valid, dict)):
            continue
        for inner in valid[0] if listed else valid:
            for value in WEIRD:
                body = json.loads(json.dumps(template))
                (body[field][0] if listed else body[field])[inner] = value
                yield f"{field}.{inner}={str(value)[:30]!r}", body


class Checker:
    def __init__(self, base):
        self.base = base
        self.http = requests.Session()
        self.bad = []
        self.count = 0

    def send(self, method, path, what, **kwargs):
        try:
            response = self.http.request(method, self.base + path, timeout=30, **kwargs)
        except requests.ConnectionError as e:
            self.bad.append((what + f" (connection: {e})", 0, ""))
            return
        self.count += 1
        status = response.status_code
        if status >= 500 and status not in (502, 503, 504):
            self.bad.append((what, status, response.text[:200]))
        elif status >= 400:
            try:
                body = response.json()
            except ValueError:
                self.bad.append((what + " (error body is not JSON)", status, response.text[:200]))
                return
            # DESIGN.md's {"error": {"code", "message"}}, or RFC 6749's
            # {"error": "code"} on the OAuth endpoints.
            error = body.get("error") if isinstance(body, dict) else None
            # Anthropic's {"type": "error", "error": {"type", "message"}} on /v1/messages.
            if not (isinstance(error, str) or (isinstance(error, dict) and ("code" in error or "type" in error))):
                self.bad.append((what + " (error body has no error code)", status, response.text[:200]))


def test_malformed_input_never_gets_a_5xx(swarmgate):
    check = Checker(swarmgate)
    http = requests.Session()
    token = http.post(f"{swarmgate}/auth/login",
                      json={"username": "admin", "password": ADMIN_PASSWORD}).json()["access_token"]
    admin = {"Authorization": f"Bearer {token}"}
    created = http.post(f"{swarmgate}/auth/api-keys", headers=admin,
                        json={"name": "bad-input", "permissions": ["*"]})
    assert created.status_code == 201, created.text
    key = {"X-API-Key": created.json()["key"]}
    victim = http.post(f"{swarmgate}/auth/register", json={
        "username": "fz_victim", "email": "victim@example.com", "password": "SecurePassword123!"})
    assert victim.status_code in (200, 201), victim.text
    victim_id = http.get(f"{swarmgate}/admin/users", headers=admin,
                         params={"q": "fz_victim"}).json()["items"][0]["id"]

    for creds in (admin, key, {}):
        for method, path, template in _endpoints(victim_id):
            for raw in RAW_BODIES + [json.dumps(template).encode() + b"garbage"]:
                check.send(method, path, f"{method} {path} body {raw[:20]!r}", data=raw,
                           headers={**creds, "Content-Type": "application/json"})
            for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
                headers = dict(creds)
                if content_type:
                    headers["Content-Type"] = content_type
                check.send(method, path, f"{method} {path} as {content_type}",
                           data=json.dumps(template).encode(), headers=headers)
            for label, body in _mutations(template):
                check.send(method, path, f"{method} {path} {label}", json=body, headers=creds)
        for path, names in QUERIES:
            for name in names:
                for value in QUERY_WEIRD:
                    query = urllib.parse.urlencode({name: value})
                    check.send("GET", f"{path}?{query}", f"GET {path}?{query[:40]}", headers=creds)
            check.send("GET", f"{path}?%zz=1&&&=&a=%", f"GET {path} broken query", headers=creds)
        for path, template in FORMS:
            form_type = {"Content-Type": "application/x-www-form-urlencoded"}
            for field in template:
                for value in QUERY_WEIRD + ["\u0000", "x" * 70000]:
                    raw = urllib.parse.urlencode({**template, field: value}).encode()
                    check.send("POST", path, f"POST {path} {field}={value[:30]!r}", data=raw,
                               headers={**creds, **form_type})
            for raw in (b"", b"%zz", b"grant_type=x&grant_type=y", b"\xff\xfe"):
                check.send("POST", path, f"POST {path} form {raw!r}", data=raw,
                           headers={**creds, **form_type})
        for method, template in ID_PATHS:
            for id_ in IDS:
                path = template.format(id_)
                check.send(method, path, f"{method} {path[:60]}", headers=creds)

    for headers in ({"Authorization": "Bearer"}, {"Authorization": "Bearer " + "a" * 100000},
                    {"Authorization": "Basic Zm9vOmJhcg=="}, {"Authorization": "Bearer a.b.c"},
                    {"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."},
                    {"X-API-Key": "sgk_" + "a" * 300}, {"X-API-Key": ""},
                    {"Authorization": f"Bearer {token} extra"}, {"X-Request-Id": "x" * 5000}):
        for path in ("/auth/me", "/v1/models", "/quota", "/usage", "/nowhere"):
            check.send("GET", path, f"GET {path} with {str(headers)[:50]}", headers=headers)

    # Logging out ends the session it is sent with: a session of its own.
    victim_login = http.post(f"{swarmgate}/auth/login",
                             json={"username": "fz_victim", "password": "SecurePassword123!"})
    assert victim_login.status_code == 200, victim_login.text
    own = {"Authorization": f"Bearer {victim_login.json()['access_token']}"}
    for value in WEIRD:
        check.send("POST", "/auth/logout", f"logout refresh_token={str(value)[:30]!r}",
                   json={"refresh_token": value}, headers=own)

    assert check.count > 5000
    assert not check.bad, f"{len(check.bad)} of {check.count} answers were wrong: {check.bad[:10]}"
    assert http.get(f"{swarmgate}/health").status_code == 200
    # The admin it ran as is untouched.
    assert http.get(f"{swarmgate}/auth/me", headers=admin).json()["role"] == "admin"
