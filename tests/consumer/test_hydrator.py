"""The BigCommerce hydrator against a fake BigCommerce API, Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from cartstream.config import Settings
from cartstream.events import event_id
from consumer.hydrator import HydrationFailedError, Hydrator
from projections import stores
from tests.conftest import running_services
from tests.handlers.receiver_support import (
    BIGCOMMERCE_TOKEN,
    add_store,
    post_raw,
    printed_lines,
    run_command,
)
from tests.handlers.test_bigcommerce import ACCESS_TOKEN, STORE_HASH, FakeBigCommerce
from tests.helpers import api_get, load_fixture, read_topic, wait_until_applied

pytestmark = pytest.mark.integration


@pytest.fixture
def fake() -> FakeBigCommerce:
    return FakeBigCommerce()


@pytest.fixture
async def api_settings(
    settings: Settings, fake: FakeBigCommerce
) -> AsyncIterator[Settings]:
    """Settings whose BigCommerce API is the fake on 127.0.0.1."""
    server = TestServer(fake.app, host="127.0.0.1", port=0)
    await server.start_server()
    yield replace(settings, bigcommerce_api_url=str(server.make_url("")).rstrip("/"))
    await server.close()


def delivery(name: str, **changes: Any) -> bytes:
    """A fixture whose producer names the fake's store hash, with data changes."""
    payload = load_fixture(name)
    payload["producer"] = f"stores/{STORE_HASH}"
    payload["data"].update(changes)
    return json.dumps(payload).encode()


async def wait_for_records(
    settings: Settings, topic: str, count: int, timeout_s: float = 30.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        records = await read_topic(settings, topic)
        if len(records) >= count or time.monotonic() > deadline:
            return records
        await asyncio.sleep(0.3)


async def test_hydrator_publishes_full_events_for_notifications(
    api_settings: Settings, pool: asyncpg.Pool, fake: FakeBigCommerce
) -> None:
    """Order, customer and cart are fetched, but not subscribers or resources of
    stores without credentials. An order the API does not have is dead-lettered."""
    settings = api_settings
    token, _, secret = await add_store(pool, "bc-h", "bigcommerce")
    _, _, other_secret = await add_store(pool, "bc-none", "bigcommerce")
    async with pool.acquire() as connection:
        await stores.set_bigcommerce_credentials(
            connection, "bc-h", STORE_HASH, ACCESS_TOKEN
        )
    bodies = {
        "order": delivery("bigcommerce-store-order-created-docs.json"),
        "customer": delivery("bigcommerce-store-customer-created-docs.json"),
        "cart": delivery("bigcommerce-store-cart-created-docs.json"),
        "subscriber": delivery("bigcommerce-store-subscriber-created-docs.json"),
        "missing": delivery("bigcommerce-store-order-updated-real.json", id=999),
    }
    answers: dict[str, list[str]] = {}
    async with running_services(settings):
        for name, body in bodies.items():
            headers = {"Content-Type": "application/json", BIGCOMMERCE_TOKEN: secret}
            status, answer = await post_raw(
                settings, "/webhooks/bigcommerce/bc-h", body, headers
            )
            assert status == 200, name
            answers[name] = answer["event_ids"]
        other_headers = {
            "Content-Type": "application/json",
            BIGCOMMERCE_TOKEN: other_secret,
        }
        status, _ = await post_raw(
            settings, "/webhooks/bigcommerce/bc-none", bodies["order"], other_headers
        )
        assert status == 200
        # 6 notifications and 3 hydrated events.
        events = await wait_for_records(settings, settings.topics.events, 9)
        dead = await wait_for_records(settings, settings.topics.dead_letter, 1)
        await wait_until_applied(settings, pool)
        status, customer = await api_get(
            settings, token, "/api/stores/bc-h/customers/c:32"
        )

    by_id = {event["id"]: event for event in events}
    hydrated = [event for event in events if event["type"] != "notification"]
    assert sorted(event["type"] for event in hydrated) == [
        "checkout",
        "customer",
        "order",
    ]
    for name, event_type in [
        ("order", "order"),
        ("customer", "customer"),
        ("cart", "checkout"),
    ]:
        (notification_id,) = answers[name]
        hydrated_id = event_id("bigcommerce", "bc-h", notification_id)
        assert by_id[hydrated_id]["type"] == event_type
        assert by_id[hydrated_id]["store_id"] == "bc-h"
    order = next(event for event in hydrated if event["type"] == "order")
    assert order["data"]["order_id"] == "250"
    assert order["data"]["total"] == "48.1500"
    assert order["customer"] == {"id": "32", "email": "ana.example@example.com"}
    assert not any(event["store_id"] == "bc-none" for event in hydrated)

    assert len(dead) == 1
    assert dead[0]["reason"] == "order 999 not found"
    assert json.loads(dead[0]["value"])["id"] == answers["missing"][0]
    # Order 250 and customer 32: 48.15 less the 10.00 refunded; 4 units less 1.
    assert status == 200
    assert customer["lifetime_orders"] == 1
    assert Decimal(customer["lifetime_sales"]) == Decimal("38.15")
    assert customer["total_products"] == 3
    assert customer["country"] == "US"
    # One fetch per hydrated resource: nothing for the subscriber or for the
    # store without credentials, and no retry of the order that is not found.
    prefix = f"/stores/{STORE_HASH}"
    assert sorted(path.split("?")[0] for path in fake.requests) == sorted(
        [
            f"{prefix}/v2/orders/250",
            f"{prefix}/v2/orders/250/products",
            f"{prefix}/v3/customers",
            f"{prefix}/v3/carts/09346904-4175-44fd-be53-f7e598531b6c",
            f"{prefix}/v2/orders/999",
        ]
    )


async def test_hydrate_event_retries_then_dead_letters(
    api_settings: Settings, pool: asyncpg.Pool, fake: FakeBigCommerce
) -> None:
    await add_store(pool, "bc-r", "bigcommerce")
    async with pool.acquire() as connection:
        await stores.set_bigcommerce_credentials(
            connection, "bc-r", STORE_HASH, ACCESS_TOKEN
        )
    fake.failures[f"/stores/{STORE_HASH}/v2/orders/250"] = (503, {})
    hydrator = Hydrator(api_settings, pool, max_attempts=3, retry_delay_s=0.01)
    notification: dict[str, Any] = {
        "id": "n-1",
        "type": "notification",
        "platform": "bigcommerce",
        "store_id": "bc-r",
        "delivery_id": "d-1",
        "topic": "store/order/created",
        "data": {
            "scope": "store/order/created",
            "resource_type": "order",
            "resource_id": "250",
            "store_hash": STORE_HASH,
        },
    }
    async with aiohttp.ClientSession() as session:
        with pytest.raises(HydrationFailedError) as caught:
            await hydrator.hydrate_event(notification, session)
        wrong_hash = {
            **notification,
            "data": {**notification["data"], "store_hash": "zzz999"},
        }
        with pytest.raises(HydrationFailedError) as mismatch:
            await hydrator.hydrate_event(wrong_hash, session)

    assert str(caught.value) == (
        "request for order 250 failed with HTTP 503 (gave up after 3 attempts)"
    )
    assert fake.requests == [f"/stores/{STORE_HASH}/v2/orders/250"] * 3
    assert "names store hash 'zzz999'" in str(mismatch.value)


async def test_credentials_only_for_bigcommerce_stores(pool: asyncpg.Pool) -> None:
    await add_store(pool, "shop-s", "shopify")
    await add_store(pool, "bc-c", "bigcommerce")
    async with pool.acquire() as connection:
        with pytest.raises(stores.StoreError, match="is a shopify store"):
            await stores.set_bigcommerce_credentials(
                connection, "shop-s", STORE_HASH, ACCESS_TOKEN
            )
        with pytest.raises(stores.StoreError, match="invalid store hash"):
            await stores.set_bigcommerce_credentials(
                connection, "bc-c", "abc/../x", ACCESS_TOKEN
            )
        await stores.set_bigcommerce_credentials(connection, "bc-c", "abc1", "t-1")
        await stores.set_bigcommerce_credentials(connection, "bc-c", "abc2", "t-2")
        saved = await stores.bigcommerce_credentials(connection, "bc-c")
        await stores.remove_bigcommerce_credentials(connection, "bc-c")
        removed = await stores.bigcommerce_credentials(connection, "bc-c")

    assert saved is not None
    assert saved.store_hash == "abc2"
    assert saved.access_token == "t-2"
    assert "t-2" not in repr(saved)
    assert removed is None


async def test_cli_sets_credentials_from_stdin(
    settings: Settings,
    pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The token is read from standard input when ``--token`` is left out."""
    await add_store(pool, "bc-cli", "bigcommerce")
    monkeypatch.setenv("CARTSTREAM_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CARTSTREAM_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    monkeypatch.setattr("sys.stdin", io.StringIO("token-from-stdin\n"))
    argv = ["bigcommerce", "set-credentials", "bc-cli", "--store-hash", "abc123"]

    saved = await asyncio.to_thread(run_command, argv)
    output = printed_lines(capsys.readouterr().out)
    credentials = await stores.bigcommerce_credentials(pool, "bc-cli")
    removed = await asyncio.to_thread(
        run_command, ["bigcommerce", "remove-credentials", "bc-cli"]
    )

    assert saved == 0
    assert output == ["BigCommerce API credentials of store bc-cli saved"]
    assert credentials is not None
    assert credentials.store_hash == "abc123"
    assert credentials.access_token == "token-from-stdin"
    assert removed == 0
    assert await stores.bigcommerce_credentials(pool, "bc-cli") is None
