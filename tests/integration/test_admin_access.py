"""Who may call what: every route against every role and no token, flag-key prefixes,
OIDC JWTs, and the audit trail (one row per mutating call, append-only)."""

from __future__ import annotations

import http.server
import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from flagsched.admin.service.tokens import create_token
from tests.support.admin import ROLES, running_admin
from tests.support.pipeline import add_flag, add_schedule, seconds_from_now

pytestmark = pytest.mark.integration

_ONE = "/api/admin/flags/f/schedules/999"
_CREATE = {"updates": {"enabled": True}, "scheduled_at": "2030-01-01T00:00:00Z"}
#: (method, path, body, least role): every route of the API.
MATRIX: list[tuple[str, str, Any, str]] = [
    ("POST", "/api/admin/flags/f/schedules", _CREATE, "operator"),
    ("GET", "/api/admin/schedules", None, "viewer"),
    ("GET", "/api/admin/flags/f/schedules", None, "viewer"),
    ("GET", _ONE, None, "viewer"),
    ("PATCH", _ONE, {"priority": "critical"}, "operator"),
    ("DELETE", _ONE, None, "operator"),
    ("POST", _ONE + "/cancel", None, "operator"),
    ("POST", _ONE + "/retry", None, "operator"),
    ("GET", _ONE + "/preview", None, "viewer"),
    ("POST", "/api/admin/retry-policies/preview", {}, "viewer"),
    ("GET", "/api/admin/dead-letters", None, "viewer"),
    ("POST", "/api/admin/dead-letters/redrive", {}, "admin"),
    ("GET", "/api/admin/dead-letters/poison", None, "viewer"),
    ("POST", "/api/admin/dead-letters/poison/republish", {"partition": 0, "offset": 0}, "admin"),
    ("GET", "/api/admin/redrives/999", None, "viewer"),
    ("GET", "/api/admin/stats", None, "viewer"),
    ("GET", "/api/admin/audit", None, "viewer"),
    (
        "POST",
        "/api/admin/schedules/bulk-actions",
        {"action": "cancel", "filter": {"status": ["pending"]}},
        "operator",
    ),
    ("GET", "/api/admin/bulk-actions/999", None, "viewer"),
]
RANK = {"viewer": 1, "operator": 2, "admin": 3}


def _template(path: str) -> str:
    return (
        path.replace("/flags/f/", "/flags/{flagKey}/")
        .replace("/999", "/{scheduleId}")
        .replace("redrives/{scheduleId}", "redrives/{redriveId}")
        .replace("bulk-actions/{scheduleId}", "bulk-actions/{bulkActionId}")
    )


def test_the_matrix_covers_every_route(settings, tmp_path):
    with running_admin(settings, tmp_path) as api, api.client(None) as client:
        paths = client.get("/api/admin/openapi.json").json()["paths"]
    routes = {
        (method.upper(), path)
        for path, item in paths.items()
        for method in item
        if path.startswith("/api/admin/")
    }
    assert routes == {(m, _template(p)) for m, p, _, _ in MATRIX}


def test_every_route_against_every_role_and_no_token(settings, db, tmp_path):
    add_flag(db, "f")
    with running_admin(settings, tmp_path) as api:
        clients = {role: api.client(role) for role in (*ROLES, None)}
        clients["bad"] = api.client(None, Authorization="Bearer fsa_0000_not-a-token")
        try:
            for method, path, body, least in MATRIX:
                for role, client in clients.items():
                    got = client.request(method, path, json=body)
                    if role in (None, "bad"):
                        expected: set[int] = {401}
                    elif RANK[str(role)] < RANK[least]:
                        expected = {403}
                    else:  # allowed: the action's own answer, never an auth refusal
                        expected = {200, 201, 202, 404, 409}
                    assert got.status_code in expected, (method, path, role, got.text)
                    if got.status_code >= 400:
                        assert got.headers["content-type"] == "application/problem+json"
                    if got.status_code == 401:
                        assert got.headers["www-authenticate"] == "Bearer"
        finally:
            for client in clients.values():
                client.close()
    # refused calls left no trace; the one allowed create (operator and admin) did
    actions = [r["action"] for r in db.execute("SELECT action FROM admin_audit ORDER BY id")]
    assert actions == ["schedule.create", "schedule.create"]


def test_a_token_limited_to_a_prefix_sees_and_touches_only_those_flags(settings, db, tmp_path):
    for key in ("team-a.x", "team-b.y"):
        add_flag(db, key)
        add_schedule(db, key, {"enabled": True}, at=seconds_from_now(600))
    with running_admin(settings, tmp_path) as api:
        limited = create_token(tmp_path / "tokens.json", "operator", prefixes=("team-a.",))
        with api.client(None, Authorization=f"Bearer {limited}") as client:
            listed = client.get("/api/admin/schedules").json()
            refused = client.post("/api/admin/flags/team-b.y/schedules", json=_CREATE)
            allowed = client.post("/api/admin/flags/team-a.x/schedules", json=_CREATE)
    assert [s["flag_key"] for s in listed["items"]] == ["team-a.x"]
    assert refused.status_code == 403
    assert allowed.status_code == 201


def _jwks(tmp_path: Any) -> tuple[Any, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk | {"kid": "k1", "use": "sig", "alg": "RS256"}]}))
    return key, path


def test_oidc_jwts_are_checked_for_signature_issuer_audience_and_expiry(settings, tmp_path):
    key, jwks = _jwks(tmp_path)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    good = {
        "iss": "https://idp.example",
        "aud": "flagsched",
        "sub": "alice",
        "exp": now + timedelta(minutes=5),
        "flagsched_role": "viewer",
    }

    def token(claims: dict[str, Any], signer: Any = key) -> str:
        return jwt.encode(claims, signer, algorithm="RS256", headers={"kid": "k1"})

    cases = {
        "valid": (token(good), 200),
        "wrong audience": (token(good | {"aud": "other"}), 401),
        "wrong issuer": (token(good | {"iss": "https://evil.example"}), 401),
        "expired": (token(good | {"exp": now - timedelta(minutes=5)}), 401),
        "another key": (token(good, stranger), 401),
        "no role": (token({k: v for k, v in good.items() if k != "flagsched_role"}), 401),
        "garbage": ("not.a.jwt", 401),
    }
    with running_admin(
        settings,
        tmp_path,
        admin_oidc_issuer="https://idp.example",
        admin_oidc_audience="flagsched",
        admin_oidc_jwks_file=jwks,
    ) as api:
        for name, (bearer, status) in cases.items():
            with api.client(None, Authorization=f"Bearer {bearer}") as client:
                got = client.get("/api/admin/schedules")
            assert got.status_code == status, (name, got.text)
        with api.client(None, Authorization=f"Bearer {token(good)}") as client:
            assert client.post("/api/admin/flags/f/schedules", json=_CREATE).status_code == 403
            audit = client.get("/api/admin/audit")
    assert audit.status_code == 200


def test_one_audit_row_per_mutating_call_with_who_what_and_where(settings, db, tmp_path):
    add_flag(db, "aud")
    dead = add_schedule(db, "aud", {"enabled": True})
    db.execute("UPDATE flag_schedules SET status = 'dead', retry_count = 1 WHERE id = %s", (dead,))
    calls: list[tuple[str, str, Any]] = [
        (
            "POST",
            "/api/admin/flags/aud/schedules",
            _CREATE | {"scheduled_at": "2031-01-01T00:00:00Z"},
        ),
        ("PATCH", "/api/admin/flags/aud/schedules/2", {"priority": "critical"}),
        ("POST", "/api/admin/flags/aud/schedules/2/cancel", None),
        ("POST", f"/api/admin/flags/aud/schedules/{dead}/retry", None),
        ("POST", "/api/admin/dead-letters/redrive", {"dry_run": False, "schedule_ids": [dead]}),
    ]
    seen = []
    with running_admin(settings, tmp_path) as api:
        for i, (method, path, body) in enumerate(calls):
            role = "admin" if "redrive" in path else "operator"
            with api.client(role, **{"Idempotency-Key": f"key-{i}"}) as client:
                got = client.request(method, path, json=body)
                assert got.status_code < 300, got.text
                seen.append((got.headers["x-request-id"], f"key-{i}"))
            with api.client(role) as plain:  # a refused action writes no row
                assert plain.post("/api/admin/flags/aud/schedules/999/cancel").status_code == 404
        with api.client("viewer") as viewer:
            via_api = viewer.get("/api/admin/audit", params={"object_id": "2"}).json()
    rows = db.execute("SELECT * FROM admin_audit ORDER BY id").fetchall()
    assert [r["action"] for r in rows] == [
        "schedule.create",
        "schedule.edit",
        "schedule.cancel",
        "schedule.retry",
        "dead_letters.redrive",
    ]
    assert [(r["request_id"], r["idempotency_key"]) for r in rows] == seen
    assert {r["source_address"] for r in rows} == {"127.0.0.1"}
    assert [r["actor"] for r in rows] == ["token:operator"] * 4 + ["token:admin"]
    assert rows[1]["before"]["priority"] == "normal" and rows[1]["after"]["priority"] == "critical"
    assert [e["action"] for e in via_api["items"]] == [
        "schedule.cancel",
        "schedule.edit",
        "schedule.create",
    ]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("UPDATE admin_audit SET actor = 'someone else'")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("DELETE FROM admin_audit")


def test_jwts_verified_with_keys_from_a_jwks_url(settings, tmp_path):
    key, jwks = _jwks(tmp_path)
    body = jwks.read_bytes()

    class Keys(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    idp = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Keys)
    thread = threading.Thread(target=idp.serve_forever, daemon=True)
    thread.start()
    claims = {
        "iss": "https://idp.example",
        "aud": "flagsched",
        "sub": "bob",
        "exp": datetime.now(UTC) + timedelta(minutes=5),
        "flagsched_role": "operator",
        "flagsched_prefixes": ["team-a."],
    }
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
    try:
        with (
            running_admin(
                settings,
                tmp_path,
                admin_oidc_issuer="https://idp.example",
                admin_oidc_audience="flagsched",
                admin_oidc_jwks_url=f"http://127.0.0.1:{idp.server_address[1]}/jwks.json",
            ) as api,
            api.client(None, Authorization=f"Bearer {token}") as client,
        ):
            listed = client.get("/api/admin/schedules")
            outside = client.post("/api/admin/flags/team-b.x/schedules", json=_CREATE)
    finally:
        idp.shutdown()
        idp.server_close()
    assert listed.status_code == 200
    assert outside.status_code == 403  # the prefixes claim limits the caller
