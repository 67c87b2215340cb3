"""Measure the projection consumer's throughput on a real Kafka and PostgreSQL.

Starts a private stack in a temporary folder, publishes order events for many
customers, and times how long one ProjectionConsumer takes to apply them all.

    .venv/bin/python -m bench.consumer_bench [--events 20000] [--customers 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import replace
from pathlib import Path

import asyncpg

from bench.private_stack import private_stack
from cartstream.config import Settings, Topics
from cartstream.events import event_id
from cartstream.log import configure_logging
from cartstream.topics import ensure_topics
from consumer.runtime import ProjectionConsumer
from handlers.publisher import EventPublisher
from projections.migrate import migrate

ROOT = Path(__file__).resolve().parent.parent


def order_event(number: int, customers: int) -> dict[str, object]:
    customer = number % customers
    day = 1 + number % 28
    return {
        "id": event_id("bench", "shop-1", f"order-{number}"),
        "type": "order",
        "store_id": "shop-1",
        "platform": "shopify",
        "occurred_at": f"2024-02-{day:02d}T12:00:00Z",
        "delivery_id": None,
        "topic": "orders/create",
        "customer": {"id": str(customer), "email": f"c{customer}@example.com"},
        "data": {
            "order_id": str(100_000 + number),
            "name": f"#{number}",
            "created_at": f"2024-02-{day:02d}T12:00:00Z",
            "updated_at": f"2024-02-{day:02d}T12:00:00Z",
            "currency": "USD",
            "total": f"{10 + number % 90}.50",
            "is_test": False,
            "cancelled_at": None,
            "accepts_marketing": number % 3 == 0,
            "line_items": [
                {
                    "line_item_id": f"{number}-1",
                    "product_id": f"p-{number % 40}",
                    "title": "Item",
                    "quantity": 1 + number % 3,
                    "price": "5.00",
                    "total": "5.00",
                }
            ],
            "refunds": [],
        },
    }


async def measure(settings: Settings, events: int, customers: int) -> None:
    settings = replace(settings, topics=Topics(prefix="bench-"))
    connection = await asyncpg.connect(settings.database_url)
    await migrate(connection)
    await connection.close()
    await ensure_topics(settings)

    publisher = EventPublisher(settings)
    await publisher.start()
    started = time.perf_counter()
    batch = [order_event(n, customers) for n in range(events)]
    for index in range(0, events, 1000):
        await publisher.publish_events(batch[index : index + 1000])
    publish_s = time.perf_counter() - started
    await publisher.stop()

    pool = await asyncpg.create_pool(settings.database_url, min_size=2, max_size=4)
    stop = asyncio.Event()
    consumer = ProjectionConsumer(settings, pool)
    started = time.perf_counter()
    task = asyncio.create_task(consumer.run(stop))
    while consumer.applied_total < events:
        await asyncio.sleep(0.05)
    apply_s = time.perf_counter() - started
    stop.set()
    await task
    await pool.close()

    print(f"events            {events} for {customers} customers")
    print(f"publish           {events / publish_s:,.0f} events/s (acks=all)")
    print(f"consume + apply   {events / apply_s:,.0f} events/s ({apply_s:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=2_000)
    args = parser.parse_args()
    configure_logging("console", "warning")

    with private_stack({"CARTSTREAM_PARTITIONS": "6"}) as settings:
        asyncio.run(measure(settings, args.events, args.customers))


if __name__ == "__main__":
    main()
