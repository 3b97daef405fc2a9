"""Who may do what: the one table of actions and the least role each needs (deny by
default: an action missing here is refused), and the caller an action runs as."""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import MappingProxyType

from flagsched.admin.service.errors import Forbidden
from flagsched.admin.service.models import Role

RANK: dict[str, int] = {"viewer": 1, "operator": 2, "admin": 3}

#: action -> the least role allowed to do it.
ACTIONS = MappingProxyType(
    {
        "schedules.read": "viewer",
        "schedules.preview": "viewer",
        "dead_letters.read": "viewer",
        "redrives.read": "viewer",
        "stats.read": "viewer",
        "audit.read": "viewer",
        "bulk_actions.read": "viewer",
        "schedules.create": "operator",
        "schedules.edit": "operator",
        "schedules.cancel": "operator",
        "schedules.retry": "operator",
        # starting any bulk action; each also needs its own action's right (service/bulk.py)
        "schedules.bulk": "operator",
        "dead_letters.redrive": "admin",
        "dead_letters.republish": "admin",
    }
)


@dataclass(frozen=True)
class Actor:
    """The caller of an action, as the audit trail records it."""

    name: str
    role: Role
    #: Flag-key prefixes the caller is limited to; empty: every flag.
    prefixes: tuple[str, ...] = ()
    request_id: str | None = None
    idempotency_key: str | None = None
    source_address: str | None = None

    def allowed(self, action: str) -> bool:
        """Whether the caller's role is enough for ``action`` (unknown actions: never)."""
        need = ACTIONS.get(action)
        return need is not None and RANK.get(self.role, 0) >= RANK[need]

    def may_touch(self, flag_key: str) -> bool:
        """Whether the caller's prefixes cover ``flag_key``."""
        return not self.prefixes or any(flag_key.startswith(p) for p in self.prefixes)

    def check_flag(self, flag_key: str) -> None:
        """Raise :class:`Forbidden` unless the caller may act on ``flag_key``."""
        if not self.may_touch(flag_key):
            raise Forbidden(f"{self.name} may not act on flag {flag_key!r} (prefixes)")

    def with_request(
        self, request_id: str | None, idempotency_key: str | None, source: str | None
    ) -> Actor:
        """This caller on one request."""
        return replace(
            self, request_id=request_id, idempotency_key=idempotency_key, source_address=source
        )


def local_actor(user: str) -> Actor:
    """The CLI's caller: whoever runs it on a host with database access is an admin."""
    return Actor(name=f"cli:{user}", role="admin")
