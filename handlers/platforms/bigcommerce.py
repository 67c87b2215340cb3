"""BigCommerce webhooks: a shared-token check and thin notifications naming a resource.

BigCommerce does not sign deliveries. Its ``hash`` field is an unkeyed SHA-1 of
the payload, which anyone can compute, so it proves nothing about the sender.
A hook can instead carry custom ``headers`` that BigCommerce sends with every
delivery: create each hook with ``"headers": {"X-Cartstream-Token": "<secret>"}``
and configure the same secret for the store here. The token travels in clear
text inside TLS, so it authenticates the sender as far as HTTPS keeps it secret.

Payloads are thin (``scope``, ``store_id``, ``data.type``, ``data.id``, ``hash``,
``created_at``, ``producer``), so every delivery becomes one ``notification``
event; ``handlers.platforms.bigcommerce_api`` fetches the resource it names.
What ``data.id`` means depends on the scope (see ``SCOPES``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cartstream.errors import InvalidSignatureError, MappingError
from cartstream.events import Event, event_id
from handlers.platforms import fields
from handlers.platforms.base import Delivery, ParsedDelivery
from handlers.platforms.fields import JsonObject

PLATFORM = "bigcommerce"
TOKEN_HEADER = "X-Cartstream-Token"

# The largest Unix time that ``datetime`` can represent (9999-12-31T23:59:59Z).
MAX_UNIX_TIME_S = 253_402_300_799


@dataclass(frozen=True)
class ScopeRule:
    """The resource type a scope names and the path of its id inside ``data``."""

    resource_type: str
    id_path: tuple[str, ...]


_ORDER = ScopeRule("order", ("id",))
_CART = ScopeRule("cart", ("id",))
_CUSTOMER = ScopeRule("customer", ("id",))

# ``data.id`` by scope, as BigCommerce's webhook events reference documents:
# - order scopes: the order id, also for store/order/refund/created, where the
#   refund is ``data.refund.refund_id``;
# - cart scopes: the cart UUID; store/cart/converted adds the new order as
#   ``data.orderId``, couponApplied the coupon as ``data.couponId``;
# - cart line item scopes: the line item, with the cart in ``data.cartId``;
# - customer scopes: the customer id, except the address scopes, where it is
#   the address and the customer is ``data.address.customer_id``;
# - subscriber scopes: the newsletter subscriber id, which is not a customer id.
SCOPES: dict[str, ScopeRule] = {
    "store/order/created": _ORDER,
    "store/order/updated": _ORDER,
    "store/order/archived": _ORDER,
    "store/order/statusUpdated": _ORDER,
    "store/order/message/created": _ORDER,
    "store/order/refund/created": _ORDER,
    "store/cart/created": _CART,
    "store/cart/updated": _CART,
    "store/cart/deleted": _CART,
    "store/cart/abandoned": _CART,
    "store/cart/couponApplied": _CART,
    "store/cart/converted": _CART,
    "store/cart/lineItem/created": ScopeRule("cart", ("cartId",)),
    "store/cart/lineItem/updated": ScopeRule("cart", ("cartId",)),
    "store/cart/lineItem/deleted": ScopeRule("cart", ("cartId",)),
    "store/customer/created": _CUSTOMER,
    "store/customer/updated": _CUSTOMER,
    "store/customer/deleted": _CUSTOMER,
    "store/customer/address/created": ScopeRule("customer", ("address", "customer_id")),
    "store/customer/address/updated": ScopeRule("customer", ("address", "customer_id")),
    "store/customer/address/deleted": ScopeRule("customer", ("address", "customer_id")),
    "store/customer/payment/instrument/default/updated": _CUSTOMER,
    "store/subscriber/created": ScopeRule("subscriber", ("id",)),
    "store/subscriber/updated": ScopeRule("subscriber", ("id",)),
    "store/subscriber/deleted": ScopeRule("subscriber", ("id",)),
}

# Other ids a scope carries, copied into the notification under the given name.
_RELATED_IDS: dict[str, tuple[str, ...]] = {
    "order_id": ("orderId",),
    "refund_id": ("refund", "refund_id"),
    "coupon_id": ("couponId",),
    "address_id": ("id",),
    "previous_status_id": ("status", "previous_status_id"),
    "new_status_id": ("status", "new_status_id"),
}
# Status ids stay integers because 0 is a status (Incomplete), not a missing id.
_STATUS_FIELDS = frozenset({"previous_status_id", "new_status_id"})
_RELATED_BY_SCOPE: dict[str, tuple[str, ...]] = {
    "store/cart/converted": ("order_id",),
    "store/order/refund/created": ("refund_id",),
    "store/cart/couponApplied": ("coupon_id",),
    "store/order/statusUpdated": ("previous_status_id", "new_status_id"),
    "store/customer/address/created": ("address_id",),
    "store/customer/address/updated": ("address_id",),
    "store/customer/address/deleted": ("address_id",),
}


class BigCommercePlatform:
    """Token check and notification mapping for BigCommerce webhooks.

    Delivery ids: BigCommerce documents ``hash`` as the SHA-1 of the JSON payload
    and states that a hook firing twice for the same event sends the same hash,
    so a retry repeats it. The delivery id is ``{scope}:{hash}:{created_at}``:
    ``created_at`` keeps two changes of one resource at different seconds apart
    even if the hash covered ``data`` alone. Two identical payloads in the same
    second cannot be distinguished from a retry, which is harmless because the hydrator
    fetches the resource's current state either way.
    """

    name = PLATFORM

    def verify(self, delivery: Delivery, secrets: Sequence[str]) -> None:
        """Compare ``X-Cartstream-Token`` with each active secret in constant time.

        Raises:
            InvalidSignatureError: the header is missing or matches no secret.
        """
        token = delivery.headers.get(TOKEN_HEADER)
        if not token:
            raise InvalidSignatureError(f"missing {TOKEN_HEADER} header")
        # Comparing digests keeps the time independent of the token's length.
        received = _digest(token)
        for secret in secrets:
            if secret and hmac.compare_digest(_digest(secret), received):
                return
        raise InvalidSignatureError("BigCommerce token matches no active secret")

    def parse(self, delivery: Delivery) -> ParsedDelivery:
        """Read the scope, and build the delivery id from the scope, hash and time.

        Raises:
            MappingError: the body is not a JSON object or has no scope.
        """
        payload = fields.decode_json_object(delivery.body)

        scope = payload.get("scope")
        if not isinstance(scope, str) or not scope.strip():
            raise MappingError("missing scope", field="scope")
        scope = scope.strip()

        digest = payload.get("hash")
        if not isinstance(digest, str) or not digest.strip():
            # BigCommerce's documented payload includes ``hash``. Without
            # it, the body's digest still makes a retry (the same bytes) the
            # same delivery.
            digest = "sha256-" + hashlib.sha256(delivery.body).hexdigest()
        created_at = payload.get("created_at")
        delivery_id = f"{scope}:{digest.strip()}:{created_at}"

        return ParsedDelivery(topic=scope, delivery_id=delivery_id, payload=payload)

    def map(self, delivery: Delivery, parsed: ParsedDelivery) -> list[Event]:
        """Map a delivery to one ``notification`` event naming the resource.

        The customer is known only for customer scopes; other events carry a
        null customer until the hydrator fetches the resource.

        Raises:
            MappingError: the scope is unsupported or a required field is invalid.
        """
        payload = fields.as_object(parsed.payload, "body")
        scope = parsed.topic
        rule = SCOPES.get(scope)
        if rule is None:
            raise MappingError(
                f"unsupported BigCommerce scope {scope!r}; subscribe to order, cart, "
                "customer or subscriber scopes",
                field="scope",
            )

        data = fields.as_object(payload.get("data"), "data")
        resource_id = _required_id(data, rule.id_path, "data")
        notification: JsonObject = {
            "scope": scope,
            "resource_type": rule.resource_type,
            "resource_id": resource_id,
            "platform_store_id": _store_id(payload.get("store_id")),
            "store_hash": _store_hash(payload.get("producer")),
        }
        for name in _RELATED_BY_SCOPE.get(scope, ()):
            path = _RELATED_IDS[name]
            if name in _STATUS_FIELDS:
                notification[name] = _status_id_at(data, path)
            else:
                notification[name] = _optional_id_at(data, path, "data")

        customer_id = resource_id if rule.resource_type == "customer" else None
        source_id = parsed.delivery_id or f"{scope}:{payload.get('hash')}"
        event: Event = {
            "id": event_id(PLATFORM, delivery.store_id, source_id),
            "type": "notification",
            "store_id": delivery.store_id,
            "platform": PLATFORM,
            "occurred_at": _unix_time(payload.get("created_at"), "created_at"),
            "delivery_id": parsed.delivery_id,
            "topic": scope,
            "customer": {"id": customer_id, "email": None},
            "data": notification,
        }
        return [event]


def _digest(text: str) -> bytes:
    # surrogatepass keeps lone surrogates, which header decoding can produce,
    # from raising; such a token then simply matches no secret.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _optional_id_at(data: JsonObject, path: tuple[str, ...], prefix: str) -> str | None:
    value: object = data
    field = prefix
    for key in path:
        field = f"{field}.{key}"
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return fields.resource_id(value, field)


def _status_id_at(data: JsonObject, path: tuple[str, ...]) -> int | None:
    value: object = data
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        field = ".".join(("data", *path))
        raise MappingError(f"invalid status id in {field}", field=field)
    return value


def _required_id(data: JsonObject, path: tuple[str, ...], prefix: str) -> str:
    value = _optional_id_at(data, path, prefix)
    if value is None:
        field = ".".join((prefix, *path))
        raise MappingError(f"missing id in {field}", field=field)
    return value


def _store_id(value: object) -> str | None:
    """Read ``store_id``, which BigCommerce sends as a string or a number."""
    return fields.resource_id(value, "store_id")


def _store_hash(value: object) -> str | None:
    """Read the store hash from ``producer``, which reads ``stores/<store_hash>``."""
    if not isinstance(value, str) or not value.startswith("stores/"):
        return None
    return value.removeprefix("stores/").strip() or None


def _unix_time(value: object, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MappingError(f"missing or invalid Unix time in {field}", field=field)
    if not 0 <= value <= MAX_UNIX_TIME_S:
        raise MappingError(f"Unix time out of range in {field}", field=field)
    moment = datetime.fromtimestamp(value, tz=UTC)
    return moment.isoformat().replace("+00:00", "Z")
