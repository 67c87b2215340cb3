"""Helpers for receiver tests over HTTP: stores, signed deliveries, topic sizes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from typing import Any

import aiohttp
import asyncpg
import orjson

from cartstream.cli import build_parser
from cartstream.config import Settings
from projections import stores
from tests.helpers import end_offsets

WOO_SIGNATURE = "X-WC-Webhook-Signature"
WOO_TOPIC = "X-WC-Webhook-Topic"
BIGCOMMERCE_TOKEN = "X-Cartstream-Token"
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

# A Standard Webhooks order delivery carrying canonical order data.
STANDARD_ORDER: dict[str, Any] = {
    "type": "order.created",
    "timestamp": "2025-01-31T09:05:00Z",
    "data": {
        "order_id": "5001",
        "name": "#5001",
        "created_at": "2025-01-31T10:00:00+01:00",
        "updated_at": "2025-01-31T10:05:00+01:00",
        "currency": "EUR",
        "total": "59.90",
        "is_test": False,
        "cancelled_at": None,
        "line_items": [
            {
                "line_item_id": "1",
                "product_id": "p-1",
                "title": "Scarf",
                "quantity": 2,
                "price": "24.95",
                "total": "49.90",
            }
        ],
        "refunds": [],
        "customer": {"id": "cust-7", "email": "Ana@Example.com"},
    },
}


async def add_store(
    pool: asyncpg.Pool, store_id: str, platform: str, secret: str | None = None
) -> tuple[str, int, str]:
    """Create a store with one secret; return the API token, secret id and secret."""
    async with pool.acquire() as connection:
        token = await stores.create_store(connection, store_id, platform)
        secret_id, secret = await stores.add_secret(
            connection, store_id, platform, secret
        )
    return token, secret_id, secret


def base_url(settings: Settings) -> str:
    return f"http://{settings.http_host}:{settings.http_port}"


async def post_raw(
    settings: Settings,
    path: str,
    body: bytes,
    headers: dict[str, str],
    *,
    method: str = "POST",
) -> tuple[int, Any]:
    """Send one request; return the status and the JSON body (or the text)."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, base_url(settings) + path, data=body, headers=headers
        ) as response,
    ):
        text = await response.text()
        if response.content_type == "application/json":
            return response.status, orjson.loads(text)
        return response.status, text


def hmac_base64(body: bytes, secret: str) -> str:
    """Return the base64 HMAC-SHA256 of a body, as Shopify and WooCommerce sign."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def woo_headers(body: bytes, secret: str, topic: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        WOO_TOPIC: topic,
        WOO_SIGNATURE: hmac_base64(body, secret),
        "X-WC-Webhook-Delivery-ID": hashlib.sha1(body).hexdigest(),
    }


def standard_headers(
    body: bytes,
    secret: str,
    message_id: str,
    timestamp: int | None = None,
) -> dict[str, str]:
    """Sign a body the Standard Webhooks way with a ``whsec_`` secret."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    return {
        "Content-Type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature.decode()}",
    }


async def topic_size(settings: Settings, topic: str) -> int:
    """Return the number of records ever written to a topic (sum of end offsets)."""
    return sum((await end_offsets(settings, topic)).values())


# A structlog console line, which the services print to the same stdout.
LOG_LINE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8} \[")


def printed_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if not LOG_LINE.match(line)]


def run_command(argv: list[str]) -> int:
    """Run a ``cartstream`` command as ``main`` does, minus its logging set-up,
    which would bind structlog to this test's captured stdout."""
    args = build_parser().parse_args(argv)
    result: int = args.handler(args)
    return result
