"""WooCommerce webhooks: HMAC verification, the creation ping, orders and customers.

Payloads are the REST API resource (``wc/v1``-``wc/v3``) or, from webhooks set to
the legacy API, the ``{"order": {...}}`` and ``{"customer": {...}}`` wrappers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import re
from collections.abc import Sequence

from cartstream.errors import InvalidSignatureError, MappingError
from cartstream.events import Event, event_id, normalise_email
from handlers.platforms import fields
from handlers.platforms.base import Delivery, ParsedDelivery
from handlers.platforms.fields import JsonObject, join

PLATFORM = "woocommerce"
SIGNATURE_HEADER = "X-WC-Webhook-Signature"
TOPIC_HEADER = "X-WC-Webhook-Topic"
DELIVERY_ID_HEADER = "X-WC-Webhook-Delivery-ID"

ORDER_TOPICS = frozenset({"order.created", "order.updated", "order.restored"})
CUSTOMER_TOPICS = frozenset({"customer.created", "customer.updated"})
ORDER_DELETED_TOPIC = "order.deleted"
PING_TOPIC = "ping"
SUPPORTED_TOPICS = ORDER_TOPICS | CUSTOMER_TOPICS | {ORDER_DELETED_TOPIC}

# Statuses of orders that are not a sale: cancelled, payment failed, moved to
# the trash, or a checkout draft the buyer never submitted.
NOT_COUNTED_STATUSES = frozenset({"cancelled", "failed", "trash", "checkout-draft"})

# WooCommerce sends ``webhook_id=<id>`` as a form body, unsigned, when a webhook
# is saved (WC_Webhook::deliver_ping).
_PING_BODY = re.compile(rb"webhook_id=[0-9]{1,20}")


class WooCommercePlatform:
    """Verification and mapping of WooCommerce order and customer webhooks.

    Delivery ids: ``X-WC-Webhook-Delivery-ID`` is ``wp_hash(webhook id . time())``,
    new for every send, and WooCommerce core does not resend a failed delivery
    (``WC_Webhook::log_delivery`` only counts failures and disables the webhook
    after more than five in a row). The duplicates it does produce are the same
    resource state sent again, for example when a save fires several hooks in
    separate requests. So ``parse`` returns a content key as the delivery id:
    the topic plus the SHA-256 of the body. Two sends of the same state become
    the same event, and two different states get different keys even within one
    second. ``order.deleted`` bodies carry only the order id, so a second
    deletion after a restore has the same body, and its key uses the header
    instead. Events keep the header value in ``delivery_id`` for tracing.
    """

    name = PLATFORM

    def is_ping(self, delivery: Delivery) -> bool:
        """Return True for the unsigned ``webhook_id=N`` body sent on webhook creation.

        The receiver responds 200 to it without verifying or publishing anything.
        The content type is not checked because the WordPress HTTP API sets the
        form type itself and ``woocommerce_webhook_http_args`` filters may change it.
        """
        return _PING_BODY.fullmatch(delivery.body.strip()) is not None

    def verify(self, delivery: Delivery, secrets: Sequence[str]) -> None:
        """Check ``X-WC-Webhook-Signature``, the base64 HMAC-SHA256 of the raw body.

        WooCommerce HTML-decodes the stored secret before signing (``&amp;``
        becomes ``&``), so configure the decoded form. Empty secrets never match.

        Raises:
            InvalidSignatureError: the header is missing or malformed, or no secret
                matches.
        """
        header = delivery.headers.get(SIGNATURE_HEADER)
        if not header:
            raise InvalidSignatureError(f"missing {SIGNATURE_HEADER} header")
        try:
            received = base64.b64decode(header.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidSignatureError(f"malformed {SIGNATURE_HEADER} header") from exc

        for secret in secrets:
            if not secret:
                continue
            key = secret.encode("utf-8", "surrogatepass")
            expected = hmac.new(key, delivery.body, hashlib.sha256).digest()
            if hmac.compare_digest(expected, received):
                return
        raise InvalidSignatureError("WooCommerce signature matches no active secret")

    def parse(self, delivery: Delivery) -> ParsedDelivery:
        """Read the topic header and the JSON body, and derive the delivery id.

        Raises:
            MappingError: the topic is missing or unsupported, or the body is not
                a JSON object.
        """
        if self.is_ping(delivery):
            webhook_id = delivery.body.strip().split(b"=", 1)[1].decode()
            return ParsedDelivery(
                topic=PING_TOPIC, delivery_id=None, payload={"webhook_id": webhook_id}
            )

        topic = (delivery.headers.get(TOPIC_HEADER) or "").strip()
        if not topic:
            raise MappingError(f"missing {TOPIC_HEADER} header", field=TOPIC_HEADER)
        if topic not in SUPPORTED_TOPICS:
            raise MappingError(
                f"unsupported WooCommerce topic {topic!r}; expected one of "
                f"{', '.join(sorted(SUPPORTED_TOPICS))}",
                field=TOPIC_HEADER,
            )

        payload = fields.decode_json_object(delivery.body)

        return ParsedDelivery(
            topic=topic, delivery_id=_content_key(delivery, topic), payload=payload
        )

    def map(self, delivery: Delivery, parsed: ParsedDelivery) -> list[Event]:
        """Map an order or customer snapshot, or a thin notification for a deletion.

        Raises:
            MappingError: a required field is missing or invalid; ``field`` names it.
        """
        if parsed.topic == PING_TOPIC:
            return []
        payload = fields.as_object(parsed.payload, "body")
        source_id = parsed.delivery_id or _content_key(delivery, parsed.topic)

        if parsed.topic == ORDER_DELETED_TOPIC:
            customer, event_type, data = _deleted_order(payload)
            occurred_at = _received_at(delivery)
        elif parsed.topic in ORDER_TOPICS:
            event_type = "order"
            if _is_legacy(payload, "order"):
                customer, data = _legacy_order(
                    fields.as_object(payload["order"], "order")
                )
            else:
                customer, data = _order(payload)
            occurred_at = data["updated_at"]
        elif parsed.topic in CUSTOMER_TOPICS:
            event_type = "customer"
            if _is_legacy(payload, "customer"):
                legacy = fields.as_object(payload["customer"], "customer")
                customer, data = _legacy_customer(legacy, _received_at(delivery))
            else:
                customer, data = _customer(payload, _received_at(delivery))
            occurred_at = data["updated_at"]
        else:
            raise MappingError(
                f"unsupported WooCommerce topic {parsed.topic!r}", field=TOPIC_HEADER
            )

        header_id = delivery.headers.get(DELIVERY_ID_HEADER)
        event: Event = {
            "id": event_id(PLATFORM, delivery.store_id, source_id),
            "type": event_type,
            "store_id": delivery.store_id,
            "platform": PLATFORM,
            "occurred_at": occurred_at,
            "delivery_id": str(header_id) if header_id else None,
            "topic": parsed.topic,
            "customer": customer,
            "data": data,
        }
        return [event]


def _content_key(delivery: Delivery, topic: str) -> str:
    """Return the dedupe key of a delivery; see ``WooCommercePlatform``."""
    header_id = delivery.headers.get(DELIVERY_ID_HEADER)
    if topic == ORDER_DELETED_TOPIC and header_id:
        return f"{topic}:delivery:{header_id}"
    # NOTE: without the header, deleting an order again after restoring it
    # yields the same key, so the second deletion is taken for a duplicate.
    return f"{topic}:sha256:{hashlib.sha256(delivery.body).hexdigest()}"


def _is_legacy(payload: JsonObject, wrapper: str) -> bool:
    """Return True for the legacy API's ``{"order": {...}}`` style of body."""
    return "id" not in payload and isinstance(payload.get(wrapper), dict)


def _received_at(delivery: Delivery) -> str:
    return fields.timestamp(delivery.received_at.isoformat(), "received_at")


def _deleted_order(payload: JsonObject) -> tuple[JsonObject, str, JsonObject]:
    """Map ``order.deleted`` to a notification naming the order.

    WooCommerce fires it when an order moves to the trash and sends only
    ``{"id": N}`` (WC_Webhook::build_payload), so no order snapshot can be built
    and the buyer is unknown. The consumer must stop counting the order with
    that id; ``order.restored`` later brings a full snapshot back.
    """
    order_id = fields.required_id(payload, "id", "")
    data: JsonObject = {
        "scope": ORDER_DELETED_TOPIC,
        "resource_type": "order",
        "resource_id": order_id,
    }
    return {"id": None, "email": None}, "notification", data


def _order(order: JsonObject) -> tuple[JsonObject, JsonObject]:
    """Map a REST API order (``wc/v1``-``wc/v3``); returns the customer and data."""
    order_id = fields.required_id(order, "id", "")
    created_at = _gmt_timestamp(order, "date_created", "")
    if created_at is None:
        raise MappingError(
            "missing timestamp in date_created_gmt", field="date_created_gmt"
        )
    updated_at = _gmt_timestamp(order, "date_modified", "") or created_at
    status = fields.optional_text(order.get("status"), "status") or None
    billing = fields.optional_object(order.get("billing"), "billing")

    line_items = [
        _line_item(item, join("line_items", index))
        for index, item in enumerate(
            fields.optional_list(order.get("line_items"), "line_items")
        )
    ]
    refunds = [
        _refund(refund, join("refunds", index))
        for index, refund in enumerate(
            fields.optional_list(order.get("refunds"), "refunds")
        )
    ]

    customer = {
        "id": fields.resource_id(order.get("customer_id"), "customer_id"),
        "email": normalise_email(billing.get("email")),
    }
    data: JsonObject = {
        "order_id": order_id,
        "name": _optional_id_text(order.get("number"), "number"),
        "created_at": created_at,
        "updated_at": updated_at,
        "currency": fields.required_text(order, "currency", ""),
        "total": fields.amount_text(order.get("total"), "total"),
        "is_test": False,
        "cancelled_at": updated_at if status in NOT_COUNTED_STATUSES else None,
        "financial_status": None,
        "status": status,
        "checkout_id": None,
        # WooCommerce core records no marketing consent on orders.
        "accepts_marketing": None,
        "line_items": line_items,
        "refunds": refunds,
    }
    return customer, data


def _legacy_order(order: JsonObject) -> tuple[JsonObject, JsonObject]:
    """Map a legacy API order: UTC ``created_at``/``updated_at``, ``billing_address``.

    NOTE: legacy order bodies list no refunds, so refunds are empty here, and a
    line's ``product_id`` is the variation id when the line is a variation.
    """
    path = "order"
    order_id = fields.required_id(order, "id", path)
    created_at = fields.timestamp(order.get("created_at"), join(path, "created_at"))
    updated_field = join(path, "updated_at")
    updated_at = (
        fields.optional_timestamp(order.get("updated_at"), updated_field) or created_at
    )
    status = fields.optional_text(order.get("status"), join(path, "status")) or None
    billing = fields.optional_object(
        order.get("billing_address"), join(path, "billing_address")
    )
    embedded = fields.optional_object(order.get("customer"), join(path, "customer"))

    items_path = join(path, "line_items")
    line_items = [
        _line_item(item, join(items_path, index))
        for index, item in enumerate(
            fields.optional_list(order.get("line_items"), items_path)
        )
    ]

    customer = {
        "id": fields.resource_id(order.get("customer_id"), join(path, "customer_id")),
        "email": normalise_email(billing.get("email"))
        or normalise_email(embedded.get("email")),
    }
    data: JsonObject = {
        "order_id": order_id,
        "name": _optional_id_text(
            order.get("order_number"), join(path, "order_number")
        ),
        "created_at": created_at,
        "updated_at": updated_at,
        "currency": fields.required_text(order, "currency", path),
        "total": fields.amount_text(order.get("total"), join(path, "total")),
        "is_test": False,
        "cancelled_at": updated_at if status in NOT_COUNTED_STATUSES else None,
        "financial_status": None,
        "status": status,
        "checkout_id": None,
        "accepts_marketing": None,
        "line_items": line_items,
        "refunds": [],
    }
    return customer, data


def _line_item(value: object, path: str) -> JsonObject:
    """Map one order line; ``total`` is the line total after discounts, before tax."""
    item = fields.as_object(value, path)
    name = item.get("name")
    if not isinstance(name, str):
        field = join(path, "name")
        raise MappingError(f"missing name in {field}", field=field)
    # Line names are stored HTML-escaped, such as "Ship Your Idea &ndash; Black".
    title = html.unescape(name)
    sku = fields.optional_text(item.get("sku"), join(path, "sku"))
    sku = sku.strip() if sku and sku.strip() else None

    product_id = fields.resource_id(item.get("product_id"), join(path, "product_id"))
    if product_id is None and sku is not None:
        product_id = f"sku:{sku}"
    elif product_id is None and title.strip():
        product_id = f"title:{title.strip()}"

    return {
        "line_item_id": fields.resource_id(item.get("id"), join(path, "id")),
        "product_id": product_id,
        "variant_id": fields.resource_id(
            item.get("variation_id"), join(path, "variation_id")
        ),
        "sku": sku,
        "title": title,
        "quantity": fields.quantity(item.get("quantity"), join(path, "quantity")),
        "price": fields.amount_text(item.get("price"), join(path, "price")),
        "total": fields.amount_text(item.get("total"), join(path, "total")),
    }


def _refund(value: object, path: str) -> JsonObject:
    """Map an order's ``refunds`` entry, whose ``total`` is negative ("-10.00").

    NOTE: order bodies give neither the refund date nor the refunded lines, so
    ``created_at`` is null and refunded quantities are not known here.
    """
    refund = fields.as_object(value, path)
    amount = abs(fields.amount(refund.get("total"), join(path, "total")))
    return {
        "refund_id": fields.required_id(refund, "id", path),
        "created_at": None,
        "amount": format(amount, "f"),
        "line_items": [],
    }


def _customer(customer: JsonObject, received_at: str) -> tuple[JsonObject, JsonObject]:
    """Map a REST API customer; every WordPress user role is mapped alike.

    Staff accounts (the ``administrator`` role, for example) also buy, so they
    are kept; the role is not part of the canonical customer.
    """
    customer_id = fields.required_id(customer, "id", "")
    email = normalise_email(customer.get("email"))
    billing = fields.optional_object(customer.get("billing"), "billing")
    created_at = _gmt_timestamp(customer, "date_created", "")
    updated_at = (
        _gmt_timestamp(customer, "date_modified", "") or created_at or received_at
    )

    data: JsonObject = {
        "customer_id": customer_id,
        "email": email,
        "first_name": fields.optional_text(customer.get("first_name"), "first_name")
        or None,
        "last_name": fields.optional_text(customer.get("last_name"), "last_name")
        or None,
        "created_at": created_at,
        "updated_at": updated_at,
        "tags": [],
        "country": _country(billing.get("country"), "billing.country"),
        # WooCommerce core has no email marketing consent field.
        "email_consent": None,
    }
    return {"id": customer_id, "email": email}, data


def _legacy_customer(
    customer: JsonObject, received_at: str
) -> tuple[JsonObject, JsonObject]:
    """Map a legacy API customer, which may carry no modification time.

    Without ``last_update`` or ``updated_at`` the snapshot is dated when it was
    received, the best available bound for when the customer changed.
    """
    path = "customer"
    customer_id = fields.required_id(customer, "id", path)
    email = normalise_email(customer.get("email"))
    billing_path = join(path, "billing_address")
    billing = fields.optional_object(customer.get("billing_address"), billing_path)
    created_at = fields.optional_timestamp(
        customer.get("created_at"), join(path, "created_at")
    )
    updated_key = "last_update" if customer.get("last_update") else "updated_at"
    updated_at = fields.optional_timestamp(
        customer.get(updated_key), join(path, updated_key)
    )

    data: JsonObject = {
        "customer_id": customer_id,
        "email": email,
        "first_name": fields.optional_text(
            customer.get("first_name"), join(path, "first_name")
        )
        or None,
        "last_name": fields.optional_text(
            customer.get("last_name"), join(path, "last_name")
        )
        or None,
        "created_at": created_at,
        "updated_at": updated_at or received_at,
        "tags": [],
        "country": _country(billing.get("country"), join(billing_path, "country")),
        "email_consent": None,
    }
    return {"id": customer_id, "email": email}, data


def _country(value: object, field: str) -> str | None:
    country = fields.optional_text(value, field)
    return country.strip().upper() if country and country.strip() else None


def _optional_id_text(value: object, field: str) -> str | None:
    """Read an order number, which WooCommerce sends as a string or an integer."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    text = fields.optional_text(value, field)
    return text.strip() if text and text.strip() else None


def _gmt_timestamp(obj: JsonObject, key: str, path: str) -> str | None:
    """Read ``{key}_gmt``, falling back to ``{key}`` when a body lacks the UTC form.

    The fallback is the site's local time without an offset, read as UTC, so it
    is off by the site's UTC offset. REST API v2 and later send ``_gmt``.
    """
    gmt_key = f"{key}_gmt"
    value = obj.get(gmt_key)
    if value is not None and value != "":
        return fields.timestamp(value, join(path, gmt_key))
    return fields.optional_timestamp(obj.get(key), join(path, key))
