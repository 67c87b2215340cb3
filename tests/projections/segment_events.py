"""Canonical events and PostgreSQL helpers for segment tests.

Events go through ``apply_batch``, the consumer's own transaction, so the
customers rows and memberships are the ones the consumer would write.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from cartstream.events import event_id
from consumer.batch import BatchResult, InputRecord, apply_batch
from projections.segments import SegmentCache

STORE = "shop-1"
EVENTS_TOPIC = "test-store-events"
CHANGES_TOPIC = "test-segment-changes"

Event = dict[str, Any]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def order_event(
    customer: str,
    order_id: str,
    created_at: datetime,
    *,
    total: str = "10.00",
    cancelled_at: datetime | None = None,
) -> Event:
    """A snapshot of an order; a cancelled one is a newer snapshot of it."""
    updated_at = cancelled_at or created_at
    return {
        "id": event_id("shopify", STORE, f"order-{order_id}-{iso(updated_at)}"),
        "type": "order",
        "store_id": STORE,
        "platform": "shopify",
        "occurred_at": iso(updated_at),
        "customer": {"id": customer, "email": f"{customer}@example.com"},
        "data": {
            "order_id": order_id,
            "name": f"#{order_id}",
            "created_at": iso(created_at),
            "updated_at": iso(updated_at),
            "currency": "USD",
            "total": total,
            "is_test": False,
            "cancelled_at": iso(cancelled_at) if cancelled_at else None,
            "line_items": [
                {
                    "line_item_id": f"{order_id}-1",
                    "product_id": "p-1",
                    "title": "Pin",
                    "quantity": 1,
                    "price": total,
                    "total": total,
                }
            ],
            "refunds": [],
        },
    }


def customer_event(
    customer: str,
    updated_at: datetime,
    *,
    country: str | None = None,
    tags: list[str] | None = None,
    created_at: datetime | None = None,
) -> Event:
    return {
        "id": event_id("shopify", STORE, f"customer-{customer}-{iso(updated_at)}"),
        "type": "customer",
        "store_id": STORE,
        "platform": "shopify",
        "occurred_at": iso(updated_at),
        "customer": {"id": customer, "email": f"{customer}@example.com"},
        "data": {
            "customer_id": customer,
            "email": f"{customer}@example.com",
            "first_name": "Ada",
            "last_name": customer,
            "created_at": iso(created_at or updated_at),
            "updated_at": iso(updated_at),
            "tags": tags or [],
            "country": country,
            "email_consent": None,
        },
    }


def consent_event(customer: str, state: str, at: datetime) -> Event:
    return {
        "id": event_id("shopify", STORE, f"consent-{customer}-{state}-{iso(at)}"),
        "type": "consent",
        "store_id": STORE,
        "platform": "shopify",
        "occurred_at": iso(at),
        "customer": {"id": customer, "email": f"{customer}@example.com"},
        "data": {
            "customer_id": customer,
            "email": f"{customer}@example.com",
            "state": state,
            "updated_at": iso(at),
            "source": "merchant",
        },
    }


def checkout_event(
    customer: str,
    checkout_id: str,
    created_at: datetime,
    *,
    completed_at: datetime | None = None,
    total: str = "25.00",
) -> Event:
    updated_at = completed_at or created_at
    return {
        "id": event_id("shopify", STORE, f"checkout-{checkout_id}-{iso(updated_at)}"),
        "type": "checkout",
        "store_id": STORE,
        "platform": "shopify",
        "occurred_at": iso(updated_at),
        "customer": {"id": customer, "email": f"{customer}@example.com"},
        "data": {
            "checkout_id": checkout_id,
            "created_at": iso(created_at),
            "updated_at": iso(updated_at),
            "completed_at": iso(completed_at) if completed_at else None,
            "currency": "USD",
            "total": total,
            "line_items": [],
        },
    }


class EventFeed:
    """Applies events as consumer batches on partition 0 of a test topic."""

    def __init__(self, cache: SegmentCache | None = None) -> None:
        self.cache = cache or SegmentCache()
        self.next_offset = 0

    async def apply(
        self,
        connection: asyncpg.Connection,
        events: list[Event],
        *,
        now: datetime | None = None,
    ) -> BatchResult:
        records = []
        for event in events:
            records.append(
                InputRecord(EVENTS_TOPIC, 0, self.next_offset, orjson.dumps(event))
            )
            self.next_offset += 1
        result = await apply_batch(
            connection,
            records,
            consumer="test-consumer",
            segment_cache=self.cache,
            changes_topic=CHANGES_TOPIC,
            now=now,
        )
        assert result.dead_letters == [], result.dead_letters
        return result


async def insert_segment(
    pool: asyncpg.Pool | asyncpg.Connection,
    segment_id: str,
    rule: Any,
    *,
    version: int = 1,
    name: str | None = None,
) -> None:
    """Store a segment version directly, as the API does before its backfill."""
    await pool.execute(
        "INSERT INTO segments (store_id, segment_id, version, name, rule, fields) "
        "VALUES ($1, $2, $3, $4, $5, '[]')",
        STORE,
        segment_id,
        version,
        name or segment_id,
        orjson.dumps(rule).decode(),
    )


async def outbox_changes(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """Return the ``data`` of every change event in the outbox, in write order."""
    rows = await pool.fetch("SELECT payload::text FROM outbox ORDER BY outbox_id")
    return [orjson.loads(row["payload"])["data"] for row in rows]


async def members(pool: asyncpg.Pool, segment_id: str) -> set[str]:
    rows = await pool.fetch(
        "SELECT customer_key FROM memberships WHERE store_id = $1 "
        "AND segment_id = $2 AND is_member",
        STORE,
        segment_id,
    )
    return {row["customer_key"] for row in rows}
