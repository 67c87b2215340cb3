"""The segment scheduler: re-evaluates time-based segments as time passes.

Fields such as days_since_last_order change with no new event. For each
segment whose rule reads such a field, every tick re-evaluates the customers
whose field stepped across a value that matters for the rule since the
previous tick. A change caused by time alone is therefore written within one
tick interval, plus the time a tick takes, of the moment it happens.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from projections.segments import SegmentCache, SegmentVersion, evaluate_customers
from projections.store import lock_customers, share_projection_lock
from projections.time_windows import (
    SqlParameters,
    TimeDependency,
    candidate_condition,
    time_dependencies,
)

logger = structlog.get_logger(__name__)

DEFAULT_INTERVAL_S = 60.0
DEFAULT_BATCH_SIZE = 500
SCHEDULER_NAME = "segments"
# Any fixed number works; it keeps two schedulers from ticking at once.
SCHEDULER_LOCK_ID = 0x7365676D74

_TRANSIENT_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    OSError,
)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class TickResult:
    """The outcome of one tick; ``since`` is None for the first tick, a full pass."""

    ticked_at: datetime
    since: datetime | None
    segments: int
    customers_evaluated: int
    membership_changes: int


class SegmentScheduler:
    """Ticks every ``interval_s`` seconds until stopped.

    Each tick covers the window from the previous tick's time, less
    ``overlap_s``, to ``clock()``. The overlap re-checks customers that a
    consumer batch evaluated with a time taken before it waited for their
    locks; re-evaluating an unchanged customer writes nothing. The end of the
    window is stored in ``segment_ticks`` after the tick, so a tick that fails
    or a scheduler that was down leaves its window to the next tick. The first
    tick of a database has no previous window and evaluates every customer of
    every time-based segment.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        topic: str,
        interval_s: float = DEFAULT_INTERVAL_S,
        overlap_s: float | None = None,
        clock: Callable[[], datetime] = utc_now,
        batch_size: int = DEFAULT_BATCH_SIZE,
        cache: SegmentCache | None = None,
    ) -> None:
        self._pool = pool
        self._topic = topic
        self.interval_s = interval_s
        self._overlap = timedelta(
            seconds=interval_s if overlap_s is None else overlap_s
        )
        self._clock = clock
        self._batch_size = batch_size
        self.cache = cache or SegmentCache()
        self.ticks_total = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until ``stop`` is set; a transient database error waits a tick."""
        logger.info("scheduler_started", interval_s=self.interval_s)
        try:
            while not stop.is_set():
                try:
                    await self.tick()
                except _TRANSIENT_ERRORS as exc:
                    logger.warning("scheduler_tick_retried", error=type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)
        finally:
            logger.info("scheduler_stopped", ticks=self.ticks_total)

    async def tick(self) -> TickResult | None:
        """Evaluate the window that ends now; None when another scheduler ticks."""
        now = self._clock()
        async with self._pool.acquire() as connection:
            is_locked = await connection.fetchval(
                "SELECT pg_try_advisory_lock($1)", SCHEDULER_LOCK_ID
            )
            if not is_locked:
                return None
            try:
                result = await self._tick(connection, now)
            finally:
                await connection.execute(
                    "SELECT pg_advisory_unlock($1)", SCHEDULER_LOCK_ID
                )
        self.ticks_total += 1
        log = logger.info if result.membership_changes else logger.debug
        log(
            "segments_ticked",
            ticked_at=result.ticked_at.isoformat(),
            segments=result.segments,
            customers_evaluated=result.customers_evaluated,
            membership_changes=result.membership_changes,
        )
        return result

    async def _tick(self, connection: asyncpg.Connection, now: datetime) -> TickResult:
        previous = await connection.fetchval(
            "SELECT ticked_at FROM segment_ticks WHERE scheduler = $1", SCHEDULER_NAME
        )
        if previous is not None and now <= previous:
            # The clock is behind the stored window: nothing new to cover.
            return TickResult(now, previous, 0, 0, 0)
        since = previous - self._overlap if previous is not None else None

        cause = "tick:" + now.isoformat().replace("+00:00", "Z")
        planned = [
            (segment, dependencies)
            for segment in await self.cache.latest_everywhere(connection)
            if (dependencies := time_dependencies(segment))
        ]
        evaluated = 0
        changes = 0
        for segment, dependencies in planned:
            segment_evaluated, segment_changes = await self._evaluate_window(
                connection, segment, dependencies, since, now, cause
            )
            evaluated += segment_evaluated
            changes += segment_changes

        await connection.execute(
            "INSERT INTO segment_ticks (scheduler, ticked_at) VALUES ($1, $2) "
            "ON CONFLICT (scheduler) DO UPDATE SET ticked_at = EXCLUDED.ticked_at",
            SCHEDULER_NAME,
            now,
        )
        return TickResult(now, since, len(planned), evaluated, changes)

    async def _evaluate_window(
        self,
        connection: asyncpg.Connection,
        segment: SegmentVersion,
        dependencies: list[TimeDependency],
        since: datetime | None,
        until: datetime,
        cause: str,
    ) -> tuple[int, int]:
        """Evaluate one segment for its candidates in batches, one transaction each."""
        evaluated = 0
        changes = 0
        after = ""
        while True:
            parameters = SqlParameters(first=4)
            condition = candidate_condition(dependencies, since, until, parameters)
            async with connection.transaction():
                # Shared with consumer batches. A replay takes it exclusively
                # while it swaps in rebuilt tables.
                await share_projection_lock(connection)
                rows = await connection.fetch(
                    "SELECT c.customer_key FROM customers c WHERE c.store_id = $1 "
                    f"AND c.customer_key > $2 AND {condition} "
                    "ORDER BY c.customer_key LIMIT $3",
                    segment.store_id,
                    after,
                    self._batch_size,
                    *parameters.values,
                )
                keys = [row["customer_key"] for row in rows]
                if not keys:
                    return evaluated, changes
                await lock_customers(
                    connection, [(segment.store_id, key) for key in keys]
                )
                # Reading the clock after the locks makes it less likely that
                # another process wrote these memberships with a later time.
                batch_changes = await evaluate_customers(
                    connection,
                    self.cache,
                    segment.store_id,
                    dict.fromkeys(keys, [segment]),
                    dict.fromkeys(keys, cause),
                    now=max(until, self._clock()),
                    topic=self._topic,
                )
                if batch_changes:
                    await connection.execute("NOTIFY cartstream_outbox")
            evaluated += len(keys)
            changes += batch_changes
            after = keys[-1]
