-- GET /api/admin/notifications (and `flagsched notify deliveries`) page through the
-- deliveries newest first, keyset on (updated_at, event_key, sink). Nothing deletes
-- deliveries, so without this index every page sorts the whole table: 234 ms per page
-- at 500,000 deliveries on the dev machine, 0.08 ms with it (docs/benchmarks.md). The
-- notifier's updates of a delivery were never HOT (status is in an index predicate),
-- so this costs one more index entry per update.
CREATE INDEX notification_deliveries_updated_idx
    ON notification_deliveries (updated_at, event_key, sink);
