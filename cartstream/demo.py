"""The main job on the local stack: send the sample Shopify webhooks end to end.

The job starts the local Kafka and PostgreSQL and runs ``cartstream run`` as a
child process. It creates a store and a segment, and posts every sample Shopify
delivery signed with the store's secret. Once the consumer has applied them, it
prints the customer list, one customer's details and the segment changes read
back from Kafka.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from cartstream.config import Settings, load_settings, state_dir_from
from cartstream.runner import prepare
from cartstream.stack.local import stack_up
from cartstream.stack.ports import free_port
from projections import stores

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "webhooks"
DEMO_SEGMENT = {
    "segment_id": "subscribed-buyers",
    "name": "Subscribed buyers",
    "rule": {
        "and": [
            {">=": [{"var": "lifetime_orders"}, 1]},
            {"==": [{"var": "email_opt_in"}, "subscribed"]},
        ]
    },
}


def shopify_topic(path: Path) -> str:
    """Read the topic from a sample's name: shopify-orders-create-x -> orders/create."""
    parts = path.stem.split("-")
    return f"{parts[1]}/{parts[2]}"


def sign_shopify(body: bytes, secret: str) -> str:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


async def _wait_http(base_url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"{base_url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"cartstream did not respond on {base_url}/healthz")
            await asyncio.sleep(0.3)


async def wait_until_applied(
    settings: Settings, pool: asyncpg.Pool, timeout_s: float = 60.0
) -> None:
    """Wait until the consumer applied every record and the outbox is sent."""
    # A consumer subscribed to the topic loads its metadata on start.
    consumer = AIOKafkaConsumer(
        settings.topics.events, bootstrap_servers=settings.kafka_bootstrap
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(settings.topics.events) or set()
        tps = [TopicPartition(settings.topics.events, p) for p in partitions]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()

    deadline = time.monotonic() + timeout_s
    while True:
        rows = await pool.fetch(
            "SELECT partition, next_offset FROM checkpoints "
            "WHERE consumer = $1 AND topic = $2",
            settings.consumer_group,
            settings.topics.events,
        )
        done = {row["partition"]: row["next_offset"] for row in rows}
        pending = await pool.fetchval(
            "SELECT count(*) FROM outbox WHERE relayed_at IS NULL"
        )
        caught_up = all(done.get(tp.partition, 0) >= end for tp, end in ends.items())
        if caught_up and pending == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("the consumer did not catch up in time")
        await asyncio.sleep(0.3)


async def read_changes(settings: Settings, store_id: str) -> list[dict[str, Any]]:
    """Read this store's segment-change events from the start of the topic."""
    consumer = AIOKafkaConsumer(
        settings.topics.segment_changes,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    changes = []
    try:
        batches = await consumer.getmany(timeout_ms=3000)
        while batches:
            for messages in batches.values():
                for message in messages:
                    event = json.loads(message.value)
                    if event["data"]["store_id"] == store_id:
                        changes.append(event)
            batches = await consumer.getmany(timeout_ms=1000)
    finally:
        await consumer.stop()
    return changes


async def _demo(settings: Settings, base_url: str) -> None:
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    store_id = f"demo-{uuid.uuid4().hex[:8]}"
    async with pool.acquire() as connection:
        token = await stores.create_store(
            connection, store_id, "shopify", name="Demo shop", currency="USD"
        )
        _, secret = await stores.add_secret(connection, store_id, "shopify")
    print(f"store {store_id} created")

    headers = {"Authorization": f"Bearer {token}"}
    samples = sorted(SAMPLES_DIR.glob("shopify-*.json"))
    async with aiohttp.ClientSession(base_url) as session:
        async with session.post(
            f"/api/stores/{store_id}/segments", json=DEMO_SEGMENT, headers=headers
        ) as response:
            response.raise_for_status()
        print(f"segment {DEMO_SEGMENT['segment_id']} created\n")

        print(f"sending {len(samples)} signed Shopify deliveries:")
        for path in samples:
            body = json.dumps(json.loads(path.read_bytes())).encode()
            delivery_headers = {
                "Content-Type": "application/json",
                "X-Shopify-Topic": shopify_topic(path),
                "X-Shopify-Hmac-Sha256": sign_shopify(body, secret),
                "X-Shopify-Shop-Domain": f"{store_id}.myshopify.com",
                "X-Shopify-Webhook-Id": str(uuid.uuid5(uuid.NAMESPACE_URL, path.name)),
            }
            async with session.post(
                f"/webhooks/shopify/{store_id}", data=body, headers=delivery_headers
            ) as response:
                answer = await response.json()
                outcome = answer.get("status") or answer["error"]["code"]
                print(f"  {response.status} {outcome:<20} {path.name}")

        await wait_until_applied(settings, pool)

        async with session.get(
            f"/api/stores/{store_id}/customers", headers=headers
        ) as response:
            customers = (await response.json())["customers"]
        print("\ncustomers, by last order id, newest first:")
        print(
            f"  {'customer':<36} {'orders':>6} {'sales':>12} {'last order':<22} opt-in"
        )
        for customer in customers:
            sales = f"{customer['lifetime_sales']} {customer['currency'] or ''}"
            print(
                f"  {customer['customer_key']:<36} {customer['lifetime_orders']:>6} "
                f"{sales:>12} {customer['last_order_id'] or '-':<22} "
                f"{customer['email_opt_in'] or '-'}"
            )

        chosen = max(customers, key=lambda c: (c["lifetime_orders"], c["customer_key"]))
        async with session.get(
            f"/api/stores/{store_id}/customers/{chosen['customer_key']}",
            headers=headers,
        ) as response:
            details = await response.json()
        print(f"\ncustomer details of {chosen['customer_key']}:")
        print(json.dumps(details, indent=2, ensure_ascii=False))

    changes = await read_changes(settings, store_id)
    print(f"\nsegment changes on {settings.topics.segment_changes}:")
    for change in changes:
        data = change["data"]
        print(
            f"  {data['change']:<8} {data['segment_id']} {data['customer_key']} "
            f"membership v{data['membership_version']} "
            f"caused by {data['cause_event_id']}"
        )
    print(f"\nAPI token of {store_id}: {token}")
    print(
        "To query the API, run `.venv/bin/cartstream run` and open "
        f"http://127.0.0.1:8080/api/stores/{store_id}/customers with the header "
        "'Authorization: Bearer <token>'."
    )
    await pool.close()


def run_demo() -> int:
    """Run the main job; return the process exit code."""
    state_dir = state_dir_from(os.environ)
    print(
        "starting the local stack (the first run downloads the Kafka jars, about 45 MB)"
    )
    for line in stack_up(state_dir):
        print(f"  {line}")
    settings = load_settings()
    asyncio.run(prepare(settings))

    port = free_port()
    env = dict(
        os.environ, CARTSTREAM_HTTP_PORT=str(port), CARTSTREAM_LOG_LEVEL="warning"
    )
    log_path = state_dir / "demo-services.log"
    with log_path.open("wb") as log_file:
        services = subprocess.Popen(
            [sys.executable, "-m", "cartstream.cli", "run"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(_wait_http(base_url, 60))
            print(f"cartstream run started (pid {services.pid}, log {log_path})\n")
            asyncio.run(_demo(settings, base_url))
        finally:
            services.send_signal(signal.SIGTERM)
            try:
                services.wait(30)
            except subprocess.TimeoutExpired:
                services.kill()
    print("\nThe local stack keeps running; stop it with: cartstream stack down")
    return 0
