"""Replay: rebuild the projections from the retained store-events topic.

Live consumption goes on during a replay. The rebuild reads the topic from the
beginning into shadow tables, then briefly blocks consumer batches while it
applies the last events and swaps the shadow tables in. See ``replay``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

import asyncpg
import structlog

from cartstream.config import Settings, load_settings
from cartstream.errors import CartstreamError
from consumer.replay_shadow import (
    SCHEMA_PREFIX,
    ApplyCounts,
    ShadowBuilder,
    create_shadow_tables,
    drop_leftover_schemas,
    replace_store_rows,
    swap_all,
)
from consumer.topic_reader import TopicReader
from projections import store
from projections.segments import SegmentCache, evaluate_customers

logger = structlog.get_logger(__name__)

# Held for a whole replay, so two replays never run at once.
REPLAY_RUN_LOCK_ID = 0x63617276
MEMBERSHIP_BATCH_CUSTOMERS = 500
# Catch-up rounds without the lock before the final one under it.
UNLOCKED_CATCH_UP_ROUNDS = 3
PROGRESS_INTERVAL_S = 1.0

HELP = """\
Rebuild the projections (orders, refunds, checkouts, profiles, consent,
aliases, messages and customers) from the store-events topic, which keeps every
event forever, and swap the rebuilt tables in.

Live consumption continues: webhooks keep being accepted and the consumer keeps
applying events while the replay reads the topic into shadow tables. At the end
the replay blocks consumer batches for as long as it takes to apply the events
the consumer applied meanwhile and to swap the tables in one transaction.
Pausing the consumer instead would hold back every segment change for the
whole length of the replay.

Memberships are not rebuilt: after the swap every customer is evaluated
against the current segments, and only real differences become membership
changes and segment-change events.
"""


class ReplayError(CartstreamError):
    """A replay cannot start or finish; the message gives the reason."""


@dataclass
class ReplaySummary(ApplyCounts):
    """Counts and duration of one replay, for the closing summary."""

    store_id: str | None = None
    tail_events: int = 0
    customers: int = 0
    membership_changes: int = 0
    duration_s: float = 0.0

    @property
    def rate_per_s(self) -> float:
        return self.events_read / self.duration_s if self.duration_s > 0 else 0.0

    def lines(self) -> list[str]:
        scope = f"store {self.store_id}" if self.store_id else "all stores"
        return [
            f"replay finished for {scope} in {self.duration_s:.1f} s",
            f"  events read:        {self.events_read} ({self.rate_per_s:.0f}/s)",
            f"  events applied:     {self.events_applied}",
            f"  events skipped:     {self.events_skipped} (invalid or rejected)",
            f"  applied under lock: {self.tail_events}",
            f"  customers rebuilt:  {self.customers}",
            f"  membership changes: {self.membership_changes}",
        ]


class Progress:
    """Writes events done, rate and time left to a stream.

    ``events`` writes at most once per ``PROGRESS_INTERVAL_S`` unless forced.
    """

    def __init__(self, stream: TextIO | None, total: int) -> None:
        self._stream = stream
        self._total = total
        self._started = time.monotonic()
        self._last = 0.0

    def note(self, message: str) -> None:
        if self._stream is not None:
            print(f"replay: {message}", file=self._stream, flush=True)

    def events(self, done: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if self._stream is None:
            return
        if not force and now - self._last < PROGRESS_INTERVAL_S:
            return
        self._last = now
        elapsed_s = max(now - self._started, 1e-9)
        rate = done / elapsed_s
        left_s = (self._total - done) / rate if rate > 0 else float("inf")
        percent = 100.0 * done / self._total if self._total else 100.0
        left = f"about {left_s:.0f} s left" if left_s != float("inf") else "-"
        self.note(
            f"{done}/{self._total} events ({percent:.1f}%), {rate:.0f} events/s, {left}"
        )


# Memberships


async def evaluate_memberships(
    settings: Settings, store_id: str | None, cause: str, now: datetime
) -> int:
    """Evaluate every customer and member of the stores in scope; count the changes.

    A membership changes, with its segment-change event, only where the rebuilt
    customers row gives a different result from the stored membership.
    """
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        return await _evaluate_stores(pool, settings, store_id, cause, now)
    finally:
        await pool.close()


async def _evaluate_stores(
    pool: asyncpg.Pool,
    settings: Settings,
    store_id: str | None,
    cause: str,
    now: datetime,
) -> int:
    cache = SegmentCache()
    if store_id is None:
        stores = [
            row["store_id"]
            for row in await pool.fetch(
                "SELECT DISTINCT store_id FROM segments WHERE archived_at IS NULL "
                "ORDER BY store_id"
            )
        ]
    else:
        stores = [store_id]

    changes = 0
    for current in stores:
        keys = [
            row["customer_key"]
            for row in await pool.fetch(
                "SELECT customer_key FROM customers WHERE store_id = $1 "
                "UNION SELECT customer_key FROM memberships "
                "WHERE store_id = $1 AND is_member ORDER BY 1",
                current,
            )
        ]
        for start in range(0, len(keys), MEMBERSHIP_BATCH_CUSTOMERS):
            chunk = keys[start : start + MEMBERSHIP_BATCH_CUSTOMERS]
            async with pool.acquire() as connection, connection.transaction():
                segments = await cache.latest(connection, current)
                if not segments:
                    break
                await store.lock_customers(connection, [(current, k) for k in chunk])
                found = await evaluate_customers(
                    connection,
                    cache,
                    current,
                    dict.fromkeys(chunk, segments),
                    dict.fromkeys(chunk, cause),
                    now=now,
                    topic=settings.topics.segment_changes,
                )
                if found:
                    await connection.execute("NOTIFY cartstream_outbox")
                changes += found
    return changes


# The replay


async def _live_checkpoints(
    connection: asyncpg.Connection, settings: Settings
) -> dict[int, int]:
    rows = await connection.fetch(
        "SELECT partition, next_offset FROM checkpoints "
        "WHERE consumer = $1 AND topic = $2",
        settings.consumer_group,
        settings.topics.events,
    )
    return {row["partition"]: row["next_offset"] for row in rows}


async def _apply_until(
    builder: ShadowBuilder, reader: TopicReader, targets: dict[int, int]
) -> int:
    """Apply every record below ``targets``; return how many were read."""
    next_records = reader.records_until(targets)
    read = 0
    while records := await next_records():
        await builder.apply(records)
        read += len(records)
    return read


async def replay(
    settings: Settings,
    *,
    store_id: str | None = None,
    progress_stream: TextIO | None = None,
    before_swap: Callable[[], Awaitable[None]] | None = None,
) -> ReplaySummary:
    """Rebuild the projections of every store, or of one, and swap them in.

    1. Capture the topic's end offsets and apply everything before them to
       shadow tables (same columns and indexes) in a schema of their own,
       with the consumer's own apply code, while live consumption continues.
    2. Catch up, without a lock, to the offsets the live consumer has applied.
    3. Take the projection lock exclusively, which waits for the batch in
       flight and holds back the next. Apply the records between the replay's
       position and the live checkpoints, then swap: all tables move in one
       transaction, or for one store its rows are replaced. The checkpoints
       stay as they are, because the rebuilt tables contain everything the
       live consumer applied. Where the replay read further than the live
       consumer, the consumer applies those records again, which changes no
       row.
    4. Evaluate memberships against the rebuilt customers.

    ``before_swap`` runs just before step 3; tests use it to add live events.

    Raises:
        ReplayError: another replay is running, or the topic does not exist.
    """
    started = time.monotonic()
    summary = ReplaySummary(store_id=store_id)
    schema = f"{SCHEMA_PREFIX}{uuid.uuid4().hex[:12]}"
    log = logger.bind(schema=schema, store_id=store_id)
    connection = await asyncpg.connect(settings.database_url)
    reader = TopicReader(settings, settings.topics.events)
    is_swapped = False
    try:
        if not await connection.fetchval(
            "SELECT pg_try_advisory_lock($1)", REPLAY_RUN_LOCK_ID
        ):
            raise ReplayError("another replay is running; wait until it finishes")
        dropped = await drop_leftover_schemas(connection)
        if dropped:
            log.warning("replay_leftovers_dropped", schemas=dropped)
        await create_shadow_tables(connection, schema)
        await connection.execute(f"SET search_path TO {schema}, public")
        builder = ShadowBuilder(
            connection, store_id, settings.attribution_window_days, summary
        )
        progress = await _build_shadow(settings, builder, reader, progress_stream)

        if before_swap is not None:
            await before_swap()
        progress.note("applying the newest events and swapping tables")
        retired = await _catch_up_and_swap(
            connection, settings, builder, reader, schema, summary
        )
        is_swapped = True
        await connection.execute("SET search_path TO public")
        for name in (retired, schema):
            if name is not None:
                await connection.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        log.info("replay_swapped", events=summary.events_read)

        progress.note("evaluating segment memberships")
        summary.membership_changes = await evaluate_memberships(
            settings, store_id, f"replay:{schema}", datetime.now(UTC)
        )
    except BaseException as exc:
        log.error("replay_failed", error=repr(exc), is_swapped=is_swapped)
        if not is_swapped:
            await _drop_quietly(connection, schema)
        raise
    finally:
        await reader.stop()
        await connection.close()

    summary.duration_s = time.monotonic() - started
    log.info(
        "replay_finished",
        events=summary.events_read,
        customers=summary.customers,
        membership_changes=summary.membership_changes,
        duration_s=round(summary.duration_s, 3),
    )
    return summary


async def _build_shadow(
    settings: Settings,
    builder: ShadowBuilder,
    reader: TopicReader,
    progress_stream: TextIO | None,
) -> Progress:
    """Apply the topic up to its end offsets, then catch up with the consumer.

    Both steps run without the projection lock, so the live consumer goes on.
    """
    ends = await reader.start()
    total = sum(end - reader.positions[n] for n, end in ends.items())
    progress = Progress(progress_stream, total)
    logger.info("replay_started", events=total, store_id=builder.store_id)

    next_records = reader.records_until(ends)
    while records := await next_records():
        await builder.apply(records)
        progress.events(builder.counts.events_read)
    progress.events(builder.counts.events_read, force=True)
    progress.note("recomputing customers")
    await builder.recompute()

    for _ in range(UNLOCKED_CATCH_UP_ROUNDS):
        live = await _live_checkpoints(builder.connection, settings)
        if await _apply_until(builder, reader, live) == 0:
            break
        await builder.recompute()
    return progress


async def _drop_quietly(connection: asyncpg.Connection, schema: str) -> None:
    """Drop a shadow schema after a failure; the next replay drops it otherwise."""
    try:
        await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        logger.warning("replay_schema_left", schema=schema, error=type(exc).__name__)


async def _catch_up_and_swap(
    connection: asyncpg.Connection,
    settings: Settings,
    builder: ShadowBuilder,
    reader: TopicReader,
    schema: str,
    summary: ReplaySummary,
) -> str | None:
    """Apply the last records and swap, under the exclusive projection lock.

    Returns the schema the old tables moved to, or None for one store.
    """
    async with connection.transaction():
        await store.hold_projection_lock(connection)
        live = await _live_checkpoints(connection, settings)
        read_before = summary.events_read
        next_records = reader.records_until(live)
        while records := await next_records():
            await builder.apply(records, in_transaction=True)
        summary.tail_events = summary.events_read - read_before
        await builder.recompute(in_transaction=True)
        summary.customers = await connection.fetchval(
            f"SELECT count(*) FROM {schema}.customers"
        )

        if builder.store_id is None:
            return await swap_all(connection, schema)
        await replace_store_rows(connection, schema, builder.store_id)
        return None


# The command


def _confirm(args: argparse.Namespace) -> None:
    if args.yes:
        return
    scope = f"store {args.store_id}" if args.store_id else "every store"
    if not sys.stdin.isatty():
        raise ReplayError(
            f"replay replaces the projections of {scope}; pass --yes to confirm"
        )
    answer = input(f"Replace the projections of {scope}? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise ReplayError("replay cancelled")


def _run(args: argparse.Namespace) -> int:
    from projections.migrate import migrate

    settings = load_settings()
    _confirm(args)

    async def run() -> ReplaySummary:
        connection = await asyncpg.connect(settings.database_url)
        try:
            await migrate(connection)
        finally:
            await connection.close()
        return await replay(
            settings, store_id=args.store_id, progress_stream=sys.stderr
        )

    summary = asyncio.run(run())
    for line in summary.lines():
        print(line)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``replay`` command to the ``cartstream`` command line."""
    parser = subparsers.add_parser(
        "replay",
        help="rebuild the projections from the store-events topic",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--store",
        dest="store_id",
        metavar="STORE_ID",
        help="rebuild only this store's rows; other stores are left as they are",
    )
    parser.add_argument(
        "--yes",
        action="store_true",
        help="replace the projections without asking for confirmation",
    )
    parser.set_defaults(handler=_run)
