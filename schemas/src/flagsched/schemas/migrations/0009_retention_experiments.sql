-- Retention: `flagsched cleanup` deletes terminal schedules oldest first, per status,
-- by the time they reached it (finished_at; updated_at for a row finished by hand).
CREATE INDEX flag_schedules_terminal_idx
    ON flag_schedules (status, (COALESCE(finished_at, updated_at)))
    WHERE status IN ('applied', 'superseded', 'cancelled', 'dead');

-- Backoff experiments: arms (each a retry policy) with weights; at most one runs.
CREATE TABLE backoff_experiments (
    name        text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9._-]{1,100}$'),
    arms        jsonb       NOT NULL CHECK (jsonb_typeof(arms) = 'array' AND jsonb_array_length(arms) >= 1),
    running     boolean     NOT NULL DEFAULT true,
    started_at  timestamptz NOT NULL DEFAULT now(),
    stopped_at  timestamptz
);
CREATE UNIQUE INDEX backoff_experiments_one_running ON backoff_experiments ((true)) WHERE running;

-- The arm a schedule joined, stored on the row: assigned once, at insert, so an edit of
-- the schedule or of the experiment never reshuffles it, and the arm's policy is copied
-- into retry_policy, so the worker and any preview read one and the same policy.
ALTER TABLE flag_schedules ADD COLUMN experiment text, ADD COLUMN experiment_arm text;
CREATE INDEX flag_schedules_experiment_idx
    ON flag_schedules (experiment, experiment_arm) WHERE experiment IS NOT NULL;

-- A 60-bit bucket from md5('flagsched.experiment:<name>:<id>'), the first 15 hex digits;
-- flagsched.schemas.retry.experiments.bucket computes the same in Python.
CREATE FUNCTION flagsched_experiment_bucket(name text, id bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ('x' || substr(md5('flagsched.experiment:' || name || ':' || id::text), 1, 15))::bit(60)::bigint;

-- A new schedule without an explicit policy (retry_policy and max_retries both NULL)
-- joins the running experiment: arm = the first whose cumulative weight exceeds
-- bucket mod total weight, in the order the experiment lists them.
CREATE FUNCTION flagsched_join_experiment() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    e record;
    arm jsonb;
    total bigint := 0;
    acc bigint := 0;
    pick bigint;
BEGIN
    IF NEW.retry_policy IS NOT NULL OR NEW.max_retries IS NOT NULL OR NEW.experiment IS NOT NULL THEN
        RETURN NEW;
    END IF;
    SELECT name, arms INTO e FROM backoff_experiments WHERE running;
    IF NOT FOUND THEN
        RETURN NEW;
    END IF;
    SELECT COALESCE(sum((a->>'weight')::bigint), 0) INTO total FROM jsonb_array_elements(e.arms) a;
    IF total <= 0 THEN
        RETURN NEW;
    END IF;
    pick := flagsched_experiment_bucket(e.name, NEW.id) % total;
    FOR arm IN SELECT t.a FROM jsonb_array_elements(e.arms) WITH ORDINALITY AS t(a, ord) ORDER BY t.ord LOOP
        acc := acc + (arm->>'weight')::bigint;
        IF pick < acc THEN
            NEW.experiment := e.name;
            NEW.experiment_arm := arm->>'name';
            NEW.retry_policy := arm->'policy';
            RETURN NEW;
        END IF;
    END LOOP;
    RETURN NEW;
END $$;

CREATE TRIGGER flag_schedules_join_experiment
    BEFORE INSERT ON flag_schedules
    FOR EACH ROW EXECUTE FUNCTION flagsched_join_experiment();
