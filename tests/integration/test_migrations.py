"""Migrations: versioned, idempotent, and the schema has what the access paths need."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql

from flagsched.runtime.db.migrate import available, migrate
from tests.support.pipeline import connect, with_db

pytestmark = pytest.mark.integration


@pytest.fixture
def empty_db(services):
    name = f"mig_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_db(services.database_url, name)


def test_migrations_apply_once_and_twice_is_a_no_op(empty_db):
    versions = [m.version for m in available()]
    assert versions == sorted(versions) and versions[0] == 1
    assert migrate(empty_db) == versions
    assert migrate(empty_db) == []
    with connect(empty_db) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        assert [r["version"] for r in rows] == versions


def test_schema_has_the_tables_constraints_and_indexes(empty_db):
    migrate(empty_db)
    with connect(empty_db) as conn:
        tables = {
            r["tablename"]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert {
            "feature_flags",
            "flag_schedules",
            "schedule_retry_attempts",
            "flag_change_log",
            "schema_migrations",
        } <= tables
        indexes = {
            r["indexname"]: r["indexdef"]
            for r in conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
            )
        }
        assert (
            "(status, next_retry_at, retry_count)"
            in indexes["flag_schedules_status_next_retry_idx"]
        )
        assert "WHERE (status = 'pending'::text)" in indexes["flag_schedules_pending_due_idx"]
        assert "(schedule_id, attempt)" in indexes["schedule_retry_attempts_pkey"]
        assert "(schedule_id)" in indexes["flag_change_log_schedule_once"]
        # due order (0006): a flag's waiting schedules in order, and what a wake-up brought
        waiting = indexes["flag_schedules_waiting_idx"]
        assert "(flag_key, scheduled_at, id)" in waiting
        assert "'pending'" in waiting and "'dispatched'" in waiting
        assert "applied_with IS NOT NULL" in indexes["schedule_retry_attempts_applied_with_idx"]
        # the admin's list of notifications, newest first (0012)
        assert "(updated_at, event_key, sink)" in indexes["notification_deliveries_updated_idx"]
        checks = {
            r["conname"]: r["def"]
            for r in conn.execute(
                "SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint"
                " WHERE contype = 'c'"
            )
        }
        status = checks["flag_schedules_status_check"]
        for s in (
            "pending",
            "dispatched",
            "applied",
            "retrying",
            "cancelled",
            "superseded",
            "dead",
        ):
            assert f"'{s}'" in status
        assert "100" in checks["feature_flags_rollout_range"]
        types = {
            r["column_name"]: r["data_type"]
            for r in conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = 'flag_schedules'"
            )
        }
        assert types["scheduled_at"] == "timestamp with time zone"
        assert types["next_retry_at"] == "timestamp with time zone"
        assert types["updates"] == "jsonb" and types["retry_policy"] == "jsonb"


def test_a_violated_constraint_is_refused(empty_db):
    migrate(empty_db)
    with connect(empty_db) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO flag_schedules (flag_key, updates, scheduled_at, status)"
            " VALUES ('k', '{}', now(), 'weird')"
        )
