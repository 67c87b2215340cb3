"""Replay rebuilds projections identical to the live ones, also under live traffic."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from cartstream.config import Settings
from consumer.replay import replay
from consumer.replay_shadow import SCHEMA_PREFIX
from consumer.runtime import ProjectionConsumer
from handlers.publisher import EventPublisher
from projections.migrate import migrate
from projections.store import PROJECTION_TABLES
from tests.projections.test_oracle import Event
from tests.projections.test_oracle_pipeline import (
    account_first_then_guest,
    cancelled_after_refund_and_deleted,
    competing_accounts_for_one_email,
    delivered_events,
    guest_first_then_account,
)

pytestmark = pytest.mark.integration

HISTORIES = [
    guest_first_then_account,
    account_first_then_guest,
    competing_accounts_for_one_email,
    cancelled_after_refund_and_deleted,
]
BUYERS_RULE = '{">=": [{"var": "lifetime_orders"}, 1]}'


def store_events(store_ids: list[str]) -> list[Event]:
    """Return every fixed history once per store."""
    return [
        event
        for store_id in store_ids
        for history in HISTORIES
        for event in delivered_events(history(), store_id)
    ]


async def checksums(
    connection: asyncpg.Connection | asyncpg.Pool, store_id: str | None = None
) -> dict[str, str]:
    """Return an md5 of every projection table's rows (or one store's rows)."""
    where = "" if store_id is None else "WHERE store_id = $1"
    arguments = [] if store_id is None else [store_id]
    result = {}
    for table in PROJECTION_TABLES:
        result[table] = await connection.fetchval(
            f"SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) "
            f"FROM {table} t {where}",
            *arguments,
        )
    return result


async def end_offsets(settings: Settings) -> dict[int, int]:
    consumer = AIOKafkaConsumer(
        settings.topics.events, bootstrap_servers=settings.kafka_bootstrap
    )
    await consumer.start()
    try:
        topic = settings.topics.events
        partitions = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets(
            [TopicPartition(topic, p) for p in partitions]
        )
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def wait_applied(settings: Settings, pool: asyncpg.Pool) -> None:
    ends = await end_offsets(settings)
    deadline = time.monotonic() + 60
    while True:
        rows = await pool.fetch(
            "SELECT partition, next_offset FROM checkpoints WHERE consumer = $1",
            settings.consumer_group,
        )
        done = {row["partition"]: row["next_offset"] for row in rows}
        if all(done.get(p, 0) >= end for p, end in ends.items()):
            return
        assert time.monotonic() < deadline, f"not applied: {done} < {ends}"
        await asyncio.sleep(0.1)


async def publish(settings: Settings, events: list[Event]) -> None:
    publisher = EventPublisher(settings)
    await publisher.start()
    try:
        await publisher.publish_events(events)
    finally:
        await publisher.stop()


@contextlib.asynccontextmanager
async def live_consumer(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(
        ProjectionConsumer(settings, pool, poll_timeout_ms=100).run(stop)
    )
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def add_segment(pool: asyncpg.Pool, store_id: str) -> None:
    await pool.execute(
        "INSERT INTO segments (store_id, segment_id, version, name, rule, fields) "
        "VALUES ($1, 'buyers', 1, 'Buyers', $2, '[\"lifetime_orders\"]')",
        store_id,
        BUYERS_RULE,
    )


@contextlib.asynccontextmanager
async def reference_database(settings: Settings) -> AsyncIterator[Settings]:
    """Yield settings for a second, empty database beside the test's own."""
    base, _, name = settings.database_url.rpartition("/")
    reference = f"{name}_ref"
    admin = await asyncpg.connect(f"{base}/postgres")
    await admin.execute(f"CREATE DATABASE {reference}")
    await admin.close()
    url = type(settings.database_url)(f"{base}/{reference}")
    connection = await asyncpg.connect(url)
    await migrate(connection)
    await connection.close()
    try:
        yield replace(
            settings, database_url=url, consumer_group=f"{reference}-projections"
        )
    finally:
        admin = await asyncpg.connect(f"{base}/postgres")
        await admin.execute(f"DROP DATABASE {reference} WITH (FORCE)")
        await admin.close()


async def test_replay_rebuilds_identical_projections(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    events = store_events(["s1", "s2"])
    await add_segment(pool, "s1")
    await publish(settings, events)
    async with live_consumer(settings, pool):
        await wait_applied(settings, pool)
    live = await checksums(pool)
    outbox_before = await pool.fetchval("SELECT count(*) FROM outbox")
    memberships_before = await pool.fetch("SELECT * FROM memberships ORDER BY 1, 2, 3")

    # Damage derived and stored rows alike; the replay must rebuild both.
    await pool.execute("UPDATE customers SET lifetime_orders = 99")
    await pool.execute("DELETE FROM orders WHERE order_id = '701'")
    damaged = await checksums(pool)
    summary = await replay(settings)

    assert damaged != live
    assert await checksums(pool) == live
    assert summary.events_read == len(events)
    assert summary.events_applied == len(events)
    assert summary.events_skipped == 0
    assert summary.tail_events == 0
    assert summary.customers == await pool.fetchval("SELECT count(*) FROM customers")
    # Memberships were right, so the replay changes none and sends no event.
    assert summary.membership_changes == 0
    assert await pool.fetchval("SELECT count(*) FROM outbox") == outbox_before
    assert await pool.fetch("SELECT * FROM memberships ORDER BY 1, 2, 3") == (
        memberships_before
    )
    assert memberships_before != []
    schemas = await pool.fetchval(
        "SELECT count(*) FROM pg_namespace WHERE starts_with(nspname, $1)",
        SCHEMA_PREFIX,
    )
    assert schemas == 0


async def test_replay_includes_events_applied_during_replay(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    before = store_events(["s1"])
    during = store_events(["s2", "s3"])
    after = store_events(["s4"])
    await publish(settings, before)

    async def publish_while_replaying() -> None:
        await publish(settings, during)
        await wait_applied(settings, pool)

    async with live_consumer(settings, pool):
        await wait_applied(settings, pool)
        summary = await replay(settings, before_swap=publish_while_replaying)
        # The live consumer goes on into the swapped-in tables.
        await publish(settings, after)
        await wait_applied(settings, pool)

    async with reference_database(settings) as reference_settings:
        reference_pool = await asyncpg.create_pool(
            reference_settings.database_url, min_size=1, max_size=3
        )
        try:
            async with live_consumer(reference_settings, reference_pool):
                await wait_applied(reference_settings, reference_pool)
            expected = await checksums(reference_pool)
        finally:
            await reference_pool.close()

    assert summary.tail_events == len(during)
    assert summary.events_read == len(before) + len(during)
    assert await checksums(pool) == expected
    stores = await pool.fetch("SELECT DISTINCT store_id FROM customers ORDER BY 1")
    assert [row["store_id"] for row in stores] == ["s1", "s2", "s3", "s4"]


async def test_consumer_reapplies_replayed_events_harmlessly(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """A replay that read further than the consumer leaves the checkpoints behind."""
    await publish(settings, store_events(["s1"]))
    async with live_consumer(settings, pool):
        await wait_applied(settings, pool)
    checkpoints = await pool.fetch("SELECT * FROM checkpoints ORDER BY partition")
    await publish(settings, store_events(["s2"]))

    await replay(settings)
    replayed = await checksums(pool)
    checkpoints_after_replay = await pool.fetch(
        "SELECT * FROM checkpoints ORDER BY partition"
    )
    async with live_consumer(settings, pool):
        await wait_applied(settings, pool)

    assert checkpoints_after_replay == checkpoints
    assert await pool.fetchval("SELECT count(*) FROM customers WHERE store_id = 's2'")
    assert await checksums(pool) == replayed


async def test_replay_of_one_store_leaves_other_stores(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    await publish(settings, store_events(["s1", "s2"]))
    async with live_consumer(settings, pool):
        await wait_applied(settings, pool)
    s1_live = await checksums(pool, "s1")
    await pool.execute("UPDATE customers SET lifetime_sales = 0")
    await pool.execute("DELETE FROM messages")
    s2_damaged = await checksums(pool, "s2")

    summary = await replay(settings, store_id="s1")

    assert await checksums(pool, "s1") == s1_live
    assert await checksums(pool, "s2") == s2_damaged
    assert summary.events_applied == len(store_events(["s1"]))


async def run_command(settings: Settings, *arguments: str) -> tuple[int, str, str]:
    environment = dict(
        os.environ,
        CARTSTREAM_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        CARTSTREAM_DATABASE_URL=str(settings.database_url),
        CARTSTREAM_TOPIC_PREFIX=settings.topics.prefix,
        CARTSTREAM_CONSUMER_GROUP=settings.consumer_group,
        CARTSTREAM_LOG_LEVEL="warning",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cartstream.cli",
        "replay",
        *arguments,
        env=environment,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_replay_command_reports_progress_and_summary(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    events = store_events(["s1"])
    await publish(settings, events)
    async with live_consumer(settings, pool):
        await wait_applied(settings, pool)
    live = await checksums(pool)

    rejected = await run_command(settings)
    status, stdout, stderr = await run_command(settings, "--yes")

    assert rejected[0] == 2
    assert "pass --yes to confirm" in rejected[2]
    assert status == 0, stderr
    assert f"{len(events)}/{len(events)} events (100.0%)" in stderr
    assert "events/s" in stderr
    assert "replay finished for all stores" in stdout
    assert f"events read:        {len(events)} " in stdout
    assert await checksums(pool) == live
