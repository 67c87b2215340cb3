"""WooCommerce webhooks: signatures, the creation ping, delivery ids and mapping."""

from __future__ import annotations

import contextlib
import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from cartstream.errors import InvalidSignatureError, MappingError
from cartstream.events import Event
from handlers.platforms.base import Delivery, ParsedDelivery
from handlers.platforms.woocommerce import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    SUPPORTED_TOPICS,
    TOPIC_HEADER,
    WooCommercePlatform,
)
from tests.handlers.receiver_support import hmac_base64, woo_headers
from tests.handlers.support import (
    assert_valid_event,
    assert_valid_unless_mapping_error,
    assert_vector_outcome,
    json_paths,
    signature_vectors,
)
from tests.helpers import WEBHOOKS_DIR, load_fixture

PLATFORM = WooCommercePlatform()
STORE_ID = "woo-store-1"
SECRET = "test-secret"
RECEIVED_AT = datetime(2025, 2, 1, 12, 0, tzinfo=UTC)


def make_delivery(
    body: bytes, headers: dict[str, Any], received_at: datetime = RECEIVED_AT
) -> Delivery:
    proxy = CIMultiDictProxy(CIMultiDict({k: str(v) for k, v in headers.items()}))
    return Delivery(
        store_id=STORE_ID, body=body, headers=proxy, received_at=received_at
    )


def signed_delivery(
    topic: str, payload: object, delivery_header: str = "d1e2f3"
) -> Delivery:
    body = json.dumps(payload).encode()
    headers = woo_headers(body, SECRET, topic)
    headers[DELIVERY_ID_HEADER] = delivery_header
    return make_delivery(body, headers)


def map_payload(
    topic: str, payload: object, delivery_header: str = "d1e2f3"
) -> list[Event]:
    delivery = signed_delivery(topic, payload, delivery_header)
    PLATFORM.verify(delivery, [SECRET])
    events = PLATFORM.map(delivery, PLATFORM.parse(delivery))
    for event in events:
        assert_valid_event(event)
    return events


def map_single(topic: str, payload: object) -> Event:
    events = map_payload(topic, payload)
    assert len(events) == 1
    return events[0]


# Signatures


WOO_VECTORS = signature_vectors("woocommerce-hmac-sha256-base64")


def test_vectors_include_woocommerce_when_loaded() -> None:
    assert len(WOO_VECTORS) >= 1


@pytest.mark.parametrize("vector", WOO_VECTORS, ids=lambda vector: vector["id"])
def test_verify_matches_label_when_vector_checked(vector: dict[str, Any]) -> None:
    delivery = make_delivery(vector["body"].encode(), vector["headers"])
    assert_vector_outcome(PLATFORM, delivery, vector)


def test_verify_rejects_vector_when_body_reserialized() -> None:
    vector = WOO_VECTORS[0]
    body = json.dumps(json.loads(vector["body"])).encode()  # adds spaces
    with pytest.raises(InvalidSignatureError):
        PLATFORM.verify(make_delivery(body, vector["headers"]), [vector["secret"]])


def test_verify_passes_when_second_secret_matches() -> None:
    delivery = signed_delivery(
        "order.created", load_fixture("woocommerce-order-created-docs-v3.json")
    )
    PLATFORM.verify(delivery, ["old-secret", "", SECRET])


def test_verify_rejects_when_no_secret_matches() -> None:
    delivery = signed_delivery("order.created", {"id": 1})
    with pytest.raises(InvalidSignatureError):
        PLATFORM.verify(delivery, ["old-secret", "other-secret"])


def test_verify_rejects_when_secret_list_empty() -> None:
    delivery = signed_delivery("order.created", {"id": 1})
    with pytest.raises(InvalidSignatureError):
        PLATFORM.verify(delivery, [])


def test_verify_rejects_when_signed_with_empty_secret() -> None:
    body = b'{"id": 1}'
    delivery = make_delivery(
        body, {TOPIC_HEADER: "order.created", SIGNATURE_HEADER: hmac_base64(body, "")}
    )
    with pytest.raises(InvalidSignatureError):
        PLATFORM.verify(delivery, [""])


@pytest.mark.parametrize("header", [None, "", "not base64!", "c2lnbmF0dXJl"])
def test_verify_rejects_when_signature_header_invalid(header: str | None) -> None:
    headers = {TOPIC_HEADER: "order.created"}
    if header is not None:
        headers[SIGNATURE_HEADER] = header
    with pytest.raises(InvalidSignatureError):
        PLATFORM.verify(make_delivery(b'{"id": 1}', headers), [SECRET])


# The creation ping


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"webhook_id=535", "application/x-www-form-urlencoded"),
        (b"webhook_id=7", ""),
        (b"webhook_id=12\n", "text/plain"),
    ],
)
def test_is_ping_true_when_body_is_form(body: bytes, content_type: str) -> None:
    assert PLATFORM.is_ping(make_delivery(body, {"Content-Type": content_type}))


@pytest.mark.parametrize(
    "body",
    [
        b'{"webhook_id": 535}',
        b"webhook_id=",
        b"webhook_id=5&x=1",
        b"webhook_id=abc",
        b"",
    ],
)
def test_is_ping_false_when_body_is_anything_else(body: bytes) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    assert not PLATFORM.is_ping(make_delivery(body, headers))


def test_map_returns_nothing_when_delivery_is_ping() -> None:
    delivery = make_delivery(b"webhook_id=535", {})
    parsed = PLATFORM.parse(delivery)
    assert parsed.topic == "ping"
    assert parsed.payload == {"webhook_id": "535"}
    assert PLATFORM.map(delivery, parsed) == []


# Parsing and delivery ids


def test_parse_raises_when_topic_header_missing() -> None:
    delivery = make_delivery(b'{"id": 1}', {})
    with pytest.raises(MappingError) as caught:
        PLATFORM.parse(delivery)
    assert caught.value.field == TOPIC_HEADER


def test_parse_raises_when_topic_unsupported() -> None:
    vector = WOO_VECTORS[0]  # topic action.woocommerce_add_to_cart
    with pytest.raises(MappingError) as caught:
        PLATFORM.parse(make_delivery(vector["body"].encode(), vector["headers"]))
    assert caught.value.field == TOPIC_HEADER


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"text"', b""])
def test_parse_raises_when_body_not_json_object(body: bytes) -> None:
    with pytest.raises(MappingError) as caught:
        PLATFORM.parse(make_delivery(body, {TOPIC_HEADER: "order.updated"}))
    assert caught.value.field == "body"


def test_event_id_same_when_same_state_sent_twice() -> None:
    """WooCommerce's delivery id header is new per send, so the body decides."""
    payload = load_fixture("woocommerce-order-updated-docs-v3.json")
    first = map_single("order.updated", payload)
    second = map_payload("order.updated", payload, delivery_header="other-header")[0]
    assert first["id"] == second["id"]
    assert first["delivery_id"] == "d1e2f3"
    assert second["delivery_id"] == "other-header"


def test_event_id_differs_when_state_differs() -> None:
    payload = load_fixture("woocommerce-order-updated-docs-v3.json")
    changed = copy.deepcopy(payload)
    changed["status"] = "on-hold"  # same date_modified_gmt, different state
    assert (
        map_single("order.updated", payload)["id"]
        != map_single("order.updated", changed)["id"]
    )


def test_event_id_differs_when_order_deleted_again() -> None:
    """A trash, restore, trash sequence sends the same ``{"id": N}`` body twice."""
    first = map_payload("order.deleted", {"id": 727}, delivery_header="hash-a")[0]
    second = map_payload("order.deleted", {"id": 727}, delivery_header="hash-b")[0]
    assert first["id"] != second["id"]


# Orders from the fixtures


LINES_727 = [
    {
        "line_item_id": "315",
        "product_id": "93",
        "variant_id": None,
        "sku": None,
        "title": "Woo Single #1",
        "quantity": 2,
        "price": "3",
        "total": "6.00",
    },
    {
        "line_item_id": "316",
        "product_id": "22",
        "variant_id": "23",
        "sku": "Bar3",
        "title": "Ship Your Idea \u2013 Color: Black, Size: M Test",
        "quantity": 1,
        "price": "12",
        "total": "12.00",
    },
]


def test_map_order_values_when_docs_order_created() -> None:
    event = map_single(
        "order.created", load_fixture("woocommerce-order-created-docs-v3.json")
    )
    data = event["data"]
    assert event["type"] == "order"
    assert event["platform"] == "woocommerce"
    assert event["store_id"] == STORE_ID
    assert event["topic"] == "order.created"
    assert event["occurred_at"] == "2017-03-22T19:28:08Z"
    # A guest: customer_id 0 and the billing email.
    assert event["customer"] == {"id": None, "email": "john.doe@example.com"}
    assert data["order_id"] == "727"
    assert data["name"] == "727"
    assert data["created_at"] == "2017-03-22T19:28:02Z"
    assert data["updated_at"] == "2017-03-22T19:28:08Z"
    assert data["currency"] == "USD"
    assert data["total"] == "29.35"
    assert data["status"] == "processing"
    assert data["is_test"] is False
    assert data["cancelled_at"] is None
    assert data["accepts_marketing"] is None
    assert data["line_items"] == LINES_727
    assert sum(line["quantity"] for line in data["line_items"]) == 3
    assert data["refunds"] == []


def test_map_order_values_when_docs_order_updated() -> None:
    event = map_single(
        "order.updated", load_fixture("woocommerce-order-updated-docs-v3.json")
    )
    data = event["data"]
    assert event["occurred_at"] == "2017-03-22T19:30:35Z"
    assert event["customer"] == {"id": None, "email": "john.doe@example.com"}
    assert data["order_id"] == "727"
    assert data["status"] == "completed"
    assert data["created_at"] == "2017-03-22T19:28:02Z"
    assert data["updated_at"] == "2017-03-22T19:30:35Z"
    assert data["total"] == "29.35"
    assert data["cancelled_at"] is None
    assert data["line_items"] == LINES_727
    assert data["refunds"] == []


def test_map_order_values_when_stripe_float_price() -> None:
    event = map_single(
        "order.created",
        load_fixture("woocommerce-order-created-stripe-float-price.json"),
    )
    data = event["data"]
    assert event["occurred_at"] == "2021-09-06T18:05:12Z"
    assert event["customer"] == {"id": "1", "email": "ana.example@example.com"}
    assert data["order_id"] == "897"
    assert data["name"] == "897"
    assert data["created_at"] == "2021-09-06T18:05:09Z"
    assert data["currency"] == "USD"
    assert data["total"] == "28.44"
    assert data["cancelled_at"] is None
    assert data["line_items"] == [
        {
            "line_item_id": "58",
            "product_id": "753",
            "variant_id": None,
            "sku": None,
            "title": "Rhapsody of Realities- A Topical Compendium volume 5",
            "quantity": 1,
            "price": "14.99",
            "total": "14.99",
        }
    ]
    assert data["refunds"] == []


# Orders built from the fixtures


def test_map_refunds_positive_when_refund_totals_negative() -> None:
    payload = load_fixture("woocommerce-order-updated-docs-v3.json")
    payload["status"] = "refunded"
    payload["refunds"] = [
        {"id": 726, "reason": "", "total": "-10.00"},
        {"id": 730, "reason": "Damaged", "total": "-2.500"},
    ]
    data = map_single("order.updated", payload)["data"]
    assert data["refunds"] == [
        {"refund_id": "726", "created_at": None, "amount": "10.00", "line_items": []},
        {"refund_id": "730", "created_at": None, "amount": "2.500", "line_items": []},
    ]
    assert data["total"] == "29.35"
    assert data["cancelled_at"] is None


def test_map_keeps_three_decimals_when_store_uses_them() -> None:
    payload = load_fixture("woocommerce-order-created-docs-v3.json")
    payload["total"] = "29.350"
    payload["line_items"][0]["price"] = 3.125
    payload["line_items"][0]["total"] = "6.250"
    data = map_single("order.created", payload)["data"]
    assert data["total"] == "29.350"
    assert data["line_items"][0]["price"] == "3.125"
    assert data["line_items"][0]["total"] == "6.250"


@pytest.mark.parametrize("status", ["cancelled", "failed", "trash"])
def test_map_cancels_when_status_not_a_sale(status: str) -> None:
    payload = load_fixture("woocommerce-order-updated-docs-v3.json")
    payload["status"] = status
    data = map_single("order.updated", payload)["data"]
    assert data["cancelled_at"] == "2017-03-22T19:30:35Z"
    assert data["status"] == status


def test_map_order_when_restored_from_trash() -> None:
    event = map_single(
        "order.restored", load_fixture("woocommerce-order-updated-docs-v3.json")
    )
    assert event["type"] == "order"
    assert event["data"]["cancelled_at"] is None


def test_map_notification_when_order_deleted() -> None:
    event = map_single("order.deleted", {"id": 727})
    assert event["type"] == "notification"
    assert event["data"] == {
        "scope": "order.deleted",
        "resource_type": "order",
        "resource_id": "727",
    }
    assert event["customer"] == {"id": None, "email": None}
    assert event["occurred_at"] == "2025-02-01T12:00:00Z"
    assert event["delivery_id"] == "d1e2f3"


def test_map_keys_product_when_id_zero() -> None:
    payload = load_fixture("woocommerce-order-created-docs-v3.json")
    payload["line_items"][0]["product_id"] = 0
    payload["line_items"][1]["product_id"] = 0
    payload["line_items"][1]["sku"] = ""
    lines = map_single("order.created", payload)["data"]["line_items"]
    assert lines[0]["product_id"] == "title:Woo Single #1"
    assert (
        lines[1]["product_id"]
        == "title:Ship Your Idea \u2013 Color: Black, Size: M Test"
    )
    payload["line_items"][0]["sku"] = "WOO-1"
    lines = map_single("order.created", payload)["data"]["line_items"]
    assert lines[0]["product_id"] == "sku:WOO-1"


def test_map_reads_local_time_when_gmt_missing() -> None:
    payload = load_fixture("woocommerce-order-created-docs-v3.json")
    del payload["date_created_gmt"]
    del payload["date_modified_gmt"]
    data = map_single("order.created", payload)["data"]
    assert data["created_at"] == "2017-03-22T16:28:02Z"
    assert data["updated_at"] == "2017-03-22T16:28:08Z"


# Legacy wrapped bodies (WooCommerce's wc-api/v3 response shapes)

LEGACY_ORDER: dict[str, Any] = {
    "order": {
        "id": 645,
        "order_number": 645,
        "created_at": "2015-01-26T20:00:21Z",
        "updated_at": "2015-01-26T20:05:00Z",
        "completed_at": "2015-01-26T20:00:21Z",
        "status": "processing",
        "currency": "USD",
        "total": "79.87",
        "subtotal": "63.97",
        "total_line_items_quantity": 3,
        "billing_address": {"email": "John.Doe@Example.com", "country": "US"},
        "customer_id": 2,
        "line_items": [
            {
                "id": 504,
                "subtotal": "43.98",
                "total": "43.98",
                "price": "21.99",
                "quantity": 2,
                "name": "Premium Quality",
                "product_id": 546,
                "sku": "",
                "meta": [],
            },
            {
                "id": 505,
                "subtotal": "19.99",
                "total": "19.99",
                "price": "19.99",
                "quantity": 1,
                "name": "Ship Your Idea",
                "product_id": 613,
                "sku": "",
                "meta": [{"key": "pa_color", "label": "Color", "value": "Black"}],
            },
        ],
        "customer": {"id": 2, "email": "john.doe@example.com"},
    }
}


def test_map_order_values_when_legacy_wrapped_order() -> None:
    event = map_single("order.created", LEGACY_ORDER)
    data = event["data"]
    assert event["occurred_at"] == "2015-01-26T20:05:00Z"
    assert event["customer"] == {"id": "2", "email": "john.doe@example.com"}
    assert data["order_id"] == "645"
    assert data["name"] == "645"
    assert data["created_at"] == "2015-01-26T20:00:21Z"
    assert data["total"] == "79.87"
    assert data["currency"] == "USD"
    assert data["refunds"] == []
    assert [line["product_id"] for line in data["line_items"]] == ["546", "613"]
    assert [line["quantity"] for line in data["line_items"]] == [2, 1]
    assert [line["price"] for line in data["line_items"]] == ["21.99", "19.99"]
    assert [line["total"] for line in data["line_items"]] == ["43.98", "19.99"]


def test_map_customer_values_when_legacy_wrapped_customer() -> None:
    payload = {
        "customer": {
            "id": 2,
            "created_at": "2015-01-05T18:34:19Z",
            "email": "john.doe@example.com",
            "first_name": "John",
            "last_name": "",
            "username": "john.doe",
            "billing_address": {"country": "us"},
        }
    }
    event = map_single("customer.updated", payload)
    data = event["data"]
    assert event["customer"] == {"id": "2", "email": "john.doe@example.com"}
    assert data["customer_id"] == "2"
    assert data["first_name"] == "John"
    assert data["last_name"] is None
    assert data["country"] == "US"
    assert data["created_at"] == "2015-01-05T18:34:19Z"
    # No modification time in the body: dated when received.
    assert data["updated_at"] == "2025-02-01T12:00:00Z"


# Customers from the fixtures


def test_map_customer_values_when_docs_customer_created() -> None:
    event = map_single(
        "customer.created", load_fixture("woocommerce-customer-created-docs-v3.json")
    )
    assert event["type"] == "customer"
    assert event["occurred_at"] == "2017-03-21T19:09:30Z"
    assert event["customer"] == {"id": "25", "email": "john.doe@example.com"}
    assert event["data"] == {
        "customer_id": "25",
        "email": "john.doe@example.com",
        "first_name": "Ana",
        "last_name": "Example",
        "created_at": "2017-03-21T19:09:28Z",
        "updated_at": "2017-03-21T19:09:30Z",
        "tags": [],
        "country": "US",
        "email_consent": None,
    }


def test_map_customer_values_when_docs_customer_updated() -> None:
    event = map_single(
        "customer.updated", load_fixture("woocommerce-customer-updated-docs-v3.json")
    )
    assert event["occurred_at"] == "2017-03-21T19:12:28Z"
    assert event["customer"] == {"id": "25", "email": "john.doe@example.com"}
    assert event["data"]["updated_at"] == "2017-03-21T19:12:28Z"
    assert event["data"]["created_at"] == "2017-03-21T19:09:28Z"
    assert event["data"]["country"] == "US"
    assert event["data"]["email_consent"] is None


def test_map_customer_values_when_administrator_role() -> None:
    payload = load_fixture("woocommerce-customer-updated-administrator-role.json")
    event = map_single("customer.updated", payload)
    assert event["customer"] == {"id": "1", "email": "ana.example@example.com"}
    assert event["data"] == {
        "customer_id": "1",
        "email": "ana.example@example.com",
        "first_name": "Ben",
        "last_name": "Example",
        "created_at": "2023-07-05T14:13:10Z",
        "updated_at": "2023-07-06T14:58:43Z",
        "tags": [],
        "country": "CO",
        "email_consent": None,
    }


# Errors name the field


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: p.pop("id"), "id"),
        (lambda p: p.pop("currency"), "currency"),
        (lambda p: p.update(total="1e999999999"), "total"),
        (lambda p: p.update(total="abc"), "total"),
        (lambda p: p["line_items"][1].update(quantity=-1), "line_items[1].quantity"),
        (lambda p: p["line_items"][0].update(price=None), "line_items[0].price"),
        (lambda p: p["line_items"][0].pop("name"), "line_items[0].name"),
        (
            lambda p: p.update(date_modified_gmt="0001-01-01T00:00:00+01:00"),
            "date_modified_gmt",
        ),
        (lambda p: p.update(refunds=[{"id": 1, "total": None}]), "refunds[0].total"),
        (lambda p: p.update(customer_id=1.5), "customer_id"),
    ],
)
def test_map_raises_naming_field_when_order_invalid(change: Any, field: str) -> None:
    payload = load_fixture("woocommerce-order-created-docs-v3.json")
    change(payload)
    with pytest.raises(MappingError) as caught:
        map_payload("order.created", payload)
    assert caught.value.field == field


def test_map_raises_when_deleted_order_has_no_id() -> None:
    with pytest.raises(MappingError) as caught:
        map_payload("order.deleted", {"order": 1})
    assert caught.value.field == "id"


# Property tests: only MappingError from parse and map, only InvalidSignatureError
# from verify.

SPECIAL_TEXT = st.sampled_from(
    [
        "",
        "0",
        "-10.00",
        "1e999999999",
        "NaN",
        "Infinity",
        "2017-03-22T19:28:02",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "webhook_id=5",
    ]
)
JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | SPECIAL_TEXT
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
FIXTURES = sorted(path.name for path in WEBHOOKS_DIR.glob("woocommerce-*.json"))


@st.composite
def mutated_payloads(draw: st.DrawFn) -> tuple[str, Any]:
    name = draw(st.sampled_from(FIXTURES))
    kind = "order" if "-order-" in name else "customer"
    payload: Any = load_fixture(name)
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        payload = {kind: payload}  # the legacy wrapper, with modern field names
    paths = list(json_paths(payload))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(paths))
        parent = payload
        try:
            for key in path[:-1]:
                parent = parent[key]
            if draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(JSON_VALUES)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
    # Mostly a topic that fits the fixture, so mutations reach the field readers.
    fitting = sorted(topic for topic in SUPPORTED_TOPICS if topic.startswith(kind))
    topic = draw(st.sampled_from(fitting) | st.sampled_from(sorted(SUPPORTED_TOPICS)))
    return topic, payload


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_payloads())
def test_map_raises_only_mapping_error_when_payload_mutated(
    case: tuple[str, Any],
) -> None:
    topic, payload = case
    delivery = signed_delivery(topic, payload)
    parsed = ParsedDelivery(topic=topic, delivery_id="key", payload=payload)
    assert_valid_unless_mapping_error(PLATFORM, delivery, parsed)


@settings(max_examples=200)
@given(body=st.binary(max_size=200), topic=st.sampled_from([*SUPPORTED_TOPICS, "x"]))
def test_parse_raises_only_mapping_error_when_body_random(
    body: bytes, topic: str
) -> None:
    delivery = make_delivery(body, {TOPIC_HEADER: topic})
    try:
        parsed = PLATFORM.parse(delivery)
        PLATFORM.map(delivery, parsed)
    except MappingError:
        pass


@settings(max_examples=200)
@given(payload=JSON_VALUES, topic=st.sampled_from(sorted(SUPPORTED_TOPICS)))
def test_map_raises_only_mapping_error_when_json_random(
    payload: Any, topic: str
) -> None:
    delivery = signed_delivery(topic, payload)
    with contextlib.suppress(MappingError):
        PLATFORM.map(delivery, PLATFORM.parse(delivery))


@settings(max_examples=200)
@given(
    body=st.binary(max_size=100),
    signature=st.text(max_size=60),
    secrets=st.lists(st.text(max_size=20), max_size=3),
)
def test_verify_raises_only_invalid_signature_when_input_random(
    body: bytes, signature: str, secrets: list[str]
) -> None:
    delivery = Delivery(
        store_id=STORE_ID,
        body=body,
        headers={SIGNATURE_HEADER: signature},
        received_at=RECEIVED_AT,
    )
    with contextlib.suppress(InvalidSignatureError):
        PLATFORM.verify(delivery, secrets)
