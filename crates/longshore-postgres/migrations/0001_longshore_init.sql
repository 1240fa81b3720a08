-- longshore: event store, outbox, inbox, checkpoints and the Postgres-backed queue.
--
-- Runs with `search_path` set to the configured schema only (see `PgStore::migrate`), so every
-- name below lands in that schema, `_sqlx_migrations` included.

-- One row per stream: its current version. The row is the stream's lock: appends to one
-- stream serialize on it, appends to different streams do not.
CREATE TABLE streams (
    stream_id text PRIMARY KEY,
    version   bigint NOT NULL CHECK (version > 0)
);

-- The events. `position` is the global order: (transaction id << 16) | index in transaction,
-- so it sorts by `tx_id` first. A reader only returns rows whose `tx_id` is below the oldest
-- transaction still running (`pg_snapshot_xmin(pg_current_snapshot())`), so a transaction that
-- commits late can never end up behind a position a reader has already passed.
CREATE TABLE events (
    position       bigint PRIMARY KEY,
    tx_id          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    stream_id      text NOT NULL,
    version        bigint NOT NULL,
    event_id       uuid NOT NULL,
    event_type     text NOT NULL,
    -- `json` keeps the data byte for byte (key order included), unlike `jsonb`.
    data           json NOT NULL,
    occurred_at    timestamptz NOT NULL,
    aggregate_id   text,
    correlation_id text,
    causation_id   text,
    traceparent    text,
    headers        jsonb NOT NULL DEFAULT '{}',
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_position_in_tx CHECK ((position >> 16) = (tx_id::text)::bigint)
);

-- Messages waiting to be relayed to a broker; rows are deleted once the broker confirmed them.
CREATE TABLE outbox (
    seq           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic         text NOT NULL,
    message_id    text NOT NULL,
    message_key   text,
    headers       jsonb NOT NULL,
    payload       bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    claimed_by    text,
    claimed_until timestamptz
);
CREATE INDEX outbox_key_seq ON outbox (message_key, seq) WHERE message_key IS NOT NULL;

-- Message ids a consumer has processed (written in the handler's transaction).
CREATE TABLE inbox (
    consumer     text NOT NULL,
    message_id   text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

-- Durable positions of catch-up subscriptions.
CREATE TABLE checkpoints (
    name       text PRIMARY KEY,
    position   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Queue: durable subscriptions with their patterns (and the patterns as anchored regexes over
-- '.' || topic), and one row per (subscription, message).
CREATE TABLE queue_subscriptions (
    name       text PRIMARY KEY,
    patterns   text[] NOT NULL,
    regexes    text[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE queue_messages (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription text NOT NULL,
    topic        text NOT NULL,
    message_id   text NOT NULL,
    message_key  text,
    headers      jsonb NOT NULL,
    payload      bytea NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    available_at timestamptz NOT NULL DEFAULT now(),
    locked_by    uuid,
    locked_until timestamptz,
    published_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX queue_messages_subscription_id ON queue_messages (subscription, id);
