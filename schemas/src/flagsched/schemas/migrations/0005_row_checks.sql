-- Bad rows are refused: a schedule that is still to be worked on (pending,
-- dispatched or retrying) must have
--   * a flag key of the FlagKey pattern (flagsched.schemas.events.FLAG_KEY_PATTERN),
--   * a finite due time,
--   * an `updates` document of at most 65,536 bytes as JSON text and at most 32
--     levels of objects and arrays (flagsched.schemas.updates: MAX_UPDATE_BYTES,
--     MAX_UPDATE_DEPTH; the document itself is level 1),
--   * a `retry_policy` of the PolicyOverride shape (flagsched.schemas.retry.policy):
--     an object with only the keys max_retries (an integer >= 0), base_s and cap_s
--     (numbers in (0, 2592000]), multiplier (a number >= 1), floor_s (a number in
--     [0, 2592000]) and jitter (none, full, equal or decorrelated), each may be null.
--
-- Finished rows (applied, dead, superseded, cancelled) are exempt: they are history,
-- and a row that slipped in before these checks can always be retired to 'dead'.
--
-- The constraints are added NOT VALID: they hold for every row inserted or updated
-- from now on, but existing rows are not scanned. Validating here would make one old
-- bad row fail the migration and stop the deployment, which is the opposite of "a
-- bad row harms only itself"; workers and the dispatcher instead dead-letter such a
-- row when they meet it. Once none is left, an operator may run
--   ALTER TABLE flag_schedules VALIDATE CONSTRAINT <name>;
-- for each of them (it takes a SHARE UPDATE EXCLUSIVE lock: writes go on).

-- Levels of objects and arrays in `doc` (a scalar is 0), counted up to `lim` + 1 and
-- no further, so a hostile document costs at most `lim` + 1 levels of work.
CREATE FUNCTION flagsched_jsonb_depth(doc jsonb, lim integer) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    WITH RECURSIVE t(v, d) AS (
        SELECT doc, 1 WHERE jsonb_typeof(doc) IN ('object', 'array')
        UNION ALL
        SELECT c.v, t.d + 1
          FROM t
         CROSS JOIN LATERAL (
               SELECT e.value FROM jsonb_each(
                   CASE WHEN jsonb_typeof(t.v) = 'object' THEN t.v ELSE '{}'::jsonb END) AS e
               UNION ALL
               SELECT a.value FROM jsonb_array_elements(
                   CASE WHEN jsonb_typeof(t.v) = 'array' THEN t.v ELSE '[]'::jsonb END) AS a
         ) AS c(v)
         WHERE t.d <= lim AND jsonb_typeof(c.v) IN ('object', 'array')
    )
    SELECT COALESCE(max(d), 0) FROM t
$$;

-- Whether `p` fits PolicyOverride: NULL, or an object of known keys, each null or valid.
CREATE FUNCTION flagsched_retry_policy_ok(p jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p IS NULL OR (jsonb_typeof(p) = 'object' AND NOT EXISTS (
        SELECT 1 FROM jsonb_each(p) AS e(k, v)
         WHERE jsonb_typeof(v) <> 'null' AND NOT CASE
            WHEN k = 'jitter' THEN
                jsonb_typeof(v) = 'string'
                AND v #>> '{}' IN ('none', 'full', 'equal', 'decorrelated')
            WHEN k NOT IN ('max_retries', 'base_s', 'multiplier', 'cap_s', 'floor_s') THEN false
            WHEN jsonb_typeof(v) <> 'number' THEN false
            -- numbers only from here on (CASE evaluates in order)
            WHEN k = 'max_retries' THEN (v #>> '{}') ~ '^[0-9]+$'  -- 3, not 3.0 or -1
            WHEN k = 'multiplier' THEN (v #>> '{}')::numeric >= 1
            WHEN k = 'floor_s' THEN (v #>> '{}')::numeric BETWEEN 0 AND 2592000
            ELSE (v #>> '{}')::numeric > 0 AND (v #>> '{}')::numeric <= 2592000  -- base_s, cap_s
        END
    ))
$$;

ALTER TABLE flag_schedules
    ADD CONSTRAINT flag_schedules_flag_key_pattern CHECK (
        status NOT IN ('pending', 'dispatched', 'retrying')
        OR flag_key ~ '^[A-Za-z0-9._:-]{1,200}$') NOT VALID,
    ADD CONSTRAINT flag_schedules_scheduled_at_finite CHECK (
        status NOT IN ('pending', 'dispatched', 'retrying')
        OR isfinite(scheduled_at)) NOT VALID,
    ADD CONSTRAINT flag_schedules_updates_bounded CHECK (
        status NOT IN ('pending', 'dispatched', 'retrying')
        OR (octet_length(updates::text) <= 65536
            AND flagsched_jsonb_depth(updates, 32) <= 32)) NOT VALID,
    ADD CONSTRAINT flag_schedules_retry_policy_shape CHECK (
        status NOT IN ('pending', 'dispatched', 'retrying')
        OR flagsched_retry_policy_ok(retry_policy)) NOT VALID;
