-- The admin web UI (admin/src/flagsched/admin/ui/) and bulk actions on schedules.

-- A browser session: the cookie holds an opaque random id, the table only its SHA-256,
-- so a leaked table cannot be replayed as a cookie. The actor is fixed at login (a
-- static token or an OIDC id token) with its role and prefixes; the CSRF token is
-- the session's own and travels in every form and htmx request. A session opened with
-- a static token keeps its id: deleting the token (or changing its role) ends it.
CREATE TABLE admin_ui_sessions (
    id_hash     bytea       PRIMARY KEY CHECK (octet_length(id_hash) = 32),
    actor       text        NOT NULL,
    role        text        NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    prefixes    text[]      NOT NULL DEFAULT '{}',
    token_id    text,
    csrf_token  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX admin_ui_sessions_expires_idx ON admin_ui_sessions (expires_at);

-- An OIDC login under way (authorization code + PKCE): the state sent to the provider,
-- the hash of the browser binding cookie, the PKCE verifier and the nonce; used once.
CREATE TABLE admin_ui_logins (
    state_hash    bytea       PRIMARY KEY CHECK (octet_length(state_hash) = 32),
    browser_hash  bytea       NOT NULL,
    code_verifier text        NOT NULL,
    nonce         text        NOT NULL,
    expires_at    timestamptz NOT NULL
);

-- A bulk cancel or retry of every schedule matching a filter: the selection is frozen
-- when it starts (audited then), and the admin process works it through in batches,
-- each in its own transaction, persisting the position, so any admin process resumes
-- a job whose process died (like admin_redrives).
CREATE TABLE admin_bulk_actions (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action         text        NOT NULL CHECK (action IN ('cancel', 'retry')),
    filter         jsonb       NOT NULL,
    created_by     text        NOT NULL,
    created_role   text        NOT NULL CHECK (created_role IN ('viewer', 'operator', 'admin')),
    created_prefixes text[]    NOT NULL DEFAULT '{}',
    schedule_ids   bigint[]    NOT NULL,
    position       integer     NOT NULL DEFAULT 0,
    done           integer     NOT NULL DEFAULT 0,
    skipped        integer     NOT NULL DEFAULT 0,
    status         text        NOT NULL DEFAULT 'running'
                   CHECK (status IN ('running', 'done', 'failed')),
    error          text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admin_bulk_actions_running_idx ON admin_bulk_actions (id) WHERE status = 'running';
