-- The operator surface (admin API and CLI): its audit trail, its transactional outbox,
-- its idempotency keys and its redrive jobs. Each admin action writes its audit row,
-- its outbox records and its idempotency record in the transaction of the action.

-- Who did what to which object, before and after. Append-only: a trigger refuses
-- UPDATE and DELETE, so the API (or anyone without DDL rights) cannot rewrite it.
CREATE TABLE admin_audit (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at               timestamptz NOT NULL DEFAULT now(),
    actor            text        NOT NULL,
    role             text        NOT NULL,
    action           text        NOT NULL,
    object_type      text        NOT NULL,
    object_ids       text[]      NOT NULL DEFAULT '{}',
    before           jsonb,
    after            jsonb,
    request_id       text,
    idempotency_key  text,
    source_address   text
);
CREATE INDEX admin_audit_at_idx ON admin_audit (at, id);
CREATE INDEX admin_audit_objects_idx ON admin_audit USING gin (object_ids);

CREATE FUNCTION flagsched_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'admin_audit is append-only' USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER admin_audit_append_only
    BEFORE UPDATE OR DELETE ON admin_audit
    FOR EACH ROW EXECUTE FUNCTION flagsched_audit_append_only();

-- Kafka records an admin action must publish once it commits (the `cancelled`
-- lifecycle event, the wake-up of a manual retry). Written in the action's
-- transaction, sent by the admin process's drainer, then marked sent.
CREATE TABLE admin_outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    topic       text        NOT NULL,
    key         bytea,
    value       bytea       NOT NULL,
    headers     jsonb       NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(headers) = 'array'),
    sent_at     timestamptz
);
CREATE INDEX admin_outbox_unsent_idx ON admin_outbox (id) WHERE sent_at IS NULL;

-- The response of each mutating call made with an Idempotency-Key, per actor: a
-- replay with the same request gets it back and has no second effect.
CREATE TABLE admin_idempotency (
    actor         text        NOT NULL,
    key           text        NOT NULL,
    request_hash  text        NOT NULL,
    status        integer     NOT NULL,
    response      jsonb       NOT NULL,
    location      text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (actor, key)
);

-- A redrive of dead schedules: the selection is frozen when the job starts and
-- worked through at a bounded rate; `position` is how far it got.
CREATE TABLE admin_redrives (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at     timestamptz NOT NULL DEFAULT now(),
    created_by     text        NOT NULL,
    filter         jsonb       NOT NULL,
    rate_per_s     double precision NOT NULL CHECK (rate_per_s > 0),
    schedule_ids   bigint[]    NOT NULL,
    position       integer     NOT NULL DEFAULT 0,
    redriven       integer     NOT NULL DEFAULT 0,
    skipped        integer     NOT NULL DEFAULT 0,
    skipped_ids    bigint[]    NOT NULL DEFAULT '{}',
    status         text        NOT NULL DEFAULT 'running'
                   CONSTRAINT admin_redrives_status_check CHECK (status IN ('running', 'done', 'failed')),
    error          text,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- The admin lists, keyset-paginated in due order (a status filter uses the existing
-- (status, next_retry_at, retry_count) index, then sorts the few rows of that status);
-- and the finish-time filter. Each costs an index entry per status change of a
-- schedule (status is indexed already, so those updates were never HOT).
CREATE INDEX flag_schedules_due_id_idx ON flag_schedules (scheduled_at, id);
CREATE INDEX flag_schedules_finished_idx ON flag_schedules (finished_at) WHERE finished_at IS NOT NULL;
