-- The retry_policy CHECK of 0005 knows the keys of PolicyOverride as they were then.
-- 0009's time budget adds `max_retry_duration_s` (a number in (0, 2592000]), and the
-- model now bounds `max_retries` at 10000 (flagsched.schemas.retry.policy.MAX_RETRIES):
-- the function the CHECK calls follows the model again. The constraint itself is
-- unchanged (still NOT VALID, as 0005 explains), so nothing is rescanned.
CREATE OR REPLACE FUNCTION flagsched_retry_policy_ok(p jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p IS NULL OR (jsonb_typeof(p) = 'object' AND NOT EXISTS (
        SELECT 1 FROM jsonb_each(p) AS e(k, v)
         WHERE jsonb_typeof(v) <> 'null' AND NOT CASE
            WHEN k = 'jitter' THEN
                jsonb_typeof(v) = 'string'
                AND v #>> '{}' IN ('none', 'full', 'equal', 'decorrelated')
            WHEN k NOT IN ('max_retries', 'base_s', 'multiplier', 'cap_s', 'floor_s',
                           'max_retry_duration_s') THEN false
            WHEN jsonb_typeof(v) <> 'number' THEN false
            -- numbers only from here on (CASE evaluates in order)
            WHEN k = 'max_retries' THEN (v #>> '{}') ~ '^[0-9]+$'  -- 3, not 3.0 or -1
                                        AND (v #>> '{}')::numeric <= 10000
            WHEN k = 'multiplier' THEN (v #>> '{}')::numeric >= 1
            WHEN k = 'floor_s' THEN (v #>> '{}')::numeric BETWEEN 0 AND 2592000
            -- base_s, cap_s, max_retry_duration_s
            ELSE (v #>> '{}')::numeric > 0 AND (v #>> '{}')::numeric <= 2592000
        END
    ))
$$;
