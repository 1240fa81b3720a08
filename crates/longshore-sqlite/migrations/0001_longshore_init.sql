-- longshore on SQLite: event store, outbox, inbox, checkpoints and the queue, in one file.
-- Applied by src/migrate.rs inside BEGIN IMMEDIATE; times are Unix milliseconds.

CREATE TABLE IF NOT EXISTS longshore_schema (
    version INTEGER NOT NULL
);

-- One row per stream: its current version.
CREATE TABLE IF NOT EXISTS longshore_streams (
    stream_id TEXT PRIMARY KEY,
    version   INTEGER NOT NULL CHECK (version > 0)
) WITHOUT ROWID;

-- The events. SQLite has one writer at a time and an append holds the write lock from its
-- first statement to its commit, so AUTOINCREMENT positions are handed out in commit order:
-- the global order is gap-free and a reader never passes a position committed later.
CREATE TABLE IF NOT EXISTS longshore_events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id      TEXT NOT NULL,
    version        INTEGER NOT NULL,
    event_id       TEXT NOT NULL UNIQUE,
    event_type     TEXT NOT NULL,
    data           TEXT NOT NULL,
    occurred_at    TEXT NOT NULL,
    aggregate_id   TEXT,
    correlation_id TEXT,
    causation_id   TEXT,
    traceparent    TEXT,
    headers        TEXT NOT NULL DEFAULT '{}',
    recorded_at    INTEGER NOT NULL,
    UNIQUE (stream_id, version)
);

-- Messages waiting to be relayed; deleted once the broker confirmed them.
CREATE TABLE IF NOT EXISTS longshore_outbox (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    topic         TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    message_key   TEXT,
    headers       TEXT NOT NULL,
    payload       BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    claimed_by    TEXT,
    claimed_until INTEGER
);
CREATE INDEX IF NOT EXISTS longshore_outbox_key_seq ON longshore_outbox (message_key, seq)
    WHERE message_key IS NOT NULL;

-- Message ids a consumer has processed.
CREATE TABLE IF NOT EXISTS longshore_inbox (
    consumer     TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    processed_at INTEGER NOT NULL,
    PRIMARY KEY (consumer, message_id)
) WITHOUT ROWID;

-- Durable positions of catch-up subscriptions.
CREATE TABLE IF NOT EXISTS longshore_checkpoints (
    name       TEXT PRIMARY KEY,
    position   INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Queue: durable subscriptions with their patterns (a JSON array, matched in Rust), and one
-- row per (subscription, message).
CREATE TABLE IF NOT EXISTS longshore_subscriptions (
    name       TEXT PRIMARY KEY,
    patterns   TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS longshore_queue (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription TEXT NOT NULL,
    topic        TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    message_key  TEXT,
    headers      TEXT NOT NULL,
    payload      BLOB NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    available_at INTEGER NOT NULL,
    locked_by    TEXT,
    locked_until INTEGER,
    published_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS longshore_queue_subscription_id ON longshore_queue (subscription, id);
