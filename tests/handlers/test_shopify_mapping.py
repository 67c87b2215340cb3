"""Mapping of Shopify deliveries to canonical events, checked by hand-worked values.

Expected totals below were computed by hand from the fixtures, not by the mapper.
"""

from __future__ import annotations

import contextlib
import copy
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cartstream.errors import MappingError
from cartstream.events import Event
from handlers.platforms.base import Delivery
from handlers.platforms.shopify import MAPPERS, ShopifyPlatform, normalise_topic
from tests.handlers.support import (
    EVENT_VALIDATOR,
    assert_valid_event,
    assert_valid_unless_mapping_error,
    json_paths,
)
from tests.helpers import WEBHOOKS_DIR, load_fixture

PLATFORM = ShopifyPlatform()
RECEIVED_AT = datetime(2025, 2, 1, 12, 0, tzinfo=UTC)
RECEIVED_TEXT = "2025-02-01T12:00:00Z"

# The topic Shopify sends each fixture under.
FIXTURE_TOPICS = {
    "shopify-checkouts-create-guest-null-email.json": "checkouts/create",
    "shopify-checkouts-create-sample.json": "checkouts/create",
    "shopify-customers-create-accepts-marketing-inr.json": "customers/create",
    "shopify-customers-data_request-docs.json": "customers/data_request",
    "shopify-customers-redact-docs.json": "customers/redact",
    "shopify-customers-update-sample-consent-null.json": "customers/update",
    "shopify-orders-cancelled-with-refund.json": "orders/cancelled",
    "shopify-orders-create-aud-total-price-usd-2020.json": "orders/create",
    "shopify-orders-create-discount-code-unicode-product.json": "orders/create",
    "shopify-orders-create-discount-multi-tax-2024-05.json": "orders/create",
    "shopify-orders-create-guest-percentage-discount-shipping.json": "orders/create",
    "shopify-orders-create-sample-test-cancelled-voided.json": "orders/create",
    "shopify-orders-paid-trimmed.json": "orders/paid",
    "shopify-orders-updated-null-billing-address-inr.json": "orders/updated",
    "shopify-orders-updated-trimmed.json": "orders/updated",
    "shopify-refunds-create-sample.json": "refunds/create",
}


def make_delivery(
    body: bytes, topic: str, delivery_id: str | None = "webhook-1"
) -> Delivery:
    headers = {"X-Shopify-Topic": topic}
    if delivery_id is not None:
        headers["X-Shopify-Webhook-Id"] = delivery_id
    return Delivery(
        store_id="store-1", body=body, headers=headers, received_at=RECEIVED_AT
    )


def assert_valid(event: Event) -> None:
    assert_valid_event(event)
    assert event["occurred_at"].endswith("Z")


def map_body(
    body: bytes, topic: str, delivery_id: str | None = "webhook-1"
) -> list[Event]:
    delivery = make_delivery(body, topic, delivery_id)
    events = PLATFORM.map(delivery, PLATFORM.parse(delivery))
    for event in events:
        assert_valid(event)
    return events


def map_fixture(name: str, delivery_id: str | None = "webhook-1") -> list[Event]:
    return map_body(
        (WEBHOOKS_DIR / name).read_bytes(), FIXTURE_TOPICS[name], delivery_id
    )


def map_payload(payload: dict[str, Any], topic: str) -> list[Event]:
    return map_body(orjson.dumps(payload), topic)


def only_event(events: list[Event]) -> Event:
    assert len(events) == 1
    return events[0]


# Every fixture


def test_fixture_table_lists_every_shopify_fixture() -> None:
    names = {path.name for path in WEBHOOKS_DIR.glob("shopify-*.json")}
    assert names == set(FIXTURE_TOPICS)


@pytest.mark.parametrize("name", sorted(FIXTURE_TOPICS))
def test_map_validates_against_schema_when_fixture_mapped(name: str) -> None:
    events = map_fixture(name)

    for event in events:
        assert event["platform"] == "shopify"
        assert event["store_id"] == "store-1"
        assert event["delivery_id"] == "webhook-1"
        assert event["topic"] == FIXTURE_TOPICS[name]


def test_validator_rejects_timestamp_when_not_rfc3339() -> None:
    event = only_event(map_fixture("shopify-orders-paid-trimmed.json"))
    event["occurred_at"] = "yesterday"

    assert not EVENT_VALIDATOR.is_valid(event)


# Orders


def test_map_embeds_refund_when_order_refunded() -> None:
    event = only_event(map_fixture("shopify-orders-cancelled-with-refund.json"))
    order = event["data"]

    assert event["type"] == "order"
    assert event["occurred_at"] == "2025-01-24T02:57:18Z"
    assert event["customer"] == {
        "id": "8658316394796",
        "email": "ana.example@example.com",
    }
    assert order["order_id"] == "6198821716268"
    assert order["name"] == "#1065"
    assert order["currency"] == "HKD"
    # total_price stays 99.00 although current_total_price dropped to 0.00.
    assert order["total"] == "99.00"
    assert order["is_test"] is False
    assert order["cancelled_at"] == "2025-01-24T02:57:18Z"
    assert order["financial_status"] == "refunded"
    assert order["checkout_id"] == "5e000000000000000000000000000001"
    assert [line["quantity"] for line in order["line_items"]] == [1]
    assert order["line_items"][0]["title"] == "aaa0103測試商品11aa"
    assert order["line_items"][0]["total"] == "99.00"
    assert order["refunds"] == [
        {
            "refund_id": "982959849772",
            "created_at": "2025-01-24T02:57:17Z",
            "amount": "99.00",
            "line_items": [
                {
                    "line_item_id": "15515765276972",
                    "product_id": "9782123692332",
                    "quantity": 1,
                    "amount": "99.00",
                }
            ],
        }
    ]


def test_map_marks_test_when_test_flag_set() -> None:
    event = only_event(
        map_fixture("shopify-orders-create-aud-total-price-usd-2020.json")
    )
    order = event["data"]

    assert order["order_id"] == "2998557704341"
    assert order["is_test"] is True
    assert order["cancelled_at"] is None
    # total_price is in the shop's AUD; total_price_usd (45.14) is ignored.
    assert order["currency"] == "AUD"
    assert order["total"] == "59.45"
    assert order["presentment_currency"] == "AUD"
    assert order["presentment_total"] == "59.45"
    assert order["created_at"] == "2020-12-26T21:23:58Z"
    assert order["updated_at"] == "2020-12-26T21:23:59Z"
    assert order["checkout_id"] == "5e000000000000000000000000000003"
    assert order["line_items"] == [
        {
            "line_item_id": "6456927060117",
            "product_id": "6122640146581",
            "variant_id": "37319198802069",
            "sku": None,
            "title": "Classic Fountain Pen",
            "quantity": 1,
            "price": "44.95",
            "total": "44.95",
        }
    ]
    assert event["customer"] == {
        "id": "4206822293653",
        "email": "ana.example@example.com",
    }


def test_map_order_subtracts_allocations_when_two_discounts_apply() -> None:
    event = only_event(
        map_fixture("shopify-orders-create-discount-code-unicode-product.json")
    )
    order = event["data"]

    assert order["total"] == "394.00"
    assert len(order["line_items"]) == 4
    assert [line["quantity"] for line in order["line_items"]] == [1, 1, 1, 1]
    # 99.00 - 4.78 - 5.00, then 100.00 less 5.08, 5.07 and 5.07; sum 374.00.
    assert [line["total"] for line in order["line_items"]] == [
        "89.22",
        "94.92",
        "94.93",
        "94.93",
    ]
    assert order["line_items"][0]["price"] == "99.00"
    assert order["is_test"] is False
    assert order["cancelled_at"] is None
    assert event["customer"]["id"] == "8658316394796"


def test_map_order_multiplies_price_when_quantity_is_three() -> None:
    event = only_event(
        map_fixture("shopify-orders-create-discount-multi-tax-2024-05.json")
    )
    order = event["data"]
    line = order["line_items"][0]

    assert order["total"] == "32.57"
    assert order["accepts_marketing"] is True
    assert line["quantity"] == 3
    assert line["price"] == "9.00"
    assert line["sku"] == "CSM-CR9287"
    # 3 x 9.00 - 4.05 discount code.
    assert line["total"] == "22.95"
    assert event["occurred_at"] == "2024-05-03T01:15:19Z"
    assert event["customer"] == {
        "id": "6907366047929",
        "email": "ana.example@example.com",
    }


def test_map_drops_customer_when_guest_email_empty() -> None:
    event = only_event(
        map_fixture("shopify-orders-create-guest-percentage-discount-shipping.json")
    )
    order = event["data"]

    assert event["customer"] == {"id": None, "email": None}
    assert order["total"] == "186.90"
    assert [line["quantity"] for line in order["line_items"]] == [1, 1]
    # 99.00 - 14.10 - 5.00 and 100.00 - 15.00; shipping 22.00 is not a line.
    assert [line["total"] for line in order["line_items"]] == ["79.90", "85.00"]
    assert order["is_test"] is False


def test_map_prefers_order_email_when_emails_differ() -> None:
    event = only_event(
        map_fixture("shopify-orders-create-sample-test-cancelled-voided.json")
    )
    order = event["data"]

    assert event["customer"] == {
        "id": "115310627314723954",
        "email": "ana.example@example.com",
    }
    assert order["order_id"] == "820982911946154508"
    assert order["is_test"] is True
    assert order["cancelled_at"] == "2022-04-06T12:09:03Z"
    assert order["financial_status"] == "voided"
    assert order["checkout_id"] is None
    assert order["total"] == "403.00"
    assert [line["line_item_id"] for line in order["line_items"]] == [
        "866550311766439020",
        "141249953214522974",
    ]
    assert [line["total"] for line in order["line_items"]] == ["199.00", "194.00"]


def test_map_reads_total_price_when_sets_missing() -> None:
    event = only_event(map_fixture("shopify-orders-paid-trimmed.json"))
    order = event["data"]
    line = order["line_items"][0]

    assert order["total"] == "600.00"
    assert order["presentment_currency"] == "USD"
    assert order["presentment_total"] is None
    assert order["financial_status"] is None
    assert order["status"] is None
    assert order["is_test"] is False
    assert order["cancelled_at"] is None
    assert order["accepts_marketing"] is None
    # The fixture gives product_id as a string and price as the number 600.
    assert line["product_id"] == "7234590408817"
    assert line["price"] == "600.00"
    assert line["quantity"] == 1
    assert event["customer"] == {
        "id": "7358220173425",
        "email": "ana.example@example.com",
    }


def test_map_converts_to_utc_when_offset_positive() -> None:
    event = only_event(
        map_fixture("shopify-orders-updated-null-billing-address-inr.json")
    )
    order = event["data"]

    assert order["order_id"] == "4617255092480"
    assert order["currency"] == "INR"
    assert order["total"] == "5900.00"
    assert order["created_at"] == "2022-01-05T12:04:08Z"
    assert event["occurred_at"] == "2022-01-05T12:04:36Z"
    assert [line["quantity"] for line in order["line_items"]] == [1]
    assert order["line_items"][0]["sku"] == "15"
    assert order["is_test"] is False
    assert order["cancelled_at"] is None
    assert event["customer"] == {
        "id": "6001363091712",
        "email": "ana.example@example.com",
    }


def test_map_order_reads_presentment_total_when_sets_present() -> None:
    event = only_event(map_fixture("shopify-orders-updated-trimmed.json"))
    order = event["data"]

    assert order["total"] == "600.00"
    assert order["presentment_total"] == "600.00"
    assert order["updated_at"] == "2024-11-06T02:54:50Z"
    assert order["line_items"][0]["total"] == "600.00"
    assert order["is_test"] is False
    assert order["cancelled_at"] is None
    assert event["customer"]["id"] == "7358220173425"


# Refunds


def test_map_refund_sums_lines_when_no_transactions_listed() -> None:
    event = only_event(map_fixture("shopify-refunds-create-sample.json"))
    refund = event["data"]

    assert event["type"] == "refund"
    assert event["customer"] == {"id": None, "email": None}
    # created_at and processed_at are null, so occurred_at is the receipt time.
    assert event["occurred_at"] == RECEIVED_TEXT
    assert refund["created_at"] is None
    assert refund["refund_id"] == "890088186047892319"
    assert refund["order_id"] == "820982911946154508"
    # 199.00 + 0.00 tax, twice.
    assert refund["amount"] == "398.00"
    assert [line["quantity"] for line in refund["line_items"]] == [1, 1]
    assert [line["amount"] for line in refund["line_items"]] == ["199.00", "199.00"]
    assert refund["line_items"][0]["product_id"] == "632910392"


def refund_payload(**changes: Any) -> dict[str, Any]:
    payload = {
        "id": 11,
        "order_id": 22,
        "created_at": "2025-01-10T10:00:00-05:00",
        "processed_at": None,
        "refund_line_items": [
            {
                "line_item_id": 33,
                "quantity": 2,
                "subtotal": "20.00",
                "total_tax": "2.00",
                "subtotal_set": {
                    "shop_money": {"amount": "20.00", "currency_code": "USD"}
                },
                "line_item": {"id": 33, "product_id": 44, "title": "Mug", "sku": "MUG"},
            }
        ],
        "transactions": [],
        "order_adjustments": [],
    }
    payload.update(changes)
    return payload


def refund_transaction(**fields: Any) -> dict[str, Any]:
    return {"kind": "refund", "status": "success", "currency": "USD", **fields}


def test_refund_reads_shop_money_when_amount_set() -> None:
    transaction = refund_transaction(
        amount="18.00",
        currency="EUR",
        amount_set={
            "shop_money": {"amount": "20.00", "currency_code": "USD"},
            "presentment_money": {"amount": "18.00", "currency_code": "EUR"},
        },
    )
    event = only_event(
        map_payload(refund_payload(transactions=[transaction]), "refunds/create")
    )

    assert event["data"]["amount"] == "20.00"
    assert event["occurred_at"] == "2025-01-10T15:00:00Z"


def test_refund_reads_amount_when_shop_currency() -> None:
    transactions = [refund_transaction(amount=21.5), refund_transaction(amount="0.50")]
    event = only_event(
        map_payload(refund_payload(transactions=transactions), "refunds/create")
    )

    assert event["data"]["amount"] == "22.00"


def test_refund_sums_lines_when_currency_differs() -> None:
    transactions = [refund_transaction(amount="18.00", currency="EUR")]
    event = only_event(
        map_payload(refund_payload(transactions=transactions), "refunds/create")
    )

    # 20.00 subtotal + 2.00 tax in the shop's USD.
    assert event["data"]["amount"] == "22.00"


def test_map_refund_counts_nothing_when_refund_transaction_failed() -> None:
    transactions = [
        refund_transaction(amount="22.00", status="failure"),
        {"kind": "sale", "status": "success", "amount": "99.00", "currency": "USD"},
    ]
    event = only_event(
        map_payload(refund_payload(transactions=transactions), "refunds/create")
    )

    assert event["data"]["amount"] == "0"


def test_map_refund_adds_shipping_when_adjustment_is_negative() -> None:
    adjustment = {
        "kind": "shipping_refund",
        "amount": "-5.00",
        "tax_amount": "-0.50",
        "amount_set": {"shop_money": {"amount": "-5.00", "currency_code": "USD"}},
    }
    shipping_line = {
        "subtotal_amount_set": {
            "shop_money": {"amount": "5.00", "currency_code": "USD"}
        }
    }
    payload = refund_payload(
        order_adjustments=[adjustment], refund_shipping_lines=[shipping_line]
    )
    event = only_event(map_payload(payload, "refunds/create"))

    # 22.00 for the lines + 5.50 shipping, counted once.
    assert event["data"]["amount"] == "27.50"


def test_refund_adds_shipping_lines_when_no_adjustment() -> None:
    shipping_line = {
        "subtotal_amount_set": {
            "shop_money": {"amount": "4.00", "currency_code": "USD"}
        }
    }
    payload = refund_payload(refund_shipping_lines=[shipping_line])
    event = only_event(map_payload(payload, "refunds/create"))

    assert event["data"]["amount"] == "26.00"


def test_refund_uses_processed_at_when_created_null() -> None:
    payload = refund_payload(created_at=None, processed_at="2025-01-11T00:00:00Z")
    event = only_event(map_payload(payload, "refunds/create"))

    assert event["data"]["created_at"] == "2025-01-11T00:00:00Z"
    assert event["occurred_at"] == "2025-01-11T00:00:00Z"


def test_map_names_refund_path_when_quantity_invalid() -> None:
    order = load_fixture("shopify-orders-cancelled-with-refund.json")
    order["refunds"][0]["refund_line_items"][0]["quantity"] = "one"

    with pytest.raises(MappingError) as raised:
        map_payload(order, "orders/updated")

    assert raised.value.field == "refunds[0].refund_line_items[0].quantity"


# Checkouts


def test_checkout_drops_customer_when_guest_email_null() -> None:
    event = only_event(map_fixture("shopify-checkouts-create-guest-null-email.json"))
    checkout = event["data"]

    assert event["type"] == "checkout"
    assert event["customer"] == {"id": None, "email": None}
    assert checkout["checkout_id"] == "5e000000000000000000000000000001"
    assert checkout["created_at"] == "2024-11-06T02:22:00Z"
    assert checkout["updated_at"] == "2024-11-06T02:22:02Z"
    assert checkout["completed_at"] is None
    assert checkout["total"] == "600.00"
    assert checkout["accepts_marketing"] is False
    assert [line["quantity"] for line in checkout["line_items"]] == [1]
    # Checkout lines have no id, so the cart key names the line.
    assert checkout["line_items"][0]["line_item_id"] == "41327142600817"
    assert checkout["line_items"][0]["product_id"] == "7234590408817"


def test_map_checkout_keys_by_token_when_customer_attached() -> None:
    event = only_event(map_fixture("shopify-checkouts-create-sample.json"))
    checkout = event["data"]

    assert checkout["checkout_id"] == "5e0000001"
    assert checkout["currency"] == "USD"
    assert checkout["total"] == "398.00"
    assert [line["quantity"] for line in checkout["line_items"]] == [1, 1]
    assert [line["total"] for line in checkout["line_items"]] == ["199.00", "199.00"]
    assert event["occurred_at"] == "2022-04-06T12:08:57Z"
    # The customer id is above 2^53 and must survive exactly.
    assert event["customer"] == {
        "id": "603851970716743426",
        "email": "ana.example@example.com",
    }


# Customers, consent and privacy


def test_customer_reads_accepts_marketing_when_no_consent() -> None:
    event = only_event(
        map_fixture("shopify-customers-create-accepts-marketing-inr.json")
    )
    customer = event["data"]

    assert event["type"] == "customer"
    assert event["customer"] == {
        "id": "5747017285820",
        "email": "ana.example@example.com",
    }
    assert customer["first_name"] == "Ana"
    assert customer["last_name"] == "Example"
    assert customer["created_at"] == "2021-12-29T09:45:19Z"
    assert customer["updated_at"] == "2021-12-29T09:45:20Z"
    assert customer["tags"] == []
    assert customer["country"] == "IN"
    assert customer["email_consent"] == {
        "state": "not_subscribed",
        "updated_at": "2021-12-29T09:45:20Z",
    }


def test_map_customer_uses_received_at_when_timestamps_null() -> None:
    event = only_event(map_fixture("shopify-customers-update-sample-consent-null.json"))
    customer = event["data"]

    assert event["occurred_at"] == RECEIVED_TEXT
    assert customer["customer_id"] == "706405506930370084"
    assert customer["created_at"] is None
    assert customer["updated_at"] == RECEIVED_TEXT
    assert customer["country"] is None
    # email_marketing_consent is null, so accepts_marketing: true decides.
    assert customer["email_consent"] == {"state": "subscribed", "updated_at": None}


def test_customer_prefers_consent_when_both_sent() -> None:
    payload = load_fixture("shopify-customers-create-accepts-marketing-inr.json")
    payload["email_marketing_consent"] = {
        "state": "SUBSCRIBED",
        "opt_in_level": "confirmed_opt_in",
        "consent_updated_at": None,
    }
    payload["tags"] = " vip, ,wholesale ,"

    customer = only_event(map_payload(payload, "customers/update"))["data"]

    assert customer["email_consent"] == {"state": "subscribed", "updated_at": None}
    assert customer["tags"] == ["vip", "wholesale"]


def test_customer_maps_invalid_state_to_not_subscribed() -> None:
    payload = load_fixture("shopify-customers-create-accepts-marketing-inr.json")
    payload["email_marketing_consent"] = {
        "state": "invalid",
        "consent_updated_at": "2025-01-02T03:04:05Z",
    }

    customer = only_event(map_payload(payload, "customers/update"))["data"]

    assert customer["email_consent"] == {
        "state": "not_subscribed",
        "updated_at": "2025-01-02T03:04:05Z",
    }


def test_map_customer_raises_when_consent_state_unknown() -> None:
    payload = load_fixture("shopify-customers-create-accepts-marketing-inr.json")
    payload["email_marketing_consent"] = {"state": "maybe", "consent_updated_at": None}

    with pytest.raises(MappingError) as raised:
        map_payload(payload, "customers/update")

    assert raised.value.field == "email_marketing_consent.state"


def test_consent_uses_received_at_when_time_null() -> None:
    payload = {
        "customer_id": 706405506930370084,
        "email_address": None,
        "email_marketing_consent": {
            "state": None,
            "opt_in_level": None,
            "consent_updated_at": None,
        },
    }
    event = only_event(map_payload(payload, "customers_email_marketing_consent/update"))

    assert event["type"] == "consent"
    assert event["occurred_at"] == RECEIVED_TEXT
    assert event["customer"] == {"id": "706405506930370084", "email": None}
    assert event["data"]["state"] is None
    assert event["data"]["updated_at"] == RECEIVED_TEXT


def test_map_consent_reads_state_when_customer_unsubscribes() -> None:
    payload = {
        "customer_id": 5747017285820,
        "email_address": " Ana.Example@Example.com ",
        "email_marketing_consent": {
            "state": "unsubscribed",
            "opt_in_level": "single_opt_in",
            "consent_updated_at": "2025-01-05T10:00:00+01:00",
        },
    }
    event = only_event(map_payload(payload, "customers_email_marketing_consent/update"))

    assert event["occurred_at"] == "2025-01-05T09:00:00Z"
    assert event["customer"] == {
        "id": "5747017285820",
        "email": "ana.example@example.com",
    }
    assert event["data"]["state"] == "unsubscribed"
    assert event["data"]["opt_in_level"] == "single_opt_in"


def test_map_returns_no_events_when_customer_requests_data() -> None:
    assert map_fixture("shopify-customers-data_request-docs.json") == []


def test_redact_erases_customer_when_requested() -> None:
    event = only_event(map_fixture("shopify-customers-redact-docs.json"))

    assert event["type"] == "erasure"
    assert event["occurred_at"] == RECEIVED_TEXT
    assert event["customer"] == {"id": "191167", "email": "john@example.com"}
    assert event["data"] == {
        "reason": "customers/redact",
        "order_ids": ["299938", "280263", "220458"],
    }


def test_shop_redact_names_nobody_when_received() -> None:
    payload = {"shop_id": 954889, "shop_domain": "example.myshopify.com"}
    event = only_event(map_payload(payload, "shop/redact"))

    assert event["type"] == "erasure"
    assert event["customer"] == {"id": None, "email": None}
    assert event["data"] == {"reason": "shop/redact"}


# Event ids


def test_event_id_repeats_when_webhook_redelivered() -> None:
    name = "shopify-orders-updated-trimmed.json"

    first = only_event(map_fixture(name, delivery_id="webhook-7"))
    again = only_event(map_fixture(name, delivery_id="webhook-7"))
    other = only_event(map_fixture(name, delivery_id="webhook-8"))

    assert first["id"] == again["id"]
    assert first["id"] != other["id"]


def test_event_id_repeats_when_redelivered_without_webhook_id() -> None:
    name = "shopify-refunds-create-sample.json"
    body = (WEBHOOKS_DIR / name).read_bytes()

    first = only_event(map_body(body, "refunds/create", delivery_id=None))
    delivery = Delivery(
        store_id="store-1",
        body=body,
        headers={"X-Shopify-Topic": "refunds/create"},
        received_at=datetime(2025, 3, 1, tzinfo=UTC),
    )
    again = only_event(PLATFORM.map(delivery, PLATFORM.parse(delivery)))

    assert first["delivery_id"] is None
    assert first["id"] == again["id"]


def test_event_id_changes_when_order_updated() -> None:
    payload = load_fixture("shopify-orders-updated-trimmed.json")
    first = only_event(map_body(orjson.dumps(payload), "orders/updated", None))
    payload["updated_at"] = "2024-11-05T22:00:00-05:00"
    later = only_event(map_body(orjson.dumps(payload), "orders/updated", None))

    assert first["id"] != later["id"]


def test_parse_uses_event_id_when_webhook_id_absent() -> None:
    delivery = Delivery(
        store_id="store-1",
        body=b"{}",
        headers={"x-shopify-topic": "orders/create", "X-Shopify-Event-Id": " ev-9 "},
        received_at=RECEIVED_AT,
    )

    assert PLATFORM.parse(delivery).delivery_id == "ev-9"


# Topics and bodies


@pytest.mark.parametrize(
    ("header", "topic"),
    [
        ("orders/create", "orders/create"),
        (" Orders/Create ", "orders/create"),
        ("ORDERS_CREATE", "orders/create"),
        ("CUSTOMERS_DATA_REQUEST", "customers/data_request"),
        (
            "CUSTOMERS_EMAIL_MARKETING_CONSENT_UPDATE",
            "customers_email_marketing_consent/update",
        ),
        ("PRODUCTS_UPDATE", "products/update"),
    ],
)
def test_normalise_topic_returns_slash_form_when_header_varies(
    header: str, topic: str
) -> None:
    assert normalise_topic(header) == topic


def test_map_accepts_sdk_topic_when_header_upper_case() -> None:
    body = (WEBHOOKS_DIR / "shopify-orders-paid-trimmed.json").read_bytes()

    event = only_event(map_body(body, "ORDERS_PAID"))

    assert event["topic"] == "orders/paid"


def test_map_raises_naming_topic_header_when_topic_unsupported() -> None:
    with pytest.raises(MappingError) as raised:
        map_body(b"{}", "orders/edited")

    assert raised.value.field == "X-Shopify-Topic"


def test_parse_raises_naming_topic_header_when_header_missing() -> None:
    delivery = Delivery(
        store_id="store-1", body=b"{}", headers={}, received_at=RECEIVED_AT
    )

    with pytest.raises(MappingError) as raised:
        PLATFORM.parse(delivery)

    assert raised.value.field == "X-Shopify-Topic"


@pytest.mark.parametrize(
    "body", [b"", b"{", b'{"id": 1', b"\xff\xfe", b"[1, 2]", b'"x"']
)
def test_parse_raises_when_body_not_object(body: bytes) -> None:
    with pytest.raises(MappingError) as raised:
        PLATFORM.parse(make_delivery(body, "orders/create"))

    assert raised.value.field == "body"


# Required fields, ids and odd values


def test_map_names_path_when_line_quantity_missing() -> None:
    payload = load_fixture("shopify-orders-create-discount-code-unicode-product.json")
    del payload["line_items"][1]["quantity"]

    with pytest.raises(MappingError) as raised:
        map_payload(payload, "orders/create")

    assert raised.value.field == "line_items[1].quantity"


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("id", "id"),
        ("created_at", "created_at"),
        ("currency", "currency"),
        ("line_items", "line_items"),
    ],
)
def test_map_names_field_when_required_order_field_missing(
    key: str, field: str
) -> None:
    payload = load_fixture("shopify-orders-paid-trimmed.json")
    del payload[key]

    with pytest.raises(MappingError) as raised:
        map_payload(payload, "orders/paid")

    assert raised.value.field == field


def test_map_names_total_price_when_order_total_missing() -> None:
    payload = load_fixture("shopify-orders-updated-trimmed.json")
    del payload["total_price"]
    del payload["total_price_set"]

    with pytest.raises(MappingError) as raised:
        map_payload(payload, "orders/updated")

    assert raised.value.field == "total_price"


def test_map_keeps_ids_exact_when_above_2_53() -> None:
    payload = load_fixture("shopify-orders-paid-trimmed.json")
    payload["id"] = 2**63 + 12345
    payload["customer"]["id"] = 2**53 + 1
    payload["line_items"][0]["product_id"] = 2**64 - 1

    event = only_event(map_payload(payload, "orders/paid"))

    assert event["data"]["order_id"] == "9223372036854788153"
    assert event["customer"]["id"] == "9007199254740993"
    assert event["data"]["line_items"][0]["product_id"] == "18446744073709551615"


def test_map_raises_when_id_exceeds_64_bits() -> None:
    body = (WEBHOOKS_DIR / "shopify-orders-paid-trimmed.json").read_bytes()
    body = body.replace(b'"id": 5778367414385', b'"id": 18446744073709551616', 1)

    with pytest.raises(MappingError) as raised:
        map_body(body, "orders/paid")

    assert raised.value.field == "id"


def test_map_keys_product_by_sku_when_id_null() -> None:
    payload = load_fixture("shopify-orders-create-sample-test-cancelled-voided.json")
    payload["line_items"][0]["product_id"] = None
    payload["line_items"][1]["product_id"] = None
    payload["line_items"][1]["sku"] = ""

    lines = only_event(map_payload(payload, "orders/create"))["data"]["line_items"]

    assert lines[0]["product_id"] == "sku:IPOD2008PINK"
    assert lines[1]["product_id"] == "title:IPod Nano - 8GB"
    assert lines[1]["sku"] is None


def test_map_rejects_amount_quickly_when_exponent_huge() -> None:
    """money() would expand 1e999999999 to a billion digits."""
    payload = load_fixture("shopify-orders-paid-trimmed.json")
    payload["total_price"] = "1e999999999"

    with pytest.raises(MappingError) as raised:
        map_payload(payload, "orders/paid")

    assert raised.value.field == "total_price"


def test_map_raises_when_timestamp_out_of_range() -> None:
    payload = load_fixture("shopify-orders-paid-trimmed.json")
    payload["created_at"] = "0001-01-01T00:00:00+01:00"

    with pytest.raises(MappingError) as raised:
        map_payload(payload, "orders/paid")

    assert raised.value.field == "created_at"


# Random input


@given(body=st.binary(max_size=300))
def test_parse_raises_only_mapping_error_when_body_random(body: bytes) -> None:
    with contextlib.suppress(MappingError):
        PLATFORM.parse(make_delivery(body, "orders/create"))


SHOPIFY_KEYS = [
    "id",
    "token",
    "order_id",
    "customer_id",
    "created_at",
    "updated_at",
    "processed_at",
    "currency",
    "total_price",
    "total_price_set",
    "line_items",
    "refunds",
    "refund_line_items",
    "transactions",
    "order_adjustments",
    "customer",
    "email",
    "email_address",
    "email_marketing_consent",
    "accepts_marketing",
    "tags",
    "default_address",
    "quantity",
    "price",
    "amount",
    "amount_set",
    "shop_money",
    "kind",
    "status",
    "test",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(
        ["2024-11-05T21:54:49-05:00", "12.50", "-5.00", "1e400", "refund", "success"]
    ),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(SHOPIFY_KEYS) | st.text(max_size=6), children, max_size=5
        )
    ),
    max_leaves=25,
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    topic=st.sampled_from(sorted(MAPPERS)),
    payload=st.dictionaries(st.sampled_from(SHOPIFY_KEYS), json_values, max_size=10),
)
def test_map_raises_only_mapping_error_when_payload_random(
    topic: str, payload: dict[str, Any]
) -> None:
    delivery = make_delivery(orjson.dumps(payload), topic)
    assert_valid_unless_mapping_error(PLATFORM, delivery, check=assert_valid)


FIXTURE_PAYLOADS = {name: load_fixture(name) for name in FIXTURE_TOPICS}
FIXTURE_PATHS = {
    name: list(json_paths(payload)) for name, payload in FIXTURE_PAYLOADS.items()
}


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from(sorted(FIXTURE_TOPICS)))
def test_map_raises_mapping_error_when_fixture_mutated(
    data: st.DataObject, name: str
) -> None:
    payload = copy.deepcopy(FIXTURE_PAYLOADS[name])
    path = data.draw(st.sampled_from(FIXTURE_PATHS[name]))
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = data.draw(json_values)

    delivery = make_delivery(orjson.dumps(payload), FIXTURE_TOPICS[name])
    assert_valid_unless_mapping_error(PLATFORM, delivery, check=assert_valid)
