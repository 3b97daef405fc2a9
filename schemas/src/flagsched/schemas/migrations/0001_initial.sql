-- flagsched schema, version 1. All times are timestamptz (UTC).

CREATE TABLE feature_flags (
    key                 text PRIMARY KEY CHECK (key ~ '^[A-Za-z0-9._:-]{1,200}$'),
    enabled             boolean  NOT NULL DEFAULT false,
    rollout_percentage  smallint NOT NULL DEFAULT 0
                        CONSTRAINT feature_flags_rollout_range CHECK (rollout_percentage BETWEEN 0 AND 100),
    config              jsonb    NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(config) = 'object'),
    version             bigint   NOT NULL DEFAULT 1,
    -- per-flag ordering: the newest schedule applied so far (a stale retry never overwrites it)
    last_schedule_id    bigint,
    last_scheduled_at   timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- No foreign key to feature_flags: a schedule naming an unknown flag is accepted
-- here and reported by the worker as a permanent failure (flag_not_found).
CREATE TABLE flag_schedules (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flag_key          text        NOT NULL,
    updates           jsonb       NOT NULL CHECK (jsonb_typeof(updates) = 'object'),
    scheduled_at      timestamptz NOT NULL,
    priority          text        NOT NULL DEFAULT 'normal'
                      CONSTRAINT flag_schedules_priority_check CHECK (priority IN ('normal', 'critical')),
    status            text        NOT NULL DEFAULT 'pending'
                      CONSTRAINT flag_schedules_status_check CHECK (status IN
                        ('pending', 'dispatched', 'applied', 'retrying', 'cancelled', 'superseded', 'dead')),
    retry_count       integer     NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    max_retries       integer     CHECK (max_retries >= 0),   -- NULL: the global default
    retry_policy      jsonb       CHECK (retry_policy IS NULL OR jsonb_typeof(retry_policy) = 'object'),
    next_retry_at     timestamptz,
    last_error        text,
    last_error_class  text,
    first_failed_at   timestamptz,
    dispatched_at     timestamptz,
    finished_at       timestamptz,
    finished_attempt  integer,    -- the attempt that reached applied/dead/superseded/cancelled
    superseded_by     bigint,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Dispatcher: pending rows in due order.
CREATE INDEX flag_schedules_pending_due_idx ON flag_schedules (scheduled_at) WHERE status = 'pending';
-- Retry backlog and stuck-retry sweeps.
CREATE INDEX flag_schedules_status_next_retry_idx
    ON flag_schedules (status, next_retry_at, retry_count);
-- Per-flag ordering and history.
CREATE INDEX flag_schedules_flag_idx ON flag_schedules (flag_key, scheduled_at);

-- One row per attempt, keyed by (schedule, attempt): the bookkeeping is idempotent.
CREATE TABLE schedule_retry_attempts (
    schedule_id      bigint      NOT NULL REFERENCES flag_schedules (id) ON DELETE CASCADE,
    attempt          integer     NOT NULL CHECK (attempt >= 1),
    started_at       timestamptz NOT NULL,
    finished_at      timestamptz NOT NULL,
    due_at           timestamptz,
    lateness_ms      double precision,
    outcome          text        NOT NULL
                     CONSTRAINT schedule_retry_attempts_outcome_check CHECK (outcome IN
                       ('applied', 'retry', 'dead', 'superseded', 'cancelled')),
    error_class      text,
    error_message    text,
    dlt_reason       text CHECK (dlt_reason IN ('exhausted', 'permanent', 'poison')),
    next_attempt_at  timestamptz,
    topic            text,
    kafka_partition  integer,
    kafka_offset     bigint,
    worker           text,
    trace_id         text,
    PRIMARY KEY (schedule_id, attempt)
);
CREATE INDEX schedule_retry_attempts_finished_idx ON schedule_retry_attempts (finished_at);
CREATE INDEX schedule_retry_attempts_class_idx
    ON schedule_retry_attempts (error_class, finished_at) WHERE error_class IS NOT NULL;

-- Every change a schedule made to a flag; UNIQUE (schedule_id) makes a double
-- application a constraint violation, not a silent duplicate.
CREATE TABLE flag_change_log (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flag_key      text        NOT NULL REFERENCES feature_flags (key) ON DELETE CASCADE,
    schedule_id   bigint      NOT NULL CONSTRAINT flag_change_log_schedule_once UNIQUE,
    attempt       integer     NOT NULL,
    version       bigint      NOT NULL,
    before        jsonb       NOT NULL,
    after         jsonb       NOT NULL,
    applied_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX flag_change_log_flag_idx ON flag_change_log (flag_key, applied_at);

-- Wake the dispatcher when a schedule is created or re-armed.
CREATE FUNCTION flagsched_notify_schedule() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('flagsched_schedules', NEW.id::text);
    RETURN NULL;
END $$;

CREATE TRIGGER flag_schedules_notify
    AFTER INSERT OR UPDATE OF scheduled_at, status ON flag_schedules
    FOR EACH ROW WHEN (NEW.status = 'pending')
    EXECUTE FUNCTION flagsched_notify_schedule();
