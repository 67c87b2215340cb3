"""Segment evaluation in consumer batches on real PostgreSQL: dependencies and nulls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.projections.segment_events import (
    EventFeed,
    checkout_event,
    consent_event,
    customer_event,
    insert_segment,
    members,
    order_event,
    outbox_changes,
)

pytestmark = pytest.mark.integration

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


async def test_only_dependent_segments_evaluate(
    pool: asyncpg.Pool,
) -> None:
    await insert_segment(pool, "buyers", {">=": [{"var": "lifetime_orders"}, 1]})
    await insert_segment(pool, "germany", {"==": [{"var": "country"}, "DE"]})
    await insert_segment(pool, "vip", {"in": ["vip", {"var": "tags"}]})
    feed = EventFeed()

    async with pool.acquire() as connection:
        # A new customer is evaluated for all three segments.
        await feed.apply(connection, [customer_event("1", T0, country="FR")])
        assert feed.cache.evaluation_count == 3

        # Opt-in and email are read by no rule: nothing is evaluated.
        await feed.apply(
            connection, [consent_event("1", "subscribed", T0 + timedelta(hours=1))]
        )
        assert feed.cache.evaluation_count == 3

        # A country change evaluates only the segment that reads country.
        await feed.apply(
            connection,
            [customer_event("1", T0 + timedelta(hours=2), country="DE")],
        )
        assert feed.cache.evaluation_count == 4

        # An order changes lifetime_orders and more, but neither country nor tags.
        await feed.apply(connection, [order_event("1", "1001", T0 + timedelta(3))])
        assert feed.cache.evaluation_count == 5

        # A duplicate delivery changes no field at all.
        await feed.apply(connection, [order_event("1", "1001", T0 + timedelta(3))])
        assert feed.cache.evaluation_count == 5

    assert await members(pool, "buyers") == {"c:1"}
    assert await members(pool, "germany") == {"c:1"}
    assert await members(pool, "vip") == set()
    changes = await outbox_changes(pool)
    assert [(c["segment_id"], c["change"]) for c in changes] == [
        ("germany", "entered"),
        ("buyers", "entered"),
    ]


async def test_change_event_carries_versions_and_cause(pool: asyncpg.Pool) -> None:
    await insert_segment(
        pool, "germany", {"==": [{"var": "country"}, "DE"]}, name="Germany"
    )
    feed = EventFeed()
    enter = customer_event("7", T0, country="DE")
    leave = customer_event("7", T0 + timedelta(hours=1), country="AT")
    back = customer_event("7", T0 + timedelta(hours=2), country="DE")

    async with pool.acquire() as connection:
        for event in (enter, leave, back):
            await feed.apply(connection, [event])

    changes = await outbox_changes(pool)
    assert [
        (c["change"], c["membership_version"], c["cause_event_id"]) for c in changes
    ] == [
        ("entered", 1, enter["id"]),
        ("exited", 2, leave["id"]),
        ("entered", 3, back["id"]),
    ]
    assert {c["segment_version"] for c in changes} == {1}
    assert {c["segment_name"] for c in changes} == {"Germany"}
    assert {c["customer_id"] for c in changes} == {"7"}
    row = await pool.fetchrow(
        "SELECT is_member, version, segment_version, cause_event_id FROM memberships"
    )
    assert dict(row) == {
        "is_member": True,
        "version": 3,
        "segment_version": 1,
        "cause_event_id": back["id"],
    }


async def test_customer_without_orders_is_in_no_date_segment(
    pool: asyncpg.Pool,
) -> None:
    """Null last_order_at and days_since_last_order make comparisons false."""
    await insert_segment(
        pool, "before-2025", {"<": [{"var": "last_order_at"}, "2025-01-01"]}
    )
    await insert_segment(pool, "lapsed", {">": [{"var": "days_since_last_order"}, 30]})
    await insert_segment(
        pool, "not-recent", {"!": {"<=": [{"var": "days_since_last_order"}, 30]}}
    )
    feed = EventFeed()
    now = datetime(2025, 6, 1, tzinfo=UTC)

    async with pool.acquire() as connection:
        await feed.apply(
            connection,
            [
                customer_event("1", T0, country="DE"),
                order_event("2", "2001", datetime(2024, 5, 1, tzinfo=UTC)),
            ],
            now=now,
        )

    assert await members(pool, "before-2025") == {"c:2"}
    assert await members(pool, "lapsed") == {"c:2"}
    # Negating a false comparison is true, so the customer without orders is
    # in "not within 30 days".
    assert await members(pool, "not-recent") == {"c:1", "c:2"}


async def test_abandoned_checkout_within_a_day(pool: asyncpg.Pool) -> None:
    await insert_segment(
        pool,
        "abandoned-today",
        {"<": [{"var": "hours_since_abandoned_checkout"}, 24]},
    )
    feed = EventFeed()
    started = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)

    async with pool.acquire() as connection:
        await feed.apply(
            connection,
            [checkout_event("5", "k-1", started)],
            now=started + timedelta(hours=2),
        )
        assert await members(pool, "abandoned-today") == {"c:5"}

        # The order that completes the checkout makes it no longer abandoned.
        completed = order_event("5", "5001", started + timedelta(hours=3))
        completed["data"]["checkout_id"] = "k-1"
        await feed.apply(connection, [completed], now=started + timedelta(hours=3))

    assert await members(pool, "abandoned-today") == set()
    changes = await outbox_changes(pool)
    assert [c["change"] for c in changes] == ["entered", "exited"]
    assert changes[1]["cause_event_id"] == completed["id"]
