"""Process, port and lock helpers shared by the local Kafka and PostgreSQL runners.

Linux-first: liveness checks read ``/proc`` when it exists so that zombies and
recycled pids are not mistaken for a running server.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from flagsched.runtime.errors import DevStackError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
POLL_INTERVAL_S = 0.15
_PROC = Path("/proc")


def free_port(host: str = LOOPBACK, *, avoid: frozenset[int] = frozenset()) -> int:
    """A port on ``host`` that nothing listens on right now (the kernel picks it)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port
    raise DevStackError(f"could not find a free port on {host}")


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when ``host:port`` can be bound, i.e. no server holds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR mirrors what the JVM and PostgreSQL do, so sockets left in
        # TIME_WAIT by a previous run of our own server do not count as "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_soon_free(port: int, timeout_s: float = 5.0) -> bool:
    """Wait up to ``timeout_s`` for ``port`` to be free (a dying server may still hold it)."""
    return wait_for(lambda: port_is_free(port), timeout_s)


def port_accepts(port: int, host: str = LOOPBACK, timeout_s: float = 0.25) -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _proc_status(pid: int) -> dict[str, str] | None:
    """Fields of /proc/<pid>/status; None when /proc cannot tell (no such pid, not Linux)."""
    try:
        text = (_PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def _reap_if_child(pid: int) -> bool:
    """Collect ``pid`` if it is an exited child of ours; True when it was collected."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return reaped == pid


def pid_exists(pid: int) -> bool:
    """True while the kernel knows ``pid``, zombies included (what ``kill(pid, 0)`` sees)."""
    if pid <= 0 or _reap_if_child(pid):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_alive(pid: int) -> bool:
    """True when ``pid`` runs and is not dying.

    A zombie, or a process with SIGKILL pending (its threads are still tearing
    down), counts as dead: it will never serve again.
    """
    if not pid_exists(pid):
        return False
    status = _proc_status(pid)
    if status is None:
        return not _PROC.is_dir()  # without /proc, trust kill(pid, 0); with it, pid just went
    if status.get("State", "R")[:1] in ("Z", "X"):
        return False
    pending = int(status.get("SigPnd", "0"), 16) | int(status.get("ShdPnd", "0"), 16)
    return not pending & (1 << (signal.SIGKILL - 1))


def pid_exited(pid: int) -> bool:
    """True when ``pid`` has fully exited, so its ports and files are released.

    Unlike :func:`pid_alive`, a dying process whose threads still hold its
    sockets is not exited yet; an unreaped zombie with no threads left is.
    """
    if not pid_exists(pid):
        return True
    status = _proc_status(pid)
    if status is None:
        return False
    return status.get("State", "R")[:1] in ("Z", "X") and status.get("Threads", "1") in ("0", "1")


def pid_cmdline(pid: int) -> str | None:
    """The command line of ``pid`` joined by spaces; None when /proc cannot tell."""
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def pids_with_cwd(directory: Path) -> list[int]:
    """Live processes whose working directory is ``directory`` (PostgreSQL's children)."""
    target = directory.resolve()
    found: list[int] = []
    if not _PROC.is_dir():
        return found
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == target:
                found.append(int(entry.name))
        except OSError:
            continue
    return [pid for pid in found if not pid_exited(pid)]


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``condition`` until it is true or ``timeout_s`` passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(POLL_INTERVAL_S, remaining))


def terminate(pid: int, timeout_s: float, what: str) -> None:
    """SIGTERM ``pid``, wait up to ``timeout_s`` for it to exit, then SIGKILL it.

    Returns once the process has fully exited, so its ports are free again.
    """
    if pid_exited(pid):
        return
    if pid_alive(pid):  # else it is already dying: only waiting is left
        log.debug("sending SIGTERM to %s (pid %d)", what, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if wait_for(lambda: pid_exited(pid), timeout_s):
            return
        log.warning("%s (pid %d) ignored SIGTERM for %.0fs; sending SIGKILL", what, pid, timeout_s)
    kill_and_wait([pid], what)


def kill_and_wait(pids: list[int], what: str, timeout_s: float = 10.0) -> None:
    """SIGKILL every pid and wait until all have fully exited."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if not wait_for(lambda: all(pid_exited(p) for p in pids), timeout_s):
        raise DevStackError(f"{what} (pids {pids}) still alive {timeout_s:.0f}s after SIGKILL")


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def file_lock(path: Path, timeout_s: float, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing).

    The kernel drops the lock when its holder dies, so a lock file left by a
    SIGKILLed run never blocks the next one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:

        def try_lock() -> bool:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        if not wait_for(try_lock, timeout_s):
            raise DevStackError(f"{what} is busy: another process holds {path}")
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
