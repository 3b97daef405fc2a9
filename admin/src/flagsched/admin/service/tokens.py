"""Static API tokens, stored hashed in the file ``FLAGSCHED_ADMIN_TOKENS_FILE``.

A token is ``fsa_<id>_<secret>`` with 256 random bits of secret; the file keeps only
``sha256(token)`` (a fast hash is enough for a high-entropy secret, as for GitHub's
tokens), its role, its optional flag-key prefixes and its name. The plaintext is
printed once, by ``flagsched admin token create``, and never stored or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from flagsched.admin.service.models import Role

PREFIX = "fsa_"


class TokenRecord(BaseModel):
    """One token as the file stores it (no plaintext)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    role: Role
    prefixes: tuple[str, ...] = ()
    sha256: str
    created_at: datetime


class TokenFile(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid")

    tokens: list[TokenRecord] = []


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def read_file(path: Path) -> TokenFile:
    """The tokens in ``path`` (none if it does not exist yet)."""
    if not path.exists():
        return TokenFile()
    return TokenFile.model_validate_json(path.read_text("utf-8"))


def create_token(path: Path, role: Role, *, name: str = "", prefixes: tuple[str, ...] = ()) -> str:
    """Add a new token to ``path`` (created 0600) and return its plaintext, once."""
    token_id = secrets.token_hex(4)
    token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    data = read_file(path)
    data.tokens.append(
        TokenRecord(
            id=token_id,
            name=name or f"{role}-{token_id}",
            role=role,
            prefixes=prefixes,
            sha256=_digest(token),
            created_at=datetime.now(UTC),
        )
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tokens-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp makes it 0600
        f.write(json.dumps(data.model_dump(mode="json"), indent=2) + "\n")
    os.replace(tmp, path)
    return token


class TokenStore:
    """Verifies presented tokens against the file, re-read when it changes."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._mtime: float | None = None
        self._by_id: dict[str, TokenRecord] = {}
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        if self._path is None:
            return
        try:
            mtime = self._path.stat().st_mtime
        except FileNotFoundError:
            self._by_id, self._mtime = {}, None
            return
        if mtime != self._mtime:
            self._by_id = {t.id: t for t in read_file(self._path).tokens}
            self._mtime = mtime

    def get(self, token_id: str) -> TokenRecord | None:
        """The record with ``token_id`` as the file says now (None: deleted)."""
        with self._lock:
            self._refresh()
            return self._by_id.get(token_id)

    def verify(self, token: str) -> TokenRecord | None:
        """The record of ``token``, or None (unknown, malformed or wrong secret)."""
        if not token.startswith(PREFIX):
            return None
        token_id = token[len(PREFIX) :].split("_", 1)[0]
        with self._lock:
            self._refresh()
            record = self._by_id.get(token_id)
        if record is None or not hmac.compare_digest(record.sha256, _digest(token)):
            return None
        return record
