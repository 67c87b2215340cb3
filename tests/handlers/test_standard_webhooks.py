"""Standard Webhooks: signature vectors, the time tolerance, and canonical payloads."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from standardwebhooks.webhooks import Webhook

from cartstream.errors import InvalidSignatureError, MappingError
from cartstream.events import Event
from handlers.platforms.base import Delivery, ParsedDelivery
from handlers.platforms.standard import (
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    StandardWebhooksPlatform,
)
from tests.handlers.support import (
    assert_valid_event,
    assert_valid_unless_mapping_error,
    assert_vector_outcome,
    signature_vectors,
)

VECTORS = signature_vectors("standard-webhooks-v1")

PLATFORM = StandardWebhooksPlatform()
STORE_ID = "std-store-1"
SECRET = "whsec_" + base64.b64encode(b"cartstream-test-signing-key-0001").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"another-signing-key-of-32-bytes!").decode()
NOW = datetime(2025, 2, 1, 12, 0, tzinfo=UTC)
MESSAGE_ID = "msg_2mGkDq0Xl3rQ9aB7"


def make_delivery(
    body: bytes, headers: dict[str, str], received_at: datetime = NOW
) -> Delivery:
    proxy = CIMultiDictProxy(CIMultiDict(headers))
    return Delivery(
        store_id=STORE_ID, body=body, headers=proxy, received_at=received_at
    )


def signed_delivery(
    payload: object,
    *,
    secret: str = SECRET,
    sent_at: datetime = NOW,
    received_at: datetime = NOW,
    message_id: str = MESSAGE_ID,
) -> Delivery:
    """Sign with the reference ``standardwebhooks`` library, independent of our code."""
    body = json.dumps(payload).encode()
    signature = Webhook(secret).sign(message_id, sent_at, body)
    headers = {
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(int(sent_at.timestamp())),
        SIGNATURE_HEADER: signature,
    }
    return make_delivery(body, headers, received_at)


def map_payload(payload: object) -> Event:
    delivery = signed_delivery(payload)
    PLATFORM.verify(delivery, [SECRET])
    events = PLATFORM.map(delivery, PLATFORM.parse(delivery))
    assert len(events) == 1
    assert_valid_event(events[0])
    return events[0]


def mapping_error(payload: object) -> MappingError:
    delivery = signed_delivery(payload)
    with pytest.raises(MappingError) as caught:
        PLATFORM.map(delivery, PLATFORM.parse(delivery))
    return caught.value


# Signature vectors, with the clock fixed at the vector's timestamp


def test_vectors_cover_both_outcomes_when_loaded() -> None:
    assert {vector["headers_should_verify"] for vector in VECTORS} == {True, False}


@pytest.mark.parametrize("vector", VECTORS, ids=lambda vector: vector["id"])
def test_verify_matches_label_when_vector_checked(vector: dict[str, Any]) -> None:
    sent_at = datetime.fromtimestamp(int(vector["headers"]["webhook-timestamp"]), UTC)
    delivery = make_delivery(vector["body"].encode(), vector["headers"], sent_at)
    assert_vector_outcome(PLATFORM, delivery, vector)


def test_verify_rejects_vector_when_clock_not_fixed() -> None:
    vector = VECTORS[0]
    delivery = make_delivery(vector["body"].encode(), vector["headers"], NOW)
    with pytest.raises(InvalidSignatureError, match="old"):
        PLATFORM.verify(delivery, [vector["secret"]])


def test_verify_passes_vector_when_secret_has_no_prefix() -> None:
    vector = VECTORS[0]
    sent_at = datetime.fromtimestamp(int(vector["headers"]["webhook-timestamp"]), UTC)
    delivery = make_delivery(vector["body"].encode(), vector["headers"], sent_at)
    PLATFORM.verify(delivery, [vector["secret"].removeprefix("whsec_")])


# Time tolerance


@pytest.mark.parametrize("offset_s", [-300, 0, 300])
def test_verify_passes_when_timestamp_within_tolerance(offset_s: int) -> None:
    delivery = signed_delivery({}, sent_at=NOW - timedelta(seconds=offset_s))
    PLATFORM.verify(delivery, [SECRET])


@pytest.mark.parametrize(("offset_s", "word"), [(301, "old"), (-301, "future")])
def test_verify_rejects_when_timestamp_outside_tolerance(
    offset_s: int, word: str
) -> None:
    delivery = signed_delivery({}, sent_at=NOW - timedelta(seconds=offset_s))
    with pytest.raises(InvalidSignatureError, match=word):
        PLATFORM.verify(delivery, [SECRET])


def test_verify_uses_configured_tolerance_when_given() -> None:
    platform = StandardWebhooksPlatform(tolerance_s=10)
    platform.verify(signed_delivery({}, sent_at=NOW - timedelta(seconds=10)), [SECRET])
    with pytest.raises(InvalidSignatureError):
        platform.verify(
            signed_delivery({}, sent_at=NOW - timedelta(seconds=11)), [SECRET]
        )


def test_verify_treats_naive_received_at_as_utc() -> None:
    delivery = signed_delivery({}, received_at=NOW.replace(tzinfo=None))
    PLATFORM.verify(delivery, [SECRET])


def test_platform_rejects_negative_tolerance() -> None:
    with pytest.raises(ValueError):
        StandardWebhooksPlatform(tolerance_s=-1)


# Secrets and headers


def test_verify_passes_when_second_secret_matches() -> None:
    PLATFORM.verify(signed_delivery({}), [OTHER_SECRET, SECRET])


def test_verify_rejects_when_no_secret_matches() -> None:
    with pytest.raises(InvalidSignatureError):
        PLATFORM.verify(signed_delivery({}), [OTHER_SECRET])


def test_verify_skips_secret_when_not_base64() -> None:
    PLATFORM.verify(signed_delivery({}), ["whsec_not base64!", "", "whsec_", SECRET])
    with pytest.raises(InvalidSignatureError):
        PLATFORM.verify(signed_delivery({}), ["whsec_not base64!"])


def test_verify_passes_when_secret_base64_unpadded() -> None:
    key = b"sixteen byte key!"  # 17 bytes, so its base64 form ends in padding
    padded = "whsec_" + base64.b64encode(key).decode()
    delivery = signed_delivery({}, secret=padded)
    PLATFORM.verify(delivery, [padded.rstrip("=")])


def test_verify_passes_when_one_of_several_signatures_matches() -> None:
    delivery = signed_delivery({})
    good = delivery.headers[SIGNATURE_HEADER]
    headers = dict(delivery.headers)
    headers[SIGNATURE_HEADER] = f"v1,AAAA v2,{good[3:]} v1,bad!! {good}"
    PLATFORM.verify(make_delivery(delivery.body, headers), [SECRET])


def test_verify_rejects_when_only_other_versions_present() -> None:
    delivery = signed_delivery({})
    headers = dict(delivery.headers)
    headers[SIGNATURE_HEADER] = "v2," + headers[SIGNATURE_HEADER][3:]
    with pytest.raises(InvalidSignatureError):
        PLATFORM.verify(make_delivery(delivery.body, headers), [SECRET])


def test_verify_rejects_when_body_changed() -> None:
    delivery = signed_delivery({"type": "order.updated"})
    tampered = make_delivery(delivery.body + b" ", dict(delivery.headers))
    with pytest.raises(InvalidSignatureError):
        PLATFORM.verify(tampered, [SECRET])


@pytest.mark.parametrize("missing", [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER])
def test_verify_rejects_when_header_missing(missing: str) -> None:
    headers = dict(signed_delivery({}).headers)
    del headers[missing]
    with pytest.raises(InvalidSignatureError):
        PLATFORM.verify(make_delivery(b"{}", headers), [SECRET])


@pytest.mark.parametrize(
    "timestamp", ["1738411200.5", "-1738411200", "soon", "\u0661\u0662"]
)
def test_verify_rejects_when_timestamp_malformed(timestamp: str) -> None:
    headers = dict(signed_delivery({}).headers)
    headers[TIMESTAMP_HEADER] = timestamp
    with pytest.raises(InvalidSignatureError, match="malformed"):
        PLATFORM.verify(make_delivery(b"{}", headers), [SECRET])


# Mapping canonical payloads

CUSTOMER = {"id": "cust-7", "email": " Ana.Example@Example.COM "}

ORDER_DATA: dict[str, Any] = {
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
    "refunds": [
        {
            "refund_id": "r-1",
            "created_at": "2025-01-31T11:00:00Z",
            "amount": "10.00",
            "line_items": [],
        }
    ],
    "customer": CUSTOMER,
}


def test_map_order_values_when_order_updated() -> None:
    event = map_payload(
        {
            "type": "order.updated",
            "timestamp": "2025-02-01T11:59:00Z",
            "data": ORDER_DATA,
        }
    )
    assert event["type"] == "order"
    assert event["platform"] == "standard"
    assert event["topic"] == "order.updated"
    assert event["delivery_id"] == MESSAGE_ID
    assert event["store_id"] == STORE_ID
    assert event["customer"] == {"id": "cust-7", "email": "ana.example@example.com"}
    # Snapshots are dated by their updated_at, converted to UTC.
    assert event["occurred_at"] == "2025-01-31T09:05:00Z"
    data = event["data"]
    assert "customer" not in data
    assert data["created_at"] == "2025-01-31T09:00:00Z"
    assert data["total"] == "59.90"
    assert data["line_items"][0]["quantity"] == 2
    assert data["refunds"][0]["amount"] == "10.00"


def test_map_dates_refund_when_refund_created() -> None:
    data = {
        "order_id": "5001",
        "refund_id": "r-2",
        "created_at": "2025-01-31T12:00:00Z",
        "amount": "5.00",
        "line_items": [
            {"line_item_id": "1", "product_id": "p-1", "quantity": 1, "amount": "5.00"}
        ],
        "customer": {"id": None, "email": "guest@example.com"},
    }
    event = map_payload(
        {"type": "refund.created", "timestamp": "2025-02-01T11:59:00Z", "data": data}
    )
    assert event["type"] == "refund"
    assert event["occurred_at"] == "2025-01-31T12:00:00Z"
    assert event["customer"] == {"id": None, "email": "guest@example.com"}
    assert event["data"]["line_items"][0]["quantity"] == 1


def test_map_checkout_values_when_checkout_updated() -> None:
    data: dict[str, Any] = {
        "checkout_id": "c-9",
        "created_at": "2025-01-31T08:00:00Z",
        "updated_at": "2025-01-31T08:30:00Z",
        "completed_at": None,
        "currency": "EUR",
        "total": "24.95",
        "line_items": [],
        "customer": {"id": None, "email": None},
    }
    event = map_payload(
        {"type": "checkout.updated", "timestamp": "2025-02-01T11:59:00Z", "data": data}
    )
    assert event["type"] == "checkout"
    assert event["occurred_at"] == "2025-01-31T08:30:00Z"
    assert event["customer"] == {"id": None, "email": None}
    assert event["data"]["checkout_id"] == "c-9"


def test_map_customer_values_when_customer_updated() -> None:
    data = {
        "customer_id": "cust-7",
        "email": "Ana.Example@Example.com",
        "created_at": None,
        "updated_at": "2025-01-30T07:00:00Z",
        "tags": ["vip"],
        "email_consent": {"state": "subscribed", "updated_at": "2025-01-30T07:00:00Z"},
        "customer": CUSTOMER,
    }
    event = map_payload(
        {"type": "customer.updated", "timestamp": "2025-02-01T11:59:00Z", "data": data}
    )
    assert event["type"] == "customer"
    assert event["occurred_at"] == "2025-01-30T07:00:00Z"
    assert event["data"]["email"] == "ana.example@example.com"
    assert event["data"]["email_consent"]["state"] == "subscribed"


def test_map_consent_values_when_consent_updated() -> None:
    data = {
        "customer_id": "cust-7",
        "state": "unsubscribed",
        "updated_at": "2025-02-01T11:58:00Z",
        "source": "message",
        "customer": CUSTOMER,
    }
    event = map_payload(
        {"type": "consent.updated", "timestamp": "2025-02-01T11:59:00Z", "data": data}
    )
    assert event["type"] == "consent"
    assert event["occurred_at"] == "2025-02-01T11:58:00Z"
    assert event["data"]["state"] == "unsubscribed"


@pytest.mark.parametrize("kind", ["sent", "opened", "clicked", "unsubscribed"])
def test_map_fills_kind_when_kind_missing(kind: str) -> None:
    payload = {
        "type": f"message.{kind}",
        "timestamp": "2025-02-01T11:59:30+00:00",
        "data": {
            "message_id": "m-1",
            "workflow_id": "wf-welcome",
            "customer": CUSTOMER,
        },
    }
    event = map_payload(payload)
    assert event["type"] == "message"
    assert event["data"] == {
        "message_id": "m-1",
        "workflow_id": "wf-welcome",
        "kind": kind,
    }
    # Messages are dated by the payload's timestamp.
    assert event["occurred_at"] == "2025-02-01T11:59:30Z"
    assert event["customer"] == {"id": "cust-7", "email": "ana.example@example.com"}


def message_payload(message_type: str, **data: Any) -> dict[str, Any]:
    """Return a message payload of workflow ``wf-1`` with ``data`` fields added."""
    return {
        "type": message_type,
        "timestamp": "2025-02-01T11:59:30Z",
        "data": {
            "message_id": "m-1",
            "workflow_id": "wf-1",
            "customer": CUSTOMER,
            **data,
        },
    }


def test_map_keeps_kind_when_message_kind_given() -> None:
    payload = message_payload("message", kind="opened")
    assert map_payload(payload)["data"]["kind"] == "opened"


def test_map_event_id_stable_when_webhook_id_repeats() -> None:
    payload = {
        "type": "order.updated",
        "timestamp": "2025-02-01T11:59:00Z",
        "data": ORDER_DATA,
    }
    first = map_payload(payload)
    again = map_payload(payload)
    assert first["id"] == again["id"]
    delivery = signed_delivery(payload, message_id="msg_other")
    other = PLATFORM.map(delivery, PLATFORM.parse(delivery))[0]
    assert other["id"] != first["id"]


# Errors name the first failing JSON path


def order_with(change: Any) -> dict[str, Any]:
    data = copy.deepcopy(ORDER_DATA)
    change(data)
    return {"type": "order.created", "timestamp": "2025-02-01T11:59:00Z", "data": data}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (order_with(lambda d: d.pop("currency")), "data.currency"),
        (
            order_with(lambda d: d["line_items"][0].update(quantity=-1)),
            "data.line_items[0].quantity",
        ),
        (
            order_with(lambda d: d["line_items"][0].update(price=19.99)),
            "data.line_items[0].price",
        ),
        (order_with(lambda d: d["refunds"][0].pop("amount")), "data.refunds[0].amount"),
        (order_with(lambda d: d.update(created_at="yesterday")), "data.created_at"),
        (order_with(lambda d: d.update(total="1e5")), "data.total"),
        (order_with(lambda d: d.pop("customer")), "data.customer"),
        (order_with(lambda d: d["customer"].pop("email")), "data.customer.email"),
        (order_with(lambda d: d["customer"].update(id=7)), "data.customer.id"),
        (order_with(lambda d: d["customer"].update(name="Ana")), "data.customer"),
        (
            {
                "type": "erasure.created",
                "timestamp": "2025-02-01T11:59:00Z",
                "data": {},
            },
            "type",
        ),
        ({"type": "invoice.paid", "data": {}}, "type"),
        ({"type": "order.created", "data": []}, "data"),
    ],
)
def test_map_raises_naming_path_when_data_invalid(
    payload: dict[str, Any], field: str
) -> None:
    assert mapping_error(payload).field == field


def test_map_raises_when_message_kind_contradicts_type() -> None:
    payload = message_payload("message.clicked", kind="opened")
    assert mapping_error(payload).field == "data.kind"


def test_map_raises_when_message_type_suffix_unknown() -> None:
    assert mapping_error(message_payload("message.bounced")).field == "data.kind"


def test_map_raises_when_message_timestamp_missing() -> None:
    payload = message_payload("message.sent")
    del payload["timestamp"]
    assert mapping_error(payload).field == "timestamp"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"nope", "body"),
        (b"[]", "body"),
        (b'{"data": {}}', "type"),
        (b'{"type": ""}', "type"),
    ],
)
def test_parse_raises_when_body_invalid(body: bytes, field: str) -> None:
    delivery = make_delivery(body, {ID_HEADER: MESSAGE_ID})
    with pytest.raises(MappingError) as caught:
        PLATFORM.parse(delivery)
    assert caught.value.field == field


def test_parse_raises_when_webhook_id_missing() -> None:
    with pytest.raises(MappingError) as caught:
        PLATFORM.parse(make_delivery(b'{"type": "order.created"}', {}))
    assert caught.value.field == ID_HEADER


# Property tests

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(
        ["2025-01-31T10:00:00Z", "0001-01-01T00:00:00+01:00", "1e999999999"]
    )
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
TYPES = st.sampled_from(
    [
        "order.created",
        "refund.created",
        "checkout.updated",
        "customer.updated",
        "consent.updated",
        "message.clicked",
        "message",
        "erasure.x",
        "",
    ]
)


@st.composite
def mutated_orders(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(ORDER_DATA)
    key = draw(st.sampled_from(sorted(data)))
    if draw(st.booleans()):
        data.pop(key)
    else:
        data[key] = draw(JSON_VALUES)
    return {"type": draw(TYPES), "timestamp": draw(JSON_VALUES), "data": data}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(payload=mutated_orders() | JSON_VALUES)
def test_map_raises_only_mapping_error_when_payload_random(payload: Any) -> None:
    delivery = make_delivery(b"{}", {ID_HEADER: MESSAGE_ID})
    topic = payload.get("type") if isinstance(payload, dict) else None
    parsed = ParsedDelivery(
        topic=topic if isinstance(topic, str) else "order.created",
        delivery_id=MESSAGE_ID,
        payload=payload,
    )
    assert_valid_unless_mapping_error(PLATFORM, delivery, parsed)


@settings(max_examples=200)
@given(body=st.binary(max_size=200))
def test_parse_raises_only_mapping_error_when_bytes_random(body: bytes) -> None:
    delivery = make_delivery(body, {ID_HEADER: MESSAGE_ID})
    with contextlib.suppress(MappingError):
        PLATFORM.map(delivery, PLATFORM.parse(delivery))


@settings(max_examples=300)
@given(
    body=st.binary(max_size=100),
    message_id=st.text(max_size=20),
    timestamp=st.text(max_size=14) | st.integers(1_738_411_000, 1_738_411_400).map(str),
    signature=st.text(max_size=80) | st.just("v1,AAAA v1,=== v2,x"),
    secrets=st.lists(st.text(max_size=30) | st.just(SECRET), max_size=3),
)
def test_verify_raises_only_invalid_signature_when_input_random(
    body: bytes, message_id: str, timestamp: str, signature: str, secrets: list[str]
) -> None:
    headers = {
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature,
    }
    delivery = Delivery(store_id=STORE_ID, body=body, headers=headers, received_at=NOW)
    with contextlib.suppress(InvalidSignatureError):
        PLATFORM.verify(delivery, secrets)
