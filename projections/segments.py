"""Segment memberships: evaluate rules for touched customers and record changes.

Each change of membership bumps the membership's version and writes a
CloudEvents record to the outbox in the caller's transaction, so the change
event exists exactly when the membership row does.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import structlog

from projections.catalogue import customer_record
from projections.rules import CompiledRule, compile_segment_rule

logger = structlog.get_logger(__name__)

CHANGE_NAMESPACE = uuid.UUID("0b8f3c55-1e2d-4a7b-8c9e-5d4f3a2b1c0d")
EVENT_TYPE_PREFIX = "dev.cartstream.segment."


@dataclass(frozen=True)
class SegmentVersion:
    """One version of a segment with its rule compiled."""

    store_id: str
    segment_id: str
    version: int
    name: str
    rule: Any
    compiled: CompiledRule


class SegmentCache:
    """Compiled rules by segment version, so a rule is compiled once per version."""

    def __init__(self) -> None:
        self._compiled: dict[tuple[str, str, int], CompiledRule] = {}

    def compiled(
        self, store_id: str, segment_id: str, version: int, rule: Any
    ) -> CompiledRule:
        key = (store_id, segment_id, version)
        found = self._compiled.get(key)
        if found is None:
            found = compile_segment_rule(rule)
            self._compiled[key] = found
        return found

    async def latest(
        self, connection: asyncpg.Connection, store_id: str
    ) -> list[SegmentVersion]:
        """Return the newest version of every segment of a store."""
        rows = await connection.fetch(
            "SELECT DISTINCT ON (segment_id) segment_id, version, name, rule "
            "FROM segments WHERE store_id = $1 ORDER BY segment_id, version DESC",
            store_id,
        )
        segments = []
        for row in rows:
            rule = orjson.loads(row["rule"])
            compiled = self.compiled(store_id, row["segment_id"], row["version"], rule)
            segments.append(
                SegmentVersion(
                    store_id,
                    row["segment_id"],
                    row["version"],
                    row["name"],
                    rule,
                    compiled,
                )
            )
        return segments


def change_event(
    *,
    store_id: str,
    segment: SegmentVersion,
    customer: Mapping[str, Any],
    entered: bool,
    membership_version: int,
    cause_event_id: str | None,
    at: datetime,
) -> dict[str, Any]:
    """Build the CloudEvents (structured mode, JSON) record of one change."""
    change = "entered" if entered else "exited"
    key = customer["customer_key"]
    change_id = uuid.uuid5(
        CHANGE_NAMESPACE,
        f"{store_id}\x1f{segment.segment_id}\x1f{key}\x1f{membership_version}",
    )
    return {
        "specversion": "1.0",
        "id": str(change_id),
        "source": f"/cartstream/stores/{store_id}/segments/{segment.segment_id}",
        "type": EVENT_TYPE_PREFIX + change,
        "subject": key,
        "time": at.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": {
            "change": change,
            "store_id": store_id,
            "segment_id": segment.segment_id,
            "segment_version": segment.version,
            "segment_name": segment.name,
            "customer_key": key,
            "customer_id": customer.get("customer_id"),
            "email": customer.get("email"),
            "membership_version": membership_version,
            "cause_event_id": cause_event_id,
        },
    }


async def evaluate_customers(
    connection: asyncpg.Connection,
    cache: SegmentCache,
    store_id: str,
    causes: Mapping[str, str | None],
    *,
    now: datetime,
    topic: str,
    segments: list[SegmentVersion] | None = None,
) -> int:
    """Re-evaluate segments for the customers in ``causes`` (key -> cause id).

    Returns the number of membership changes written.
    """
    if segments is None:
        segments = await cache.latest(connection, store_id)
    if not segments or not causes:
        return 0

    keys = list(causes)
    customers = {
        row["customer_key"]: row
        for row in await connection.fetch(
            "SELECT * FROM customers WHERE store_id = $1 AND customer_key = ANY($2)",
            store_id,
            keys,
        )
    }
    memberships = {
        (row["segment_id"], row["customer_key"]): row
        for row in await connection.fetch(
            "SELECT segment_id, customer_key, is_member, version FROM memberships "
            "WHERE store_id = $1 AND customer_key = ANY($2)",
            store_id,
            keys,
        )
    }

    changes = 0
    for key in keys:
        row = customers.get(key)
        record = customer_record(row, now) if row is not None else None
        identity: dict[str, Any] = (
            dict(row) if row is not None else {"customer_key": key}
        )
        for segment in segments:
            is_member = record is not None and segment.compiled.matches(record)
            current = memberships.get((segment.segment_id, key))
            was_member = current is not None and current["is_member"]
            if is_member == was_member:
                continue
            version = (current["version"] if current is not None else 0) + 1
            await _record_change(
                connection,
                store_id=store_id,
                segment=segment,
                customer=identity,
                entered=is_member,
                version=version,
                cause_event_id=causes[key],
                now=now,
                topic=topic,
            )
            changes += 1

    return changes


async def _record_change(
    connection: asyncpg.Connection,
    *,
    store_id: str,
    segment: SegmentVersion,
    customer: Mapping[str, Any],
    entered: bool,
    version: int,
    cause_event_id: str | None,
    now: datetime,
    topic: str,
) -> None:
    key = customer["customer_key"]
    await connection.execute(
        """
        INSERT INTO memberships (store_id, segment_id, customer_key, is_member,
            version, segment_version, changed_at, cause_event_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (store_id, segment_id, customer_key) DO UPDATE SET
            is_member = EXCLUDED.is_member, version = EXCLUDED.version,
            segment_version = EXCLUDED.segment_version,
            changed_at = EXCLUDED.changed_at,
            cause_event_id = EXCLUDED.cause_event_id
        """,
        store_id,
        segment.segment_id,
        key,
        entered,
        version,
        segment.version,
        now,
        cause_event_id,
    )
    event = change_event(
        store_id=store_id,
        segment=segment,
        customer=customer,
        entered=entered,
        membership_version=version,
        cause_event_id=cause_event_id,
        at=now,
    )
    await connection.execute(
        "INSERT INTO outbox (topic, key, payload) VALUES ($1, $2, $3)",
        topic,
        f"{store_id}:{key}",
        orjson.dumps(event).decode(),
    )
    logger.debug(
        "membership_changed",
        store_id=store_id,
        segment_id=segment.segment_id,
        customer_key=key,
        change=event["data"]["change"],
        membership_version=version,
    )


async def backfill_segment(
    pool: asyncpg.Pool,
    cache: SegmentCache,
    store_id: str,
    segment_id: str,
    *,
    topic: str,
    now: datetime,
    batch_size: int = 500,
) -> int:
    """Evaluate the newest version of one segment for every customer of a store.

    Works in batches of ``batch_size`` customers, one transaction each, taking the
    same customer locks as the consumer, so live consumption goes on meanwhile.
    Returns the number of membership changes.
    """
    from projections.store import lock_customers

    changes = 0
    after = ""
    while True:
        async with pool.acquire() as connection, connection.transaction():
            segments = [
                s
                for s in await cache.latest(connection, store_id)
                if s.segment_id == segment_id
            ]
            if not segments:
                return changes
            keys = [
                row["customer_key"]
                for row in await connection.fetch(
                    "SELECT customer_key FROM customers WHERE store_id = $1 "
                    "AND customer_key > $2 ORDER BY customer_key LIMIT $3",
                    store_id,
                    after,
                    batch_size,
                )
            ]
            if not keys:
                return changes
            await lock_customers(connection, [(store_id, key) for key in keys])
            cause = f"backfill:{segment_id}:{segments[0].version}"
            changes += await evaluate_customers(
                connection,
                cache,
                store_id,
                dict.fromkeys(keys, cause),
                now=now,
                topic=topic,
                segments=segments,
            )
            if changes:
                await connection.execute("NOTIFY cartstream_outbox")
        after = keys[-1]
