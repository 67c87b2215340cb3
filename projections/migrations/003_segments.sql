-- An archived segment is no longer evaluated; every version of it carries the
-- time it was archived.
ALTER TABLE segments ADD COLUMN archived_at timestamptz;

-- Jobs that evaluate one segment version for every customer of a store (kind
-- 'evaluate', after a create or an edit) or make every member exit (kind
-- 'archive'). Each batch of customers commits with the job's progress, so a
-- job resumes after last_customer_key when its process restarts.
CREATE TABLE segment_backfills (
    store_id            text NOT NULL,
    segment_id          text NOT NULL,
    segment_version     integer NOT NULL,
    kind                text NOT NULL CHECK (kind IN ('evaluate', 'archive')),
    -- 'superseded': a newer version or an archive replaced the job's version.
    status              text NOT NULL
        CHECK (status IN ('queued', 'running', 'done', 'superseded', 'failed')),
    -- false for an initial snapshot: memberships change without change events.
    emit_events         boolean NOT NULL,
    done                bigint NOT NULL DEFAULT 0,
    -- Customers (or members, for an archive) when the job was created.
    total               bigint NOT NULL,
    membership_changes  bigint NOT NULL DEFAULT 0,
    last_customer_key   text,
    error               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    PRIMARY KEY (store_id, segment_id, segment_version, kind)
);
CREATE INDEX segment_backfills_unfinished ON segment_backfills (created_at)
    WHERE status IN ('queued', 'running');

-- The end of the last time window the segment scheduler evaluated.
CREATE TABLE segment_ticks (
    scheduler   text PRIMARY KEY,
    ticked_at   timestamptz NOT NULL
);

-- Range lookups of the scheduler: customers whose time-based field crossed a
-- rule's threshold since the previous tick.
CREATE INDEX customers_by_last_order_at ON customers (store_id, last_order_at)
    WHERE last_order_at IS NOT NULL;
CREATE INDEX customers_by_first_order_at ON customers (store_id, first_order_at)
    WHERE first_order_at IS NOT NULL;
CREATE INDEX customers_by_created_at ON customers (store_id, customer_created_at)
    WHERE customer_created_at IS NOT NULL;
CREATE INDEX open_checkouts_by_created_at ON checkouts (store_id, created_at)
    WHERE completed_at IS NULL;

-- Whether a checkout became an order, for abandoned-checkout fields.
CREATE INDEX IF NOT EXISTS orders_by_checkout ON orders (store_id, checkout_id)
    WHERE checkout_id IS NOT NULL;
