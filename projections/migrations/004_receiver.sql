-- Deliveries the receiver has handled, so a platform's retry of one is
-- answered without publishing again. The key is the SHA-256 of the platform's
-- delivery id, because the id comes from a request header or body of any
-- length. Rows older than the dedupe window are deleted by the receiver.
CREATE TABLE deliveries (
    store_id        text NOT NULL REFERENCES stores ON DELETE CASCADE,
    platform        text NOT NULL,
    delivery_key    bytea NOT NULL,
    -- 'published' once Kafka acknowledged the events, 'quarantined' once the
    -- raw delivery is on the quarantine topic.
    outcome         text NOT NULL CHECK (outcome IN ('published', 'quarantined')),
    event_ids       jsonb NOT NULL DEFAULT '[]',
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store_id, platform, delivery_key)
);
CREATE INDEX deliveries_by_age ON deliveries (recorded_at);

-- Quarantined deliveries that a redrive mapped and published; a second redrive
-- skips them.
CREATE TABLE quarantine_redrives (
    quarantine_id   text PRIMARY KEY,
    store_id        text NOT NULL,
    platform        text NOT NULL,
    event_ids       jsonb NOT NULL,
    redriven_at     timestamptz NOT NULL DEFAULT now()
);

-- BigCommerce API credentials of a store, used to fetch the resources its thin
-- webhook notifications name.
CREATE TABLE bigcommerce_credentials (
    store_id        text PRIMARY KEY REFERENCES stores ON DELETE CASCADE,
    store_hash      text NOT NULL,
    access_token    text NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
