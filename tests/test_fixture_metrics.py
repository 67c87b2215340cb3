"""Every webhook fixture, alone in its own store, yields metrics worked out by hand.

Each fixture is posted through the real receiver into real Kafka and
PostgreSQL. BigCommerce fixtures are thin notifications: the hydrator fetches
the resources they name from a fake BigCommerce API on 127.0.0.1, whose
bodies are defined below, so their numbers follow from those bodies.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from cartstream.config import Settings
from projections import stores
from tests.conftest import running_services
from tests.handlers.receiver_support import base_url, hmac_base64
from tests.handlers.support import serve_on_loopback
from tests.helpers import WEBHOOKS_DIR, api_get, end_offsets

pytestmark = pytest.mark.integration

BIGCOMMERCE_HASH = "abc123"
BIGCOMMERCE_TOKEN = "fake-api-token"
CART_ID = "09346904-4175-44fd-be53-f7e598531b6c"
CONVERTED_CART_ID = "d30016e2-23c0-4a90-884f-2e92ac135476"


def customer(**fields: Any) -> dict[str, Any]:
    """Return the expected details of a customer: no activity unless overridden."""
    expected: dict[str, Any] = {
        "lifetime_orders": 0,
        "lifetime_sales": "0",
        "total_products": 0,
        "top_purchases": [],
        "latest_orders": [],
        "first_order_id": None,
        "first_order_at": None,
        "last_order_id": None,
        "last_order_at": None,
        "average_purchase_frequency_days": None,
        "checkouts": {
            "started": 0,
            "completed": 0,
            "abandoned": 0,
            "open_cart_value": "0",
        },
        "email_opt_in": None,
        "messages": {"sent": 0, "opened": 0, "clicked": 0},
        "workflow_stats": [],
        "conversion_rate": None,
        "conversion_totals": {"orders": 0, "revenue": "0"},
    }
    expected.update(fields)
    return expected


def one_order(
    *,
    order_id: str,
    name: str | None,
    created_at: str,
    status: str | None,
    total: str,
    item_count: int,
    refunded: str = "0",
) -> dict[str, Any]:
    """Return the expected metrics of a customer whose one order counts."""
    return {
        "lifetime_orders": 1,
        "first_order_id": order_id,
        "first_order_at": created_at,
        "last_order_id": order_id,
        "last_order_at": created_at,
        "latest_orders": [
            {
                "order_id": order_id,
                "name": name,
                "created_at": created_at,
                "status": status,
                "total": total,
                "refunded": refunded,
                "item_count": item_count,
            }
        ],
    }


def product(product_id: str, title: str, quantity: int, spend: str) -> dict[str, Any]:
    return {
        "product_id": product_id,
        "title": title,
        "quantity": quantity,
        "spend": spend,
    }


ANA = "ana.example@example.com"

# Order 6198432301356: four lines of 99.00 and 100.00 less line discounts
# (99.00 - 4.78 - 5.00, 100.00 - 5.08, 100.00 - 5.07 twice).
HKD_ORDER = customer(
    **one_order(
        order_id="6198432301356",
        name="#1054",
        created_at="2025-01-23T06:59:37Z",
        status="paid",
        total="394.00",
        item_count=4,
    ),
    lifetime_sales="394.00",
    total_products=4,
    currency="HKD",
    email=ANA,
    top_purchases=[
        product("9799208370476", "Orange Snowboard", 1, "94.93"),
        product("9800669430060", "Red Snowboard", 1, "94.93"),
        product("9797441945900", "Green Snowboard", 1, "94.92"),
        product("9782123692332", "aaa0103測試商品11aa", 1, "89.22"),
    ],
    email_opt_in="not_subscribed",
    email_opt_in_at="2025-01-23T06:59:37Z",
)

# Order 5778367414385 as orders/paid and as orders/updated: one 600.00 board.
TRIMMED_ORDER = customer(
    **one_order(
        order_id="5778367414385",
        name="#1017",
        created_at="2024-11-06T02:54:49Z",
        status=None,
        total="600.00",
        item_count=1,
    ),
    lifetime_sales="600.00",
    total_products=1,
    currency="USD",
    email=ANA,
    top_purchases=[
        product("7234590408817", "The Collection Snowboard: Hydrogen", 1, "600.00")
    ],
)

WOO_GUEST_ORDER = {
    "e:john.doe@example.com": customer(
        **one_order(
            order_id="727",
            name="727",
            created_at="2017-03-22T19:28:02Z",
            status="processing",
            total="29.35",
            item_count=3,
        ),
        customer_id=None,
        email="john.doe@example.com",
        lifetime_sales="29.35",
        total_products=3,
        currency="USD",
        top_purchases=[
            product("93", "Woo Single #1", 2, "6.00"),
            product(
                "22", "Ship Your Idea \u2013 Color: Black, Size: M Test", 1, "12.00"
            ),
        ],
    )
}

WOO_JOHN = {
    "c:25": customer(
        email="john.doe@example.com",
        first_name="Ana",
        last_name="Example",
        country="US",
        customer_created_at="2017-03-21T19:09:28Z",
    )
}

# Order 250 of the fake API: 48.1500 less 10.0000 refunded; one of two mugs
# refunded, so the mug keeps 1 unit and half its 20.0000.
BIGCOMMERCE_ORDER_250 = {
    "c:32": customer(
        **one_order(
            order_id="250",
            name=None,
            created_at="2019-06-25T16:15:35Z",
            status="Awaiting Fulfillment",
            total="48.1500",
            item_count=4,
            refunded="10.0000",
        ),
        email=ANA,
        lifetime_sales="38.1500",
        total_products=3,
        currency="USD",
        top_purchases=[
            product("77", "Mug", 1, "10.0000"),
            product("88", "Tea", 1, "10.0000"),
            product("title:Gift wrap", "Gift wrap", 1, "5.0000"),
        ],
        email_opt_in="subscribed",
        email_opt_in_at="2019-06-25T16:15:35Z",
    )
}

BIGCOMMERCE_OPEN_CART = {
    "e:guest@example.com": customer(
        email="guest@example.com",
        customer_id=None,
        checkouts={
            "started": 1,
            "completed": 0,
            "abandoned": 1,
            "open_cart_value": "27.5",
        },
    )
}

# Customers each fixture yields, by customer key; an empty dict means none.
EXPECTED: dict[str, dict[str, dict[str, Any]]] = {
    # No email and no customer: the checkout has no customer.
    "shopify-checkouts-create-guest-null-email.json": {},
    "shopify-checkouts-create-sample.json": {
        "c:603851970716743426": customer(
            email=ANA,
            checkouts={
                "started": 1,
                "completed": 0,
                "abandoned": 1,
                "open_cart_value": "398.00",
            },
            # The unticked box at checkout.
            email_opt_in="not_subscribed",
            email_opt_in_at="2022-04-06T12:08:57Z",
        )
    },
    "shopify-customers-create-accepts-marketing-inr.json": {
        "c:5747017285820": customer(
            email=ANA,
            first_name="Ana",
            last_name="Example",
            country="IN",
            tags=[],
            customer_created_at="2021-12-29T09:45:19Z",
            email_opt_in="not_subscribed",
            email_opt_in_at="2021-12-29T09:45:20Z",
        )
    },
    "shopify-customers-data_request-docs.json": {},
    # Redacts a customer this store never saw.
    "shopify-customers-redact-docs.json": {},
    # Checked apart: its times are the time of receipt.
    "shopify-customers-update-sample-consent-null.json": {
        "c:706405506930370084": customer(
            email=ANA,
            first_name="Bob",
            last_name="Biller",
            email_opt_in="subscribed",
        )
    },
    # Cancelled after payment and refunded in full: shown, but not counted.
    "shopify-orders-cancelled-with-refund.json": {
        "c:8658316394796": customer(
            email=ANA,
            currency="HKD",
            latest_orders=[
                {
                    "order_id": "6198821716268",
                    "name": "#1065",
                    "created_at": "2025-01-23T10:18:47Z",
                    "status": "cancelled",
                    "total": "99.00",
                    "refunded": "99.00",
                    "item_count": 1,
                }
            ],
            email_opt_in="not_subscribed",
            email_opt_in_at="2025-01-23T10:18:47Z",
        )
    },
    # A test order: neither counted nor shown.
    "shopify-orders-create-aud-total-price-usd-2020.json": {
        "c:4206822293653": customer(
            email=ANA,
            currency="AUD",
            email_opt_in="not_subscribed",
            email_opt_in_at="2020-12-26T21:23:58Z",
        )
    },
    "shopify-orders-create-discount-code-unicode-product.json": {
        "c:8658316394796": HKD_ORDER
    },
    # 9.00 x 3 less a 4.05 discount on the line; the total adds tax.
    "shopify-orders-create-discount-multi-tax-2024-05.json": {
        "c:6907366047929": customer(
            **one_order(
                order_id="5260174885049",
                name="#79618",
                created_at="2024-05-03T01:15:15Z",
                status="paid",
                total="32.57",
                item_count=3,
            ),
            email=ANA,
            lifetime_sales="32.57",
            total_products=3,
            currency="USD",
            top_purchases=[
                product("7110571622585", "Corvette C8 Magnetic Lapel Pin", 3, "22.95")
            ],
            email_opt_in="subscribed",
            email_opt_in_at="2024-05-03T01:15:15Z",
        )
    },
    # A guest with an empty email: the order has no customer.
    "shopify-orders-create-guest-percentage-discount-shipping.json": {},
    "shopify-orders-create-sample-test-cancelled-voided.json": {
        "c:115310627314723954": customer(
            email=ANA,
            currency="USD",
            email_opt_in="subscribed",
            email_opt_in_at="2022-04-06T12:09:03Z",
        )
    },
    "shopify-orders-paid-trimmed.json": {"c:7358220173425": TRIMMED_ORDER},
    "shopify-orders-updated-null-billing-address-inr.json": {
        "c:6001363091712": customer(
            **one_order(
                order_id="4617255092480",
                name="#1002",
                created_at="2022-01-05T12:04:08Z",
                status="paid",
                total="5900.00",
                item_count=1,
            ),
            email=ANA,
            lifetime_sales="5900.00",
            total_products=1,
            currency="INR",
            top_purchases=[product("7510929801472", "p1", 1, "5000.00")],
            email_opt_in="not_subscribed",
            email_opt_in_at="2022-01-05T12:04:08Z",
        )
    },
    "shopify-orders-updated-trimmed.json": {"c:7358220173425": TRIMMED_ORDER},
    # A refund of an order this store never saw.
    "shopify-refunds-create-sample.json": {},
    "woocommerce-customer-created-docs-v3.json": WOO_JOHN,
    "woocommerce-customer-updated-administrator-role.json": {
        "c:1": customer(
            email=ANA,
            first_name="Ben",
            last_name="Example",
            country="CO",
            customer_created_at="2023-07-05T14:13:10Z",
        )
    },
    "woocommerce-customer-updated-docs-v3.json": WOO_JOHN,
    "woocommerce-order-created-docs-v3.json": WOO_GUEST_ORDER,
    "woocommerce-order-created-stripe-float-price.json": {
        "c:1": customer(
            **one_order(
                order_id="897",
                name="897",
                created_at="2021-09-06T18:05:09Z",
                status="processing",
                total="28.44",
                item_count=1,
            ),
            email=ANA,
            lifetime_sales="28.44",
            total_products=1,
            currency="USD",
            top_purchases=[
                product(
                    "753",
                    "Rhapsody of Realities- A Topical Compendium volume 5",
                    1,
                    "14.99",
                )
            ],
        )
    },
    "woocommerce-order-updated-docs-v3.json": {
        "e:john.doe@example.com": {
            **WOO_GUEST_ORDER["e:john.doe@example.com"],
            "latest_orders": [
                {
                    **WOO_GUEST_ORDER["e:john.doe@example.com"]["latest_orders"][0],
                    "status": "completed",
                }
            ],
        }
    },
    # The order of a converted cart: a guest's two mugs.
    "bigcommerce-store-cart-converted-docs.json": {
        "e:guest@example.com": customer(
            **one_order(
                order_id="252",
                name=None,
                created_at="2019-06-25T18:21:33Z",
                status="Awaiting Fulfillment",
                total="27.5000",
                item_count=2,
            ),
            email="guest@example.com",
            customer_id=None,
            lifetime_sales="27.5000",
            total_products=2,
            currency="USD",
            top_purchases=[product("77", "Mug", 2, "25.0000")],
            email_opt_in="not_subscribed",
            email_opt_in_at="2019-06-25T18:21:33Z",
        )
    },
    "bigcommerce-store-cart-couponApplied-docs.json": BIGCOMMERCE_OPEN_CART,
    "bigcommerce-store-cart-created-docs.json": BIGCOMMERCE_OPEN_CART,
    "bigcommerce-store-customer-created-docs.json": {
        "c:32": customer(
            email=ANA,
            first_name="Ana",
            last_name="Example",
            country="US",
            customer_created_at="2019-06-25T15:00:00Z",
        )
    },
    "bigcommerce-store-order-created-docs.json": BIGCOMMERCE_ORDER_250,
    "bigcommerce-store-order-refund-created-docs.json": BIGCOMMERCE_ORDER_250,
    "bigcommerce-store-order-statusUpdated-docs.json": BIGCOMMERCE_ORDER_250,
    "bigcommerce-store-order-statusUpdated-real.json": {
        "c:7": customer(
            **one_order(
                order_id="423",
                name=None,
                created_at="2021-06-07T07:30:00Z",
                status="Shipped",
                total="100.0000",
                item_count=1,
            ),
            email="cara@example.com",
            lifetime_sales="100.0000",
            total_products=1,
            currency="USD",
            top_purchases=[product("501", "Kettle", 1, "90.0000")],
        )
    },
    "bigcommerce-store-order-updated-real.json": {
        "e:dan@example.com": customer(
            **one_order(
                order_id="100",
                name=None,
                created_at="2023-08-11T06:53:00Z",
                status="Awaiting Fulfillment",
                total="12.3400",
                item_count=1,
            ),
            email="dan@example.com",
            customer_id=None,
            lifetime_sales="12.3400",
            total_products=1,
            currency="USD",
            top_purchases=[product("sku:GC-1", "Gift card", 1, "12.3400")],
            email_opt_in="not_subscribed",
            email_opt_in_at="2023-08-11T06:53:00Z",
        )
    },
    # Newsletter subscribers are not customers, so nothing is fetched.
    "bigcommerce-store-subscriber-created-docs.json": {},
}


# The fake BigCommerce API


def _v2_order(order_id: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": order_id,
        "currency_code": "USD",
        "payment_status": "captured",
        "is_deleted": False,
        "refunded_amount": "0.0000",
        **fields,
    }


def _v2_product(
    line_id: int, product_id: int, name: str, sku: str, quantity: int, total: str
) -> dict[str, Any]:
    return {
        "id": line_id,
        "product_id": product_id,
        "variant_id": 0,
        "name": name,
        "sku": sku,
        "quantity": quantity,
        "price_ex_tax": total,
        "total_ex_tax": total,
        "quantity_refunded": 0,
        "refund_amount": "0.0000",
    }


FAKE_ORDERS: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {
    "250": (
        _v2_order(
            250,
            customer_id=32,
            date_created="Tue, 25 Jun 2019 16:15:35 +0000",
            date_modified="Tue, 25 Jun 2019 17:25:23 +0100",
            status_id=11,
            status="Awaiting Fulfillment",
            total_inc_tax="48.1500",
            refunded_amount="10.0000",
            is_email_opt_in=True,
            cart_id=CONVERTED_CART_ID,
            billing_address={"email": "Ana.Example@Example.com"},
        ),
        [
            {
                **_v2_product(101, 77, "Mug", "MUG-1", 2, "20.0000"),
                "quantity_refunded": 1,
                "refund_amount": "10.0000",
            },
            _v2_product(102, 0, "Gift wrap", "", 1, "5.0000"),
            _v2_product(103, 88, "Tea", "TEA", 1, "10.0000"),
        ],
    ),
    "252": (
        _v2_order(
            252,
            customer_id=0,
            date_created="Tue, 25 Jun 2019 18:21:33 +0000",
            date_modified="Tue, 25 Jun 2019 18:21:34 +0000",
            status_id=11,
            status="Awaiting Fulfillment",
            total_inc_tax="27.5000",
            is_email_opt_in=False,
            cart_id=CONVERTED_CART_ID,
            billing_address={"email": "Guest@Example.com"},
        ),
        [_v2_product(201, 77, "Mug", "MUG-1", 2, "25.0000")],
    ),
    "423": (
        _v2_order(
            423,
            customer_id=7,
            date_created="Mon, 07 Jun 2021 07:30:00 +0000",
            date_modified="Mon, 07 Jun 2021 07:31:50 +0000",
            status_id=2,
            status="Shipped",
            total_inc_tax="100.0000",
            billing_address={"email": "Cara@Example.com"},
        ),
        [_v2_product(301, 501, "Kettle", "KT-1", 1, "90.0000")],
    ),
    "100": (
        _v2_order(
            100,
            customer_id=0,
            date_created="Fri, 11 Aug 2023 06:53:00 +0000",
            date_modified="Fri, 11 Aug 2023 06:53:14 +0000",
            status_id=11,
            status="Awaiting Fulfillment",
            total_inc_tax="12.3400",
            is_email_opt_in=False,
            billing_address={"email": "Dan@Example.com"},
        ),
        [_v2_product(401, 0, "Gift card", "GC-1", 1, "12.3400")],
    ),
}
FAKE_CUSTOMER = {
    "id": 32,
    "email": "Ana.Example@example.com",
    "first_name": "Ana",
    "last_name": "Example",
    "date_created": "2019-06-25T15:00:00Z",
    "date_modified": "2019-06-25T16:52:51Z",
    "addresses": [{"id": 60, "customer_id": 32, "country_code": "us"}],
}
FAKE_CART = {
    "id": CART_ID,
    "customer_id": 0,
    "email": "Guest@Example.com",
    "currency": {"code": "USD"},
    "cart_amount": 27.5,
    "created_time": "2019-06-25T17:11:10+00:00",
    "updated_time": "2019-06-25T17:12:41+00:00",
    "line_items": {
        "physical_items": [
            {
                "id": "6f1b4a20-0b2f-4bb2-8a7e-2c1f0e0c1111",
                "product_id": 77,
                "variant_id": 1,
                "sku": "MUG-1",
                "name": "Mug",
                "quantity": 2,
                "list_price": 12.5,
                "sale_price": 12.5,
                "extended_list_price": 25,
                "extended_sale_price": 25,
                "discount_amount": 2.5,
                "coupon_amount": 0,
            }
        ],
        "digital_items": [],
        "custom_items": [],
    },
}


def fake_bigcommerce() -> web.Application:
    """Serve the orders, products, customer and cart above for any store hash."""

    def check(request: web.Request) -> None:
        if request.headers.get("X-Auth-Token") != BIGCOMMERCE_TOKEN:
            raise web.HTTPUnauthorized()

    async def order(request: web.Request) -> web.Response:
        check(request)
        found = FAKE_ORDERS.get(request.match_info["order_id"])
        if found is None:
            raise web.HTTPNotFound()
        return web.json_response(found[0])

    async def products(request: web.Request) -> web.Response:
        check(request)
        found = FAKE_ORDERS.get(request.match_info["order_id"])
        if found is None or request.query.get("page") != "1":
            return web.Response(status=204)
        return web.json_response(found[1])

    async def customers(request: web.Request) -> web.Response:
        check(request)
        found = [FAKE_CUSTOMER] if request.query.get("id:in") == "32" else []
        return web.json_response({"data": found, "meta": {}})

    async def cart(request: web.Request) -> web.Response:
        check(request)
        if request.match_info["cart_id"] != CART_ID:
            raise web.HTTPNotFound()
        return web.json_response({"data": FAKE_CART})

    app = web.Application()
    prefix = "/stores/{store_hash}"
    app.router.add_get(prefix + "/v2/orders/{order_id}", order)
    app.router.add_get(prefix + "/v2/orders/{order_id}/products", products)
    app.router.add_get(prefix + "/v3/customers", customers)
    app.router.add_get(prefix + "/v3/carts/{cart_id}", cart)
    return app


# Posting fixtures


def store_id_of(fixture: str) -> str:
    return fixture.removesuffix(".json").lower()


def delivery_of(fixture: str, secret: str) -> tuple[bytes, dict[str, str]]:
    """Return the body and headers a platform would send for a fixture."""
    platform, resource, action = fixture.removesuffix(".json").split("-")[:3]
    body = (WEBHOOKS_DIR / fixture).read_bytes()
    headers = {"Content-Type": "application/json"}
    if platform == "shopify":
        headers["X-Shopify-Topic"] = f"{resource}/{action}"
        headers["X-Shopify-Hmac-Sha256"] = hmac_base64(body, secret)
        headers["X-Shopify-Webhook-Id"] = store_id_of(fixture)
    elif platform == "woocommerce":
        headers["X-WC-Webhook-Topic"] = f"{resource}.{action}"
        headers["X-WC-Webhook-Signature"] = hmac_base64(body, secret)
    else:
        # The documentation's samples name the store as {store_hash}.
        body = body.replace(b"{store_hash}", BIGCOMMERCE_HASH.encode())
        headers["X-Cartstream-Token"] = secret
    return body, headers


def bigcommerce_hash_of(fixture: str) -> str:
    producer = json.loads((WEBHOOKS_DIR / fixture).read_text())["producer"]
    named = str(producer).removeprefix("stores/")
    return BIGCOMMERCE_HASH if named == "{store_hash}" else named


async def add_fixture_store(pool: asyncpg.Pool, fixture: str) -> tuple[str, str]:
    """Create the fixture's store; return its API token and webhook secret."""
    platform = fixture.split("-")[0]
    store_id = store_id_of(fixture)
    async with pool.acquire() as connection:
        token = await stores.create_store(connection, store_id, platform)
        _, secret = await stores.add_secret(connection, store_id, platform)
        if platform == "bigcommerce":
            await stores.set_bigcommerce_credentials(
                connection, store_id, bigcommerce_hash_of(fixture), BIGCOMMERCE_TOKEN
            )
    return token, secret


async def wait_until_quiet(
    settings: Settings, pool: asyncpg.Pool, timeout_s: float = 60
) -> None:
    """Wait until the consumer applied the topic's end and no event came since.

    Hydrated events arrive after their notifications, so the end is read again
    after a pause.
    """
    deadline = time.monotonic() + timeout_s
    previous: dict[int, int] | None = None
    while True:
        ends = await end_offsets(settings, settings.topics.events)
        rows = await pool.fetch(
            "SELECT partition, next_offset FROM checkpoints WHERE consumer = $1",
            settings.consumer_group,
        )
        done = {row["partition"]: row["next_offset"] for row in rows}
        applied = all(done.get(p, 0) >= end for p, end in ends.items())
        if applied and ends == previous:
            return
        previous = ends if applied else None
        assert time.monotonic() < deadline, f"not applied: {done} < {ends}"
        await asyncio.sleep(1.0)


@pytest.fixture
async def bigcommerce_api() -> AsyncIterator[str]:
    async with serve_on_loopback(fake_bigcommerce()) as url:
        yield url


def test_every_fixture_has_expected_metrics() -> None:
    fixtures = sorted(path.name for path in WEBHOOKS_DIR.glob("*.json"))

    assert sorted(EXPECTED) == fixtures


async def test_fixture_metrics_match_hand_computed(
    settings: Settings, pool: asyncpg.Pool, bigcommerce_api: str
) -> None:
    settings = replace(settings, bigcommerce_api_url=bigcommerce_api)
    tokens = {}
    received_from = datetime.now(UTC)
    async with running_services(settings), aiohttp.ClientSession() as session:
        for fixture in sorted(EXPECTED):
            token, secret = await add_fixture_store(pool, fixture)
            tokens[fixture] = token
            body, headers = delivery_of(fixture, secret)
            platform = fixture.split("-")[0]
            url = f"{base_url(settings)}/webhooks/{platform}/{store_id_of(fixture)}"
            async with session.post(url, data=body, headers=headers) as response:
                assert response.status == 200, (fixture, await response.text())
        received_until = datetime.now(UTC)
        await wait_until_quiet(settings, pool)

        details: dict[str, dict[str, Any]] = {}
        for fixture in sorted(EXPECTED):
            path = f"/api/stores/{store_id_of(fixture)}/customers"
            status, listing = await api_get(settings, tokens[fixture], path)
            assert status == 200
            for item in listing["customers"]:
                key = item["customer_key"]
                status, body = await api_get(settings, tokens[fixture], f"{path}/{key}")
                assert status == 200
                details[f"{fixture} {key}"] = body

    for fixture, customers in sorted(EXPECTED.items()):
        found = sorted(k.split(" ")[1] for k in details if k.split(" ")[0] == fixture)
        assert found == sorted(customers), fixture
        for key, expected in customers.items():
            actual = details[f"{fixture} {key}"]
            selected = {name: actual[name] for name in expected}
            assert selected == expected, (fixture, key)

    # Without its own times, the consent-null profile is dated on receipt.
    consent_null = details[
        "shopify-customers-update-sample-consent-null.json c:706405506930370084"
    ]
    opt_in_at = datetime.fromisoformat(consent_null["email_opt_in_at"])
    assert received_from <= opt_in_at <= received_until
