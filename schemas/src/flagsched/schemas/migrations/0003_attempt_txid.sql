-- The database transaction that recorded each attempt (the top-level one, also when
-- the attempt ran in a savepoint): shows which attempts a worker committed together.
ALTER TABLE schedule_retry_attempts
    ADD COLUMN db_txid bigint NOT NULL DEFAULT txid_current();
