-- Outbox rows the broker refuses for good (unroutable, rejected, too large, undecodable) are
-- parked instead of retried forever: `attempts` counts refused publishes, `failed_at` and
-- `last_error` mark a parked row, which relays never claim until `Outbox::retry_failed`
-- clears them. Later rows keep flowing past it.
ALTER TABLE outbox
    ADD COLUMN attempts   integer NOT NULL DEFAULT 0,
    ADD COLUMN last_error text,
    ADD COLUMN failed_at  timestamptz;
CREATE INDEX outbox_parked ON outbox (seq) WHERE failed_at IS NOT NULL;
