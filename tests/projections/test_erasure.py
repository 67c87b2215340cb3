"""Erasures delete a customer's or a store's records, and older events stay out."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from cartstream.config import Settings
from cartstream.events import event_id
from consumer.replay import replay
from projections import store
from tests.conftest import running_services
from tests.consumer.test_replay import checksums
from tests.helpers import (
    api_get,
    api_post,
    create_store,
    load_fixture,
    post_shopify,
    read_topic,
    wait_until_applied,
)
from tests.projections.test_oracle import (
    Ref,
    assert_valid_events,
    at_hour,
    consent_event,
    line,
    message_event,
    order_event,
)

pytestmark = pytest.mark.integration

Event = dict[str, Any]

BUYERS = {
    "segment_id": "buyers",
    "name": "Buyers",
    "rule": {">=": [{"var": "lifetime_orders"}, 1]},
}
ORDER_FIXTURE = "shopify-orders-create-discount-multi-tax-2024-05.json"
CUSTOMER_ID = 6907366047929
CUSTOMER_KEY = f"c:{CUSTOMER_ID}"
EMAIL = "ana.example@example.com"
OLD_ORDER_ID = 5260174885049
OTHER_KEY = "c:555"

# Tables that hold a customer's records, with the column naming the customer.
RECORD_TABLES = [
    ("orders", "customer_key"),
    ("checkouts", "customer_key"),
    ("customer_profiles", "customer_key"),
    ("consent_signals", "customer_key"),
    ("messages", "customer_key"),
    ("customers", "customer_key"),
]


# Canonical events applied straight to the store


def erasure_event(
    store_id: str,
    source: str,
    *,
    hour: float,
    customer_id: str | None,
    email: str | None,
    order_ids: list[str] | None = None,
) -> Event:
    data: Event = {
        "reason": "customers/redact" if customer_id or email else "shop/redact"
    }
    if order_ids is not None:
        data["order_ids"] = order_ids
    return {
        "id": event_id("standard", store_id, source),
        "type": "erasure",
        "store_id": store_id,
        "platform": "standard",
        "occurred_at": at_hour(hour),
        "delivery_id": source,
        "topic": "erasure.test",
        "customer": {"id": customer_id, "email": email},
        "data": data,
    }


def simple_order(source: str, order_id: str, ref: Ref, hour: float) -> Event:
    return order_event(
        "s1",
        source,
        order_id=order_id,
        ref=ref,
        created_hour=hour,
        updated_hour=hour,
        lines=[line("l1", "p1", 1, "10.00")],
        total="10.00",
        accepts_marketing=True,
    )


async def apply_batch(
    pool: asyncpg.Pool, events: list[Event]
) -> list[store.CustomerChange]:
    """Apply events as one consumer batch does; return the customer changes."""
    assert_valid_events(events)
    changes: list[store.CustomerChange] = []
    async with pool.acquire() as connection, connection.transaction():
        await store.lock_for_batch(connection, events)
        effects = store.BatchEffects()
        failures = await store.apply_events(connection, events, effects)
        assert failures == []
        targets = await store.customers_to_recompute(connection, effects)
        await store.lock_customers(connection, targets)
        for store_id, key in sorted(targets):
            changes.extend(await store.recompute_customers(connection, store_id, [key]))
    return changes


async def customer_keys(pool: asyncpg.Pool, store_id: str = "s1") -> list[str]:
    rows = await pool.fetch(
        "SELECT customer_key FROM customers WHERE store_id = $1 ORDER BY 1", store_id
    )
    return [row["customer_key"] for row in rows]


async def records_of(pool: asyncpg.Pool, keys: list[str]) -> dict[str, int]:
    """Return, per record table, how many rows belong to any of ``keys``."""
    counts = {}
    for table, column in RECORD_TABLES:
        counts[table] = await pool.fetchval(
            f"SELECT count(*) FROM {table} WHERE {column} = ANY($1::text[])", keys
        )
    return counts


ACCOUNT: Ref = {"id": "123", "email": "old@example.com"}
GUEST: Ref = {"id": None, "email": "old@example.com"}
OTHER: Ref = {"id": "999", "email": "other@example.com"}
ERASED_KEYS = ["c:123", "e:old@example.com", "e:new@example.com"]


async def test_erasure_deletes_account_and_joined_guest(pool: asyncpg.Pool) -> None:
    await apply_batch(
        pool,
        [
            simple_order("o1", "1", GUEST, 1),
            simple_order("o2", "2", ACCOUNT, 2),
            message_event(
                "s1",
                "m1",
                ref=ACCOUNT,
                hour=3,
                kind="sent",
                message_id="m",
                workflow_id="w",
            ),
            consent_event("s1", "k1", ref=ACCOUNT, hour=3, state="subscribed"),
            simple_order("o3", "3", OTHER, 2),
        ],
    )
    assert await customer_keys(pool) == ["c:123", "c:999"]

    erasure = erasure_event(
        "s1", "x1", hour=10, customer_id="123", email="new@example.com", order_ids=["2"]
    )
    changes = await apply_batch(pool, [erasure])

    erased = [change for change in changes if change.customer_key == "c:123"]
    assert len(erased) == 1
    assert erased[0].before is not None
    assert erased[0].after is None
    assert await customer_keys(pool) == ["c:999"]
    assert set((await records_of(pool, ERASED_KEYS)).values()) == {0}
    aliases = await pool.fetch("SELECT email, customer_id FROM customer_aliases")
    assert [(row["email"], row["customer_id"]) for row in aliases] == [
        ("other@example.com", "999")
    ]
    rows = await pool.fetch(
        "SELECT customer_key, email, order_ids, erased_at FROM erasures ORDER BY 1"
    )
    assert [row["customer_key"] for row in rows] == sorted(ERASED_KEYS)
    assert {row["erased_at"] for row in rows} == {
        datetime.fromisoformat(at_hour(10).replace("Z", "+00:00"))
    }
    assert [row["order_ids"] for row in rows if row["customer_key"] == "c:123"] == [
        ["2"]
    ]


async def test_events_before_erasure_are_skipped(pool: asyncpg.Pool) -> None:
    await apply_batch(
        pool,
        [simple_order("o1", "1", GUEST, 1), simple_order("o2", "2", ACCOUNT, 2)],
    )
    await apply_batch(
        pool, [erasure_event("s1", "x1", hour=10, customer_id="123", email=None)]
    )

    # Retries and late deliveries from before the erasure, by key, by joined
    # guest email and by an erased order owned by no one.
    late = [
        simple_order("o1", "1", GUEST, 1),
        simple_order("o2b", "2", ACCOUNT, 9),
        simple_order("o4", "4", GUEST, 10),
        message_event(
            "s1",
            "m1",
            ref=ACCOUNT,
            hour=5,
            kind="sent",
            message_id="m",
            workflow_id="w",
        ),
    ]
    changes = await apply_batch(pool, late)

    assert changes == []
    assert await customer_keys(pool) == []
    assert set((await records_of(pool, ERASED_KEYS)).values()) == {0}
    assert await pool.fetchval("SELECT count(*) FROM customer_aliases") == 0


async def test_older_event_later_in_batch_is_skipped(pool: asyncpg.Pool) -> None:
    """An erasure applied earlier in the same batch covers the events after it."""
    erasure = erasure_event("s1", "x1", hour=10, customer_id="123", email=None)
    await apply_batch(pool, [erasure, simple_order("o1", "1", ACCOUNT, 5)])

    assert await customer_keys(pool) == []
    assert await pool.fetchval("SELECT count(*) FROM orders") == 0


async def test_events_after_erasure_are_applied(pool: asyncpg.Pool) -> None:
    await apply_batch(pool, [simple_order("o1", "1", ACCOUNT, 1)])
    erasure = erasure_event("s1", "x1", hour=10, customer_id="123", email=None)

    # The person comes back, and the new order is applied whatever its
    # position around the erasure.
    changes = await apply_batch(pool, [simple_order("o5", "5", ACCOUNT, 11), erasure])

    assert await customer_keys(pool) == ["c:123"]
    rows = await pool.fetch("SELECT order_id FROM orders ORDER BY 1")
    assert [row["order_id"] for row in rows] == ["5"]
    account = [change for change in changes if change.customer_key == "c:123"]
    assert [change.after is not None for change in account] == [True]
    customer = await pool.fetchrow("SELECT * FROM customers")
    assert customer["lifetime_orders"] == 1


async def test_repeated_erasure_keeps_newer_records(pool: asyncpg.Pool) -> None:
    erasure = erasure_event("s1", "x1", hour=10, customer_id="123", email=None)
    await apply_batch(pool, [simple_order("o1", "1", ACCOUNT, 1), erasure])
    await apply_batch(pool, [simple_order("o5", "5", ACCOUNT, 11)])
    recorded = await pool.fetch("SELECT * FROM erasures ORDER BY customer_key")

    await apply_batch(pool, [erasure])

    assert await customer_keys(pool) == ["c:123"]
    assert await pool.fetch("SELECT * FROM erasures ORDER BY customer_key") == recorded
    assert len(recorded) == 2


async def test_store_erasure_skips_only_that_store(pool: asyncpg.Pool) -> None:
    other_store = order_event(
        "s2",
        "o9",
        order_id="9",
        ref=OTHER,
        created_hour=1,
        updated_hour=1,
        lines=[line("l1", "p1", 1, "10.00")],
        total="10.00",
    )
    await apply_batch(
        pool,
        [simple_order("o1", "1", ACCOUNT, 1), simple_order("o3", "3", OTHER, 2)],
    )
    await apply_batch(pool, [other_store])

    changes = await apply_batch(
        pool, [erasure_event("s1", "x1", hour=10, customer_id=None, email=None)]
    )
    await apply_batch(pool, [simple_order("o3b", "3", OTHER, 5)])

    assert sorted(change.customer_key for change in changes) == ["c:123", "c:999"]
    assert {change.after for change in changes} == {None}
    assert await customer_keys(pool) == []
    assert await customer_keys(pool, "s2") == ["c:999"]
    rows = await pool.fetch("SELECT store_id, customer_key FROM erasures")
    assert [(row["store_id"], row["customer_key"]) for row in rows] == [("s1", None)]


# Shopify deliveries through the running services


def shopify_order(
    order_id: int, customer_id: int | None, email: str, updated_at: str
) -> dict[str, Any]:
    """Return the order fixture with another id, customer and time."""
    order = copy.deepcopy(load_fixture(ORDER_FIXTURE))
    order["id"] = order_id
    order["email"] = email
    order["updated_at"] = updated_at
    if customer_id is None:
        order["customer"] = None
    else:
        order["customer"]["id"] = customer_id
        order["customer"]["email"] = email
    return order


def redact_payload() -> dict[str, Any]:
    payload = load_fixture("shopify-customers-redact-docs.json")
    payload["customer"] = {"id": CUSTOMER_ID, "email": EMAIL, "phone": None}
    payload["orders_to_redact"] = [OLD_ORDER_ID]
    return payload


def changes_of(changes: list[dict[str, Any]], key: str) -> list[str]:
    return [c["data"]["change"] for c in changes if c["data"]["customer_key"] == key]


async def post_history(settings: Settings, secret: str) -> None:
    """Post a guest order, an account order of the same email and another buyer."""
    guest = shopify_order(111, None, EMAIL, "2024-05-01T10:00:00-04:00")
    other = shopify_order(222, 555, "other@example.com", "2024-05-01T10:00:00-04:00")
    for payload in (guest, load_fixture(ORDER_FIXTURE), other):
        status, _ = await post_shopify(
            settings, "shop-1", secret, "orders/create", payload
        )
        assert status == 200


async def test_customer_redact_erases_customer(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    token, secret = await create_store(pool)
    async with running_services(settings):
        status, _ = await api_post(
            settings, token, "/api/stores/shop-1/segments", BUYERS
        )
        assert status == 201
        await post_history(settings, secret)
        await wait_until_applied(settings, pool)
        found, before = await api_get(
            settings, token, f"/api/stores/shop-1/customers/{CUSTOMER_KEY}"
        )

        status, _ = await post_shopify(
            settings, "shop-1", secret, "customers/redact", redact_payload()
        )
        assert status == 200
        await wait_until_applied(settings, pool)
        missing, _ = await api_get(
            settings, token, f"/api/stores/shop-1/customers/{CUSTOMER_KEY}"
        )
        _, listing = await api_get(settings, token, "/api/stores/shop-1/customers")
        erased_changes = changes_of(
            await read_topic(settings, settings.topics.segment_changes), CUSTOMER_KEY
        )

        # The platform retries the old order: it stays erased.
        status, _ = await post_shopify(
            settings, "shop-1", secret, "orders/updated", load_fixture(ORDER_FIXTURE)
        )
        assert status == 200
        await wait_until_applied(settings, pool)
        after_retry, _ = await api_get(
            settings, token, f"/api/stores/shop-1/customers/{CUSTOMER_KEY}"
        )

        # The customer orders again after the erasure.
        now = datetime.now(UTC) + timedelta(seconds=1)
        new_order = shopify_order(333, CUSTOMER_ID, EMAIL, now.isoformat())
        status, _ = await post_shopify(
            settings, "shop-1", secret, "orders/create", new_order
        )
        assert status == 200
        await wait_until_applied(settings, pool)
        back, returned = await api_get(
            settings, token, f"/api/stores/shop-1/customers/{CUSTOMER_KEY}"
        )
        final_changes = changes_of(
            await read_topic(settings, settings.topics.segment_changes), CUSTOMER_KEY
        )

    assert found == 200
    assert before["lifetime_orders"] == 2
    assert missing == 404
    assert [c["customer_key"] for c in listing["customers"]] == [OTHER_KEY]
    assert erased_changes == ["entered", "exited"]
    assert after_retry == 404
    assert back == 200
    assert returned["lifetime_orders"] == 1
    assert [o["order_id"] for o in returned["latest_orders"]] == ["333"]
    assert final_changes == ["entered", "exited", "entered"]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM orders WHERE email = $1 AND order_id <> '333'", EMAIL
        )
        == 0
    )


async def test_shop_redact_erases_only_that_store(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    token, secret = await create_store(pool)
    other_token, other_secret = await create_store(pool, "shop-2")
    async with running_services(settings):
        status, _ = await api_post(
            settings, token, "/api/stores/shop-1/segments", BUYERS
        )
        assert status == 201
        await post_history(settings, secret)
        status, _ = await post_shopify(
            settings,
            "shop-2",
            other_secret,
            "orders/create",
            load_fixture(ORDER_FIXTURE),
        )
        assert status == 200
        await wait_until_applied(settings, pool)

        status, _ = await post_shopify(
            settings, "shop-1", secret, "shop/redact", {"shop_id": 954889}
        )
        assert status == 200
        await wait_until_applied(settings, pool)
        _, listing = await api_get(settings, token, "/api/stores/shop-1/customers")
        _, other_listing = await api_get(
            settings, other_token, "/api/stores/shop-2/customers"
        )
        changes = await read_topic(settings, settings.topics.segment_changes)

    assert listing["customers"] == []
    assert [c["customer_key"] for c in other_listing["customers"]] == [CUSTOMER_KEY]
    assert changes_of(changes, CUSTOMER_KEY) == ["entered", "exited"]
    assert changes_of(changes, OTHER_KEY) == ["entered", "exited"]
    for table in ("orders", "customer_aliases", "consent_signals", "customers"):
        count = await pool.fetchval(
            f"SELECT count(*) FROM {table} WHERE store_id = 'shop-1'"
        )
        assert count == 0, table


async def test_replay_after_erasure_matches_live(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    _, secret = await create_store(pool)
    async with running_services(settings):
        await post_history(settings, secret)
        await post_shopify(
            settings, "shop-1", secret, "customers/redact", redact_payload()
        )
        await post_shopify(
            settings, "shop-1", secret, "orders/updated", load_fixture(ORDER_FIXTURE)
        )
        await wait_until_applied(settings, pool)
    live = await checksums(pool)

    summary = await replay(settings)

    assert summary.events_skipped == 0
    assert await checksums(pool) == live
    assert await customer_keys(pool, "shop-1") == [OTHER_KEY]
    assert await pool.fetchval("SELECT count(*) FROM erasures") == 2
