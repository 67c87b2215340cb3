"""Quarantine commands: list quarantined deliveries and redrive them.

A redrive maps each quarantined delivery again with the current platform code
and publishes the events. Event ids derive from the original delivery id, so
publishing a delivery twice yields the same events. Redriven records are
written to ``quarantine_redrives``, so a second redrive skips them.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import orjson
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from cartstream.config import Settings, load_settings
from cartstream.errors import MappingError
from cartstream.events import Event
from handlers.deliveries import find_delivery, record_delivery
from handlers.platforms.base import Platform
from handlers.platforms.registry import default_platforms
from handlers.publisher import EventPublisher
from handlers.quarantine import InvalidQuarantineRecordError, QuarantineRecord

logger = structlog.get_logger(__name__)

READ_TIMEOUT_S = 30.0

# A quarantine record with its partition and offset on the topic.
PositionedRecord = tuple[QuarantineRecord, int, int]


@dataclass(frozen=True)
class QuarantineEntry:
    """A quarantine record, where it sits on the topic, and when it was redriven."""

    record: QuarantineRecord
    partition: int
    offset: int
    redriven_at: datetime | None


@dataclass
class RedriveResult:
    """The outcome of a redrive, by quarantine id."""

    redriven: dict[str, list[str]] = field(default_factory=dict)
    already_redriven: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    not_found: list[str] = field(default_factory=list)


async def read_quarantine(settings: Settings) -> list[PositionedRecord]:
    """Read the quarantine topic from the start up to its current end.

    Returns (record, partition, offset) for each record. Records that are not
    quarantine records are logged and left out.

    Raises:
        TimeoutError: the records up to the end did not arrive within 30 s.
    """
    topic = settings.topics.quarantine
    # Subscribed without a group, the consumer is given every partition and
    # loads the topic's metadata on start.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    records: list[PositionedRecord] = []
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        ends = await consumer.end_offsets(tps) if tps else {}
        remaining = {tp for tp in tps if ends[tp] > 0}
        if remaining:
            await consumer.seek_to_beginning(*remaining)
        async with asyncio.timeout(READ_TIMEOUT_S):
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=500)
                for tp, messages in batches.items():
                    for message in messages:
                        if message.offset < ends[tp]:
                            _append_record(records, message.value, tp, message.offset)
                        if message.offset + 1 >= ends[tp]:
                            remaining.discard(tp)
    finally:
        await consumer.stop()
    return records


def _append_record(
    records: list[PositionedRecord],
    value: bytes | None,
    tp: TopicPartition,
    offset: int,
) -> None:
    fallback_id = f"{tp.partition}-{offset}"
    try:
        record = QuarantineRecord.from_json(value, fallback_id)
    except InvalidQuarantineRecordError as exc:
        logger.warning(
            "quarantine_record_invalid",
            partition=tp.partition,
            offset=offset,
            error=str(exc),
        )
        return
    records.append((record, tp.partition, offset))


async def list_quarantine(
    settings: Settings,
    connection: asyncpg.Connection | asyncpg.Pool,
    *,
    store_id: str | None = None,
) -> list[QuarantineEntry]:
    """List quarantined deliveries, oldest first, with their redrive time."""
    rows = await connection.fetch(
        "SELECT quarantine_id, redriven_at FROM quarantine_redrives"
    )
    redriven = {row["quarantine_id"]: row["redriven_at"] for row in rows}
    return [
        QuarantineEntry(record, partition, offset, redriven.get(record.quarantine_id))
        for record, partition, offset in await read_quarantine(settings)
        if store_id is None or record.store_id == store_id
    ]


async def redrive(
    settings: Settings,
    pool: asyncpg.Pool,
    publisher: EventPublisher,
    platforms: Mapping[str, Platform],
    *,
    store_id: str | None = None,
    quarantine_ids: Collection[str] = (),
) -> RedriveResult:
    """Map quarantined deliveries again and publish their events.

    Only records not redriven before are mapped, and ``store_id`` and
    ``quarantine_ids`` narrow the selection further. A delivery whose id the receiver
    already published (a platform retry after a fix) is marked redriven with
    those events and not published again.

    Raises:
        PublishTimeoutError: Kafka did not acknowledge; records redriven before
            the failure stay marked, and a rerun continues with the rest.
    """
    result = RedriveResult()
    entries = await list_quarantine(settings, pool, store_id=store_id)
    if quarantine_ids:
        found = {entry.record.quarantine_id for entry in entries}
        result.not_found = [qid for qid in quarantine_ids if qid not in found]
        entries = [e for e in entries if e.record.quarantine_id in quarantine_ids]

    for entry in entries:
        record = entry.record
        log = logger.bind(
            quarantine_id=record.quarantine_id,
            store_id=record.store_id,
            platform=record.platform,
        )
        if entry.redriven_at is not None:
            result.already_redriven.append(record.quarantine_id)
            continue
        outcome = await _redrive_one(pool, publisher, platforms, record)
        if isinstance(outcome, str):
            log.warning("redrive_failed", reason=outcome)
            result.failed[record.quarantine_id] = outcome
        else:
            log.info("quarantine_redriven", events=len(outcome))
            result.redriven[record.quarantine_id] = outcome
    return result


async def _redrive_one(
    pool: asyncpg.Pool,
    publisher: EventPublisher,
    platforms: Mapping[str, Platform],
    record: QuarantineRecord,
) -> list[str] | str:
    """Redrive one record; return its event ids, or the reason it still fails."""
    platform = platforms.get(record.platform)
    if platform is None:
        return f"unknown platform {record.platform!r}"
    delivery = record.to_delivery()
    try:
        parsed = platform.parse(delivery)
        events: list[Event] = platform.map(delivery, parsed)
    except MappingError as exc:
        return str(exc)

    published = None
    if parsed.delivery_id is not None:
        published = await find_delivery(
            pool, record.store_id, record.platform, parsed.delivery_id
        )
    if published is not None and published.outcome == "published":
        event_ids = published.event_ids
    else:
        await publisher.publish_events(events)
        event_ids = [event["id"] for event in events]
        if parsed.delivery_id is not None:
            await record_delivery(
                pool,
                record.store_id,
                record.platform,
                parsed.delivery_id,
                "published",
                event_ids,
            )

    await pool.execute(
        "INSERT INTO quarantine_redrives "
        "(quarantine_id, store_id, platform, event_ids) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (quarantine_id) DO NOTHING",
        record.quarantine_id,
        record.store_id,
        record.platform,
        orjson.dumps(event_ids).decode(),
    )
    return event_ids


# The command line


def _format_entry(entry: QuarantineEntry) -> str:
    record = entry.record
    state = (
        f"redriven {entry.redriven_at.isoformat(timespec='seconds')}"
        if entry.redriven_at
        else "pending"
    )
    field_text = f" (field {record.field})" if record.field else ""
    return (
        f"{record.quarantine_id}\t{record.store_id}\t{record.platform}\t"
        f"{record.received_at.isoformat(timespec='seconds')}\t{state}\t"
        f"topic {record.topic or '-'}\t{record.reason}{field_text}"
    )


async def _list_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    connection = await asyncpg.connect(settings.database_url)
    try:
        entries = await list_quarantine(settings, connection, store_id=args.store)
    finally:
        await connection.close()
    for entry in entries:
        print(_format_entry(entry))
    pending = sum(1 for entry in entries if entry.redriven_at is None)
    print(f"{len(entries)} quarantined deliveries, {pending} not redriven")
    return 0


async def _redrive_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    publisher = EventPublisher(settings)
    await publisher.start()
    try:
        result = await redrive(
            settings,
            pool,
            publisher,
            default_platforms(
                timestamp_tolerance_s=settings.webhook_timestamp_tolerance_s
            ),
            store_id=args.store,
            quarantine_ids=args.id or (),
        )
    finally:
        await publisher.stop()
        await pool.close()

    for quarantine_id, event_ids in result.redriven.items():
        print(f"redriven {quarantine_id}: {len(event_ids)} events")
    for quarantine_id, reason in result.failed.items():
        print(f"still unmappable {quarantine_id}: {reason}")
    for quarantine_id in result.not_found:
        print(f"not found {quarantine_id}: no quarantine record has this id")
    print(
        f"{len(result.redriven)} redriven, {len(result.failed)} still unmappable, "
        f"{len(result.already_redriven)} redriven before"
    )
    return 1 if result.failed or result.not_found else 0


def _quarantine(args: argparse.Namespace) -> int:
    if args.action == "list":
        return asyncio.run(_list_command(args))
    return asyncio.run(_redrive_command(args))


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``cartstream quarantine`` and ``cartstream bigcommerce``."""
    quarantine = commands.add_parser(
        "quarantine", help="list or redrive deliveries that could not be mapped"
    )
    actions = quarantine.add_subparsers(dest="action", required=True)
    listing = actions.add_parser(
        "list", help="list quarantined deliveries with their reasons"
    )
    listing.add_argument("--store", help="only deliveries of this store id")
    again = actions.add_parser(
        "redrive",
        help="map quarantined deliveries again with the current code and publish them",
    )
    again.add_argument("--store", help="only deliveries of this store id")
    again.add_argument(
        "--id",
        action="append",
        metavar="QUARANTINE_ID",
        help="only this quarantine id (from `quarantine list`); repeat for several",
    )
    quarantine.set_defaults(handler=_quarantine)

    # Loaded from here because the command line loads this module's parsers.
    from consumer import hydrator

    hydrator.add_parser(commands)
