"""Hostile and repeated deliveries against the real receiver, Kafka and PostgreSQL."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from cartstream.config import Settings
from cartstream.events import Event
from handlers.app import build_app
from handlers.keys import PLATFORMS_KEY
from handlers.platforms.base import Delivery, ParsedDelivery
from handlers.platforms.shopify import ShopifyPlatform
from projections import stores
from tests.conftest import running_services
from tests.handlers.receiver_support import (
    add_store,
    base_url,
    hmac_base64,
    post_raw,
    topic_size,
)
from tests.helpers import (
    api_get,
    load_fixture,
    post_shopify,
    read_topic,
    wait_until_applied,
)

pytestmark = pytest.mark.integration

ORDER_FIXTURE = "shopify-orders-paid-trimmed.json"
CUSTOMER_FIXTURE = "shopify-customers-create-accepts-marketing-inr.json"


def shopify_headers(
    body: bytes, secret: str, topic: str = "orders/paid"
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": hmac_base64(body, secret),
        "X-Shopify-Webhook-Id": "wh-" + hmac_base64(body, "id")[:16],
    }


async def metric_value(settings: Settings, platform: str, outcome: str) -> float:
    """Read ``cartstream_deliveries_total`` for one platform and outcome."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(base_url(settings) + "/metrics") as response,
    ):
        text = await response.text()
    pattern = re.compile(
        r'^cartstream_deliveries_total\{(?=[^}]*platform="'
        + platform
        + r'")(?=[^}]*outcome="'
        + outcome
        + r'")[^}]*\} ([0-9.e+]+)$',
        re.MULTILINE,
    )
    found = pattern.search(text)
    return float(found.group(1)) if found else 0.0


async def test_rotation_accepts_both_secrets_until_one_retired(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    _, first_id, first = await add_store(pool, "shop-r", "shopify")
    async with pool.acquire() as connection:
        _, second = await stores.add_secret(connection, "shop-r", "shopify")
    payload = load_fixture(CUSTOMER_FIXTURE)
    topic = "customers/create"
    async with running_services(settings, consume=False):
        with_first = await post_shopify(
            settings, "shop-r", first, topic, payload, webhook_id="r-1"
        )
        with_second = await post_shopify(
            settings, "shop-r", second, topic, payload, webhook_id="r-2"
        )
        async with pool.acquire() as connection:
            await stores.retire_secret(connection, "shop-r", first_id)
        retired = await post_shopify(
            settings, "shop-r", first, topic, payload, webhook_id="r-3"
        )
        still_active = await post_shopify(
            settings, "shop-r", second, topic, payload, webhook_id="r-4"
        )

    assert with_first[0] == 200
    assert with_second[0] == 200
    assert retired[0] == 401
    assert retired[1]["error"]["code"] == "invalid_signature"
    assert still_active[0] == 200
    assert await topic_size(settings, settings.topics.events) == 3


async def test_duplicate_delivery_dropped_before_kafka(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    _, _, secret = await add_store(pool, "shop-d", "shopify")
    payload = load_fixture(ORDER_FIXTURE)
    async with running_services(settings, consume=False):
        first = await post_shopify(
            settings, "shop-d", secret, "orders/paid", payload, webhook_id="d-1"
        )
        size_after_first = await topic_size(settings, settings.topics.events)
        duplicates_before = await metric_value(settings, "shopify", "duplicate")
        again = await post_shopify(
            settings, "shop-d", secret, "orders/paid", payload, webhook_id="d-1"
        )
        duplicates_after = await metric_value(settings, "shopify", "duplicate")
        size_after_again = await topic_size(settings, settings.topics.events)

    assert first[0] == 200
    assert first[1]["status"] == "accepted"
    assert size_after_first == 1
    assert again == (200, {"status": "duplicate", "event_ids": first[1]["event_ids"]})
    assert size_after_again == 1
    assert duplicates_after - duplicates_before == 1


async def test_duplicate_counted_once_when_log_bypassed(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """With the delivery log emptied, a retry reaches Kafka and still counts once."""
    token, _, secret = await add_store(pool, "shop-h", "shopify")
    payload = load_fixture(ORDER_FIXTURE)
    async with running_services(settings):
        first = await post_shopify(
            settings, "shop-h", secret, "orders/paid", payload, webhook_id="h-1"
        )
        await pool.execute("DELETE FROM deliveries")
        again = await post_shopify(
            settings, "shop-h", secret, "orders/paid", payload, webhook_id="h-1"
        )
        await wait_until_applied(settings, pool)
        status, customer = await api_get(
            settings, token, "/api/stores/shop-h/customers/c:7358220173425"
        )

    assert first[1]["status"] == "accepted"
    assert again[1]["status"] == "accepted"
    assert again[1]["event_ids"] == first[1]["event_ids"]
    assert await topic_size(settings, settings.topics.events) == 2
    assert status == 200
    assert customer["lifetime_orders"] == 1
    assert Decimal(customer["lifetime_sales"]) == Decimal("600.00")


async def test_unmappable_retry_quarantined_once(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    _, _, secret = await add_store(pool, "shop-q", "shopify")
    body = b'{"id": 1}'
    headers = shopify_headers(body, secret, topic="products/update")
    async with running_services(settings, consume=False):
        first = await post_raw(settings, "/webhooks/shopify/shop-q", body, headers)
        again = await post_raw(settings, "/webhooks/shopify/shop-q", body, headers)
    records = await read_topic(settings, settings.topics.quarantine)

    assert first[0] == 422
    assert first[1]["error"]["code"] == "unmappable_delivery"
    assert first[1]["error"]["field"] == "X-Shopify-Topic"
    assert again == first
    assert len(records) == 1
    assert records[0]["topic"] == "products/update"
    assert records[0]["delivery_id"] == headers["X-Shopify-Webhook-Id"]
    assert await topic_size(settings, settings.topics.events) == 0


def _deep_json(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


async def test_hostile_requests_get_json_errors(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """Wrong method, path, type, store, size and depth: a 4xx each, nothing stored."""
    _, _, secret = await add_store(pool, "shop-x", "shopify")
    ok_body = json.dumps(load_fixture(ORDER_FIXTURE)).encode()
    deep = _deep_json(settings.max_json_depth + 1)
    large = b'{"a":"' + b"x" * settings.max_body_bytes + b'"}'
    path = "/webhooks/shopify/shop-x"
    cases: list[tuple[str, str, bytes, dict[str, str], int, str]] = [
        ("GET", path, b"", {}, 405, "method_not_allowed"),
        ("POST", "/webhooks/shopify", ok_body, {}, 404, "not_found"),
        ("POST", "/nowhere", ok_body, {}, 404, "not_found"),
        ("POST", "/webhooks/magento/shop-x", ok_body, {}, 404, "unknown_platform"),
        ("POST", "/webhooks/shopify/no-such-shop", ok_body, {}, 404, "unknown_store"),
        ("POST", "/webhooks/shopify/Bad%20Store%00", ok_body, {}, 404, "unknown_store"),
        (
            "POST",
            path,
            ok_body,
            {**shopify_headers(ok_body, secret), "Content-Type": "text/plain"},
            415,
            "unsupported_media_type",
        ),
        ("POST", path, large, shopify_headers(large, secret), 413, "body_too_large"),
        ("POST", path, deep, shopify_headers(deep, secret), 400, "json_too_deep"),
        (
            "POST",
            path,
            b"{not json",
            shopify_headers(b"{not json", secret),
            400,
            "invalid_json",
        ),
        (
            "POST",
            path,
            ok_body,
            shopify_headers(ok_body, "wrong-secret"),
            401,
            "invalid_signature",
        ),
        (
            "POST",
            "/webhooks/woocommerce/shop-x",
            ok_body,
            {"Content-Type": "application/json", "X-WC-Webhook-Signature": "AAAA"},
            401,
            "invalid_signature",
        ),
    ]
    answers = []
    async with running_services(settings, consume=False):
        rejected_before = await metric_value(settings, "shopify", "invalid_signature")
        for method, request_path, body, headers, _, _ in cases:
            answers.append(
                await post_raw(settings, request_path, body, headers, method=method)
            )
        rejected_after = await metric_value(settings, "shopify", "invalid_signature")

    for case, (status, answer) in zip(cases, answers, strict=True):
        method, request_path, _, _, expected_status, expected_code = case
        assert status == expected_status, (method, request_path, answer)
        assert answer["error"]["code"] == expected_code
        assert answer["error"]["message"]
    assert answers[0][1]["error"]["message"] == (
        "method GET is not allowed on /webhooks/shopify/shop-x"
    )
    # The store has no WooCommerce secret, and the message names that.
    assert "no active woocommerce secret" in answers[-1][1]["error"]["message"]
    assert rejected_after - rejected_before == 1
    assert await topic_size(settings, settings.topics.events) == 0
    assert await topic_size(settings, settings.topics.quarantine) == 0


async def test_oversized_headers_rejected_and_server_stays_up(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    await add_store(pool, "shop-h2", "shopify")
    path = "/webhooks/shopify/shop-h2"
    long_value = {"X-Padding": "x" * (settings.max_header_bytes + 1)}
    many = {f"X-Header-{index}": "1" for index in range(settings.max_headers + 1)}
    long_path = "/webhooks/shopify/" + "s" * settings.max_request_line_bytes
    async with running_services(settings, consume=False):
        long_answer = await post_raw(settings, path, b"{}", long_value)
        many_answer = await post_raw(settings, path, b"{}", many)
        path_answer = await post_raw(settings, long_path, b"{}", {})
        health = await post_raw(settings, "/healthz", b"", {}, method="GET")

    # aiohttp's HTTP parser rejects these before any handler runs; the runner's
    # request handler still responds with the JSON error body.
    assert long_answer[0] == 400
    assert long_answer[1]["error"]["code"] == "bad_request"
    assert (
        f"Got more than {settings.max_header_bytes} bytes"
        in long_answer[1]["error"]["message"]
    )
    assert many_answer[0] == 400
    assert many_answer[1]["error"]["code"] == "bad_request"
    assert path_answer[0] in (400, 414)
    assert path_answer[1]["error"]["code"] == "bad_request"
    assert health == (200, {"status": "ok"})
    assert await topic_size(settings, settings.topics.events) == 0


class CrashingShopify(ShopifyPlatform):
    """Shopify whose mapper fails with a bug, as a release with a defect would."""

    def map(self, delivery: Delivery, parsed: ParsedDelivery) -> list[Event]:
        raise KeyError("line_items")


@pytest.fixture
async def crashing_server(
    settings: Settings, pool: asyncpg.Pool
) -> AsyncIterator[TestServer]:
    app = build_app(settings, pool=pool)
    app[PLATFORMS_KEY]["shopify"] = CrashingShopify()
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    yield server
    await server.close()


async def test_mapper_bug_quarantines_instead_of_500(
    settings: Settings, pool: asyncpg.Pool, crashing_server: TestServer
) -> None:
    _, _, secret = await add_store(pool, "shop-c", "shopify")
    body = json.dumps(load_fixture(ORDER_FIXTURE)).encode()
    url = str(crashing_server.make_url("/webhooks/shopify/shop-c"))
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=shopify_headers(body, secret)) as response,
    ):
        status = response.status
        answer: dict[str, Any] = await response.json()
    records: Sequence[dict[str, Any]] = await read_topic(
        settings, settings.topics.quarantine
    )

    assert status == 422
    assert answer["error"]["message"] == "the shopify mapper failed with KeyError"
    assert len(records) == 1
    assert records[0]["reason"] == "the shopify mapper failed with KeyError"
    assert records[0]["body"] == body.decode()
    assert await topic_size(settings, settings.topics.events) == 0
