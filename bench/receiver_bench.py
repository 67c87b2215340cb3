"""Measure the webhook receiver's throughput on a real Kafka and PostgreSQL.

Starts a private stack in a temporary folder and the receiver on a free loopback
port, then posts one Shopify order body many times. The first round has a wrong
signature and gets 401. The second is signed with fresh delivery ids and gets
200 once Kafka has acknowledged the event with acks=all.

    .venv/bin/python -m bench.receiver_bench [--deliveries 4000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aiohttp
import asyncpg

from bench.private_stack import private_stack
from cartstream.config import Settings
from cartstream.log import configure_logging
from cartstream.runner import run_services
from cartstream.stack.ports import free_port
from projections import stores

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "webhooks" / "shopify-orders-paid-trimmed.json"

Request = Callable[[int], dict[str, str]]


async def post_many(
    url: str, body: bytes, headers_for: Request, count: int, concurrency: int
) -> tuple[float, Counter[int]]:
    """Post ``count`` deliveries with at most ``concurrency`` in flight."""
    statuses: Counter[int] = Counter()
    slots = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(number: int) -> None:
            async with (
                slots,
                session.post(url, data=body, headers=headers_for(number)) as response,
            ):
                await response.read()
                statuses[response.status] += 1

        started = time.perf_counter()
        await asyncio.gather(*(post(number) for number in range(count)))
        return time.perf_counter() - started, statuses


async def measure(settings: Settings, count: int, concurrency: int) -> None:
    stop = asyncio.Event()
    services = asyncio.create_task(
        run_services(settings, consume=False, stop=stop, handle_signals=False)
    )
    url = f"http://127.0.0.1:{settings.http_port}/webhooks/shopify/bench"
    for _ in range(100):
        try:
            async with aiohttp.ClientSession() as session:
                await session.get(f"http://127.0.0.1:{settings.http_port}/healthz")
            break
        except aiohttp.ClientError:
            await asyncio.sleep(0.1)

    connection = await asyncpg.connect(settings.database_url)
    await stores.create_store(connection, "bench", "shopify")
    _, secret = await stores.add_secret(connection, "bench", "shopify")
    await connection.close()

    body = json.dumps(json.loads(SAMPLE.read_text())).encode()
    signature = base64.b64encode(
        hmac.new(secret.encode(), body, hashlib.sha256).digest()
    ).decode()
    wrong = base64.b64encode(b"x" * 32).decode()

    def unsigned(number: int) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "X-Shopify-Topic": "orders/paid",
            "X-Shopify-Hmac-Sha256": wrong,
            "X-Shopify-Webhook-Id": str(number),
        }

    def signed(number: int) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "X-Shopify-Topic": "orders/paid",
            "X-Shopify-Hmac-Sha256": signature,
            "X-Shopify-Webhook-Id": uuid.uuid4().hex,
        }

    try:
        await post_many(url, body, unsigned, 200, concurrency)  # warm-up
        for name, headers_for in [("rejected (401)", unsigned), ("accepted", signed)]:
            elapsed_s, statuses = await post_many(
                url, body, headers_for, count, concurrency
            )
            print(
                f"{name:<15} {count / elapsed_s:>7,.0f} deliveries/s "
                f"({count} of {len(body)} bytes in {elapsed_s:.1f} s, "
                f"statuses {dict(statuses)})"
            )
    finally:
        stop.set()
        await services


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=4_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    configure_logging("console", "error")

    with private_stack({"CARTSTREAM_HTTP_PORT": str(free_port())}) as settings:
        asyncio.run(measure(settings, args.deliveries, args.concurrency))


if __name__ == "__main__":
    main()
