"""A throwaway PostgreSQL cluster in a run directory, driven by ``initdb`` and ``pg_ctl``.

PostgreSQL refuses to run as root. When we are root, its programs run as the
``postgres`` system user; that user is given CAP_DAC_READ_SEARCH (search and
read, never write) so it can reach a data directory below a root-only
directory such as ``~/.cache`` or pytest's temp root, without loosening the
permissions of those directories.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from flagsched.devstack.probes import select_one
from flagsched.devstack.process import (
    LOOPBACK,
    free_port,
    kill_and_wait,
    pid_alive,
    pid_cmdline,
    pid_exists,
    pid_exited,
    pids_with_cwd,
    port_soon_free,
    tail,
    wait_for,
)
from flagsched.runtime.errors import DevStackError

log = logging.getLogger(__name__)

DB_USER = "flagsched"
DB_NAME = "flagsched"
_OS_USER = "postgres"
_SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")
_CAP_DAC_READ_SEARCH = 2
# Unix socket paths are limited to 107 bytes; leave room for "/.s.PGSQL.NNNNN".
_MAX_SOCKET_DIR = 90
_START_ATTEMPTS = 3
_SETTINGS = {
    "listen_addresses": LOOPBACK,
    # Throwaway data: durability costs time and buys nothing here.
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "max_connections": "200",
}


def _bindir_version(path: Path) -> tuple[int, ...]:
    match = re.search(r"postgresql/(\d+)", str(path))
    return (int(match.group(1)),) if match else (0,)


def find_server_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, newest major version first."""
    candidates: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_bindir_version)[::-1]
    for bindir in candidates:
        if all((bindir / program).is_file() for program in _SERVER_PROGRAMS):
            return bindir
    return None


def ensure_server_bindir() -> Path:
    """Find the PostgreSQL server programs, installing Debian's package if they are missing.

    The install runs only as root with apt-get present; otherwise DevStackError
    says what to install.
    """
    bindir = find_server_bindir()
    if bindir is not None:
        return bindir
    apt = shutil.which("apt-get")
    if os.geteuid() != 0 or apt is None:
        raise DevStackError("PostgreSQL server programs not found: apt-get install postgresql")
    log.warning("PostgreSQL server programs not found; installing Debian's postgresql package")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([apt, "update"], [apt, "install", "-y", "postgresql"]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            detail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-10:])
            raise DevStackError(f"{' '.join(cmd)} failed:\n{detail}")
    bindir = find_server_bindir()
    if bindir is None:
        raise DevStackError("postgresql installed but initdb/pg_ctl were not found")
    return bindir


def _has_bounding_cap(cap: int) -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapBnd:"):
                return bool(int(line.split()[1], 16) >> cap & 1)
    except (OSError, ValueError):
        pass
    return False


class LocalPostgres:
    """A PostgreSQL cluster under ``run_dir`` listening on ``127.0.0.1:port``.

    Trust authentication for the superuser ``flagsched``; the ``flagsched``
    database is created on first start. ``stop()`` and ``start()`` can be
    repeated on the same data directory and port.
    """

    def __init__(
        self, run_dir: Path, *, port: int | None = None, start_timeout_s: float = 60.0
    ) -> None:
        self.run_dir = run_dir
        self.start_timeout_s = start_timeout_s
        self._port = port

    # --- where things are -----------------------------------------------------------
    @property
    def port(self) -> int | None:
        """The TCP port, once chosen."""
        return self._port

    @property
    def dsn(self) -> str:
        """``postgresql://flagsched@127.0.0.1:PORT/flagsched``."""
        if self._port is None:
            raise DevStackError("PostgreSQL has no port yet: start it first")
        return f"postgresql://{DB_USER}@{LOOPBACK}:{self._port}/{DB_NAME}"

    @property
    def data_dir(self) -> Path:
        """PGDATA."""
        return self.run_dir / "data"

    @property
    def socket_dir(self) -> Path:
        """Where the server's Unix socket lives (unused when the path is too long)."""
        return self.run_dir / "sock"

    @property
    def log_path(self) -> Path:
        """The server log written by ``pg_ctl -l``."""
        return self.run_dir / "postgres.log"

    # --- state ----------------------------------------------------------------------
    def _pidfile_fields(self) -> list[str]:
        try:
            return (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return []

    @property
    def pid(self) -> int | None:
        """The postmaster's pid when it is running, else None."""
        fields = self._pidfile_fields()
        try:
            pid = int(fields[0])
        except (IndexError, ValueError):
            return None
        cmdline = pid_cmdline(pid)
        # A recycled pid belongs to some other program: not our postmaster.
        if not pid_alive(pid) or (cmdline is not None and str(self.data_dir) not in cmdline):
            return None
        return pid

    def is_running(self) -> bool:
        """True when the postmaster of this data directory is alive."""
        return self.pid is not None

    # --- lifecycle ------------------------------------------------------------------
    def start(self) -> str:
        """Start (or adopt the running) server, create the database; return the DSN."""
        if self.is_running():
            self._port = int(self._pidfile_fields()[3])
        else:
            self._clear_stale()
            bindir = ensure_server_bindir()
            self._initdb(bindir)
            self._pg_ctl_start(bindir)
        self._create_database()
        return self.dsn

    def stop(self, timeout_s: float = 30.0) -> None:
        """``pg_ctl stop -m fast``; SIGKILL the cluster if that does not finish in time."""
        pid = self.pid
        if pid is None:
            self._clear_stale()
            return
        bindir = ensure_server_bindir()
        cmd = [str(bindir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w"]
        cmd += ["-t", str(max(1, int(timeout_s)))]
        done = self._run_as_db_user(cmd, timeout_s + 5)
        if done.returncode != 0:
            log.warning("pg_ctl stop failed (%s); killing the cluster", done.stdout.strip())
            self.kill()
            return
        log.info("PostgreSQL stopped (pid %d)", pid)

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend, as a crash would (for fault tests)."""
        pids = sorted(set(pids_with_cwd(self.data_dir)) | {p for p in [self.pid] if p})
        if pids:
            kill_and_wait(pids, "PostgreSQL")
            log.info("PostgreSQL killed (pids %s)", pids)

    # --- internals ------------------------------------------------------------------
    def _run_as_db_user(self, cmd: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
        prefix: list[str] = []
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv and _has_bounding_cap(_CAP_DAC_READ_SEARCH):
                prefix = [setpriv, f"--reuid={_OS_USER}", f"--regid={_OS_USER}", "--init-groups"]
                prefix += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", "--"]
            else:
                prefix = ["runuser", "-u", _OS_USER, "--"]
        return subprocess.run(
            prefix + cmd,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            cwd="/",
        )

    def _own_dirs(self) -> None:
        """Create the run directories and hand them to the ``postgres`` user when we are root."""
        for path in (self.run_dir, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        try:
            user = pwd.getpwnam(_OS_USER)
        except KeyError:
            raise DevStackError(
                f"running as root but there is no '{_OS_USER}' user to run PostgreSQL: "
                "apt-get install postgresql creates it"
            ) from None
        for path in (self.run_dir, self.socket_dir, self.log_path):
            if path.exists():
                os.chown(path, user.pw_uid, user.pw_gid)

    def _clear_stale(self) -> None:
        """Clean up after a killed server: orphaned backends, lock files PostgreSQL trips on."""
        if not self.data_dir.is_dir():
            return
        leftovers = pids_with_cwd(self.data_dir)
        if leftovers:
            log.warning("killing leftover PostgreSQL processes %s", leftovers)
            kill_and_wait(leftovers, "leftover PostgreSQL processes")
        try:
            old = int(self._pidfile_fields()[0])
        except (IndexError, ValueError):
            return
        # PostgreSQL discards lock files whose pid is gone, but refuses to start while
        # kill(pid, 0) succeeds: a zombie not reaped yet (init here reaps only every
        # second or so) or a pid recycled by another program. Once our old postmaster
        # has exited, its lock files are removed here instead of waiting for the reaper.
        cmdline = pid_cmdline(old)
        if not cmdline or str(self.data_dir) in cmdline:
            wait_for(lambda: pid_exited(old), 10.0)
        if pid_exists(old):
            log.warning("removing stale lock files left by pid %d", old)
            (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
            for lock in self.socket_dir.glob(".s.PGSQL.*.lock"):
                lock.unlink(missing_ok=True)

    def _initdb(self, bindir: Path) -> None:
        self._own_dirs()
        if (self.data_dir / "PG_VERSION").is_file():
            return
        shutil.rmtree(self.data_dir, ignore_errors=True)  # a half-done initdb
        cmd = [str(bindir / "initdb"), "-D", str(self.data_dir), "-U", DB_USER, "--auth=trust"]
        cmd += ["-E", "UTF8", "--no-locale", "--no-sync"]
        done = self._run_as_db_user(cmd, 120)
        if done.returncode != 0:
            raise DevStackError(f"initdb failed:\n{(done.stdout + done.stderr).strip()}")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# flagsched dev stack: the rest is in flagsched.conf\n")
            conf.write("include_if_exists = 'flagsched.conf'\n")
        log.info("initialised PostgreSQL cluster in %s", self.data_dir)

    def _write_settings(self) -> None:
        settings = {**_SETTINGS, "port": str(self._port)}
        sock = str(self.socket_dir)
        settings["unix_socket_directories"] = sock if len(sock) <= _MAX_SOCKET_DIR else ""
        conf = self.data_dir / "flagsched.conf"
        conf.write_text("".join(f"{key} = '{value}'\n" for key, value in settings.items()))
        if os.geteuid() == 0:
            user = pwd.getpwnam(_OS_USER)
            os.chown(conf, user.pw_uid, user.pw_gid)

    def _pg_ctl_start(self, bindir: Path) -> None:
        for attempt in range(1, _START_ATTEMPTS + 1):
            if self._port is None or attempt > 1 or not port_soon_free(self._port):
                old, self._port = self._port, free_port()
                if old is not None:
                    log.warning("PostgreSQL port %d is in use; moved to %d", old, self._port)
            self._write_settings()
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            cmd = [str(bindir / "pg_ctl"), "start", "-D", str(self.data_dir)]
            cmd += ["-l", str(self.log_path), "-w", "-t", str(int(self.start_timeout_s))]
            done = self._run_as_db_user(cmd, self.start_timeout_s + 10)
            if done.returncode == 0:
                log.info("PostgreSQL ready at %s:%d (pid %s)", LOOPBACK, self._port, self.pid)
                return
            new_log = self._read_from(offset)
            if "could not bind" not in new_log and "already in use" not in new_log:
                self.kill()
                raise DevStackError(
                    f"pg_ctl start failed: {done.stdout.strip()} {done.stderr.strip()}\n"
                    f"see {self.log_path}:\n{tail(self.log_path)}"
                )
        raise DevStackError(f"PostgreSQL could not bind a port after {_START_ATTEMPTS} attempts")

    def _read_from(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(offset)
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    def _create_database(self) -> None:
        admin_dsn = f"postgresql://{DB_USER}@{LOOPBACK}:{self._port}/postgres"
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
            if exists.fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB_NAME)))
                log.info("created database %s", DB_NAME)
        select_one(self.dsn, 10)
