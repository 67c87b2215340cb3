-- Stores, their webhook secrets and API tokens.
CREATE TABLE stores (
    store_id        text PRIMARY KEY,
    platform        text NOT NULL,
    name            text NOT NULL,
    currency        text,
    api_token_sha256 bytea NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Several active secrets per store and platform let a secret rotate without a
-- lost delivery; a retired secret stays for the audit trail.
CREATE TABLE store_secrets (
    secret_id   bigserial PRIMARY KEY,
    store_id    text NOT NULL REFERENCES stores ON DELETE CASCADE,
    platform    text NOT NULL,
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz
);
CREATE INDEX store_secrets_active ON store_secrets (store_id, platform)
    WHERE retired_at IS NULL;

-- The newest snapshot of each order. version_at and version_event order
-- snapshots, so a duplicate or an older delivery never overwrites a newer one.
CREATE TABLE orders (
    store_id        text NOT NULL,
    order_id        text NOT NULL,
    customer_key    text,
    email           text,
    name            text,
    created_at      timestamptz NOT NULL,
    currency        text NOT NULL,
    total           numeric NOT NULL,
    is_test         boolean NOT NULL,
    cancelled_at    timestamptz,
    status          text,
    checkout_id     text,
    line_items      jsonb NOT NULL,
    embedded_refunds jsonb NOT NULL,
    version_at      timestamptz NOT NULL,
    version_event   text NOT NULL,
    PRIMARY KEY (store_id, order_id)
);
CREATE INDEX orders_by_customer ON orders (store_id, customer_key);

-- Refunds delivered on their own; those embedded in order snapshots stay with
-- the order, and both are merged by refund id.
CREATE TABLE refunds (
    store_id    text NOT NULL,
    refund_id   text NOT NULL,
    order_id    text NOT NULL,
    created_at  timestamptz,
    amount      numeric NOT NULL,
    line_items  jsonb NOT NULL,
    PRIMARY KEY (store_id, refund_id)
);
CREATE INDEX refunds_by_order ON refunds (store_id, order_id);

CREATE TABLE checkouts (
    store_id        text NOT NULL,
    checkout_id     text NOT NULL,
    customer_key    text,
    email           text,
    created_at      timestamptz NOT NULL,
    completed_at    timestamptz,
    currency        text NOT NULL,
    total           numeric NOT NULL,
    version_at      timestamptz NOT NULL,
    version_event   text NOT NULL,
    PRIMARY KEY (store_id, checkout_id)
);
CREATE INDEX checkouts_by_customer ON checkouts (store_id, customer_key);

-- The newest customer snapshot from the platform.
CREATE TABLE customer_profiles (
    store_id        text NOT NULL,
    customer_key    text NOT NULL,
    customer_id     text,
    email           text,
    first_name      text,
    last_name       text,
    created_at      timestamptz,
    tags            jsonb NOT NULL DEFAULT '[]',
    country         text,
    version_at      timestamptz NOT NULL,
    version_event   text NOT NULL,
    PRIMARY KEY (store_id, customer_key)
);

-- Every opt-in signal; the opt-in state is derived from all of them, so the
-- order in which they arrive does not matter.
CREATE TABLE consent_signals (
    store_id        text NOT NULL,
    customer_key    text NOT NULL,
    event_id        text NOT NULL,
    at              timestamptz NOT NULL,
    state           text NOT NULL,
    source          text NOT NULL,
    PRIMARY KEY (store_id, customer_key, event_id)
);

-- The customer projection the read API serves.
CREATE TABLE customers (
    store_id            text NOT NULL,
    customer_key        text NOT NULL,
    customer_id         text,
    email               text,
    first_name          text,
    last_name           text,
    currency            text,
    lifetime_orders     integer NOT NULL,
    lifetime_sales      numeric NOT NULL,
    total_products      integer NOT NULL,
    first_order_id      text,
    first_order_at      timestamptz,
    last_order_id       text,
    last_order_at       timestamptz,
    last_order_sort     text NOT NULL,
    average_purchase_frequency_days numeric,
    email_opt_in        text,
    email_opt_in_at     timestamptz,
    checkouts_started   integer NOT NULL,
    checkouts_completed integer NOT NULL,
    checkouts_abandoned integer NOT NULL,
    open_cart_value     numeric NOT NULL,
    latest_orders       jsonb NOT NULL,
    top_purchases       jsonb NOT NULL,
    tags                jsonb NOT NULL,
    country             text,
    customer_created_at timestamptz,
    -- The time of the customer's newest record, not the wall clock, so a replay
    -- rebuilds the same row.
    updated_at          timestamptz NOT NULL,
    PRIMARY KEY (store_id, customer_key)
);
CREATE INDEX customers_by_last_order
    ON customers (store_id, last_order_sort DESC, customer_key DESC);

-- Segments are versioned: editing one adds a version and re-evaluates.
CREATE TABLE segments (
    store_id    text NOT NULL,
    segment_id  text NOT NULL,
    version     integer NOT NULL,
    name        text NOT NULL,
    rule        jsonb NOT NULL,
    fields      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store_id, segment_id, version)
);

CREATE TABLE memberships (
    store_id        text NOT NULL,
    segment_id      text NOT NULL,
    customer_key    text NOT NULL,
    is_member       boolean NOT NULL,
    version         integer NOT NULL,
    segment_version integer NOT NULL,
    changed_at      timestamptz NOT NULL,
    cause_event_id  text,
    PRIMARY KEY (store_id, segment_id, customer_key)
);
CREATE INDEX memberships_by_customer ON memberships (store_id, customer_key)
    WHERE is_member;

-- Segment changes waiting for the relay; written in the same transaction as
-- the membership, so an event exists exactly when the membership row does.
CREATE TABLE outbox (
    outbox_id   bigserial PRIMARY KEY,
    topic       text NOT NULL,
    key         text NOT NULL,
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    relayed_at  timestamptz
);
CREATE INDEX outbox_pending ON outbox (outbox_id) WHERE relayed_at IS NULL;

-- The next offset to apply per consumer, topic and partition, written in the
-- batch transaction that applied the records before it.
CREATE TABLE checkpoints (
    consumer    text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition)
);
