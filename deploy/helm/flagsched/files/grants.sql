-- Table rights of flagsched's runtime roles, applied by the setup Job after
-- `flagsched db migrate`, as the setup role (which owns the tables and so may grant
-- on them). Idempotent: each role loses every table right first and gets exactly the
-- ones below, so a right taken away here is taken away on the next upgrade.
-- The roles themselves are created once by a DBA: deploy/sql/roles.sql.
-- Rendered by Helm: the role names are database.users.* of the chart's values.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {{ .dispatcher }}, {{ .worker }}, {{ .admin }};
GRANT USAGE ON SCHEMA public TO {{ .dispatcher }}, {{ .worker }}, {{ .admin }};

-- The dispatcher claims due rows (FOR UPDATE SKIP LOCKED), marks them dispatched and
-- reads the backlog for /metrics.
GRANT SELECT, UPDATE ON flag_schedules TO {{ .dispatcher }};

-- A worker locks and updates the flag and its schedule, and records the attempt and
-- the flag's change in one transaction. It never deletes.
GRANT SELECT, UPDATE ON feature_flags, flag_schedules TO {{ .worker }};
GRANT SELECT, INSERT ON schedule_retry_attempts, flag_change_log TO {{ .worker }};

-- The admin API reads everything and writes flags and schedules (create, edit,
-- cancel); the attempt history and the change log stay the workers' alone.
GRANT SELECT ON feature_flags, flag_schedules, schedule_retry_attempts, flag_change_log
    TO {{ .admin }};
GRANT INSERT, UPDATE ON feature_flags, flag_schedules TO {{ .admin }};
