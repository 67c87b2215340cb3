"""Helpers for integration tests: signed deliveries, waiting, reading topics."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from cartstream.config import Settings
from projections import stores

WEBHOOKS_DIR = Path(__file__).resolve().parent / "data" / "webhooks"


def load_fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((WEBHOOKS_DIR / name).read_text("utf-8"))
    return data


def shopify_topic(name: str) -> str:
    parts = Path(name).stem.split("-")
    return f"{parts[1]}/{parts[2]}"


def shopify_signature(body: bytes, secret: str) -> str:
    return base64.b64encode(
        hmac.new(secret.encode(), body, hashlib.sha256).digest()
    ).decode()


async def create_store(pool: asyncpg.Pool, store_id: str = "shop-1") -> tuple[str, str]:
    """Create a Shopify store; return its API token and webhook secret."""
    async with pool.acquire() as connection:
        token = await stores.create_store(
            connection, store_id, "shopify", currency="USD"
        )
        _, secret = await stores.add_secret(connection, store_id, "shopify")
    return token, secret


async def post_shopify(
    settings: Settings,
    store_id: str,
    secret: str,
    topic: str,
    payload: dict[str, Any],
    *,
    webhook_id: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """Post one signed Shopify delivery; return the status and the JSON body."""
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": shopify_signature(body, secret),
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
    }
    url = (
        f"http://{settings.http_host}:{settings.http_port}/webhooks/shopify/{store_id}"
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def api_get(settings: Settings, token: str, path: str) -> tuple[int, Any]:
    url = f"http://{settings.http_host}:{settings.http_port}{path}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        return response.status, await response.json()


async def api_post(
    settings: Settings, token: str, path: str, body: Any
) -> tuple[int, Any]:
    url = f"http://{settings.http_host}:{settings.http_port}{path}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url, json=body, headers={"Authorization": f"Bearer {token}"}
        ) as response,
    ):
        return response.status, await response.json()


async def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    # A consumer subscribed to the topic loads its metadata on start, which
    # partitions_for_topic then reads.
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise LookupError(f"topic {topic} has no partitions in the metadata")
        ends = await consumer.end_offsets(
            [TopicPartition(topic, p) for p in partitions]
        )
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def wait_until_applied(
    settings: Settings, pool: asyncpg.Pool, timeout_s: float = 60.0
) -> None:
    """Wait until the checkpoints reach the topic's end and the outbox is sent."""
    ends = await end_offsets(settings, settings.topics.events)
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
        if all(done.get(p, 0) >= end for p, end in ends.items()) and pending == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"not applied in time: checkpoints {done}, ends {ends}")
        await asyncio.sleep(0.2)


async def read_topic(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """Read every record of a topic from the start, as JSON values."""
    ends = await end_offsets(settings, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    values: list[dict[str, Any]] = []
    try:
        tps = [TopicPartition(topic, p) for p in ends]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        remaining = {tp: ends[tp.partition] for tp in tps if ends[tp.partition] > 0}
        deadline = time.monotonic() + 30
        while remaining and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, messages in batches.items():
                for message in messages:
                    values.append(json.loads(message.value))
                    if message.offset + 1 >= remaining.get(tp, 0):
                        remaining.pop(tp, None)
    finally:
        await consumer.stop()
    return values
