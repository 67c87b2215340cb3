"""BigCommerce webhooks: the token check, notifications, and hydration over HTTP."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from cartstream.errors import InvalidSignatureError, MappingError
from cartstream.events import Event
from handlers.platforms.base import Delivery, ParsedDelivery
from handlers.platforms.bigcommerce import SCOPES, TOKEN_HEADER, BigCommercePlatform
from handlers.platforms.bigcommerce_api import (
    BigCommerceAPIError,
    BigCommerceClient,
    checkout_event_from_api,
    customer_event_from_api,
    hydrate,
    order_event_from_api,
)
from tests.handlers.support import (
    assert_valid_event,
    assert_valid_unless_mapping_error,
    serve_on_loopback,
)
from tests.helpers import WEBHOOKS_DIR, load_fixture

PLATFORM = BigCommercePlatform()
STORE_ID = "bc-store-1"
TOKEN = "hook-token-1"
RECEIVED_AT = datetime(2025, 2, 1, 12, 0, tzinfo=UTC)


def make_delivery(body: bytes, headers: dict[str, str] | None = None) -> Delivery:
    all_headers = {"Content-Type": "application/json", TOKEN_HEADER: TOKEN}
    all_headers.update(headers or {})
    proxy = CIMultiDictProxy(CIMultiDict(all_headers))
    return Delivery(
        store_id=STORE_ID, body=body, headers=proxy, received_at=RECEIVED_AT
    )


def map_body(payload: object) -> Event:
    delivery = make_delivery(json.dumps(payload).encode())
    PLATFORM.verify(delivery, [TOKEN])
    events = PLATFORM.map(delivery, PLATFORM.parse(delivery))
    assert len(events) == 1
    assert_valid_event(events[0])
    return events[0]


# Token check


def test_verify_passes_when_token_matches_second_secret() -> None:
    PLATFORM.verify(make_delivery(b"{}"), ["old-token", "", TOKEN])


@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + "x", TOKEN[:-1]])
def test_verify_rejects_when_token_missing_or_wrong(token: str | None) -> None:
    headers = CIMultiDict({"Content-Type": "application/json"})
    if token is not None:
        headers[TOKEN_HEADER] = token
    delivery = Delivery(
        store_id=STORE_ID, body=b"{}", headers=headers, received_at=RECEIVED_AT
    )
    with pytest.raises(InvalidSignatureError):
        PLATFORM.verify(delivery, [TOKEN])


def test_verify_rejects_when_secret_list_empty_or_blank() -> None:
    with pytest.raises(InvalidSignatureError):
        PLATFORM.verify(make_delivery(b"{}"), [])
    delivery = make_delivery(b"{}", {TOKEN_HEADER: ""})
    with pytest.raises(InvalidSignatureError):
        PLATFORM.verify(delivery, [""])


# Notifications from the fixtures: (fixture, resource type, resource id,
# occurred_at, customer id, extra data fields).
FIXTURE_CASES = [
    (
        "bigcommerce-store-cart-converted-docs.json",
        "cart",
        "d30016e2-23c0-4a90-884f-2e92ac135476",
        "2019-06-25T18:21:33Z",
        None,
        {"order_id": "252"},
    ),
    (
        "bigcommerce-store-cart-couponApplied-docs.json",
        "cart",
        "09346904-4175-44fd-be53-f7e598531b6c",
        "2019-06-25T17:12:41Z",
        None,
        {"coupon_id": "1"},
    ),
    (
        "bigcommerce-store-cart-created-docs.json",
        "cart",
        "09346904-4175-44fd-be53-f7e598531b6c",
        "2019-06-25T17:11:10Z",
        None,
        {},
    ),
    (
        "bigcommerce-store-customer-created-docs.json",
        "customer",
        "32",
        "2019-06-25T16:52:51Z",
        "32",
        {},
    ),
    (
        "bigcommerce-store-order-created-docs.json",
        "order",
        "250",
        "2019-06-25T16:15:35Z",
        None,
        {},
    ),
    (
        "bigcommerce-store-order-refund-created-docs.json",
        "order",
        "250",
        "2019-06-25T16:25:23Z",
        None,
        {"refund_id": "3"},
    ),
    (
        "bigcommerce-store-order-statusUpdated-docs.json",
        "order",
        "250",
        "2019-06-25T16:15:35Z",
        None,
        {"previous_status_id": 0, "new_status_id": 11},
    ),
    (
        "bigcommerce-store-order-statusUpdated-real.json",
        "order",
        "423",
        "2021-06-07T07:31:50Z",
        None,
        {"previous_status_id": 11, "new_status_id": 2},
    ),
    (
        "bigcommerce-store-order-updated-real.json",
        "order",
        "100",
        "2023-08-11T06:53:14Z",
        None,
        {},
    ),
    (
        "bigcommerce-store-subscriber-created-docs.json",
        "subscriber",
        "5",
        "2019-06-25T17:15:53Z",
        None,
        {},
    ),
]
STORES = {
    "bigcommerce-store-order-statusUpdated-real.json": ("1000941740", "abc123xyz0"),
    "bigcommerce-store-order-updated-real.json": ("1002817942", "abc123xyz1"),
}


def test_fixture_cases_cover_every_bigcommerce_fixture() -> None:
    names = sorted(path.name for path in WEBHOOKS_DIR.glob("bigcommerce-*.json"))
    assert sorted(case[0] for case in FIXTURE_CASES) == names


@pytest.mark.parametrize(
    ("name", "resource_type", "resource_id", "occurred_at", "customer_id", "extra"),
    FIXTURE_CASES,
    ids=[case[0] for case in FIXTURE_CASES],
)
def test_map_notification_values_when_fixture_delivered(
    name: str,
    resource_type: str,
    resource_id: str,
    occurred_at: str,
    customer_id: str | None,
    extra: dict[str, Any],
) -> None:
    payload = load_fixture(name)
    event = map_body(payload)
    store_id, store_hash = STORES.get(name, ("1025646", "{store_hash}"))
    assert event["type"] == "notification"
    assert event["platform"] == "bigcommerce"
    assert event["store_id"] == STORE_ID
    assert event["topic"] == payload["scope"]
    assert event["occurred_at"] == occurred_at
    assert event["customer"] == {"id": customer_id, "email": None}
    assert event["delivery_id"] == (
        f"{payload['scope']}:{payload['hash']}:{payload['created_at']}"
    )
    assert event["data"] == {
        "scope": payload["scope"],
        "resource_type": resource_type,
        "resource_id": resource_id,
        "platform_store_id": store_id,
        "store_hash": store_hash,
        **extra,
    }


def test_map_reads_store_id_when_number() -> None:
    payload = load_fixture("bigcommerce-store-order-created-docs.json")
    payload["store_id"] = 1025646
    assert map_body(payload)["data"]["platform_store_id"] == "1025646"


def test_map_names_customer_when_address_scope() -> None:
    payload = {
        "scope": "store/customer/address/updated",
        "store_id": "1025646",
        "data": {"type": "customer", "id": 60, "address": {"customer_id": 32}},
        "hash": "416ca9c9a9f0bcf2b9b1e6e9e8bd5e8a1f0c7a47",
        "created_at": 1561482670,
        "producer": "stores/abc123",
    }
    event = map_body(payload)
    assert event["customer"] == {"id": "32", "email": None}
    assert event["data"]["resource_type"] == "customer"
    assert event["data"]["resource_id"] == "32"
    assert event["data"]["address_id"] == "60"


def test_map_names_cart_when_line_item_scope() -> None:
    payload = {
        "scope": "store/cart/lineItem/created",
        "store_id": "1025646",
        "data": {
            "type": "cart_line_item",
            "id": "6f1b4a20-0b2f-4bb2-8a7e-2c1f0e0c1111",
            "cartId": "b0386708-fef3-45de-9d8b-fbe3031450a4",
        },
        "hash": "5b0c2ad1d1f1e2a8d0b6f5a8c9e4d3b2a1f0e9d8",
        "created_at": 1561482670,
        "producer": "stores/abc123",
    }
    event = map_body(payload)
    assert event["data"]["resource_type"] == "cart"
    assert event["data"]["resource_id"] == "b0386708-fef3-45de-9d8b-fbe3031450a4"


def test_delivery_id_same_when_delivery_retried() -> None:
    body = json.dumps(
        load_fixture("bigcommerce-store-order-updated-real.json")
    ).encode()
    first = PLATFORM.parse(make_delivery(body))
    retry = PLATFORM.parse(make_delivery(body))
    assert first.delivery_id == retry.delivery_id
    assert first.delivery_id == (
        "store/order/updated:0820c4188e2d7a18938cab934526d12163a3a975:1691736794"
    )


def test_event_id_differs_when_same_resource_changes_later() -> None:
    payload = load_fixture("bigcommerce-store-order-updated-real.json")
    later = copy.deepcopy(payload)
    later["created_at"] = payload["created_at"] + 60
    assert map_body(payload)["id"] != map_body(later)["id"]


def test_parse_uses_body_digest_when_hash_missing() -> None:
    payload = load_fixture("bigcommerce-store-order-created-docs.json")
    del payload["hash"]
    parsed = PLATFORM.parse(make_delivery(json.dumps(payload).encode()))
    assert parsed.delivery_id is not None
    assert parsed.delivery_id.startswith("store/order/created:sha256-")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: p.update(scope="store/product/updated"), "scope"),
        (lambda p: p["data"].pop("id"), "data.id"),
        (lambda p: p["data"].update(id=0), "data.id"),
        (lambda p: p["data"].update(id=2.5), "data.id"),
        (lambda p: p.update(data=[]), "data"),
        (lambda p: p.update(created_at="yesterday"), "created_at"),
        (lambda p: p.update(created_at=10**13), "created_at"),
        (lambda p: p.update(store_id=True), "store_id"),
    ],
)
def test_map_raises_naming_field_when_payload_invalid(change: Any, field: str) -> None:
    payload = load_fixture("bigcommerce-store-order-created-docs.json")
    change(payload)
    delivery = make_delivery(json.dumps(payload).encode())
    with pytest.raises(MappingError) as caught:
        PLATFORM.map(delivery, PLATFORM.parse(delivery))
    assert caught.value.field == field


@pytest.mark.parametrize("body", [b"", b"[]", b"{}", b'{"scope": 5}', b"nope"])
def test_parse_raises_when_body_has_no_scope(body: bytes) -> None:
    with pytest.raises(MappingError):
        PLATFORM.parse(make_delivery(body))


def test_scope_table_lists_every_fixture_scope() -> None:
    for name, *_ in FIXTURE_CASES:
        assert load_fixture(name)["scope"] in SCOPES


# Property tests

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(sorted(SCOPES)),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["scope", "data", "id", "type", "hash", "created_at", "x"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=10,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(payload=JSON_VALUES)
def test_map_raises_only_mapping_error_when_json_random(payload: Any) -> None:
    delivery = make_delivery(json.dumps(payload).encode())
    assert_valid_unless_mapping_error(PLATFORM, delivery)


@settings(max_examples=200)
@given(
    scope=st.sampled_from(sorted(SCOPES)),
    data=st.dictionaries(
        st.sampled_from(["id", "cartId", "address", "orderId"]), JSON_VALUES
    ),
    created_at=JSON_VALUES,
    store_id=JSON_VALUES,
)
def test_map_raises_only_mapping_error_when_fields_random(
    scope: str, data: dict[str, Any], created_at: Any, store_id: Any
) -> None:
    payload = {
        "scope": scope,
        "data": data,
        "created_at": created_at,
        "store_id": store_id,
    }
    delivery = make_delivery(b"{}")
    parsed = ParsedDelivery(topic=scope, delivery_id="key", payload=payload)
    assert_valid_unless_mapping_error(PLATFORM, delivery, parsed)


@settings(max_examples=200)
@given(body=st.binary(max_size=200))
def test_parse_raises_only_mapping_error_when_bytes_random(body: bytes) -> None:
    delivery = make_delivery(body)
    with contextlib.suppress(MappingError):
        PLATFORM.map(delivery, PLATFORM.parse(delivery))


@settings(max_examples=200)
@given(token=st.text(max_size=40), secrets=st.lists(st.text(max_size=40), max_size=3))
def test_verify_raises_only_invalid_signature_when_input_random(
    token: str, secrets: list[str]
) -> None:
    delivery = Delivery(
        store_id=STORE_ID,
        body=b"{}",
        headers={TOKEN_HEADER: token},
        received_at=RECEIVED_AT,
    )
    with contextlib.suppress(InvalidSignatureError):
        PLATFORM.verify(delivery, secrets)


# Hydration: API bodies mapped to canonical events

STORE_HASH = "abc123"
ACCESS_TOKEN = "api-token-1"
CART_ID = "09346904-4175-44fd-be53-f7e598531b6c"

V2_ORDER: dict[str, Any] = {
    "id": 250,
    "customer_id": 32,
    "date_created": "Tue, 25 Jun 2019 16:15:35 +0000",
    "date_modified": "Tue, 25 Jun 2019 17:25:23 +0100",
    "status_id": 11,
    "status": "Awaiting Fulfillment",
    "subtotal_ex_tax": "35.0000",
    "total_ex_tax": "45.0000",
    "total_inc_tax": "48.1500",
    "refunded_amount": "10.0000",
    "currency_code": "USD",
    "payment_status": "captured",
    "is_deleted": False,
    "is_email_opt_in": True,
    "cart_id": "d30016e2-23c0-4a90-884f-2e92ac135476",
    "billing_address": {"email": "Ana.Example@Example.com", "country_iso2": "US"},
    "products": {
        "url": "https://api.example.com/stores/abc123/v2/orders/250/products",
        "resource": "/orders/250/products",
    },
}
V2_PRODUCTS: list[dict[str, Any]] = [
    {
        "id": 101,
        "order_id": 250,
        "product_id": 77,
        "variant_id": 1,
        "name": "Mug",
        "sku": "MUG-1",
        "quantity": 2,
        "price_ex_tax": "10.0000",
        "total_ex_tax": "20.0000",
        "quantity_refunded": 1,
        "refund_amount": "10.0000",
    },
    {
        "id": 102,
        "order_id": 250,
        "product_id": 0,
        "variant_id": 0,
        "name": "Gift wrap",
        "sku": "",
        "quantity": 1,
        "price_ex_tax": "5.0000",
        "total_ex_tax": "5.0000",
        "quantity_refunded": 0,
        "refund_amount": "0.0000",
    },
    {
        "id": 103,
        "order_id": 250,
        "product_id": 88,
        "variant_id": 9,
        "name": "Tea",
        "sku": "TEA",
        "quantity": 1,
        "price_ex_tax": "10.0000",
        "total_ex_tax": "10.0000",
        "quantity_refunded": 0,
        "refund_amount": "0.0000",
    },
]
V3_CUSTOMER: dict[str, Any] = {
    "id": 32,
    "email": "Ana.Example@example.com",
    "first_name": "Ana",
    "last_name": "Example",
    "date_created": "2019-06-25T15:00:00Z",
    "date_modified": "2019-06-25T16:52:51Z",
    "addresses": [{"id": 60, "customer_id": 32, "country_code": "us"}],
}
V3_CART: dict[str, Any] = {
    "id": CART_ID,
    "customer_id": 0,
    "email": "Guest@Example.com",
    "currency": {"code": "USD"},
    "base_amount": 30,
    "discount_amount": 2.5,
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
        "gift_certificates": [],
        "custom_items": [
            {
                "id": "7a2c5b31-1c30-4cc3-9b8f-3d2f1f1d2222",
                "sku": "CUSTOM-1",
                "name": "Engraving",
                "quantity": 1,
                "list_price": 5,
                "extended_list_price": 5,
            }
        ],
    },
}


def test_order_event_values_when_v2_order_mapped() -> None:
    event = order_event_from_api(STORE_ID, V2_ORDER, V2_PRODUCTS, source_id="n-1")
    assert_valid_event(event)
    data = event["data"]
    assert event["type"] == "order"
    assert event["occurred_at"] == "2019-06-25T16:25:23Z"
    assert event["customer"] == {"id": "32", "email": "ana.example@example.com"}

    assert data["order_id"] == "250"
    assert data["created_at"] == "2019-06-25T16:15:35Z"
    assert data["updated_at"] == "2019-06-25T16:25:23Z"
    assert data["currency"] == "USD"
    assert data["total"] == "48.1500"
    assert data["cancelled_at"] is None
    assert data["financial_status"] == "captured"
    assert data["status"] == "Awaiting Fulfillment"
    assert data["checkout_id"] == "d30016e2-23c0-4a90-884f-2e92ac135476"
    assert data["accepts_marketing"] is True

    assert [line["product_id"] for line in data["line_items"]] == [
        "77",
        "title:Gift wrap",
        "88",
    ]
    assert [line["quantity"] for line in data["line_items"]] == [2, 1, 1]
    assert [line["total"] for line in data["line_items"]] == [
        "20.0000",
        "5.0000",
        "10.0000",
    ]
    assert data["line_items"][1]["variant_id"] is None
    assert data["line_items"][1]["sku"] is None

    assert data["refunds"] == [
        {
            "refund_id": "250-refunded",
            "created_at": None,
            "amount": "10.0000",
            "line_items": [
                {
                    "line_item_id": "101",
                    "product_id": "77",
                    "quantity": 1,
                    "amount": "10.0000",
                }
            ],
        }
    ]


@pytest.mark.parametrize(
    ("change", "is_counted"),
    [
        ({"is_deleted": True}, False),
        ({"status_id": 5, "status": "Cancelled"}, False),
        ({"status_id": 6, "status": "Declined"}, False),
        ({"status_id": 0, "status": "Incomplete"}, False),
        ({"status_id": 10, "status": "Completed"}, True),
    ],
)
def test_order_event_cancels_when_not_a_sale(
    change: dict[str, Any], is_counted: bool
) -> None:
    order = {**V2_ORDER, **change}
    event = order_event_from_api(STORE_ID, order, V2_PRODUCTS, source_id="n-1")
    assert_valid_event(event)
    expected = None if is_counted else "2019-06-25T16:25:23Z"
    assert event["data"]["cancelled_at"] == expected


def test_order_event_guest_when_customer_id_zero() -> None:
    order = {**V2_ORDER, "customer_id": 0, "refunded_amount": "0.0000"}
    event = order_event_from_api(STORE_ID, order, [], source_id="n-1")
    assert_valid_event(event)
    assert event["customer"] == {"id": None, "email": "ana.example@example.com"}
    assert event["data"]["refunds"] == []
    assert event["data"]["line_items"] == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"date_created": "not a date"}, "order.date_created"),
        ({"total_inc_tax": "1e999999999"}, "order.total_inc_tax"),
        ({"currency_code": None}, "order.currency_code"),
        ({"id": None}, "order.id"),
    ],
)
def test_order_event_raises_naming_field_when_order_invalid(
    change: dict[str, Any], field: str
) -> None:
    with pytest.raises(MappingError) as caught:
        order_event_from_api(STORE_ID, {**V2_ORDER, **change}, [], source_id="n-1")
    assert caught.value.field == field


def test_customer_event_values_when_v3_customer_mapped() -> None:
    event = customer_event_from_api(STORE_ID, V3_CUSTOMER, source_id="n-2")
    assert_valid_event(event)
    assert event["occurred_at"] == "2019-06-25T16:52:51Z"
    assert event["customer"] == {"id": "32", "email": "ana.example@example.com"}
    assert event["data"] == {
        "customer_id": "32",
        "email": "ana.example@example.com",
        "first_name": "Ana",
        "last_name": "Example",
        "created_at": "2019-06-25T15:00:00Z",
        "updated_at": "2019-06-25T16:52:51Z",
        "tags": [],
        "country": "US",
        "email_consent": None,
    }


def test_checkout_event_values_when_v3_cart_mapped() -> None:
    event = checkout_event_from_api(STORE_ID, V3_CART, source_id="n-3")
    assert_valid_event(event)
    data = event["data"]
    assert event["type"] == "checkout"
    assert event["occurred_at"] == "2019-06-25T17:12:41Z"
    assert event["customer"] == {"id": None, "email": "guest@example.com"}
    assert data["checkout_id"] == CART_ID
    assert data["completed_at"] is None
    assert data["currency"] == "USD"
    assert data["total"] == "27.5"
    assert data["line_items"] == [
        {
            "line_item_id": "6f1b4a20-0b2f-4bb2-8a7e-2c1f0e0c1111",
            "product_id": "77",
            "variant_id": "1",
            "sku": "MUG-1",
            "title": "Mug",
            "quantity": 2,
            "price": "12.5",
            "total": "22.5",
        },
        {
            "line_item_id": "7a2c5b31-1c30-4cc3-9b8f-3d2f1f1d2222",
            "product_id": "sku:CUSTOM-1",
            "variant_id": None,
            "sku": "CUSTOM-1",
            "title": "Engraving",
            "quantity": 1,
            "price": "5",
            "total": "5",
        },
    ]


def test_hydrated_event_id_differs_from_notification_id() -> None:
    first = order_event_from_api(STORE_ID, V2_ORDER, V2_PRODUCTS, source_id="n-1")
    again = order_event_from_api(STORE_ID, V2_ORDER, V2_PRODUCTS, source_id="n-1")
    other = order_event_from_api(STORE_ID, V2_ORDER, V2_PRODUCTS, source_id="n-2")
    assert first["id"] == again["id"]
    assert first["id"] != other["id"]


# The client against a fake BigCommerce API on 127.0.0.1


class FakeBigCommerce:
    """An aiohttp app serving the few BigCommerce endpoints the client calls."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.failures: dict[str, tuple[int, dict[str, str]]] = {}
        self.app = web.Application()
        prefix = f"/stores/{STORE_HASH}"
        self.app.router.add_get(prefix + "/v2/orders/{order_id}", self.order)
        self.app.router.add_get(
            prefix + "/v2/orders/{order_id}/products", self.products
        )
        self.app.router.add_get(prefix + "/v3/customers", self.customers)
        self.app.router.add_get(prefix + "/v3/carts/{cart_id}", self.cart)

    def check(self, request: web.Request) -> web.Response | None:
        """Record the request; return the error response it gets, if any."""
        self.requests.append(request.path_qs)
        if request.headers.get("X-Auth-Token") != ACCESS_TOKEN:
            return web.json_response({"title": "Unauthorized"}, status=401)
        failure = self.failures.get(request.path)
        if failure is not None:
            status, headers = failure
            return web.json_response(
                {"title": "failure"}, status=status, headers=headers
            )
        return None

    async def order(self, request: web.Request) -> web.Response:
        if (failure := self.check(request)) is not None:
            return failure
        if request.match_info["order_id"] not in ("100", "250", "252", "423"):
            raise web.HTTPNotFound()
        return web.json_response(
            {**V2_ORDER, "id": int(request.match_info["order_id"])}
        )

    async def products(self, request: web.Request) -> web.Response:
        if (failure := self.check(request)) is not None:
            return failure
        page = int(request.query["page"])
        limit = int(request.query["limit"])
        batch = V2_PRODUCTS[(page - 1) * limit : page * limit]
        if not batch:
            return web.Response(status=204)
        return web.json_response(batch)

    async def customers(self, request: web.Request) -> web.Response:
        if (failure := self.check(request)) is not None:
            return failure
        assert request.query["include"] == "addresses"
        found = [V3_CUSTOMER] if request.query["id:in"] == "32" else []
        return web.json_response({"data": found, "meta": {}})

    async def cart(self, request: web.Request) -> web.Response:
        if (failure := self.check(request)) is not None:
            return failure
        if request.match_info["cart_id"] != CART_ID:
            raise web.HTTPNotFound()
        return web.json_response({"data": V3_CART})


@pytest.fixture
def fake() -> FakeBigCommerce:
    return FakeBigCommerce()


@pytest.fixture
async def client(fake: FakeBigCommerce) -> AsyncIterator[BigCommerceClient]:
    async with (
        serve_on_loopback(fake.app) as base_url,
        aiohttp.ClientSession() as session,
    ):
        yield BigCommerceClient(
            base_url, STORE_HASH, ACCESS_TOKEN, session, page_limit=2
        )


def notification(name: str) -> Event:
    return map_body(load_fixture(name))


async def test_fetch_order_returns_all_pages_when_products_paginated(
    client: BigCommerceClient, fake: FakeBigCommerce
) -> None:
    resources = await client.fetch_order("250")
    assert resources["order"]["id"] == 250
    assert [product["id"] for product in resources["products"]] == [101, 102, 103]
    assert fake.requests == [
        "/stores/abc123/v2/orders/250",
        "/stores/abc123/v2/orders/250/products?page=1&limit=2",
        "/stores/abc123/v2/orders/250/products?page=2&limit=2",
    ]


async def test_fetch_order_raises_not_retriable_when_order_missing(
    client: BigCommerceClient,
) -> None:
    with pytest.raises(BigCommerceAPIError) as caught:
        await client.fetch_order("999")
    assert caught.value.status == 404
    assert caught.value.retriable is False


@pytest.mark.parametrize("order_id", ["../customers", "250?x=1", "", "abc"])
async def test_fetch_order_raises_when_id_would_change_path(
    client: BigCommerceClient, fake: FakeBigCommerce, order_id: str
) -> None:
    with pytest.raises(BigCommerceAPIError):
        await client.fetch_order(order_id)
    assert fake.requests == []


async def test_fetch_customer_returns_customer_when_found(
    client: BigCommerceClient,
) -> None:
    customer = await client.fetch_customer("32")
    assert customer["id"] == 32
    assert customer["addresses"][0]["country_code"] == "us"


async def test_fetch_customer_raises_not_found_when_list_empty(
    client: BigCommerceClient,
) -> None:
    with pytest.raises(BigCommerceAPIError) as caught:
        await client.fetch_customer("33")
    assert caught.value.status == 404
    assert caught.value.retriable is False


async def test_fetch_cart_returns_cart_when_open(client: BigCommerceClient) -> None:
    cart = await client.fetch_cart(CART_ID)
    assert cart["id"] == CART_ID


@pytest.mark.parametrize(
    ("status", "headers", "retriable", "text"),
    [
        (429, {"X-Rate-Limit-Time-Reset-Ms": "1500"}, True, "retry after 1500 ms"),
        (500, {}, True, "HTTP 500"),
        (503, {}, True, "HTTP 503"),
        (403, {}, False, "access token"),
        (422, {}, False, "HTTP 422"),
    ],
)
async def test_fetch_raises_with_retriable_flag_when_api_fails(
    client: BigCommerceClient,
    fake: FakeBigCommerce,
    status: int,
    headers: dict[str, str],
    retriable: bool,
    text: str,
) -> None:
    fake.failures[f"/stores/{STORE_HASH}/v2/orders/250"] = (status, headers)
    with pytest.raises(BigCommerceAPIError) as caught:
        await client.fetch_order("250")
    assert caught.value.status == status
    assert caught.value.retriable is retriable
    assert text in str(caught.value)


async def test_fetch_raises_not_retriable_when_token_wrong(
    fake: FakeBigCommerce,
) -> None:
    async with (
        serve_on_loopback(fake.app) as base_url,
        aiohttp.ClientSession() as session,
    ):
        client = BigCommerceClient(base_url, STORE_HASH, "wrong-token", session)
        with pytest.raises(BigCommerceAPIError) as caught:
            await client.fetch_cart(CART_ID)
    assert caught.value.status == 401
    assert caught.value.retriable is False
    assert "wrong-token" not in repr(client)
    assert "wrong-token" not in str(caught.value)


async def test_fetch_raises_retriable_when_server_unreachable() -> None:
    async with serve_on_loopback(web.Application()) as base_url:
        pass  # once closed, nothing listens on the port any more
    async with aiohttp.ClientSession() as session:
        client = BigCommerceClient(base_url, STORE_HASH, ACCESS_TOKEN, session)
        with pytest.raises(BigCommerceAPIError) as caught:
            await client.fetch_order("250")
    assert caught.value.retriable is True
    assert caught.value.status is None


def test_client_rejects_store_hash_when_not_alphanumeric() -> None:
    with pytest.raises(ValueError):
        BigCommerceClient("http://127.0.0.1:1", "abc/../x", ACCESS_TOKEN, None)  # type: ignore[arg-type]


async def test_hydrate_returns_order_when_order_notification(
    client: BigCommerceClient,
) -> None:
    note = notification("bigcommerce-store-order-refund-created-docs.json")
    events = await hydrate(client, note)
    assert len(events) == 1
    assert_valid_event(events[0])
    assert events[0]["type"] == "order"
    assert events[0]["data"]["order_id"] == "250"
    assert events[0]["topic"] == "store/order/refund/created"
    assert events[0]["delivery_id"] == note["delivery_id"]
    assert events[0]["id"] != note["id"]


async def test_hydrate_fetches_order_when_cart_converted(
    client: BigCommerceClient, fake: FakeBigCommerce
) -> None:
    events = await hydrate(
        client, notification("bigcommerce-store-cart-converted-docs.json")
    )
    assert [event["type"] for event in events] == ["order"]
    assert events[0]["data"]["order_id"] == "252"
    assert events[0]["data"]["checkout_id"] == "d30016e2-23c0-4a90-884f-2e92ac135476"
    assert fake.requests[0] == "/stores/abc123/v2/orders/252"


async def test_hydrate_returns_checkout_when_cart_created(
    client: BigCommerceClient,
) -> None:
    events = await hydrate(
        client, notification("bigcommerce-store-cart-created-docs.json")
    )
    assert [event["type"] for event in events] == ["checkout"]
    assert_valid_event(events[0])
    assert events[0]["data"]["checkout_id"] == CART_ID


async def test_hydrate_returns_nothing_when_cart_gone(
    client: BigCommerceClient,
) -> None:
    payload = load_fixture("bigcommerce-store-cart-created-docs.json")
    payload["data"]["id"] = "00000000-0000-0000-0000-000000000000"
    assert await hydrate(client, map_body(payload)) == []


async def test_hydrate_returns_customer_when_customer_created(
    client: BigCommerceClient,
) -> None:
    events = await hydrate(
        client, notification("bigcommerce-store-customer-created-docs.json")
    )
    assert [event["type"] for event in events] == ["customer"]
    assert events[0]["customer"] == {"id": "32", "email": "ana.example@example.com"}


async def test_hydrate_fetches_nothing_when_subscriber_or_deleted(
    client: BigCommerceClient, fake: FakeBigCommerce
) -> None:
    subscriber = notification("bigcommerce-store-subscriber-created-docs.json")
    assert await hydrate(client, subscriber) == []
    deleted = load_fixture("bigcommerce-store-customer-created-docs.json")
    deleted["scope"] = "store/customer/deleted"
    assert await hydrate(client, map_body(deleted)) == []
    assert fake.requests == []


def iter_fixture_notifications() -> Iterator[Event]:
    for name, *_ in FIXTURE_CASES:
        yield notification(name)


async def test_hydrate_maps_valid_events_when_every_fixture_hydrated(
    client: BigCommerceClient,
) -> None:
    for note in iter_fixture_notifications():
        for event in await hydrate(client, note):
            assert_valid_event(event)
