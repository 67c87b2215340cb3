"""The delivery log: which platform deliveries were already published or quarantined.

A platform retries a delivery it thinks failed, and sends the same delivery id
again. The receiver looks the id up before publishing and records it only after
Kafka acknowledged the write, so a delivery is never marked done before it is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import asyncpg
import orjson

Outcome = Literal["published", "quarantined"]


@dataclass(frozen=True)
class RecordedDelivery:
    """A delivery found in the log: what happened to it and the events it made."""

    outcome: Outcome
    event_ids: list[str]


def delivery_key(delivery_id: str) -> bytes:
    """Return the SHA-256 under which a delivery id is stored.

    Hashing bounds the key's size, because ids come from headers of any
    length, and keeps NUL characters, which PostgreSQL text rejects, out of SQL.
    """
    return hashlib.sha256(delivery_id.encode("utf-8", "surrogatepass")).digest()


async def find_delivery(
    connection: asyncpg.Connection | asyncpg.Pool,
    store_id: str,
    platform: str,
    delivery_id: str,
) -> RecordedDelivery | None:
    """Return the recorded outcome of a delivery, or None when it is new."""
    row = await connection.fetchrow(
        "SELECT outcome, event_ids FROM deliveries "
        "WHERE store_id = $1 AND platform = $2 AND delivery_key = $3",
        store_id,
        platform,
        delivery_key(delivery_id),
    )
    if row is None:
        return None
    return RecordedDelivery(row["outcome"], orjson.loads(row["event_ids"]))


async def record_delivery(
    connection: asyncpg.Connection | asyncpg.Pool,
    store_id: str,
    platform: str,
    delivery_id: str,
    outcome: Outcome,
    event_ids: Sequence[str] = (),
) -> None:
    """Record a delivery's outcome, where ``published`` replaces ``quarantined``.

    A quarantined delivery that a fixed mapper later publishes (a platform
    retry or a redrive) becomes ``published``. A published one stays published.
    """
    await connection.execute(
        "INSERT INTO deliveries (store_id, platform, delivery_key, outcome, event_ids) "
        "VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (store_id, platform, delivery_key) DO UPDATE SET "
        "outcome = EXCLUDED.outcome, event_ids = EXCLUDED.event_ids, "
        "recorded_at = now() "
        "WHERE deliveries.outcome = 'quarantined'",
        store_id,
        platform,
        delivery_key(delivery_id),
        outcome,
        orjson.dumps(list(event_ids)).decode(),
    )


async def prune_deliveries(
    connection: asyncpg.Connection | asyncpg.Pool, window_hours: int
) -> int:
    """Delete deliveries recorded over ``window_hours`` ago and return the count."""
    status = await connection.execute(
        "DELETE FROM deliveries WHERE recorded_at < now() - make_interval(hours => $1)",
        window_hours,
    )
    return int(status.split()[-1])
