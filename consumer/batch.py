"""One consumer batch: apply events, recompute customers and segments, checkpoint.

Everything a batch changes is written in one PostgreSQL transaction together with
the next offset of each partition, so a batch is applied entirely or not at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import structlog

from cartstream.events import Event
from projections import store
from projections.recompute import DEFAULT_ATTRIBUTION_WINDOW_DAYS
from projections.schemas import EventValidator, event_validator
from projections.segments import SegmentCache, evaluate_changes

logger = structlog.get_logger(__name__)


@dataclass(frozen=True)
class InputRecord:
    """A Kafka record reduced to the fields a batch uses."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass(frozen=True)
class DeadLetter:
    """A record that cannot be applied, with the reason."""

    record: InputRecord
    reason: str


@dataclass
class BatchResult:
    applied: int = 0
    skipped: int = 0
    dead_letters: list[DeadLetter] | None = None
    membership_changes: int = 0
    customer_changes: list[store.CustomerChange] = field(default_factory=list)


def decode_event(
    record: InputRecord, validator: EventValidator
) -> tuple[Event | None, str | None]:
    """Decode and validate a record value; return the event or the reason it fails."""
    if record.value is None:
        return None, "record has no value"
    try:
        event = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        return None, "record value is not JSON"
    path = validator.first_error(event)
    if path is not None:
        return None, f"event does not match schemas/event.json at {path}"
    return event, None


async def _claim_offsets(
    connection: asyncpg.Connection, consumer: str, records: Sequence[InputRecord]
) -> dict[tuple[str, int], int]:
    """Lock the checkpoint row of each partition and return its next offset.

    The row lock fences a consumer that lost the partition in a rebalance but
    still holds a batch: it waits, then reads the newer offset and skips what the
    new owner already applied.
    """
    positions: dict[tuple[str, int], int] = {}
    for topic, partition in sorted({(r.topic, r.partition) for r in records}):
        await connection.execute(
            "INSERT INTO checkpoints (consumer, topic, partition, next_offset) "
            "VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING",
            consumer,
            topic,
            partition,
        )
        positions[(topic, partition)] = await connection.fetchval(
            "SELECT next_offset FROM checkpoints "
            "WHERE consumer = $1 AND topic = $2 AND partition = $3 FOR UPDATE",
            consumer,
            topic,
            partition,
        )
    return positions


async def apply_batch(
    connection: asyncpg.Connection,
    records: Sequence[InputRecord],
    *,
    consumer: str,
    segment_cache: SegmentCache,
    changes_topic: str,
    on_dead_letters: Callable[[list[DeadLetter]], Awaitable[None]] | None = None,
    now: datetime | None = None,
    attribution_window_days: int = DEFAULT_ATTRIBUTION_WINDOW_DAYS,
) -> BatchResult:
    """Apply a batch of records in one transaction and return what happened.

    Records below a partition's stored checkpoint were applied before and are
    skipped, which makes redelivery harmless. ``attribution_window_days`` is how
    far before an order a message click or send converts it.
    """
    now = now or datetime.now(UTC)
    validator = event_validator()
    result = BatchResult(dead_letters=[])
    assert result.dead_letters is not None

    async with connection.transaction():
        # Shared with every other batch; a replay takes it exclusively to swap
        # its rebuilt tables in between two batches.
        await store.share_projection_lock(connection)
        positions = await _claim_offsets(connection, consumer, records)
        fresh = [r for r in records if r.offset >= positions[(r.topic, r.partition)]]
        result.skipped = len(records) - len(fresh)

        events: list[Event] = []
        for record in fresh:
            event, reason = decode_event(record, validator)
            if event is None:
                result.dead_letters.append(DeadLetter(record, reason or "invalid"))
            else:
                events.append(event)

        await store.lock_for_batch(connection, events)
        effects = store.BatchEffects()
        # An event that the database rejects goes to the dead-letter topic
        # without undoing the rest of the batch.
        failures = await store.apply_events(connection, events, effects)
        for event, reason in failures:
            record = next(r for r in fresh if _event_id_of(r) == event["id"])
            result.dead_letters.append(DeadLetter(record, reason))
        result.applied = len(events) - len(failures)

        # Dead letters are acknowledged by Kafka before the checkpoint moves
        # past them, so a crash here redelivers them rather than losing them.
        if result.dead_letters and on_dead_letters is not None:
            await on_dead_letters(result.dead_letters)

        targets = await store.customers_to_recompute(connection, effects)
        await store.lock_customers(connection, targets)
        keys_by_store: dict[str, list[str]] = {}
        for store_id, key in sorted(targets):
            keys_by_store.setdefault(store_id, []).append(key)
        for store_id, keys in keys_by_store.items():
            result.customer_changes.extend(
                await store.recompute_customers(
                    connection,
                    store_id,
                    keys,
                    attribution_window_days=attribution_window_days,
                )
            )
        # Only segments whose rules read a changed field are evaluated.
        result.membership_changes += await evaluate_changes(
            connection,
            segment_cache,
            result.customer_changes,
            targets,
            now=now,
            topic=changes_topic,
        )
        if result.membership_changes:
            await connection.execute("NOTIFY cartstream_outbox")

        last: dict[tuple[str, int], int] = {}
        for record in fresh:
            tp = (record.topic, record.partition)
            last[tp] = max(last.get(tp, -1), record.offset)
        for (topic, partition), offset in last.items():
            await connection.execute(
                "UPDATE checkpoints SET next_offset = $4, updated_at = now() "
                "WHERE consumer = $1 AND topic = $2 AND partition = $3",
                consumer,
                topic,
                partition,
                offset + 1,
            )

    return result


def _event_id_of(record: InputRecord) -> str | None:
    try:
        value = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError:
        return None
    return value.get("id") if isinstance(value, dict) else None


def dead_letter_value(letter: DeadLetter) -> bytes:
    """Serialise a dead letter: the reason, where it came from and the raw value."""
    payload: dict[str, Any] = {
        "reason": letter.reason,
        "topic": letter.record.topic,
        "partition": letter.record.partition,
        "offset": letter.record.offset,
        "value": (letter.record.value or b"").decode("utf-8", errors="replace"),
    }
    return orjson.dumps(payload)


async def skip_records(
    connection: asyncpg.Connection, records: Sequence[InputRecord], *, consumer: str
) -> None:
    """Move the checkpoints past records that were dead-lettered without applying."""
    async with connection.transaction():
        positions = await _claim_offsets(connection, consumer, records)
        for record in records:
            tp = (record.topic, record.partition)
            if record.offset < positions[tp]:
                continue
            positions[tp] = record.offset + 1
            await connection.execute(
                "UPDATE checkpoints SET next_offset = $4, updated_at = now() "
                "WHERE consumer = $1 AND topic = $2 AND partition = $3",
                consumer,
                record.topic,
                record.partition,
                record.offset + 1,
            )
