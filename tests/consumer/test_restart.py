"""A consumer stopped mid-stream and restarted applies every event exactly once."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from cartstream.config import Settings
from cartstream.events import event_id
from consumer.runtime import ProjectionConsumer
from handlers.publisher import EventPublisher
from tests.helpers import wait_until_applied

pytestmark = pytest.mark.integration

CUSTOMERS = 20
ORDERS_PER_CUSTOMER = 15


def order_event(customer: int, number: int) -> dict[str, Any]:
    order_id = str(1000 + customer * 100 + number)
    day = 1 + number
    return {
        "id": event_id("shopify", "shop-1", f"order-{order_id}"),
        "type": "order",
        "store_id": "shop-1",
        "platform": "shopify",
        "occurred_at": f"2024-01-{day:02d}T12:00:00Z",
        "delivery_id": f"order-{order_id}",
        "topic": "orders/create",
        "customer": {"id": str(customer), "email": f"c{customer}@example.com"},
        "data": {
            "order_id": order_id,
            "name": f"#{order_id}",
            "created_at": f"2024-01-{day:02d}T12:00:00Z",
            "updated_at": f"2024-01-{day:02d}T12:00:00Z",
            "currency": "USD",
            "total": f"{number + 1}.{customer:02d}",
            "is_test": False,
            "cancelled_at": None,
            "line_items": [
                {
                    "line_item_id": f"{order_id}-1",
                    "product_id": "p-1",
                    "title": "Pin",
                    "quantity": 2,
                    "price": "1.00",
                    "total": "2.00",
                }
            ],
            "refunds": [],
        },
    }


def expected_sales(customer: int) -> Decimal:
    return sum(
        (Decimal(f"{n + 1}.{customer:02d}") for n in range(ORDERS_PER_CUSTOMER)),
        Decimal(0),
    )


async def _applied(pool: asyncpg.Pool, settings: Settings) -> int:
    value = await pool.fetchval(
        "SELECT COALESCE(sum(next_offset), 0) FROM checkpoints WHERE consumer = $1",
        settings.consumer_group,
    )
    return int(value)


async def test_restart_mid_stream_loses_and_duplicates_nothing(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    settings = replace(settings, batch_max_records=7)
    events = [
        order_event(customer, number)
        for number in range(ORDERS_PER_CUSTOMER)
        for customer in range(1, CUSTOMERS + 1)
    ]
    publisher = EventPublisher(settings)
    await publisher.start()
    await publisher.publish_events(events)

    # First run: stopped hard while batches are still being applied.
    stop = asyncio.Event()
    first = asyncio.create_task(ProjectionConsumer(settings, pool).run(stop))
    while await _applied(pool, settings) < 60:
        await asyncio.sleep(0.01)
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    applied_before_restart = await _applied(pool, settings)
    assert 0 < applied_before_restart < len(events)

    # Kafka redelivers everything again: the same events published twice more.
    await publisher.publish_events(events[:100])
    await publisher.stop()

    stop = asyncio.Event()
    second = asyncio.create_task(ProjectionConsumer(settings, pool).run(stop))
    await wait_until_applied(settings, pool)
    stop.set()
    await second

    rows = await pool.fetch(
        "SELECT customer_key, lifetime_orders, lifetime_sales, total_products "
        "FROM customers ORDER BY customer_key"
    )
    assert len(rows) == CUSTOMERS
    for row in rows:
        customer = int(row["customer_key"][2:])
        assert row["lifetime_orders"] == ORDERS_PER_CUSTOMER, row["customer_key"]
        assert row["lifetime_sales"] == expected_sales(customer), row["customer_key"]
        assert row["total_products"] == 2 * ORDERS_PER_CUSTOMER, row["customer_key"]
