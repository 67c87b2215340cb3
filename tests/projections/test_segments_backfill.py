"""Backfill jobs on real PostgreSQL: progress, resume, snapshots, archives, races."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from projections.backfills import create_job, latest_progress, run_job
from projections.segments import SegmentCache
from tests.projections.segment_events import (
    CHANGES_TOPIC,
    STORE,
    EventFeed,
    customer_event,
    insert_segment,
    members,
    order_event,
    outbox_changes,
)

pytestmark = pytest.mark.integration

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
NOW = datetime(2025, 2, 1, tzinfo=UTC)
REPEAT_BUYERS = {">=": [{"var": "lifetime_orders"}, 2]}


def fixed_clock() -> datetime:
    return NOW


class ClockStoppedError(Exception):
    """Raised by a clock to stop a backfill as a crash would."""


def clock_failing_after(calls: int) -> Callable[[], datetime]:
    remaining = [calls]

    def clock() -> datetime:
        if remaining[0] == 0:
            raise ClockStoppedError
        remaining[0] -= 1
        return NOW

    return clock


async def add_customers(pool: asyncpg.Pool, count: int, *, orders: int) -> EventFeed:
    """Create customers 1..count with ``orders`` orders each."""
    feed = EventFeed()
    events = [
        order_event(str(customer), f"{customer}-{number}", T0 + timedelta(days=number))
        for customer in range(1, count + 1)
        for number in range(orders)
    ]
    async with pool.acquire() as connection:
        await feed.apply(connection, events, now=NOW)
    return feed


async def run_to_end(
    pool: asyncpg.Pool,
    segment_id: str,
    version: int = 1,
    *,
    kind: str = "evaluate",
    emit_events: bool = True,
    batch_size: int = 4,
    clock: Callable[[], datetime] = fixed_clock,
) -> str:
    async with pool.acquire() as connection:
        job = await create_job(
            connection,
            STORE,
            segment_id,
            version,
            kind=kind,  # type: ignore[arg-type]
            emit_events=emit_events,
        )
        return await run_job(
            connection,
            SegmentCache(),
            job,
            topic=CHANGES_TOPIC,
            clock=clock,
            batch_size=batch_size,
        )


async def test_backfill_evaluates_every_customer_with_progress(
    pool: asyncpg.Pool,
) -> None:
    await add_customers(pool, 6, orders=1)
    await add_customers_with_second_order(pool, [2, 5])
    await insert_segment(pool, "repeat", REPEAT_BUYERS)

    status = await run_to_end(pool, "repeat", batch_size=4)

    assert status == "done"
    assert await members(pool, "repeat") == {"c:2", "c:5"}
    progress = await latest_progress(pool, STORE, "repeat")
    assert progress is not None
    assert (progress["status"], progress["done"], progress["total"]) == ("done", 6, 6)
    assert progress["membership_changes"] == 2
    changes = await outbox_changes(pool)
    assert [(c["customer_key"], c["change"], c["cause_event_id"]) for c in changes] == [
        ("c:2", "entered", "backfill:repeat:1"),
        ("c:5", "entered", "backfill:repeat:1"),
    ]


async def add_customers_with_second_order(
    pool: asyncpg.Pool, customers: list[int]
) -> None:
    feed = EventFeed()
    feed.next_offset = 10_000
    async with pool.acquire() as connection:
        await feed.apply(
            connection,
            [
                order_event(str(c), f"{c}-extra", T0 + timedelta(days=20))
                for c in customers
            ],
            now=NOW,
        )


async def test_interrupted_backfill_resumes_after_last_batch(
    pool: asyncpg.Pool,
) -> None:
    await add_customers(pool, 10, orders=2)
    await insert_segment(pool, "repeat", REPEAT_BUYERS)

    # The clock fails in the second batch: its transaction rolls back.
    with pytest.raises(ClockStoppedError):
        await run_to_end(pool, "repeat", batch_size=4, clock=clock_failing_after(1))
    progress = await latest_progress(pool, STORE, "repeat")
    assert progress is not None
    assert (progress["status"], progress["done"], progress["total"]) == (
        "running",
        4,
        10,
    )
    assert len(await outbox_changes(pool)) == 4

    status = await run_to_end(pool, "repeat", batch_size=4)

    assert status == "done"
    changes = await outbox_changes(pool)
    keys = [c["customer_key"] for c in changes]
    assert sorted(keys) == sorted(f"c:{n}" for n in range(1, 11))
    assert len(set(keys)) == 10
    progress = await latest_progress(pool, STORE, "repeat")
    assert progress is not None
    assert (progress["status"], progress["done"], progress["total"]) == ("done", 10, 10)


async def test_initial_snapshot_changes_memberships_without_events(
    pool: asyncpg.Pool,
) -> None:
    await add_customers(pool, 5, orders=2)
    await insert_segment(pool, "repeat", REPEAT_BUYERS)

    await run_to_end(pool, "repeat", emit_events=False)

    assert await members(pool, "repeat") == {f"c:{n}" for n in range(1, 6)}
    assert await outbox_changes(pool) == []
    causes = await pool.fetch("SELECT DISTINCT cause_event_id FROM memberships")
    assert [row["cause_event_id"] for row in causes] == ["backfill:repeat:1"]


async def test_new_version_backfill_sets_segment_version(
    pool: asyncpg.Pool,
) -> None:
    await add_customers(pool, 4, orders=2)
    await add_customers_with_second_order(pool, [1])
    await insert_segment(pool, "repeat", REPEAT_BUYERS)
    await run_to_end(pool, "repeat")
    await insert_segment(
        pool, "repeat", {">=": [{"var": "lifetime_orders"}, 3]}, version=2
    )

    status = await run_to_end(pool, "repeat", version=2)

    assert status == "done"
    assert await members(pool, "repeat") == {"c:1"}
    rows = await pool.fetch(
        "SELECT customer_key, is_member, version, segment_version FROM memberships "
        "ORDER BY customer_key"
    )
    assert [tuple(row) for row in rows] == [
        ("c:1", True, 1, 2),
        ("c:2", False, 2, 2),
        ("c:3", False, 2, 2),
        ("c:4", False, 2, 2),
    ]
    exits = [c for c in await outbox_changes(pool) if c["change"] == "exited"]
    assert {c["cause_event_id"] for c in exits} == {"backfill:repeat:2"}
    assert {c["segment_version"] for c in exits} == {2}


async def test_job_for_replaced_version_is_superseded(pool: asyncpg.Pool) -> None:
    await add_customers(pool, 2, orders=2)
    await insert_segment(pool, "repeat", REPEAT_BUYERS)
    async with pool.acquire() as connection:
        job = await create_job(
            connection, STORE, "repeat", 1, kind="evaluate", emit_events=True
        )
    await insert_segment(pool, "repeat", REPEAT_BUYERS, version=2)

    async with pool.acquire() as connection:
        status = await run_job(
            connection, SegmentCache(), job, topic=CHANGES_TOPIC, clock=fixed_clock
        )

    assert status == "superseded"
    assert await outbox_changes(pool) == []
    progress = await pool.fetchval(
        "SELECT status FROM segment_backfills WHERE segment_version = 1"
    )
    assert progress == "superseded"


async def test_archive_makes_every_member_exit(pool: asyncpg.Pool) -> None:
    await add_customers(pool, 5, orders=2)
    await insert_segment(pool, "repeat", REPEAT_BUYERS)
    await run_to_end(pool, "repeat")
    await pool.execute("UPDATE segments SET archived_at = now()")

    status = await run_to_end(pool, "repeat", kind="archive", batch_size=2)

    assert status == "done"
    assert await members(pool, "repeat") == set()
    exits = [c for c in await outbox_changes(pool) if c["change"] == "exited"]
    assert sorted(c["customer_key"] for c in exits) == [f"c:{n}" for n in range(1, 6)]
    assert {c["membership_version"] for c in exits} == {2}
    assert {c["cause_event_id"] for c in exits} == {"archive:repeat:1"}

    # An archived segment is not evaluated by the consumer any more.
    feed = EventFeed()
    feed.next_offset = 10_000
    async with pool.acquire() as connection:
        await feed.apply(connection, [customer_event("9", T0)], now=NOW)
    assert feed.cache.evaluation_count == 0


async def test_concurrent_backfill_one_event_per_change(
    pool: asyncpg.Pool,
) -> None:
    """Every membership's events alternate, number 1..n and end in its state.

    Even customers qualify before the segment exists, so the backfill enters
    them; odd ones qualify through orders the consumer applies meanwhile. For
    multiples of 3 the consumer cancels an order again during the backfill.
    """
    customers = 60
    feed = EventFeed()
    initial = [
        order_event(str(c), f"{c}-{number}", T0 + timedelta(days=number))
        for c in range(1, customers + 1)
        for number in range(2 if c % 2 == 0 else 1)
    ]
    async with pool.acquire() as connection:
        await feed.apply(connection, initial, now=NOW)
    await insert_segment(pool, "repeat", REPEAT_BUYERS)

    second = [
        order_event(str(c), f"{c}-second", T0 + timedelta(days=10))
        for c in range(1, customers + 1, 2)
    ]
    cancelled = []
    for c in range(3, customers + 1, 3):
        order_id = f"{c}-second" if c % 2 else f"{c}-1"
        created = T0 + timedelta(days=10 if c % 2 else 1)
        cancelled.append(
            order_event(str(c), order_id, created, cancelled_at=T0 + timedelta(days=19))
        )

    async def consume() -> None:
        async with pool.acquire() as connection:
            for start in range(0, len(second), 5):
                await feed.apply(connection, second[start : start + 5], now=NOW)
                await asyncio.sleep(0)
            for start in range(0, len(cancelled), 3):
                await feed.apply(connection, cancelled[start : start + 3], now=NOW)
                await asyncio.sleep(0)

    await asyncio.gather(run_to_end(pool, "repeat", batch_size=3), consume())

    changes = await outbox_changes(pool)
    events_by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for change in changes:
        events_by_customer[change["customer_key"]].append(change)
    states = {
        row["customer_key"]: (row["is_member"], row["version"])
        for row in await pool.fetch("SELECT * FROM memberships")
    }
    assert await members(pool, "repeat") == {
        f"c:{c}" for c in range(1, customers + 1) if c % 3 != 0
    }
    for key, events in events_by_customer.items():
        versions = [e["membership_version"] for e in events]
        assert versions == list(range(1, len(events) + 1)), key
        alternating = ["entered", "exited"] * len(events)
        assert [e["change"] for e in events] == alternating[: len(events)], key
        assert states[key] == (events[-1]["change"] == "entered", len(events)), key
    for c in range(1, customers + 1):
        count = len(events_by_customer.get(f"c:{c}", []))
        if c % 3 != 0:
            assert count == 1, c
        elif c % 2 == 1:
            assert count == 2, c
        else:
            # Entered by the backfill and exited by the cancellation, or
            # cancelled before the backfill reached the customer.
            assert count in (0, 2), c
    causes = {c["cause_event_id"] for c in changes}
    assert "backfill:repeat:1" in causes
    assert {e["id"] for e in second} <= causes


async def test_backfill_waits_for_customer_lock(
    pool: asyncpg.Pool,
) -> None:
    """A backfill must not decide on a row that an open batch is changing."""
    feed = await add_customers(pool, 1, orders=2)
    await insert_segment(pool, "repeat", REPEAT_BUYERS)
    cancel = order_event("1", "1-1", T0 + timedelta(days=1), cancelled_at=NOW)

    async with pool.acquire() as consumer:
        batch = consumer.transaction()
        await batch.start()
        try:
            # The consumer cancels one of the two orders but has not committed.
            await feed.apply(consumer, [cancel], now=NOW)
            backfill = asyncio.create_task(run_to_end(pool, "repeat"))
            await wait_for_lock_wait_or(pool, backfill)
            assert not backfill.done()
        finally:
            await batch.commit()
        assert await backfill == "done"

    assert await members(pool, "repeat") == set()
    assert await outbox_changes(pool) == []


async def wait_for_lock_wait_or(pool: asyncpg.Pool, task: asyncio.Task[Any]) -> None:
    """Return once a session waits for an advisory lock, or the task has ended."""
    for _ in range(200):
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        )
        if waiting or task.done():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("no session waited for an advisory lock")
