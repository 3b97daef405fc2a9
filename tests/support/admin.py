"""The admin API on a real uvicorn server on a free port, with a token per role."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from flagsched.admin.api.server import AdminServer
from flagsched.admin.service.tokens import create_token
from flagsched.admin.settings import AdminSettings
from flagsched.runtime.settings import Settings

ROLES = ("viewer", "operator", "admin")


@dataclass
class AdminApi:
    """A running admin API and a token for each role."""

    server: AdminServer
    url: str
    tokens: dict[str, str]

    def client(self, role: str | None = "admin", **headers: str) -> httpx.Client:
        """An HTTP client as ``role`` (None: no token)."""
        if role is not None:
            headers["Authorization"] = f"Bearer {self.tokens[role]}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=10.0)


@contextlib.contextmanager
def running_admin(settings: Settings, tmp_path: Path, **overrides: Any) -> Iterator[AdminApi]:
    """The admin API of ``settings`` on 127.0.0.1 and a free port, stopped on exit."""
    tokens_file = tmp_path / "tokens.json"
    tokens = {role: create_token(tokens_file, role, name=role) for role in ROLES}  # type: ignore[arg-type]
    values: dict[str, Any] = {
        "admin_addr": "127.0.0.1",
        "admin_port": 0,
        "admin_tokens_file": tokens_file,
        "admin_outbox_poll_s": 0.5,
    }
    values.update(overrides)
    server = AdminServer(settings, AdminSettings(**values))
    server.start()
    try:
        yield AdminApi(server, server.url, tokens)
    finally:
        server.stop()
