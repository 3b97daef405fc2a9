-- Due order (issue 18; docs/architecture.md, "Due order"): a worker that attempts a
-- flag's schedule first applies, in the same transaction and in (scheduled_at, id)
-- order, the flag's older schedules that are due and still waiting (pending or
-- dispatched, never failed). Such an attempt is recorded with `applied_with`, the
-- schedule whose wake-up applied it, and that wake-up's topic, partition and offset;
-- its own wake-up is then dropped as a duplicate. NULL: the schedule's own wake-up.
ALTER TABLE schedule_retry_attempts ADD COLUMN applied_with bigint;

-- A flag's waiting schedules, oldest first (the pull reads a range of it per flag).
CREATE INDEX flag_schedules_waiting_idx
    ON flag_schedules (flag_key, scheduled_at, id) WHERE status IN ('pending', 'dispatched');

-- The attempts a wake-up applied with its own: sent again when that record is redelivered.
CREATE INDEX schedule_retry_attempts_applied_with_idx
    ON schedule_retry_attempts (kafka_offset, kafka_partition, topic) WHERE applied_with IS NOT NULL;
