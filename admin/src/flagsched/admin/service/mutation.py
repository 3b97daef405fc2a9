"""Running one mutating action: its transaction, its Idempotency-Key and its result.

The idempotency record is written in the action's own transaction, under an advisory
lock on (actor, key): two concurrent calls with one key run one after the other, and
the second gets the first's response with no second effect.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb
from pydantic import BaseModel

from flagsched.admin.service.access import Actor
from flagsched.admin.service.errors import IdempotencyMismatch
from flagsched.runtime.db.connect import DictConnection


@dataclass(frozen=True)
class Outcome:
    """What a mutating action answers: an HTTP-like status, a JSON body, a location."""

    status: int
    body: dict[str, Any]
    location: str | None = None
    replayed: bool = False

    @classmethod
    def of(cls, status: int, model: BaseModel, location: str | None = None) -> Outcome:
        """An outcome whose body is ``model`` as JSON."""
        return cls(status, model.model_dump(mode="json"), location)


def request_hash(method: str, path: str, body: BaseModel | None) -> str:
    """A fingerprint of a request: the same key with another request is refused."""
    payload = None if body is None else body.model_dump(mode="json", exclude_unset=True)
    text = json.dumps([method.upper(), path, payload], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def run(
    conn: DictConnection,
    actor: Actor,
    fingerprint: str,
    action: Callable[[DictConnection], Outcome],
) -> Outcome:
    """Run ``action`` in one transaction, honouring the actor's Idempotency-Key."""
    key = actor.idempotency_key
    with conn.transaction():
        if key is not None:
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", (f"{actor.name}\x1f{key}",)
            )
            seen = conn.execute(
                "SELECT request_hash, status, response, location FROM admin_idempotency"
                " WHERE actor = %s AND key = %s",
                (actor.name, key),
            ).fetchone()
            if seen is not None:
                if seen["request_hash"] != fingerprint:
                    raise IdempotencyMismatch(
                        f"Idempotency-Key {key!r} was used with a different request"
                    )
                return Outcome(seen["status"], seen["response"], seen["location"], replayed=True)
        outcome = action(conn)
        if key is not None:
            conn.execute(
                "INSERT INTO admin_idempotency (actor, key, request_hash, status, response,"
                " location) VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    actor.name,
                    key,
                    fingerprint,
                    outcome.status,
                    Jsonb(outcome.body),
                    outcome.location,
                ),
            )
    return outcome
