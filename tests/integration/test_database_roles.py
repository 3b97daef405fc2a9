"""Least privilege on a real PostgreSQL: deploy/sql/roles.sql and the chart's grants.

In a fresh, empty database of the shared server, psql runs roles.sql (twice: it is
idempotent) with role names of this test's own (roles are cluster-wide), the setup
role applies the migrations, and the setup Job's own grants step runs the grants.sql
that Helm renders for those names. Then a real dispatcher and a real worker, each
connected as its own role, apply a schedule that the admin role created, and every
role is refused what it must not do: the worker and the others any DDL.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from flagsched.admin.retention import cleanup
from flagsched.runtime.db.migrate import migrate
from tests.support.helm import render
from tests.support.pipeline import (
    add_flag,
    add_schedule,
    connect,
    running_dispatcher,
    running_worker,
    setup_topics,
    status_is,
    wait_until,
    with_db,
)
from tests.support.pipeline import (
    test_settings as settings_for,
)
from tests.support.required import unavailable

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ROLES_SQL = ROOT / "deploy" / "sql" / "roles.sql"
PARTS = ("setup", "dispatcher", "worker", "admin", "notifier", "cleanup")


def as_role(dsn: str, role: str) -> str:
    """``dsn`` with another user (the shared server trusts local connections)."""
    return psycopg.conninfo.make_conninfo(dsn, user=role)


@pytest.fixture
def roles(template: Any) -> Iterator[tuple[str, dict[str, str]]]:
    """(the database's DSN, part -> role), both dropped afterwards."""
    psql = shutil.which("psql")
    if psql is None:
        unavailable("psql is missing (apt-get install postgresql-client)")
    tag = uuid.uuid4().hex[:8]
    names = {part: f"t{tag}_{part}" for part in PARTS}
    database = f"t_roles_{tag}"
    server = template.database_url
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(database))
        )
    dsn = with_db(server, database)
    try:
        for _ in range(2):  # the second run finds every role and grants again
            command = [psql, dsn, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(ROLES_SQL)]
            for part, name in names.items():
                command += ["-v", f"{part}_role={name}"]
            done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 0, done.stderr
        yield dsn, names
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
            for name in names.values():
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def run_setup_grants(dsn: str, names: dict[str, str], tmp_path: Path) -> None:
    """The setup Job's grants step, exactly as rendered, on the grants.sql rendered for
    ``names``, connected as the setup role."""
    sets = [f"database.users.{part}={name}" for part, name in names.items()]
    objects = render("default", *sets)
    (config,) = [o for o in objects if o["metadata"]["name"] == "flagsched-setup-sql"]
    (job,) = [o for o in objects if o["kind"] == "Job"]
    grants = tmp_path / "grants.sql"
    grants.write_text(config["data"]["grants.sql"])
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    (step,) = [s for s in script.split("&&") if s.strip().startswith("python")]
    code = shlex.split(step)[2].replace("/etc/flagsched/sql/grants.sql", str(grants))
    env = os.environ | {"FLAGSCHED_DATABASE_URL": as_role(dsn, names["setup"])}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def refused(dsn: str, statement: str) -> bool:
    """Whether PostgreSQL refuses ``statement`` for lack of a privilege or ownership
    (SQLSTATE 42501; any other error fails the test)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute(statement)
        except errors.InsufficientPrivilege:
            return True
    return False


DDL = (
    "CREATE TABLE intruder (id int)",
    "CREATE SCHEMA intruder",
    "ALTER TABLE feature_flags ADD COLUMN intruder int",
    "DROP TABLE flag_change_log",
    "CREATE INDEX intruder ON flag_schedules (updated_at)",
    "TRUNCATE schedule_retry_attempts",
)


def test_each_part_can_do_its_work_and_nothing_more(
    roles: tuple[str, dict[str, str]], template: Any, tmp_path: Path
) -> None:
    dsn, names = roles
    dsn_of = {part: as_role(dsn, name) for part, name in names.items()}
    assert migrate(dsn_of["setup"]), "the setup role applies the migrations"
    run_setup_grants(dsn, names, tmp_path)

    for part in ("dispatcher", "worker", "admin", "notifier", "cleanup"):
        for statement in DDL:
            assert refused(dsn_of[part], statement), f"{part} may run {statement!r}"
    # Beyond DDL: what a part has no business writing.
    assert refused(dsn_of["worker"], "DELETE FROM flag_schedules")
    assert refused(dsn_of["dispatcher"], "UPDATE feature_flags SET enabled = true")
    assert refused(dsn_of["dispatcher"], "SELECT * FROM flag_change_log")
    assert refused(dsn_of["admin"], "UPDATE schedule_retry_attempts SET outcome = 'applied'"), (
        "the attempt history is the workers' alone"
    )
    assert refused(dsn_of["admin"], "DELETE FROM flag_change_log")
    assert refused(dsn_of["admin"], "DELETE FROM flag_schedules"), "only the cleanup deletes"
    assert refused(dsn_of["notifier"], "DELETE FROM flag_schedules")
    assert refused(dsn_of["cleanup"], "UPDATE feature_flags SET enabled = true")
    assert refused(dsn_of["cleanup"], "DELETE FROM feature_flags")
    # The setup role is not a superuser either: no new roles.
    assert refused(dsn_of["setup"], "CREATE ROLE intruder")

    # The admin role creates the flag and the schedule, as the admin API does; a real
    # dispatcher and a real worker, each as its own role, apply it.
    base = settings_for(template.kafka_bootstrap_servers, dsn_of["setup"])
    setup_topics(base)
    with connect(dsn_of["admin"]) as admin:
        add_flag(admin, "least-privilege")
        sid = add_schedule(admin, "least-privilege", {"enabled": True})
        dispatcher = base.model_copy(update={"database_url": dsn_of["dispatcher"]})
        worker = base.model_copy(update={"database_url": dsn_of["worker"]})
        with running_worker(worker), running_dispatcher(dispatcher):
            wait_until(lambda: status_is(admin, sid, "applied"), what="applied by the roles")
        flag = admin.execute("SELECT enabled FROM feature_flags WHERE key = 'least-privilege'")
        assert flag.fetchone() == {"enabled": True}
        attempts = admin.execute(
            "SELECT outcome FROM schedule_retry_attempts WHERE schedule_id = %s", (sid,)
        ).fetchall()
        assert attempts == [{"outcome": "applied"}]
    # The cleanup, as its own role, deletes the applied schedule with its attempt and
    # change-log rows (retention 0 days: everything finished).
    with connect(dsn_of["cleanup"]) as conn:
        days = dict.fromkeys(("applied", "superseded", "cancelled", "dead"), 0.0)
        result = cleanup(conn, days)
    assert (result.schedules, result.attempts, result.change_log) == (1, 1, 1), result
    with connect(dsn_of["admin"]) as admin:
        gone = admin.execute("SELECT count(*) AS n FROM flag_schedules WHERE id = %s", (sid,))
        assert gone.fetchone() == {"n": 0}
