"""Browser sessions, kept server-side in ``admin_ui_sessions`` (migration 0011).

The cookie holds an opaque random id; the table keeps only its SHA-256, the actor the
login established (name, role, prefixes) and the session's CSRF token. A session ends
at ``expires_at`` or at logout; expired rows are deleted when a new session starts.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flagsched.admin.service.access import Actor
from flagsched.runtime.db.connect import DictConnection

#: The session cookie (``__Host-``: Secure, Path=/ and no Domain, enforced by browsers).
COOKIE = "__Host-flagsched_session"


def digest(secret: str) -> bytes:
    """SHA-256 of a secret handed to the browser (only this is stored)."""
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True)
class Session:
    """A logged-in browser: who it acts as and its CSRF token."""

    actor: Actor
    csrf_token: str
    expires_at: datetime
    #: The static token it was opened with (None: OIDC).
    token_id: str | None = None


def create(
    conn: DictConnection, actor: Actor, ttl_s: float, *, token_id: str | None = None
) -> tuple[str, Session]:
    """A new session for ``actor`` (opened with static token ``token_id``, if any):
    (the cookie value, the session)."""
    sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + timedelta(seconds=ttl_s)
    with conn.transaction():
        conn.execute("DELETE FROM admin_ui_sessions WHERE expires_at < now()")
        conn.execute(
            "INSERT INTO admin_ui_sessions (id_hash, actor, role, prefixes, token_id,"
            " csrf_token, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (digest(sid), actor.name, actor.role, list(actor.prefixes), token_id, csrf, expires),
        )
    return sid, Session(Actor(actor.name, actor.role, actor.prefixes), csrf, expires, token_id)


def find(conn: DictConnection, sid: str) -> Session | None:
    """The live session of cookie value ``sid``, or None."""
    row = conn.execute(
        "SELECT * FROM admin_ui_sessions WHERE id_hash = %s AND expires_at > now()",
        (digest(sid),),
    ).fetchone()
    if row is None:
        return None
    actor = Actor(name=row["actor"], role=row["role"], prefixes=tuple(row["prefixes"]))
    return Session(actor, row["csrf_token"], row["expires_at"], row["token_id"])


def delete(conn: DictConnection, sid: str) -> None:
    """End the session of cookie value ``sid`` (logout)."""
    conn.execute("DELETE FROM admin_ui_sessions WHERE id_hash = %s", (digest(sid),))
