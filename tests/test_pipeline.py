"""End to end on real Kafka and PostgreSQL: deliveries in, customers and changes out."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cartstream.config import Settings
from tests.conftest import running_services
from tests.helpers import (
    WEBHOOKS_DIR,
    api_get,
    api_post,
    create_store,
    load_fixture,
    post_shopify,
    read_topic,
    shopify_topic,
    wait_until_applied,
)

pytestmark = pytest.mark.integration

SUBSCRIBED_BUYERS = {
    "segment_id": "subscribed-buyers",
    "name": "Subscribed buyers",
    "rule": {
        "and": [
            {">=": [{"var": "lifetime_orders"}, 1]},
            {"==": [{"var": "email_opt_in"}, "subscribed"]},
        ]
    },
}


async def _post_all_shopify_fixtures(settings: Settings, secret: str) -> dict[str, int]:
    statuses = {}
    for path in sorted(WEBHOOKS_DIR.glob("shopify-*.json")):
        status, _ = await post_shopify(
            settings,
            "shop-1",
            secret,
            shopify_topic(path.name),
            json.loads(path.read_text()),
            webhook_id=path.stem,
        )
        statuses[path.name] = status
    return statuses


async def test_fixtures_produce_hand_computed_customers(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """Every Shopify fixture posted to one store yields the hand-worked numbers."""
    token, secret = await create_store(pool)
    async with running_services(settings):
        status, _ = await api_post(
            settings, token, "/api/stores/shop-1/segments", SUBSCRIBED_BUYERS
        )
        assert status == 201
        statuses = await _post_all_shopify_fixtures(settings, secret)
        await wait_until_applied(settings, pool)

        status, listing = await api_get(settings, token, "/api/stores/shop-1/customers")
        assert status == 200
        keys = [customer["customer_key"] for customer in listing["customers"]]

        details = {}
        for key in keys:
            status, body = await api_get(
                settings, token, f"/api/stores/shop-1/customers/{key}"
            )
            assert status == 200
            details[key] = body

    assert set(statuses.values()) == {200}

    # Customers with counted orders first, by last order id, newest first; then
    # customers without counted orders.
    assert keys[:4] == [
        "c:8658316394796",
        "c:7358220173425",
        "c:6907366047929",
        "c:6001363091712",
    ]
    assert set(keys[4:]) == {
        "c:706405506930370084",
        "c:603851970716743426",
        "c:5747017285820",
        "c:4206822293653",
        "c:115310627314723954",
    }

    # Two HKD orders: 394.00 counted, 99.00 cancelled and refunded.
    hkd = details["c:8658316394796"]
    assert hkd["lifetime_orders"] == 1
    assert Decimal(hkd["lifetime_sales"]) == Decimal("394.00")
    assert hkd["currency"] == "HKD"
    assert hkd["total_products"] == 4
    assert hkd["last_order_id"] == "6198432301356"
    assert [o["order_id"] for o in hkd["latest_orders"]] == [
        "6198821716268",
        "6198432301356",
    ]
    assert hkd["latest_orders"][0]["status"] == "cancelled"
    assert hkd["average_purchase_frequency_days"] is None

    # orders/paid and orders/updated are two snapshots of one order: it counts once.
    usd = details["c:7358220173425"]
    assert usd["lifetime_orders"] == 1
    assert Decimal(usd["lifetime_sales"]) == Decimal("600.00")
    assert usd["total_products"] == 1

    pins = details["c:6907366047929"]
    assert pins["lifetime_orders"] == 1
    assert Decimal(pins["lifetime_sales"]) == Decimal("32.57")
    assert pins["total_products"] == 3
    assert pins["email_opt_in"] == "subscribed"
    assert [s["segment_id"] for s in pins["segments"]] == ["subscribed-buyers"]
    assert pins["top_purchases"][0]["product_id"] == "7110571622585"
    assert pins["top_purchases"][0]["quantity"] == 3

    inr = details["c:6001363091712"]
    assert Decimal(inr["lifetime_sales"]) == Decimal("5900.00")
    assert inr["currency"] == "INR"

    # A test order counts for nothing, and neither does a cancelled test order
    # with its refund.
    for key in ("c:4206822293653", "c:115310627314723954"):
        assert details[key]["lifetime_orders"] == 0
        assert Decimal(details[key]["lifetime_sales"]) == 0
        assert details[key]["total_products"] == 0
        assert details[key]["segments"] == []

    # A checkout that never became an order.
    cart = details["c:603851970716743426"]
    assert cart["checkouts"]["started"] == 1
    assert cart["checkouts"]["abandoned"] == 1
    assert Decimal(cart["checkouts"]["open_cart_value"]) == Decimal("398.00")

    assert details["c:5747017285820"]["email_opt_in"] == "not_subscribed"
    assert details["c:706405506930370084"]["email_opt_in"] == "subscribed"

    changes = await read_topic(settings, settings.topics.segment_changes)
    assert [(c["type"], c["data"]["customer_key"]) for c in changes] == [
        ("dev.cartstream.segment.entered", "c:6907366047929")
    ]


async def test_duplicate_delivery_counts_once(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    token, secret = await create_store(pool)
    order = load_fixture("shopify-orders-create-discount-multi-tax-2024-05.json")
    async with running_services(settings):
        first = await post_shopify(
            settings, "shop-1", secret, "orders/create", order, webhook_id="w-1"
        )
        again = await post_shopify(
            settings, "shop-1", secret, "orders/create", order, webhook_id="w-1"
        )
        # The platform may also send the same order state under a new webhook id.
        other = await post_shopify(
            settings, "shop-1", secret, "orders/paid", order, webhook_id="w-2"
        )
        await wait_until_applied(settings, pool)
        _, customer = await api_get(
            settings, token, "/api/stores/shop-1/customers/c:6907366047929"
        )

    assert first[0] == again[0] == other[0] == 200
    assert first[1]["event_ids"] == again[1]["event_ids"]
    assert customer["lifetime_orders"] == 1
    assert Decimal(customer["lifetime_sales"]) == Decimal("32.57")
    assert customer["total_products"] == 3


def _edited(
    order: dict[str, Any], *, updated_at: str, quantity: int, total: str
) -> dict[str, Any]:
    edited = copy.deepcopy(order)
    edited["updated_at"] = updated_at
    edited["line_items"][0]["quantity"] = quantity
    edited["total_price"] = total
    edited["total_price_set"]["shop_money"]["amount"] = total
    return edited


async def test_newest_order_snapshot_wins(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """Snapshots of one order delivered out of order end with the newest one."""
    token, secret = await create_store(pool)
    created = load_fixture("shopify-orders-create-discount-multi-tax-2024-05.json")
    updated = _edited(
        created, updated_at="2024-05-03T10:00:00-04:00", quantity=5, total="50.00"
    )
    later = _edited(
        created, updated_at="2024-05-04T10:00:00-04:00", quantity=2, total="21.00"
    )
    async with running_services(settings):
        # Newest first, then the older ones.
        for topic, payload in [
            ("orders/updated", later),
            ("orders/create", created),
            ("orders/updated", updated),
        ]:
            status, _ = await post_shopify(settings, "shop-1", secret, topic, payload)
            assert status == 200
        await wait_until_applied(settings, pool)
        _, customer = await api_get(
            settings, token, "/api/stores/shop-1/customers/c:6907366047929"
        )

    assert customer["lifetime_orders"] == 1
    assert Decimal(customer["lifetime_sales"]) == Decimal("21.00")
    assert customer["total_products"] == 2
    assert customer["latest_orders"][0]["total"] == "21.00"


async def test_segment_entry_emits_exactly_one_entered_event(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    token, secret = await create_store(pool)
    order = load_fixture("shopify-orders-create-discount-multi-tax-2024-05.json")
    async with running_services(settings):
        status, _ = await api_post(
            settings, token, "/api/stores/shop-1/segments", SUBSCRIBED_BUYERS
        )
        assert status == 201
        await post_shopify(
            settings, "shop-1", secret, "orders/create", order, webhook_id="w-1"
        )
        await post_shopify(
            settings, "shop-1", secret, "orders/create", order, webhook_id="w-1"
        )
        paid = _edited(
            order, updated_at="2024-05-03T10:00:00-04:00", quantity=4, total="40.00"
        )
        await post_shopify(settings, "shop-1", secret, "orders/paid", paid)
        await wait_until_applied(settings, pool)
        _, segment = await api_get(
            settings, token, "/api/stores/shop-1/segments/subscribed-buyers"
        )

    changes = await read_topic(settings, settings.topics.segment_changes)
    assert len(changes) == 1
    change = changes[0]
    assert change["specversion"] == "1.0"
    assert change["type"] == "dev.cartstream.segment.entered"
    assert change["data"]["customer_key"] == "c:6907366047929"
    assert change["data"]["segment_id"] == "subscribed-buyers"
    assert change["data"]["membership_version"] == 1
    assert change["data"]["cause_event_id"]
    assert segment["member_count"] == 1


async def test_signature_vectors_pass_and_fail_as_labelled(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    vectors = json.loads(
        (Path(__file__).parent / "data" / "signatures.json").read_text()
    )
    shopify = [v for v in vectors if v["scheme"] == "shopify-hmac-sha256-base64"]
    assert shopify
    async with pool.acquire() as connection:
        from projections import stores

        await stores.create_store(connection, "shop-1", "shopify")
        for vector in shopify:
            await stores.add_secret(connection, "shop-1", "shopify", vector["secret"])

    import aiohttp

    url = f"http://{settings.http_host}:{settings.http_port}/webhooks/shopify/shop-1"
    async with running_services(settings), aiohttp.ClientSession() as session:
        for vector in shopify:
            headers = dict(vector["headers"], **{"Content-Type": "application/json"})
            async with session.post(
                url, data=vector["body"].encode(), headers=headers
            ) as response:
                if vector["headers_should_verify"]:
                    assert response.status != 401, vector["id"]
                else:
                    assert response.status == 401, vector["id"]
