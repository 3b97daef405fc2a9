-- Table rights of flagsched's runtime roles, applied by the setup Job after
-- `flagsched db migrate`, as the setup role (which owns the tables and so may grant
-- on them). Idempotent: each role loses every table right first and gets exactly the
-- ones below, so a right taken away here is taken away on the next upgrade.
-- The roles themselves are created once by a DBA: deploy/sql/roles.sql.
-- Rendered by Helm: the role names are database.users.* of the chart's values.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {{ .dispatcher }}, {{ .worker }}, {{ .admin }}, {{ .notifier }},
    {{ .cleanup }};
GRANT USAGE ON SCHEMA public TO {{ .dispatcher }}, {{ .worker }}, {{ .admin }}, {{ .notifier }},
    {{ .cleanup }};

-- The dispatcher claims due rows (FOR UPDATE SKIP LOCKED), marks them dispatched and
-- reads the backlog for /metrics.
GRANT SELECT, UPDATE ON flag_schedules TO {{ .dispatcher }};

-- A worker locks and updates the flag and its schedule, and records the attempt and
-- the flag's change in one transaction. It never deletes.
GRANT SELECT, UPDATE ON feature_flags, flag_schedules TO {{ .worker }};
GRANT SELECT, INSERT ON schedule_retry_attempts, flag_change_log TO {{ .worker }};

-- The admin API reads everything and writes flags and schedules (create, edit,
-- cancel); it adds an attempt row for a manual retry but never changes one, and the
-- change log stays the workers' alone. Its own tables: audit (append only), outbox
-- and idempotency keys (expired ones deleted), redrives, backoff experiments.
GRANT SELECT ON feature_flags, flag_schedules, schedule_retry_attempts, flag_change_log,
    notification_messages, notification_deliveries TO {{ .admin }};
GRANT INSERT, UPDATE ON feature_flags, flag_schedules TO {{ .admin }};
GRANT INSERT ON schedule_retry_attempts TO {{ .admin }};
GRANT SELECT, INSERT ON admin_audit TO {{ .admin }};
GRANT SELECT, INSERT, UPDATE, DELETE ON admin_outbox, admin_idempotency TO {{ .admin }};
GRANT SELECT, INSERT, UPDATE ON admin_redrives, backoff_experiments, admin_bulk_actions
    TO {{ .admin }};
-- the web UI's sessions and OIDC logins under way (deleted at logout and expiry)
GRANT SELECT, INSERT, UPDATE, DELETE ON admin_ui_sessions, admin_ui_logins TO {{ .admin }};

-- The notifier reads schedules (its messages' details, the retry backlog) and keeps
-- its own delivery outbox.
GRANT SELECT ON flag_schedules TO {{ .notifier }};
GRANT SELECT, INSERT, UPDATE ON notification_messages, notification_deliveries,
    notification_groups, notification_endpoints TO {{ .notifier }};

-- The cleanup (retention) is the only role that deletes schedules: terminal ones past
-- their retention, with their attempt and change-log rows. Its batch claims the rows
-- FOR UPDATE SKIP LOCKED, which needs UPDATE on flag_schedules; it changes none.
GRANT SELECT, UPDATE, DELETE ON flag_schedules TO {{ .cleanup }};
GRANT SELECT, DELETE ON schedule_retry_attempts, flag_change_log TO {{ .cleanup }};
