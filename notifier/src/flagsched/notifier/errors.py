"""The notifier's exceptions (each is a FlagschedError)."""

from __future__ import annotations

from flagsched.runtime.errors import FlagschedError


class NotifierError(FlagschedError):
    """Base of the notifier's errors."""


class Refused(NotifierError):
    """The SSRF guard refused a URL before any connection was made."""


class Unreachable(NotifierError):
    """The request did not get a response (connect error, timeout, reset): retried."""
