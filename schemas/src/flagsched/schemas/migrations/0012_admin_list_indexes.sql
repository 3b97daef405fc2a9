-- Indexes for the admin API's lists at size (issue 13; docs/benchmarks.md, "The admin
-- API"), each measured with EXPLAIN (ANALYZE, BUFFERS) on 1,000,000 schedules.

-- GET /api/admin/notifications (and `flagsched notify deliveries`) page through the
-- deliveries newest first, keyset on (updated_at, event_key, sink). Nothing deletes
-- deliveries, so without this index every page sorted the whole table. The notifier's
-- updates of a delivery were never HOT (status is in an index predicate), so this
-- costs one more index entry per update.
CREATE INDEX notification_deliveries_updated_idx
    ON notification_deliveries (updated_at, event_key, sink);

-- GET /api/admin/schedules?status=S in due order. Without it the planner walks
-- flag_schedules_due_id_idx and filters, which is quick while S is spread evenly
-- through the history and slow when its rows are few and at the far end (the newest
-- retrying or cancelled schedules of a long applied history, listed oldest first).
-- Partial: applied rows, the bulk of any history, are dense enough for that walk, and
-- a schedule's last version (applied) adds no entry here.
CREATE INDEX flag_schedules_status_due_idx
    ON flag_schedules (status, scheduled_at, id)
    WHERE status IN ('pending', 'dispatched', 'retrying', 'dead', 'cancelled', 'superseded');

-- GET /api/admin/schedules?error_class=C in due order, for a rare class. Only rows that
-- failed at least once have an entry.
CREATE INDEX flag_schedules_error_class_due_idx
    ON flag_schedules (last_error_class, scheduled_at, id)
    WHERE last_error_class IS NOT NULL;
