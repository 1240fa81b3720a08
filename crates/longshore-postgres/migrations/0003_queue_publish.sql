-- Publishing as a function, so that its statement is planned once per session.
--
-- Sent as a prepared statement, the publish statement was planned again on every execution:
-- its generic plan is estimated dearer than a custom one (arrays of unknown length), and
-- planning it cost more than running it. Inside a function with `plan_cache_mode` set, the
-- plan is made once per connection and reused. The setting holds for this function's own
-- statements only; `search_path` is fixed to the schema this migration runs in.
--
-- Inserts one row per message for every subscription whose patterns match the topic, in the
-- messages' order, and notifies those subscriptions. `p_retry` (after a lost connection)
-- skips subscriptions that already hold a row with the message's id. Two statements rather
-- than one with `WHERE NOT p_retry OR NOT EXISTS (…)`: the common form's plan then carries
-- no lookup at all.
CREATE FUNCTION queue_publish(
    p_topic    text,
    p_ids      text[],
    p_keys     text[],
    p_headers  text[],
    p_payloads bytea[],
    p_channel  text,
    p_visible  timestamptz[],
    p_retry    boolean
) RETURNS TABLE (inserted bigint, notified bigint)
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
    IF p_retry THEN
        RETURN QUERY
        WITH subs AS (
            SELECT name FROM queue_subscriptions WHERE ('.' || p_topic) ~ ANY (regexes)
        ), ins AS (
            INSERT INTO queue_messages
                (subscription, topic, message_id, message_key, headers, payload, available_at)
            SELECT s.name, p_topic, m.mid, m.mkey, m.hdr::jsonb, m.payload, COALESCE(m.vis, now())
            FROM unnest(p_ids, p_keys, p_headers, p_payloads, p_visible)
                 WITH ORDINALITY AS m(mid, mkey, hdr, payload, vis, ord)
            CROSS JOIN subs s
            WHERE NOT EXISTS (SELECT 1 FROM queue_messages q
                              WHERE q.subscription = s.name AND q.message_id = m.mid)
            ORDER BY m.ord, s.name
            RETURNING 1
        ), nt AS (
            SELECT pg_notify(p_channel, s.name) FROM subs s WHERE EXISTS (SELECT 1 FROM ins)
        )
        SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM nt);
    ELSE
        RETURN QUERY
        WITH subs AS (
            SELECT name FROM queue_subscriptions WHERE ('.' || p_topic) ~ ANY (regexes)
        ), ins AS (
            INSERT INTO queue_messages
                (subscription, topic, message_id, message_key, headers, payload, available_at)
            SELECT s.name, p_topic, m.mid, m.mkey, m.hdr::jsonb, m.payload, COALESCE(m.vis, now())
            FROM unnest(p_ids, p_keys, p_headers, p_payloads, p_visible)
                 WITH ORDINALITY AS m(mid, mkey, hdr, payload, vis, ord)
            CROSS JOIN subs s
            ORDER BY m.ord, s.name
            RETURNING 1
        ), nt AS (
            SELECT pg_notify(p_channel, s.name) FROM subs s WHERE EXISTS (SELECT 1 FROM ins)
        )
        SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM nt);
    END IF;
END
$$;
