-- Moving the due time of a schedule that was dispatched (or pre-dispatched) but not
-- yet attempted re-arms it: status goes back to 'pending', so the dispatcher sends a
-- wake-up for the new due time, and workers drop the old wake-up as stale (its due
-- time no longer matches the row). An edit of `updates` alone needs nothing: the
-- worker reads the row when it applies.
CREATE FUNCTION flagsched_rearm_edited() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'dispatched' AND NEW.status = 'dispatched' AND NEW.retry_count = 0
       AND NEW.scheduled_at IS DISTINCT FROM OLD.scheduled_at THEN
        NEW.status := 'pending';
        NEW.dispatched_at := NULL;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER flag_schedules_rearm_edited
    BEFORE UPDATE OF scheduled_at ON flag_schedules
    FOR EACH ROW EXECUTE FUNCTION flagsched_rearm_edited();
