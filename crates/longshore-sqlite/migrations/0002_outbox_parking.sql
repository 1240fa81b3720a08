-- Outbox rows the broker refuses for good (unroutable, rejected, too large, undecodable) are
-- parked instead of retried forever: `attempts` counts refused publishes, `failed_at` (Unix
-- ms) and `last_error` mark a parked row, which relays never claim until
-- `Outbox::retry_failed` clears them. Later rows keep flowing past it.
ALTER TABLE longshore_outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE longshore_outbox ADD COLUMN last_error TEXT;
ALTER TABLE longshore_outbox ADD COLUMN failed_at INTEGER;
CREATE INDEX IF NOT EXISTS longshore_outbox_parked ON longshore_outbox (seq)
    WHERE failed_at IS NOT NULL;
