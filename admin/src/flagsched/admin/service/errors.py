"""The admin service's exception family; each maps to one problem ``type`` (RFC 9457)."""

from __future__ import annotations

from typing import Any


class AdminError(Exception):
    """Base of every error an admin action raises on purpose."""

    #: The stable problem type slug and HTTP status of this class.
    slug = "admin-error"
    status = 500
    title = "Admin action failed"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(AdminError):
    """The schedule, flag, redrive or dead letter named does not exist."""

    slug, status, title = "not-found", 404, "Not found"


class InvalidInput(AdminError):
    """A field of the request is invalid; ``field`` names it."""

    slug, status, title = "validation", 422, "Invalid request"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}", errors=[{"field": field, "message": detail}])
        self.field = field


class StateConflict(AdminError):
    """The schedule's status does not allow the action (e.g. cancel once applied)."""

    slug, status, title = "state-conflict", 409, "The schedule's state does not allow this"


class IdempotencyMismatch(AdminError):
    """An Idempotency-Key was reused with a different request."""

    slug, status, title = "idempotency-key-reused", 422, "Idempotency-Key reused"


class TooLarge(AdminError):
    """A bulk action would touch more than its cap allows."""

    slug, status, title = "too-large", 422, "Too many items for one call"


class Forbidden(AdminError):
    """The caller's role or flag-key prefixes do not allow the action."""

    slug, status, title = "forbidden", 403, "Forbidden"
