-- flagsched's database roles, one per part: run once by a DBA (a role with CREATEROLE
-- and rights on the database), before the first `helm install`:
--
--   psql "postgresql://dba@db:5432/flagsched" -v ON_ERROR_STOP=1 -f deploy/sql/roles.sql
--
-- then give each role a password (psql: \password flagsched_worker, ...) and put each
-- password into that part's Secret (docs/deployment.md, "Database roles").
--
-- Idempotent: an existing role is left as it is (its password too); the rights below
-- are granted again. The names can be changed with psql variables, the same names as
-- the chart's database.users.* values:
--   -v setup_role=... -v dispatcher_role=... -v worker_role=... -v admin_role=...
--   -v notifier_role=... -v cleanup_role=...
--
--   setup       owns the tables: the only role that runs DDL (`flagsched db migrate`,
--               in the setup Job), and grants the others their table rights after the
--               migrations (the chart's files/grants.sql).
--   dispatcher  reads and updates flag_schedules.
--   worker      reads and updates flags and schedules, inserts attempts and changes.
--   admin       reads everything, writes flags and schedules (what the admin API writes)
--               and its own tables (audit, outbox, redrives).
--   notifier    reads schedules, keeps its delivery outbox (notification_*).
--   cleanup     deletes terminal schedules past their retention, with their attempt
--               and change-log rows: the only role that deletes schedules.
-- No runtime role may create, alter or drop anything in the schema.

\if :{?setup_role} \else \set setup_role flagsched_setup \endif
\if :{?dispatcher_role} \else \set dispatcher_role flagsched_dispatcher \endif
\if :{?worker_role} \else \set worker_role flagsched_worker \endif
\if :{?admin_role} \else \set admin_role flagsched_admin \endif
\if :{?notifier_role} \else \set notifier_role flagsched_notifier \endif
\if :{?cleanup_role} \else \set cleanup_role flagsched_cleanup \endif

SELECT format('CREATE ROLE %I LOGIN', name)
  FROM unnest(ARRAY[:'setup_role', :'dispatcher_role', :'worker_role', :'admin_role',
                    :'notifier_role', :'cleanup_role']) AS name
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name)
\gexec

-- Before PostgreSQL 15 every role may create objects in the public schema: not here.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO :"setup_role";
GRANT USAGE ON SCHEMA public TO :"dispatcher_role", :"worker_role", :"admin_role",
    :"notifier_role", :"cleanup_role";

-- CONNECT, and TEMPORARY: a worker checks a batch's flag values in a temporary table.
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I, %I, %I, %I, %I, %I',
              current_database(), :'setup_role', :'dispatcher_role', :'worker_role',
              :'admin_role', :'notifier_role', :'cleanup_role')
\gexec

-- Nor a schema of its own (PUBLIC lacks CREATE on a database by default; made sure).
SELECT format('REVOKE CREATE ON DATABASE %I FROM PUBLIC', current_database())
\gexec

-- An existing installation whose tables belong to another role (e.g. a single
-- "flagsched" user): hand them to the setup role, as the table owner:
--   REASSIGN OWNED BY flagsched TO flagsched_setup;
