"""BigCommerce hydration: fetch the resource a notification names and map it.

Hydrated: orders (V2 order plus its products, for order scopes and for
store/cart/converted, whose cart no longer exists), customers (V3, with their
addresses for the country) and open carts (V3, as checkout events).
Not hydrated: newsletter subscribers, deleted customers and carts (nothing is
left to fetch), individual refunds (V2 orders give only ``refunded_amount`` and
per-product refunded quantities, so refunds become one aggregate entry), order
coupons, shipments and messages.
"""

from __future__ import annotations

import re
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson
import structlog

from cartstream.errors import CartstreamError, MappingError
from cartstream.events import Event, event_id, normalise_email
from handlers.platforms import fields
from handlers.platforms.fields import JsonObject

PLATFORM = "bigcommerce"

# Order statuses that are not a sale: 0 Incomplete (checkout never finished),
# 5 Cancelled and 6 Declined (payment refused), from BigCommerce's order
# status list (GET /v2/order_statuses).
NOT_COUNTED_STATUS_IDS = frozenset({0, 5, 6})

DEFAULT_TIMEOUT_S = 10.0
# V2 lists return at most 250 items a page.
DEFAULT_PAGE_LIMIT = 250
MAX_PAGES = 40

_STORE_HASH = re.compile(r"[A-Za-z0-9]{1,64}")
_NUMERIC_ID = re.compile(r"[0-9]{1,20}")
_CART_ID = re.compile(r"[A-Za-z0-9-]{1,64}")

logger = structlog.get_logger(__name__)


class BigCommerceAPIError(CartstreamError):
    """A BigCommerce API request failed; ``status`` is the HTTP status when known."""

    def __init__(self, message: str, *, status: int | None, retriable: bool) -> None:
        super().__init__(message)
        self.status = status
        self.retriable = retriable


class BigCommerceClient:
    """Read orders, customers and carts of one store through BigCommerce's REST API.

    Args:
        base_url: the API origin, such as ``https://api.bigcommerce.com``; tests
            pass a local server.
        store_hash: the store's hash, as in ``stores/<store_hash>`` of a webhook's
            ``producer``.
        access_token: the API account's token, sent as ``X-Auth-Token``; a
            ``cartstream.config.Secret`` keeps it out of reprs.
        session: the caller's session, which the client never closes.
        timeout_s: the total time allowed for one request.
        page_limit: products fetched per page of an order's product list.
    """

    def __init__(
        self,
        base_url: str,
        store_hash: str,
        access_token: str,
        session: aiohttp.ClientSession,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        page_limit: int = DEFAULT_PAGE_LIMIT,
    ) -> None:
        if _STORE_HASH.fullmatch(store_hash) is None:
            raise ValueError(f"invalid BigCommerce store hash {store_hash!r}")
        if not 1 <= page_limit <= DEFAULT_PAGE_LIMIT:
            raise ValueError(f"page_limit must be 1-{DEFAULT_PAGE_LIMIT}")
        self.base_url = base_url.rstrip("/")
        self.store_hash = store_hash
        self._store_url = f"{self.base_url}/stores/{store_hash}"
        self._headers = {
            "X-Auth-Token": str(access_token),
            "Accept": "application/json",
        }
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._page_limit = page_limit

    def __repr__(self) -> str:
        # The access token is left out so the client can be logged safely.
        return (
            f"BigCommerceClient(base_url={self.base_url!r}, "
            f"store_hash={self.store_hash!r})"
        )

    async def fetch_order(self, order_id: str) -> JsonObject:
        """Fetch a V2 order and all its products.

        Returns:
            ``{"order": <order>, "products": [<order product>, ...]}``.

        Raises:
            BigCommerceAPIError: a request failed; ``retriable`` is True when a
                later retry can succeed.
        """
        order_id = _path_id(order_id, _NUMERIC_ID, "order id")
        order = await self._get(f"/v2/orders/{order_id}", f"order {order_id}")
        if not isinstance(order, dict):
            raise _invalid_body(f"order {order_id}")

        products: list[Any] = []
        for page in range(1, MAX_PAGES + 1):
            params = {"page": str(page), "limit": str(self._page_limit)}
            resource = f"products of order {order_id}"
            batch = await self._get(f"/v2/orders/{order_id}/products", resource, params)
            # V2 returns 204 No Content for an empty list.
            batch = [] if batch is None else batch
            if not isinstance(batch, list):
                raise _invalid_body(resource)
            products.extend(batch)
            if len(batch) < self._page_limit:
                return {"order": order, "products": products}
        raise BigCommerceAPIError(
            f"order {order_id} has more than {MAX_PAGES * self._page_limit} products",
            status=None,
            retriable=False,
        )

    async def fetch_customer(self, customer_id: str) -> JsonObject:
        """Fetch a V3 customer with its addresses.

        Raises:
            BigCommerceAPIError: a request failed, or no customer has that id
                (status 404, not retriable).
        """
        customer_id = _path_id(customer_id, _NUMERIC_ID, "customer id")
        resource = f"customer {customer_id}"
        params = {"id:in": customer_id, "include": "addresses"}
        body = await self._get("/v3/customers", resource, params)
        customers = body.get("data") if isinstance(body, dict) else None
        if not isinstance(customers, list):
            raise _invalid_body(resource)
        if not customers or not isinstance(customers[0], dict):
            raise BigCommerceAPIError(
                f"{resource} not found", status=404, retriable=False
            )
        customer: JsonObject = customers[0]
        return customer

    async def fetch_cart(self, cart_id: str) -> JsonObject:
        """Fetch a V3 cart; BigCommerce returns 404 for converted and deleted carts.

        Raises:
            BigCommerceAPIError: a request failed; ``status`` 404 means the cart
                no longer exists.
        """
        cart_id = _path_id(cart_id, _CART_ID, "cart id")
        resource = f"cart {cart_id}"
        body = await self._get(f"/v3/carts/{cart_id}", resource)
        cart = body.get("data") if isinstance(body, dict) else None
        if not isinstance(cart, dict):
            raise _invalid_body(resource)
        return cart

    async def _get(
        self, path: str, resource: str, params: dict[str, str] | None = None
    ) -> Any:
        """GET one resource and decode its JSON; returns None for 204 No Content."""
        try:
            async with self._session.get(
                self._store_url + path,
                params=params,
                headers=self._headers,
                timeout=self._timeout,
            ) as response:
                status = response.status
                reset_ms = response.headers.get("X-Rate-Limit-Time-Reset-Ms")
                body = await response.read()
        except TimeoutError as exc:
            raise BigCommerceAPIError(
                f"request for {resource} timed out", status=None, retriable=True
            ) from exc
        except aiohttp.ClientError as exc:
            raise BigCommerceAPIError(
                f"request for {resource} failed: {type(exc).__name__}",
                status=None,
                retriable=True,
            ) from exc

        if status == 204:
            return None
        if status >= 400:
            raise _status_error(status, resource, reset_ms)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _invalid_body(resource) from exc


async def hydrate(client: BigCommerceClient, notification: Event) -> list[Event]:
    """Fetch the resource a BigCommerce notification names and map it.

    Returns no events for subscriber scopes and for deleted customers and
    carts, and none when a cart is already gone (404), which is normal once it
    has been converted or deleted.

    Raises:
        BigCommerceAPIError: a request failed (an order or customer not found
            included); ``retriable`` is True when a later retry can succeed.
        MappingError: the fetched resource cannot be mapped.
    """
    data = notification["data"]
    store_id = notification["store_id"]
    scope = str(data["scope"])
    resource_type = data["resource_type"]
    source_id = str(notification["id"])
    delivery_id = notification.get("delivery_id")

    # A converted cart is deleted; the order it became names it as checkout_id.
    order_id = data.get("order_id") or (
        data["resource_id"] if resource_type == "order" else None
    )
    if order_id is not None:
        resources = await client.fetch_order(str(order_id))
        event = order_event_from_api(
            store_id,
            resources["order"],
            resources["products"],
            source_id=source_id,
            topic=scope,
            delivery_id=delivery_id,
        )
        return [event]

    if scope.endswith("/deleted"):
        return []
    if resource_type == "customer":
        customer = await client.fetch_customer(str(data["resource_id"]))
        event = customer_event_from_api(
            store_id,
            customer,
            source_id=source_id,
            topic=scope,
            delivery_id=delivery_id,
        )
        return [event]
    if resource_type == "cart":
        try:
            cart = await client.fetch_cart(str(data["resource_id"]))
        except BigCommerceAPIError as exc:
            if exc.status != 404:
                raise
            logger.info("bigcommerce_cart_gone", event_id=source_id, scope=scope)
            return []
        event = checkout_event_from_api(
            store_id, cart, source_id=source_id, topic=scope, delivery_id=delivery_id
        )
        return [event]
    return []


def order_event_from_api(
    store_id: str,
    order_json: object,
    products_json: object,
    *,
    source_id: str,
    topic: str | None = None,
    delivery_id: str | None = None,
) -> Event:
    """Map a V2 order and its products to an ``order`` snapshot.

    ``source_id`` is the id of the notification being hydrated, so the event id
    is stable and differs from the notification's. Totals are tax-inclusive,
    line totals exclude tax. An archived (``is_deleted``) order or one whose
    status is not a sale gets ``cancelled_at`` so it stops counting.

    NOTE: ``currency`` is the order's ``currency_code``. For an order paid in a
    currency other than the store's default, it is unverified whether V2 totals
    are in the store's or the buyer's currency, because no live store was used.

    Raises:
        MappingError: a required field is missing or invalid.
    """
    order = fields.as_object(order_json, "order")
    order_id = fields.required_id(order, "id", "order")
    created_at = _rfc2822(order.get("date_created"), "order.date_created")
    updated_at = (
        _optional_rfc2822(order.get("date_modified"), "order.date_modified")
        or created_at
    )
    status_id = order.get("status_id")
    is_deleted = order.get("is_deleted") is True
    is_counted = not is_deleted and status_id not in NOT_COUNTED_STATUS_IDS
    billing = fields.optional_object(
        order.get("billing_address"), "order.billing_address"
    )
    opt_in = order.get("is_email_opt_in")

    products = fields.as_list(products_json, "products")
    line_items = [
        _order_line(product, f"products[{index}]")
        for index, product in enumerate(products)
    ]
    refunds = _aggregate_refund(order, order_id, products)

    data: JsonObject = {
        "order_id": order_id,
        "name": None,
        "created_at": created_at,
        "updated_at": updated_at,
        "currency": fields.required_text(order, "currency_code", "order"),
        "total": fields.amount_text(order.get("total_inc_tax"), "order.total_inc_tax"),
        # BigCommerce has no test orders; sandbox stores are separate stores.
        "is_test": False,
        "cancelled_at": None if is_counted else updated_at,
        "financial_status": fields.optional_text(
            order.get("payment_status"), "order.payment_status"
        )
        or None,
        "status": fields.optional_text(order.get("status"), "order.status") or None,
        "checkout_id": fields.optional_text(order.get("cart_id"), "order.cart_id")
        or None,
        "accepts_marketing": opt_in if isinstance(opt_in, bool) else None,
        "line_items": line_items,
        "refunds": refunds,
    }
    customer = {
        "id": fields.resource_id(order.get("customer_id"), "order.customer_id"),
        "email": normalise_email(billing.get("email")),
    }
    return _event(
        store_id, "order", updated_at, customer, data, source_id, topic, delivery_id
    )


def customer_event_from_api(
    store_id: str,
    customer_json: object,
    *,
    source_id: str,
    topic: str | None = None,
    delivery_id: str | None = None,
) -> Event:
    """Map a V3 customer to a ``customer`` snapshot.

    ``email_consent`` is null: BigCommerce keeps newsletter consent on
    subscribers, which are not hydrated, and the order's ``is_email_opt_in``
    carries the checkout choice instead.

    Raises:
        MappingError: a required field is missing or invalid.
    """
    customer = fields.as_object(customer_json, "customer")
    customer_id = fields.required_id(customer, "id", "customer")
    email = normalise_email(customer.get("email"))
    created_at = fields.optional_timestamp(
        customer.get("date_created"), "customer.date_created"
    )
    updated_at = (
        fields.optional_timestamp(
            customer.get("date_modified"), "customer.date_modified"
        )
        or created_at
    )
    if updated_at is None:
        raise MappingError(
            "missing timestamp in customer.date_modified",
            field="customer.date_modified",
        )

    data: JsonObject = {
        "customer_id": customer_id,
        "email": email,
        "first_name": fields.optional_text(
            customer.get("first_name"), "customer.first_name"
        )
        or None,
        "last_name": fields.optional_text(
            customer.get("last_name"), "customer.last_name"
        )
        or None,
        "created_at": created_at,
        "updated_at": updated_at,
        "tags": [],
        "country": _first_country(customer.get("addresses")),
        "email_consent": None,
    }
    ref = {"id": customer_id, "email": email}
    return _event(
        store_id, "customer", updated_at, ref, data, source_id, topic, delivery_id
    )


def checkout_event_from_api(
    store_id: str,
    cart_json: object,
    *,
    source_id: str,
    topic: str | None = None,
    delivery_id: str | None = None,
) -> Event:
    """Map a V3 cart to a ``checkout`` snapshot whose ``checkout_id`` is the cart id.

    ``completed_at`` is always null: a converted cart cannot be fetched, and the
    order that it became names it in ``checkout_id`` instead.

    Raises:
        MappingError: a required field is missing or invalid.
    """
    cart = fields.as_object(cart_json, "cart")
    cart_id = fields.required_id(cart, "id", "cart")
    created_at = fields.timestamp(cart.get("created_time"), "cart.created_time")
    updated_at = (
        fields.optional_timestamp(cart.get("updated_time"), "cart.updated_time")
        or created_at
    )
    currency = fields.optional_object(cart.get("currency"), "cart.currency")
    items = fields.optional_object(cart.get("line_items"), "cart.line_items")

    line_items = []
    for kind in ("physical_items", "digital_items", "custom_items"):
        kind_path = f"cart.line_items.{kind}"
        for index, item in enumerate(fields.optional_list(items.get(kind), kind_path)):
            line_items.append(_cart_line(item, f"{kind_path}[{index}]"))

    data: JsonObject = {
        "checkout_id": cart_id,
        "created_at": created_at,
        "updated_at": updated_at,
        "completed_at": None,
        "currency": fields.required_text(currency, "code", "cart.currency"),
        "total": fields.amount_text(cart.get("cart_amount"), "cart.cart_amount"),
        "accepts_marketing": None,
        "line_items": line_items,
    }
    customer = {
        "id": fields.resource_id(cart.get("customer_id"), "cart.customer_id"),
        "email": normalise_email(cart.get("email")),
    }
    return _event(
        store_id, "checkout", updated_at, customer, data, source_id, topic, delivery_id
    )


def _event(
    store_id: str,
    event_type: str,
    occurred_at: str,
    customer: JsonObject,
    data: JsonObject,
    source_id: str,
    topic: str | None,
    delivery_id: str | None,
) -> Event:
    return {
        "id": event_id(PLATFORM, store_id, source_id),
        "type": event_type,
        "store_id": store_id,
        "platform": PLATFORM,
        "occurred_at": occurred_at,
        "delivery_id": delivery_id,
        "topic": topic,
        "customer": customer,
        "data": data,
    }


def _order_line(value: object, path: str) -> JsonObject:
    product = fields.as_object(value, path)
    title = fields.optional_text(product.get("name"), f"{path}.name") or ""
    sku = fields.optional_text(product.get("sku"), f"{path}.sku")
    sku = sku.strip() if sku and sku.strip() else None
    return {
        "line_item_id": fields.resource_id(product.get("id"), f"{path}.id"),
        "product_id": _product_key(product, title, sku, path),
        "variant_id": fields.resource_id(
            product.get("variant_id"), f"{path}.variant_id"
        ),
        "sku": sku,
        "title": title,
        "quantity": fields.quantity(product.get("quantity"), f"{path}.quantity"),
        "price": fields.amount_text(
            product.get("price_ex_tax"), f"{path}.price_ex_tax"
        ),
        "total": fields.amount_text(
            product.get("total_ex_tax"), f"{path}.total_ex_tax"
        ),
    }


def _cart_line(value: object, path: str) -> JsonObject:
    """Map a cart item; ``total`` is the extended sale price less line discounts."""
    item = fields.as_object(value, path)
    title = fields.optional_text(item.get("name"), f"{path}.name") or ""
    sku = fields.optional_text(item.get("sku"), f"{path}.sku")
    sku = sku.strip() if sku and sku.strip() else None
    # Custom items have list prices only.
    price_key = "sale_price" if "sale_price" in item else "list_price"
    total_key = (
        "extended_sale_price"
        if "extended_sale_price" in item
        else "extended_list_price"
    )
    total = fields.amount(item.get(total_key), f"{path}.{total_key}")
    for discount_key in ("discount_amount", "coupon_amount"):
        if item.get(discount_key) is not None:
            total -= fields.amount(item[discount_key], f"{path}.{discount_key}")
    return {
        "line_item_id": fields.resource_id(item.get("id"), f"{path}.id"),
        "product_id": _product_key(item, title, sku, path),
        "variant_id": fields.resource_id(item.get("variant_id"), f"{path}.variant_id"),
        "sku": sku,
        "title": title,
        "quantity": fields.quantity(item.get("quantity"), f"{path}.quantity"),
        "price": fields.amount_text(item.get(price_key), f"{path}.{price_key}"),
        "total": format(total, "f"),
    }


def _product_key(
    item: JsonObject, title: str, sku: str | None, path: str
) -> str | None:
    """Return the product id, else ``sku:<sku>``, else ``title:<title>``.

    Custom products have product id 0, so the SKU or title groups them instead.
    """
    product_id = fields.resource_id(item.get("product_id"), f"{path}.product_id")
    if product_id is not None:
        return product_id
    if sku is not None:
        return f"sku:{sku}"
    return f"title:{title.strip()}" if title.strip() else None


def _aggregate_refund(
    order: JsonObject, order_id: str, products: list[Any]
) -> list[JsonObject]:
    """Return one refund summing ``refunded_amount``, or none when it is zero.

    Its id ``<order id>-refunded`` is synthetic, because V2 orders carry only the
    total; the lines come from each product's ``quantity_refunded``.
    """
    refunded_value = order.get("refunded_amount")
    if refunded_value is None:
        return []
    refunded = fields.amount(refunded_value, "order.refunded_amount")
    if refunded == 0:
        return []

    lines = []
    for index, value in enumerate(products):
        path = f"products[{index}]"
        product = fields.as_object(value, path)
        quantity_value = product.get("quantity_refunded")
        if quantity_value is None or quantity_value == 0:
            continue
        refund_amount = product.get("refund_amount")
        amount = (
            Decimal(0)
            if refund_amount is None
            else fields.amount(refund_amount, f"{path}.refund_amount")
        )
        lines.append(
            {
                "line_item_id": fields.resource_id(product.get("id"), f"{path}.id"),
                "product_id": fields.resource_id(
                    product.get("product_id"), f"{path}.product_id"
                ),
                "quantity": fields.quantity(
                    quantity_value, f"{path}.quantity_refunded"
                ),
                "amount": format(abs(amount), "f"),
            }
        )
    return [
        {
            "refund_id": f"{order_id}-refunded",
            "created_at": None,
            "amount": format(abs(refunded), "f"),
            "line_items": lines,
        }
    ]


def _first_country(value: object) -> str | None:
    for index, address in enumerate(fields.optional_list(value, "customer.addresses")):
        path = f"customer.addresses[{index}]"
        country = fields.optional_text(
            fields.as_object(address, path).get("country_code"), f"{path}.country_code"
        )
        if country and country.strip():
            return country.strip().upper()
    return None


def _path_id(value: str, pattern: re.Pattern[str], id_name: str) -> str:
    """Check an id before it goes into a URL path, so it cannot change the path."""
    text = str(value).strip()
    if pattern.fullmatch(text) is None:
        raise BigCommerceAPIError(
            f"invalid {id_name} {text!r}", status=None, retriable=False
        )
    return text


def _status_error(
    status: int, resource: str, reset_ms: str | None
) -> BigCommerceAPIError:
    if status == 404:
        return BigCommerceAPIError(
            f"{resource} not found", status=status, retriable=False
        )
    if status in (401, 403):
        return BigCommerceAPIError(
            f"BigCommerce rejected the request for {resource} ({status}); check the "
            "store's access token and its API scopes",
            status=status,
            retriable=False,
        )
    if status == 429:
        wait = f"; retry after {reset_ms} ms" if reset_ms else ""
        return BigCommerceAPIError(
            f"BigCommerce rate limit reached for {resource}{wait}",
            status=status,
            retriable=True,
        )
    retriable = status >= 500
    return BigCommerceAPIError(
        f"request for {resource} failed with HTTP {status}",
        status=status,
        retriable=retriable,
    )


def _invalid_body(resource: str) -> BigCommerceAPIError:
    # A malformed response is most likely a proxy or outage page, so try again.
    return BigCommerceAPIError(
        f"BigCommerce returned an invalid body for {resource}",
        status=None,
        retriable=True,
    )


def _rfc2822(value: object, field: str) -> str:
    """Convert a V2 date such as ``Tue, 05 Mar 2019 21:40:12 +0000`` to UTC."""
    if not isinstance(value, str) or not value.strip():
        raise MappingError(f"missing timestamp in {field}", field=field)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError) as exc:
        raise MappingError(f"invalid timestamp in {field}", field=field) from exc
    return fields.timestamp(moment.isoformat(), field)


def _optional_rfc2822(value: object, field: str) -> str | None:
    if value is None or value == "":
        return None
    return _rfc2822(value, field)
