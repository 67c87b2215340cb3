-- Which account an email belongs to. A row is written whenever an event names
-- both a customer id and an email; per email, the row with the newest
-- (at, event_id) decides which account the guest key e:<email> joins.
CREATE TABLE customer_aliases (
    store_id    text NOT NULL,
    email       text NOT NULL,
    customer_id text NOT NULL,
    at          timestamptz NOT NULL,
    event_id    text NOT NULL,
    PRIMARY KEY (store_id, email, customer_id)
);
CREATE INDEX customer_aliases_by_customer ON customer_aliases (store_id, customer_id);

-- Message events from the messaging service, one row per event id, so a
-- redelivered event is stored once.
CREATE TABLE messages (
    store_id        text NOT NULL,
    event_id        text NOT NULL,
    customer_key    text,
    message_id      text NOT NULL,
    workflow_id     text NOT NULL,
    kind            text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    PRIMARY KEY (store_id, event_id)
);
CREATE INDEX messages_by_customer ON messages (store_id, customer_key);

-- Orders deleted on the platform (WooCommerce order.deleted). An order is
-- deleted while a tombstone is newer than its newest snapshot, so a restored
-- order comes back with its next snapshot.
CREATE TABLE order_tombstones (
    store_id    text NOT NULL,
    order_id    text NOT NULL,
    event_id    text NOT NULL,
    deleted_at  timestamptz NOT NULL,
    PRIMARY KEY (store_id, order_id, event_id)
);

-- Two refund events with one refund id keep the newer, as order snapshots do.
ALTER TABLE refunds
    ADD COLUMN version_at timestamptz,
    ADD COLUMN version_event text;

ALTER TABLE customers
    ADD COLUMN messages_sent integer NOT NULL DEFAULT 0,
    ADD COLUMN messages_opened integer NOT NULL DEFAULT 0,
    ADD COLUMN messages_clicked integer NOT NULL DEFAULT 0,
    ADD COLUMN converted_orders integer NOT NULL DEFAULT 0,
    ADD COLUMN converted_revenue numeric NOT NULL DEFAULT 0,
    ADD COLUMN conversion_rate numeric,
    ADD COLUMN workflow_stats jsonb NOT NULL DEFAULT '[]';
