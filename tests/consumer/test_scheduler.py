"""The segment scheduler on real PostgreSQL, with a clock the tests move."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from consumer.scheduler import SCHEDULER_LOCK_ID, SegmentScheduler
from tests.projections.segment_events import (
    CHANGES_TOPIC,
    EventFeed,
    checkout_event,
    customer_event,
    insert_segment,
    iso,
    members,
    order_event,
    outbox_changes,
)

pytestmark = pytest.mark.integration

INTERVAL_S = 60.0
LAST_ORDER = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
LAPSED = {">": [{"var": "days_since_last_order"}, 30]}


class Clock:
    """A clock that moves only when a test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def scheduler(pool: asyncpg.Pool, clock: Clock) -> SegmentScheduler:
    return SegmentScheduler(
        pool, topic=CHANGES_TOPIC, interval_s=INTERVAL_S, clock=clock, batch_size=2
    )


async def test_lapse_written_at_next_tick(
    pool: asyncpg.Pool,
) -> None:
    """With ticks every 60 s, a customer lapses at the first tick past 31 days."""
    await insert_segment(pool, "lapsed", LAPSED)
    async with pool.acquire() as connection:
        await EventFeed().apply(
            connection,
            [
                order_event("1", "1001", LAST_ORDER),
                order_event("3", "3001", LAST_ORDER + timedelta(hours=2)),
                customer_event("2", LAST_ORDER),
            ],
            now=LAST_ORDER + timedelta(hours=1),
        )
    lapses_at = LAST_ORDER + timedelta(days=31)
    clock = Clock(lapses_at - timedelta(seconds=90))
    ticker = scheduler(pool, clock)

    # The first tick has no earlier window, so it evaluates every customer.
    first = await ticker.tick()
    assert first is not None
    assert (first.since, first.customers_evaluated) == (None, 3)
    assert first.membership_changes == 0

    # 30 s before the lapse: no customer's day count crosses 31.
    clock.advance(INTERVAL_S)
    before = await ticker.tick()
    assert before is not None
    assert (before.customers_evaluated, before.membership_changes) == (0, 0)

    # 30 s after it: only customer 1 crossed, and it is written now.
    clock.advance(INTERVAL_S)
    after = await ticker.tick()
    assert after is not None
    assert (after.customers_evaluated, after.membership_changes) == (1, 1)
    assert timedelta(0) < clock.now - lapses_at < timedelta(seconds=INTERVAL_S)

    assert await members(pool, "lapsed") == {"c:1"}
    changes = await outbox_changes(pool)
    assert [(c["customer_key"], c["change"]) for c in changes] == [("c:1", "entered")]
    assert changes[0]["cause_event_id"] == f"tick:{iso(clock.now)}"
    assert changes[0]["membership_version"] == 1
    stored = await pool.fetchval("SELECT ticked_at FROM segment_ticks")
    assert stored == clock.now


async def test_abandoned_checkout_leaves_segment_after_a_day(
    pool: asyncpg.Pool,
) -> None:
    await insert_segment(
        pool,
        "abandoned-today",
        {"<": [{"var": "hours_since_abandoned_checkout"}, 24]},
    )
    started = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
    checkout = checkout_event("5", "k-1", started)
    async with pool.acquire() as connection:
        await EventFeed().apply(
            connection, [checkout], now=started + timedelta(hours=1)
        )
    clock = Clock(started + timedelta(hours=23, minutes=59))
    ticker = scheduler(pool, clock)

    await ticker.tick()
    assert await members(pool, "abandoned-today") == {"c:5"}
    clock.advance(INTERVAL_S)
    result = await ticker.tick()

    assert result is not None
    assert result.membership_changes == 1
    assert await members(pool, "abandoned-today") == set()
    changes = await outbox_changes(pool)
    assert [(c["change"], c["cause_event_id"]) for c in changes] == [
        ("entered", checkout["id"]),
        ("exited", f"tick:{iso(clock.now)}"),
    ]


async def test_arithmetic_rule_checked_every_day(
    pool: asyncpg.Pool,
) -> None:
    """Every seventh day since the last order, the customer is in the segment."""
    await insert_segment(
        pool,
        "weekly",
        {"==": [{"%": [{"var": "days_since_last_order"}, 7]}, 0]},
    )
    async with pool.acquire() as connection:
        await EventFeed().apply(
            connection,
            [order_event("1", "1001", LAST_ORDER)],
            now=LAST_ORDER + timedelta(hours=1),
        )
    assert await members(pool, "weekly") == {"c:1"}
    clock = Clock(LAST_ORDER + timedelta(days=1, seconds=30))
    ticker = scheduler(pool, clock)
    await ticker.tick()
    assert await members(pool, "weekly") == set()

    clock.now = LAST_ORDER + timedelta(days=6, hours=23, minutes=59, seconds=30)
    quiet = await ticker.tick()
    clock.advance(INTERVAL_S)
    seventh_day = await ticker.tick()

    assert quiet is not None
    assert seventh_day is not None
    assert quiet.membership_changes == 0
    assert (seventh_day.customers_evaluated, seventh_day.membership_changes) == (1, 1)
    assert await members(pool, "weekly") == {"c:1"}


async def test_tick_is_skipped_while_another_scheduler_ticks(
    pool: asyncpg.Pool,
) -> None:
    await insert_segment(pool, "lapsed", LAPSED)
    clock = Clock(LAST_ORDER)

    async with pool.acquire() as other:
        await other.execute("SELECT pg_advisory_lock($1)", SCHEDULER_LOCK_ID)
        try:
            skipped = await scheduler(pool, clock).tick()
        finally:
            await other.execute("SELECT pg_advisory_unlock($1)", SCHEDULER_LOCK_ID)
    ticked = await scheduler(pool, clock).tick()

    assert skipped is None
    assert ticked is not None
    assert ticked.ticked_at == LAST_ORDER


async def test_clock_behind_stored_tick_evaluates_nothing(
    pool: asyncpg.Pool,
) -> None:
    await insert_segment(pool, "lapsed", LAPSED)
    async with pool.acquire() as connection:
        await EventFeed().apply(connection, [order_event("1", "1001", LAST_ORDER)])
    clock = Clock(LAST_ORDER + timedelta(days=40))
    await scheduler(pool, clock).tick()

    clock.now = LAST_ORDER + timedelta(days=2)
    result = await scheduler(pool, clock).tick()

    assert result is not None
    assert result.customers_evaluated == 0
    assert await members(pool, "lapsed") == {"c:1"}
    stored = await pool.fetchval("SELECT ticked_at FROM segment_ticks")
    assert stored == LAST_ORDER + timedelta(days=40)


async def test_run_ticks_until_stopped(pool: asyncpg.Pool) -> None:
    await insert_segment(pool, "lapsed", LAPSED)
    clock = Clock(LAST_ORDER)
    ticker = SegmentScheduler(pool, topic=CHANGES_TOPIC, interval_s=0.05, clock=clock)
    stop = asyncio.Event()
    task = asyncio.create_task(ticker.run(stop))

    for _ in range(200):
        if ticker.ticks_total >= 3:
            break
        clock.advance(1)
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 10)

    assert ticker.ticks_total >= 3
    assert task.exception() is None
