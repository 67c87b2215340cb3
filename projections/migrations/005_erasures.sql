-- Erasures of customer data (Shopify customers/redact and shop/redact). An
-- erasure writes one row per customer key it erased, or one row with a NULL
-- customer_key when it erased the whole store. The rows outlive the erased
-- records: an event that names an erased key, or an erased order, and that
-- occurred at or before erased_at is skipped, so neither a retried delivery
-- nor a replay brings the customer back.
CREATE TABLE erasures (
    store_id        text NOT NULL,
    event_id        text NOT NULL,
    customer_key    text,
    email           text,
    -- The orders the erasure request named; set on its first row only.
    order_ids       text[] NOT NULL DEFAULT '{}',
    reason          text NOT NULL,
    erased_at       timestamptz NOT NULL
);
CREATE UNIQUE INDEX erasures_by_event
    ON erasures (store_id, event_id, coalesce(customer_key, ''));
CREATE INDEX erasures_by_customer ON erasures (store_id, customer_key);
