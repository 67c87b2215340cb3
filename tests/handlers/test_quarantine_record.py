"""Quarantine records: what is kept of a delivery, and reading records back."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from handlers.platforms.base import Delivery
from handlers.quarantine import InvalidQuarantineRecordError, QuarantineRecord

RECEIVED_AT = datetime(2025, 2, 1, 12, 0, 5, tzinfo=UTC)


def make_record(body: bytes, headers: dict[str, str]) -> QuarantineRecord:
    delivery = Delivery(
        store_id="shop-1",
        body=body,
        headers=CIMultiDictProxy(CIMultiDict(headers)),
        received_at=RECEIVED_AT,
    )
    return QuarantineRecord.from_delivery(
        "shopify",
        delivery,
        reason="unsupported topic 'products/update'",
        field="X-Shopify-Topic",
        topic="products/update",
        delivery_id="wh-1",
    )


def test_record_keeps_mapping_headers_but_no_signature() -> None:
    record = make_record(
        b'{"id": 1}',
        {
            "X-Shopify-Topic": "products/update",
            "X-Shopify-Webhook-Id": "wh-1",
            "X-Shopify-Hmac-Sha256": "c2lnbmF0dXJl",
            "Authorization": "Bearer x",
            "Content-Type": "application/json",
        },
    )
    assert record.headers == {
        "x-shopify-topic": "products/update",
        "x-shopify-webhook-id": "wh-1",
        "content-type": "application/json",
    }


def test_record_round_trips_when_body_is_utf8() -> None:
    record = make_record('{"name": "Zoë"}'.encode(), {"X-Shopify-Topic": "a/b"})
    value = orjson.loads(record.to_json())
    again = QuarantineRecord.from_json(record.to_json(), "0-0")

    assert value["body"] == '{"name": "Zoë"}'
    assert value["body_encoding"] == "utf-8"
    assert value["received_at"] == "2025-02-01T12:00:05+00:00"
    assert again == record


def test_record_round_trips_when_body_is_binary() -> None:
    body = b"\xff\xfe\x00binary"
    record = make_record(body, {})
    value = orjson.loads(record.to_json())

    assert value["body_encoding"] == "base64"
    assert base64.b64decode(value["body"]) == body
    assert QuarantineRecord.from_json(record.to_json(), "0-0").body == body


def test_record_replaces_undecodable_header_bytes() -> None:
    # aiohttp decodes header bytes that are not UTF-8 to lone surrogates.
    topic = b"orders/\xff".decode("utf-8", "surrogateescape")
    record = make_record(b"{}", {"X-Shopify-Topic": topic})
    assert record.headers["x-shopify-topic"] == "orders/\ufffd"
    assert orjson.loads(record.to_json())["headers"]["x-shopify-topic"] == (
        "orders/\ufffd"
    )


def test_rebuilt_delivery_reads_headers_in_any_case() -> None:
    record = make_record(b"{}", {"X-Shopify-Topic": "orders/create"})
    delivery = record.to_delivery()
    assert delivery.headers.get("X-Shopify-Topic") == "orders/create"
    assert delivery.received_at == RECEIVED_AT
    assert delivery.store_id == "shop-1"


def test_record_without_id_gets_fallback_id() -> None:
    value = orjson.loads(make_record(b"{}", {}).to_json())
    del value["quarantine_id"]
    record = QuarantineRecord.from_json(orjson.dumps(value), "0-17")
    assert record.quarantine_id == "0-17"


@pytest.mark.parametrize(
    "value",
    [None, b"", b"not json", b"[]", b'{"platform": "shopify"}', b'{"body": 1}'],
)
def test_from_json_raises_when_not_a_record(value: bytes | None) -> None:
    with pytest.raises(InvalidQuarantineRecordError):
        QuarantineRecord.from_json(value, "0-1")
