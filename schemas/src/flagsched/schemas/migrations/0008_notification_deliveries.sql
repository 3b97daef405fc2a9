-- The notifier (docs/notifications.md). A delivery is one event for one sink: it is
-- written before the event's Kafka offset is committed, so a notifier killed at any
-- point loses nothing. Pending deliveries of one (sink, rule, kind) are collapsed into
-- one message (a digest); the message is what is sent, retried and signed: its id is
-- the webhook-id, its dedup_key the PagerDuty dedup_key / Opsgenie alias. Messages keep
-- the events they carry (never a secret) and are rendered at send time.
CREATE TABLE notification_messages (
    id               uuid        PRIMARY KEY,
    sink             text        NOT NULL,
    rule             text        NOT NULL,
    kind             text        NOT NULL,
    action           text        NOT NULL CHECK (action IN ('trigger', 'resolve')),
    dedup_key        text        NOT NULL,
    notices          jsonb       NOT NULL CHECK (jsonb_typeof(notices) = 'array'),
    schedule_ids     bigint[]    NOT NULL DEFAULT '{}',
    status           text        NOT NULL DEFAULT 'queued'
                     CONSTRAINT notification_messages_status_check CHECK (status IN
                       ('queued', 'retrying', 'sent', 'failed', 'disabled')),
    attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    response_code    integer,
    last_error       text,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    -- a trigger: when the resolve that closes its incident was queued
    resolved_at      timestamptz
);
CREATE INDEX notification_messages_due_idx
    ON notification_messages (next_attempt_at) WHERE status IN ('queued', 'retrying');
CREATE INDEX notification_messages_open_idx
    ON notification_messages USING gin (schedule_ids) WHERE action = 'trigger' AND resolved_at IS NULL;
CREATE INDEX notification_messages_key_idx ON notification_messages (sink, dedup_key, created_at);
CREATE INDEX notification_messages_rate_idx ON notification_messages (sink, rule, created_at);

CREATE TABLE notification_deliveries (
    event_key        text        NOT NULL,
    sink             text        NOT NULL,
    rule             text        NOT NULL,
    kind             text        NOT NULL,
    subject          text        NOT NULL,
    schedule_id      bigint,
    notice           jsonb       NOT NULL CHECK (jsonb_typeof(notice) = 'object'),
    status           text        NOT NULL DEFAULT 'pending'
                     CONSTRAINT notification_deliveries_status_check CHECK (status IN
                       ('pending', 'queued', 'retrying', 'sent', 'failed', 'suppressed',
                        'dropped', 'disabled')),
    message_id       uuid        REFERENCES notification_messages (id),
    attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    response_code    integer,
    next_attempt_at  timestamptz,
    topic            text,
    kafka_partition  integer,
    kafka_offset     bigint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_key, sink)
);
CREATE INDEX notification_deliveries_pending_idx
    ON notification_deliveries (sink, rule, kind, created_at) WHERE status = 'pending';
CREATE INDEX notification_deliveries_dedup_idx
    ON notification_deliveries (sink, rule, subject, created_at);
CREATE INDEX notification_deliveries_message_idx ON notification_deliveries (message_id);

-- Per (sink, rule, kind): when the last digest went out and which burst (episode) it
-- belonged to; digests of one episode share one incident dedup key.
CREATE TABLE notification_groups (
    sink           text        NOT NULL,
    rule           text        NOT NULL,
    kind           text        NOT NULL,
    last_flush_at  timestamptz NOT NULL,
    episode        text        NOT NULL,
    episode_until  timestamptz NOT NULL,
    PRIMARY KEY (sink, rule, kind)
);

-- An endpoint that answered 410 Gone: nothing more is sent to that URL (a sink whose
-- URL changes in the rules file is enabled again).
CREATE TABLE notification_endpoints (
    sink         text        PRIMARY KEY,
    url_sha256   text        NOT NULL,
    disabled_at  timestamptz NOT NULL,
    reason       text        NOT NULL
);
