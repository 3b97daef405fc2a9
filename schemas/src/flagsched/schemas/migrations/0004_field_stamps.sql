-- Per-field ordering: which schedule last set each field of a flag, as
-- {"<field>": [<scheduled_at, epoch microseconds>, <schedule id>]}. A schedule that
-- arrives after a newer one of its flag still sets the fields no newer schedule has
-- set, so the flag ends as if its schedules had applied in due order. A field with
-- no stamp counts as set by (last_scheduled_at, last_schedule_id), the newest
-- schedule applied so far (flags changed before this migration).
ALTER TABLE feature_flags
    ADD COLUMN field_stamps jsonb NOT NULL DEFAULT '{}'::jsonb
        CONSTRAINT feature_flags_field_stamps_object CHECK (jsonb_typeof(field_stamps) = 'object');
