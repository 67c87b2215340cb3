"""Deliveries that would stall the receiver or the database are refused up front."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import asyncpg
import pytest

from cartstream.config import Settings
from tests.conftest import running_services
from tests.helpers import create_store, load_fixture, post_shopify, read_topic

pytestmark = pytest.mark.integration


async def test_nul_in_text_is_quarantined_not_published(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    _, secret = await create_store(pool)
    order = load_fixture("shopify-orders-create-discount-multi-tax-2024-05.json")
    order["line_items"][0]["title"] = "Pin\u0000"
    async with running_services(settings, consume=False):
        status, body = await post_shopify(
            settings, "shop-1", secret, "orders/create", order
        )

    assert status == 422
    assert body["error"]["field"] == "data.line_items.0.title"
    assert await read_topic(settings, settings.topics.events) == []
    assert len(await read_topic(settings, settings.topics.quarantine)) == 1


async def test_slow_body_times_out(settings: Settings, pool: asyncpg.Pool) -> None:
    await create_store(pool)
    settings = replace(settings, body_read_timeout_s=1)
    request = (
        "POST /webhooks/shopify/shop-1 HTTP/1.1\r\n"
        f"Host: {settings.http_host}\r\n"
        "Content-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n{}"
    ).encode()
    async with running_services(settings, consume=False):
        reader, writer = await asyncio.open_connection(
            settings.http_host, settings.http_port
        )
        writer.write(request)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()

    assert status_line.startswith(b"HTTP/1.1 408")
