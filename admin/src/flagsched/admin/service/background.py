"""One home for the admin process's background threads (the outbox drainer, the
redrive and bulk-action runners): started with the server, woken by a nudge after a
commit, polling every ``poll_s`` otherwise, and stopped after the batch in hand."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from flagsched.admin.service.env import Env
from flagsched.runtime.db.connect import DictConnection

log = logging.getLogger("flagsched.admin.background")


class Background:
    """A daemon thread running :meth:`_loop`; subclasses say what one pass does."""

    def __init__(self, name: str, *, poll_s: float) -> None:
        self._poll_s = poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def nudge(self) -> None:
        """Work arrived (a commit wrote some): run now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Stop after the batch in hand."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=15)

    def _sleep(self) -> None:
        self._wake.wait(self._poll_s)
        self._wake.clear()

    def _loop(self) -> None:
        raise NotImplementedError


class JobRunner(Background):
    """Works persisted jobs (redrives, bulk actions) through on a fresh connection per
    round; a failed round is logged and retried at the next poll, never fatal."""

    what = "job"  # for the log line
    thread_name = "admin-jobs"

    def __init__(
        self,
        connect: Callable[[], DictConnection],
        env: Env,
        on_commit: Callable[[], None],
        *,
        poll_s: float = 2.0,
    ) -> None:
        super().__init__(self.thread_name, poll_s=poll_s)
        self._connect, self._env, self._on_commit = connect, env, on_commit

    def round(self, conn: DictConnection) -> None:
        """Work until nothing is left (or stop is asked)."""
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    self.round(conn)
            except Exception:  # a failed round is retried at the next poll, never fatal
                log.exception("%s round failed; retrying in %.1fs", self.what, self._poll_s)
            self._sleep()
