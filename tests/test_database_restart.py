"""The services ride out a PostgreSQL restart instead of exiting."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from cartstream.config import Settings
from cartstream.stack.postgres import start_postgres, stop_postgres
from tests.conftest import running_services
from tests.helpers import (
    api_get,
    create_store,
    load_fixture,
    post_shopify,
    wait_until_applied,
)

pytestmark = pytest.mark.integration


async def _health(settings: Settings) -> int:
    url = f"http://{settings.http_host}:{settings.http_port}/healthz"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status


async def test_services_survive_database_restart(
    settings: Settings, pool: asyncpg.Pool, stack_dir: Path
) -> None:
    token, secret = await create_store(pool)
    first = load_fixture("shopify-orders-create-discount-multi-tax-2024-05.json")
    second = dict(first, id=5260174885050, name="#1002")

    async with running_services(settings) as stop:
        status, _ = await post_shopify(
            settings, "shop-1", secret, "orders/create", first
        )
        assert status == 200
        await wait_until_applied(settings, pool)

        await asyncio.to_thread(stop_postgres, stack_dir)
        try:
            assert await _health(settings) == 503
            status, body = await post_shopify(
                settings, "shop-1", secret, "orders/create", second
            )
            assert status == 503
            assert body["error"]["code"] == "database_unavailable"
        finally:
            await asyncio.to_thread(start_postgres, stack_dir)

        await asyncio.sleep(2)
        assert not stop.is_set()
        assert await _health(settings) == 200
        status, _ = await post_shopify(
            settings, "shop-1", secret, "orders/create", second
        )
        assert status == 200
        await wait_until_applied(settings, pool)
        _, customer = await api_get(
            settings, token, "/api/stores/shop-1/customers/c:6907366047929"
        )

    assert customer["lifetime_orders"] == 2
