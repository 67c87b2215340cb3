"""Every platform through the real receiver and Kafka: fixtures in, events out."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import asyncpg
import pytest

from cartstream.config import Settings
from tests.conftest import running_services
from tests.handlers.receiver_support import (
    BIGCOMMERCE_TOKEN,
    STANDARD_ORDER,
    STANDARD_SECRET,
    add_store,
    post_raw,
    standard_headers,
    topic_size,
    woo_headers,
)
from tests.helpers import WEBHOOKS_DIR, read_topic

pytestmark = pytest.mark.integration

# Fixture name -> (topic, event type, resource field, resource id, customer).
WOO_CASES: dict[str, tuple[str, str, str, str, dict[str, str | None]]] = {
    "woocommerce-customer-created-docs-v3.json": (
        "customer.created",
        "customer",
        "customer_id",
        "25",
        {"id": "25", "email": "john.doe@example.com"},
    ),
    "woocommerce-customer-updated-administrator-role.json": (
        "customer.updated",
        "customer",
        "customer_id",
        "1",
        {"id": "1", "email": "ana.example@example.com"},
    ),
    "woocommerce-customer-updated-docs-v3.json": (
        "customer.updated",
        "customer",
        "customer_id",
        "25",
        {"id": "25", "email": "john.doe@example.com"},
    ),
    "woocommerce-order-created-docs-v3.json": (
        "order.created",
        "order",
        "order_id",
        "727",
        {"id": None, "email": "john.doe@example.com"},
    ),
    "woocommerce-order-created-stripe-float-price.json": (
        "order.created",
        "order",
        "order_id",
        "897",
        {"id": "1", "email": "ana.example@example.com"},
    ),
    "woocommerce-order-updated-docs-v3.json": (
        "order.updated",
        "order",
        "order_id",
        "727",
        {"id": None, "email": "john.doe@example.com"},
    ),
}

# Fixture name -> (resource type, resource id, customer id).
BIGCOMMERCE_CASES: dict[str, tuple[str, str, str | None]] = {
    "bigcommerce-store-cart-converted-docs.json": (
        "cart",
        "d30016e2-23c0-4a90-884f-2e92ac135476",
        None,
    ),
    "bigcommerce-store-cart-couponApplied-docs.json": (
        "cart",
        "09346904-4175-44fd-be53-f7e598531b6c",
        None,
    ),
    "bigcommerce-store-cart-created-docs.json": (
        "cart",
        "09346904-4175-44fd-be53-f7e598531b6c",
        None,
    ),
    "bigcommerce-store-customer-created-docs.json": ("customer", "32", "32"),
    "bigcommerce-store-order-created-docs.json": ("order", "250", None),
    "bigcommerce-store-order-refund-created-docs.json": ("order", "250", None),
    "bigcommerce-store-order-statusUpdated-docs.json": ("order", "250", None),
    "bigcommerce-store-order-statusUpdated-real.json": ("order", "423", None),
    "bigcommerce-store-order-updated-real.json": ("order", "100", None),
    "bigcommerce-store-subscriber-created-docs.json": ("subscriber", "5", None),
}

LEGACY_ORDER = {
    "order": {
        "id": 645,
        "order_number": 645,
        "created_at": "2015-01-26T20:00:21Z",
        "updated_at": "2015-01-26T20:00:21Z",
        "status": "processing",
        "currency": "USD",
        "total": "19.99",
        "customer_id": 2,
        "billing_address": {"email": "john.doe@example.com"},
        "line_items": [
            {
                "id": 504,
                "total": "19.99",
                "price": "19.99",
                "quantity": 1,
                "name": "Ship Your Idea",
                "product_id": 613,
                "sku": "",
            }
        ],
    }
}


def test_cases_cover_every_fixture() -> None:
    woo = sorted(path.name for path in WEBHOOKS_DIR.glob("woocommerce-*.json"))
    bigcommerce = sorted(path.name for path in WEBHOOKS_DIR.glob("bigcommerce-*.json"))
    assert sorted(WOO_CASES) == woo
    assert sorted(BIGCOMMERCE_CASES) == bigcommerce


async def test_woocommerce_fixtures_publish_events(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    _, _, secret = await add_store(pool, "woo-1", "woocommerce")
    answers: dict[str, tuple[int, Any]] = {}
    async with running_services(settings, consume=False):
        for name, (topic, *_) in WOO_CASES.items():
            body = (WEBHOOKS_DIR / name).read_bytes()
            answers[name] = await post_raw(
                settings,
                "/webhooks/woocommerce/woo-1",
                body,
                woo_headers(body, secret, topic),
            )
    events = {
        event["id"]: event
        for event in await read_topic(settings, settings.topics.events)
    }

    assert len(events) == len(WOO_CASES)
    for name, (topic, event_type, field, resource_id, customer) in WOO_CASES.items():
        status, answer = answers[name]
        assert status == 200, name
        assert answer["status"] == "accepted"
        (event_id,) = answer["event_ids"]
        event = events[event_id]
        assert event["platform"] == "woocommerce"
        assert event["store_id"] == "woo-1"
        assert event["topic"] == topic
        assert event["type"] == event_type
        assert event["data"][field] == resource_id
        assert event["customer"] == customer


async def test_woocommerce_ping_legacy_and_deleted_orders(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """The unsigned creation ping publishes nothing; legacy and deleted orders map."""
    _, _, secret = await add_store(pool, "woo-2", "woocommerce")
    legacy = json.dumps(LEGACY_ORDER).encode()
    deleted = b'{"id":727}'
    async with running_services(settings, consume=False):
        ping = await post_raw(
            settings,
            "/webhooks/woocommerce/woo-2",
            b"webhook_id=17",
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        size_after_ping = await topic_size(settings, settings.topics.events)
        legacy_answer = await post_raw(
            settings,
            "/webhooks/woocommerce/woo-2",
            legacy,
            woo_headers(legacy, secret, "order.updated"),
        )
        deleted_answer = await post_raw(
            settings,
            "/webhooks/woocommerce/woo-2",
            deleted,
            woo_headers(deleted, secret, "order.deleted"),
        )
    events = {
        event["id"]: event
        for event in await read_topic(settings, settings.topics.events)
    }

    assert ping == (200, {"status": "ping"})
    assert size_after_ping == 0
    assert legacy_answer[0] == 200
    order = events[legacy_answer[1]["event_ids"][0]]
    assert order["type"] == "order"
    assert order["data"]["order_id"] == "645"
    assert order["data"]["total"] == "19.99"
    assert order["customer"] == {"id": "2", "email": "john.doe@example.com"}
    assert deleted_answer[0] == 200
    notification = events[deleted_answer[1]["event_ids"][0]]
    assert notification["type"] == "notification"
    assert notification["data"]["resource_type"] == "order"
    assert notification["data"]["resource_id"] == "727"
    assert len(events) == 2


async def test_bigcommerce_fixtures_publish_notifications(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    _, _, token = await add_store(pool, "bc-1", "bigcommerce")
    answers: dict[str, tuple[int, Any]] = {}
    async with running_services(settings, consume=False):
        for name in BIGCOMMERCE_CASES:
            body = (WEBHOOKS_DIR / name).read_bytes()
            headers = {"Content-Type": "application/json", BIGCOMMERCE_TOKEN: token}
            answers[name] = await post_raw(
                settings, "/webhooks/bigcommerce/bc-1", body, headers
            )
        wrong = await post_raw(
            settings,
            "/webhooks/bigcommerce/bc-1",
            b"{}",
            {"Content-Type": "application/json", BIGCOMMERCE_TOKEN: token + "x"},
        )
        missing = await post_raw(
            settings,
            "/webhooks/bigcommerce/bc-1",
            b"{}",
            {"Content-Type": "application/json"},
        )
    events = {
        event["id"]: event
        for event in await read_topic(settings, settings.topics.events)
    }

    assert len(events) == len(BIGCOMMERCE_CASES)
    for name, (resource_type, resource_id, customer_id) in BIGCOMMERCE_CASES.items():
        payload = json.loads((WEBHOOKS_DIR / name).read_text())
        status, answer = answers[name]
        assert status == 200, name
        event = events[answer["event_ids"][0]]
        assert event["type"] == "notification"
        assert event["topic"] == payload["scope"]
        assert event["data"]["resource_type"] == resource_type
        assert event["data"]["resource_id"] == resource_id
        assert event["customer"] == {"id": customer_id, "email": None}
    assert wrong[0] == 401
    assert wrong[1]["error"]["code"] == "invalid_signature"
    assert missing[0] == 401
    assert "X-Cartstream-Token" in missing[1]["error"]["message"]


async def test_standard_accepts_any_matching_v1_signature(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    await add_store(pool, "std-1", "standard", STANDARD_SECRET)
    body = json.dumps(STANDARD_ORDER).encode()
    headers = standard_headers(body, STANDARD_SECRET, "msg_1")
    good = headers["webhook-signature"]
    bad = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
    headers["webhook-signature"] = f"{bad} v2,{good.removeprefix('v1,')} {good} {bad}"
    async with running_services(settings, consume=False):
        status, answer = await post_raw(
            settings, "/webhooks/standard/std-1", body, headers
        )
    events = await read_topic(settings, settings.topics.events)

    assert status == 200
    assert [event["id"] for event in events] == answer["event_ids"]
    assert events[0]["type"] == "order"
    assert events[0]["delivery_id"] == "msg_1"
    assert events[0]["data"]["order_id"] == "5001"
    assert events[0]["data"]["total"] == "59.90"
    assert events[0]["customer"] == {"id": "cust-7", "email": "ana@example.com"}


async def test_standard_timestamp_tolerance_is_a_setting(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """Ten minutes off is rejected at the 300 s default and accepted at 3600 s."""
    await add_store(pool, "std-2", "standard", STANDARD_SECRET)
    body = json.dumps(STANDARD_ORDER).encode()
    now = int(time.time())
    old = standard_headers(body, STANDARD_SECRET, "msg_old", now - 600)
    future = standard_headers(body, STANDARD_SECRET, "msg_future", now + 600)
    path = "/webhooks/standard/std-2"
    async with running_services(settings, consume=False):
        old_default = await post_raw(settings, path, body, old)
        future_default = await post_raw(settings, path, body, future)
        size_at_default = await topic_size(settings, settings.topics.events)
    lenient = replace(settings, webhook_timestamp_tolerance_s=3600)
    async with running_services(lenient, consume=False):
        old_lenient = await post_raw(lenient, path, body, old)
        future_lenient = await post_raw(lenient, path, body, future)

    assert old_default[0] == 401
    assert "old, over the 300 s tolerance" in old_default[1]["error"]["message"]
    assert future_default[0] == 401
    assert "in the future" in future_default[1]["error"]["message"]
    assert size_at_default == 0
    assert old_lenient[0] == 200
    assert future_lenient[0] == 200
    assert await topic_size(settings, settings.topics.events) == 2
