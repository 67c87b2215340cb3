"""Shopify webhooks: HMAC verification, topic parsing, mapping to canonical events."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from cartstream.errors import InvalidSignatureError, MappingError
from cartstream.events import Event, EventType, event_id, normalise_email
from handlers.platforms import fields, shopify_fields
from handlers.platforms.base import Delivery, ParsedDelivery
from handlers.platforms.fields import JsonObject, join

HMAC_HEADER = "X-Shopify-Hmac-Sha256"
TOPIC_HEADER = "X-Shopify-Topic"
WEBHOOK_ID_HEADER = "X-Shopify-Webhook-Id"
EVENT_ID_HEADER = "X-Shopify-Event-Id"

CustomerRef = dict[str, str | None]
NO_CUSTOMER: CustomerRef = {"id": None, "email": None}


@dataclass(frozen=True)
class EventDraft:
    """One event before its envelope: the facts a payload gives about one resource."""

    type: EventType
    resource_id: str
    resource_time: str | None  # the resource's own timestamp, when it has one
    occurred_at: str
    customer: CustomerRef
    data: JsonObject


# A mapper reads a payload and the delivery's receipt time (UTC, RFC 3339).
Mapper = Callable[[JsonObject, str], list[EventDraft]]


class ShopifyPlatform:
    """Verification and mapping of Shopify webhook deliveries, pure and free of I/O."""

    name = "shopify"

    def verify(self, delivery: Delivery, secrets: Sequence[str]) -> None:
        """Check the base64 HMAC-SHA256 of the raw body against each active secret.

        Raises:
            InvalidSignatureError: the header is missing or garbled, or no
                secret matches. The message names the header, never its value.
        """
        header = read_header(delivery.headers, HMAC_HEADER)
        if header is None:
            raise InvalidSignatureError(f"missing {HMAC_HEADER} header")
        try:
            signature = base64.b64decode(header.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidSignatureError(f"invalid {HMAC_HEADER} header") from exc
        if len(signature) != hashlib.sha256().digest_size:
            raise InvalidSignatureError(f"invalid {HMAC_HEADER} header")

        for secret in secrets:
            digest = hmac.new(secret.encode(), delivery.body, hashlib.sha256).digest()
            if hmac.compare_digest(digest, signature):
                return
        raise InvalidSignatureError(f"{HMAC_HEADER} matches no active secret")

    def parse(self, delivery: Delivery) -> ParsedDelivery:
        """Read the topic, the webhook id (same on retries) and the JSON object body.

        Raises:
            MappingError: the topic header is missing, or the body is not a
                JSON object.
        """
        topic = read_header(delivery.headers, TOPIC_HEADER)
        if topic is None or not topic.strip():
            raise MappingError(f"missing {TOPIC_HEADER} header", field=TOPIC_HEADER)
        webhook_id = read_header(delivery.headers, WEBHOOK_ID_HEADER) or ""
        event_id_header = read_header(delivery.headers, EVENT_ID_HEADER) or ""
        delivery_id = webhook_id.strip() or event_id_header.strip() or None

        return ParsedDelivery(
            topic=normalise_topic(topic),
            delivery_id=delivery_id,
            payload=fields.decode_json_object(delivery.body),
        )

    def map(self, delivery: Delivery, parsed: ParsedDelivery) -> list[Event]:
        """Turn a parsed delivery into canonical events.

        Event ids derive from the webhook id. Without one they derive from the
        topic, the resource id and the resource's own timestamp, so a
        redelivered body still maps to the same ids.

        Raises:
            MappingError: the topic is unsupported, or a required field is
                missing or invalid; ``field`` names the header or JSON path.
        """
        mapper = MAPPERS.get(parsed.topic)
        if mapper is None:
            raise MappingError(
                f"unsupported topic {parsed.topic!r}. Subscribe the store only to "
                "the topics that ShopifyPlatform maps",
                field=TOPIC_HEADER,
            )
        payload = fields.as_object(parsed.payload, "body")
        received_at = delivery.received_at
        if received_at.tzinfo is None:
            received_at = received_at.replace(tzinfo=UTC)
        received_text = received_at.astimezone(UTC).isoformat().replace("+00:00", "Z")

        events: list[Event] = []
        for index, draft in enumerate(mapper(payload, received_text)):
            source = parsed.delivery_id or (
                f"{parsed.topic}:{draft.resource_id}:{draft.resource_time or ''}"
            )
            events.append(
                {
                    "id": event_id("shopify", delivery.store_id, source, index),
                    "type": draft.type,
                    "store_id": delivery.store_id,
                    "platform": "shopify",
                    "occurred_at": draft.occurred_at,
                    "delivery_id": parsed.delivery_id,
                    "topic": parsed.topic,
                    "customer": draft.customer,
                    "data": draft.data,
                }
            )
        return events


def read_header(headers: Mapping[str, Any], name: str) -> str | None:
    """Return a header by case-insensitive name, from aiohttp's headers or a dict."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value if isinstance(value, str) else None


def normalise_topic(value: str) -> str:
    """Lower-case a topic and rewrite the SDK form ORDERS_CREATE as orders/create."""
    topic = value.strip().lower()
    if "/" in topic:
        return topic
    known = UNDERSCORED_TOPICS.get(topic)
    if known is not None:
        return known
    resource, _, action = topic.rpartition("_")
    return f"{resource}/{action}" if resource else topic


def customer_ref(payload: JsonObject) -> CustomerRef:
    """Return the customer id and the first of email, contact_email, customer.email."""
    customer = fields.optional_object(payload.get("customer"), "customer")
    email = (
        normalise_email(payload.get("email"))
        or normalise_email(payload.get("contact_email"))
        or normalise_email(customer.get("email"))
    )
    return {"id": fields.resource_id(customer.get("id"), "customer.id"), "email": email}


def map_lines(payload: JsonObject, key: str) -> list[JsonObject]:
    items = fields.as_list(payload.get(key), key)
    return [
        shopify_fields.line_item(item, join(key, index))
        for index, item in enumerate(items)
    ]


def map_order(payload: JsonObject, received_at: str) -> list[EventDraft]:
    """Map an order snapshot, with its refunds so each snapshot is complete."""
    order_id = fields.required_id(payload, "id", "")
    created_at = fields.timestamp(payload.get("created_at"), "created_at")
    updated_at = fields.optional_timestamp(payload.get("updated_at"), "updated_at")
    currency = shopify_fields.required_text(payload, "currency", "")
    financial_status = fields.optional_text(
        payload.get("financial_status"), "financial_status"
    )
    checkout_id = fields.optional_text(
        payload.get("checkout_token"), "checkout_token"
    ) or fields.resource_id(payload.get("checkout_id"), "checkout_id")
    refunds = fields.optional_list(payload.get("refunds"), "refunds")

    data = {
        "order_id": order_id,
        "name": fields.optional_text(payload.get("name"), "name"),
        "created_at": created_at,
        "updated_at": updated_at or created_at,
        "currency": currency,
        "total": format(
            shopify_fields.required_shop_amount(payload, "total_price", ""), "f"
        ),
        "presentment_currency": fields.optional_text(
            payload.get("presentment_currency"), "presentment_currency"
        ),
        "presentment_total": shopify_fields.presentment_amount(
            payload, "total_price", ""
        ),
        # Trimmed payloads omit ``test``, and an order without the flag counts as real.
        "is_test": shopify_fields.optional_bool(payload.get("test"), "test") is True,
        "cancelled_at": fields.optional_timestamp(
            payload.get("cancelled_at"), "cancelled_at"
        ),
        "financial_status": financial_status,
        "status": financial_status,
        "checkout_id": checkout_id,
        "accepts_marketing": shopify_fields.optional_bool(
            payload.get("buyer_accepts_marketing"), "buyer_accepts_marketing"
        ),
        "line_items": map_lines(payload, "line_items"),
        "refunds": [
            shopify_fields.refund_body(refund, join("refunds", index), currency)
            for index, refund in enumerate(refunds)
        ],
    }
    return [
        EventDraft(
            "order",
            order_id,
            updated_at,
            updated_at or created_at,
            customer_ref(payload),
            data,
        )
    ]


def map_refund(payload: JsonObject, received_at: str) -> list[EventDraft]:
    """Map refunds/create to a refund event.

    occurred_at is the refund's created_at, else processed_at, else the time of
    receipt. Refund payloads name no customer, so the customer ref is empty and
    consumers find the customer through ``order_id``.
    """
    body = shopify_fields.refund_body(
        payload, "", shopify_fields.refund_shop_currency(payload)
    )
    data = {**body, "order_id": fields.required_id(payload, "order_id", "")}
    created_at = body["created_at"]
    occurred_at = created_at or received_at
    refund_id = body["refund_id"]
    return [EventDraft("refund", refund_id, created_at, occurred_at, NO_CUSTOMER, data)]


def map_checkout(payload: JsonObject, received_at: str) -> list[EventDraft]:
    """Map a checkout snapshot, keyed by ``token`` as orders' ``checkout_token`` is.

    NOTE: Shopify's REST Abandoned checkouts reference calls ``currency`` the
    shop's currency. Whether ``total_price`` is in it when ``presentment_currency``
    differs is unverified.
    """
    checkout_id = shopify_fields.required_text(payload, "token", "")
    created_at = fields.timestamp(payload.get("created_at"), "created_at")
    updated_at = fields.optional_timestamp(payload.get("updated_at"), "updated_at")
    data = {
        "checkout_id": checkout_id,
        "created_at": created_at,
        "updated_at": updated_at or created_at,
        "completed_at": fields.optional_timestamp(
            payload.get("completed_at"), "completed_at"
        ),
        "currency": shopify_fields.required_text(payload, "currency", ""),
        "total": format(
            shopify_fields.required_shop_amount(payload, "total_price", ""), "f"
        ),
        "accepts_marketing": shopify_fields.optional_bool(
            payload.get("buyer_accepts_marketing"), "buyer_accepts_marketing"
        ),
        "line_items": map_lines(payload, "line_items"),
    }
    return [
        EventDraft(
            "checkout",
            checkout_id,
            updated_at,
            updated_at or created_at,
            customer_ref(payload),
            data,
        )
    ]


def map_customer(payload: JsonObject, received_at: str) -> list[EventDraft]:
    """Map a customer snapshot.

    When ``updated_at`` and ``created_at`` are both null, as in some sample
    payloads, ``updated_at`` and occurred_at fall back to the time of receipt.
    """
    customer_id = fields.required_id(payload, "id", "")
    created_at = fields.optional_timestamp(payload.get("created_at"), "created_at")
    updated_at = fields.optional_timestamp(payload.get("updated_at"), "updated_at")
    snapshot_at = updated_at or created_at or received_at
    email = normalise_email(payload.get("email"))
    address = fields.optional_object(payload.get("default_address"), "default_address")
    country = fields.optional_text(
        address.get("country_code"), "default_address.country_code"
    )
    data = {
        "customer_id": customer_id,
        "email": email,
        "first_name": fields.optional_text(payload.get("first_name"), "first_name"),
        "last_name": fields.optional_text(payload.get("last_name"), "last_name"),
        "created_at": created_at,
        "updated_at": snapshot_at,
        "tags": shopify_fields.tags(payload.get("tags"), "tags"),
        "country": country or None,
        "email_consent": shopify_fields.email_consent(payload, ""),
    }
    ref: CustomerRef = {"id": customer_id, "email": email}
    return [
        EventDraft(
            "customer", customer_id, updated_at or created_at, snapshot_at, ref, data
        )
    ]


def map_consent(payload: JsonObject, received_at: str) -> list[EventDraft]:
    """Map customers_email_marketing_consent/update to a consent event.

    occurred_at is ``consent_updated_at``, or the time of receipt when that is
    null.
    """
    customer_id = fields.resource_id(payload.get("customer_id"), "customer_id")
    email = normalise_email(payload.get("email_address"))
    if customer_id is None and email is None:
        raise MappingError("missing customer_id and email_address", field="customer_id")
    consent_path = "email_marketing_consent"
    consent = fields.as_object(payload.get(consent_path), consent_path)
    consent_time = fields.optional_timestamp(
        consent.get("consent_updated_at"), join(consent_path, "consent_updated_at")
    )
    data = {
        "customer_id": customer_id,
        "email": email,
        "state": shopify_fields.consent_state(
            consent.get("state"), join(consent_path, "state")
        ),
        "opt_in_level": fields.optional_text(
            consent.get("opt_in_level"), join(consent_path, "opt_in_level")
        ),
        "updated_at": consent_time or received_at,
        "source": "platform",
    }
    ref: CustomerRef = {"id": customer_id, "email": email}
    resource = customer_id or f"email:{email}"
    return [
        EventDraft(
            "consent", resource, consent_time, consent_time or received_at, ref, data
        )
    ]


def map_customer_redact(payload: JsonObject, received_at: str) -> list[EventDraft]:
    """Map customers/redact to an erasure of the customer and the listed orders."""
    customer = fields.as_object(payload.get("customer"), "customer")
    customer_id = fields.resource_id(customer.get("id"), "customer.id")
    email = normalise_email(customer.get("email"))
    if customer_id is None and email is None:
        raise MappingError(
            "missing customer.id and customer.email", field="customer.id"
        )
    orders_path = "orders_to_redact"
    orders = fields.optional_list(payload.get(orders_path), orders_path)
    order_ids = [
        fields.resource_id(order, join(orders_path, index))
        for index, order in enumerate(orders)
    ]
    data = {
        "reason": "customers/redact",
        "order_ids": [order_id for order_id in order_ids if order_id is not None],
    }
    ref: CustomerRef = {"id": customer_id, "email": email}
    resource = customer_id or f"email:{email}"
    return [EventDraft("erasure", resource, None, received_at, ref, data)]


def map_shop_redact(payload: JsonObject, received_at: str) -> list[EventDraft]:
    """Map shop/redact to an erasure of every customer of the store."""
    shop_id = fields.resource_id(payload.get("shop_id"), "shop_id") or "shop"
    data = {"reason": "shop/redact"}
    return [EventDraft("erasure", shop_id, None, received_at, NO_CUSTOMER, data)]


def map_data_request(payload: JsonObject, received_at: str) -> list[EventDraft]:
    """Return no events for customers/data_request.

    A data request changes no customer data, so the receiver acknowledges the
    delivery and publishes nothing.
    """
    return []


MAPPERS: dict[str, Mapper] = {
    "orders/create": map_order,
    "orders/updated": map_order,
    "orders/paid": map_order,
    "orders/cancelled": map_order,
    "refunds/create": map_refund,
    "checkouts/create": map_checkout,
    "checkouts/update": map_checkout,
    "customers/create": map_customer,
    "customers/update": map_customer,
    "customers_email_marketing_consent/update": map_consent,
    "customers/redact": map_customer_redact,
    "shop/redact": map_shop_redact,
    "customers/data_request": map_data_request,
}

# The SDK form of each topic: ORDERS_CREATE, CUSTOMERS_DATA_REQUEST, and so on.
UNDERSCORED_TOPICS = {topic.replace("/", "_"): topic for topic in MAPPERS}
