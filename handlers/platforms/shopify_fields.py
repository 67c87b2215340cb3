"""Readers for Shopify payload fields: shop money, lines, consent and refunds.

Each reader raises MappingError naming the JSON path, like ``line_items[1].quantity``.
"""

from __future__ import annotations

from decimal import Context, Decimal

from cartstream.errors import MappingError
from handlers.platforms.fields import (
    JsonObject,
    amount,
    as_list,
    as_object,
    join,
    optional_list,
    optional_object,
    optional_text,
    optional_timestamp,
    quantity,
    required_id,
    resource_id,
)

# Bounded amounts (27 digits) times 64-bit quantities (20 digits) fit in 47
# digits, so products and sums in this context are exact. The default context
# rounds at 28 digits.
EXACT = Context(prec=80)

CONSENT_STATES = frozenset(
    {"subscribed", "not_subscribed", "unsubscribed", "pending", "redacted"}
)


def required_text(obj: JsonObject, key: str, path: str) -> str:
    """Return ``obj[key]`` as sent, unlike ``fields.required_text``, which strips it.

    Only null and empty text count as missing here, so text of only white space
    passes unchanged.
    """
    field = join(path, key)
    value = optional_text(obj.get(key), field)
    if not value:
        raise MappingError(f"missing text in {field}", field=field)
    return value


def optional_bool(value: object, field: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise MappingError(f"invalid boolean in {field}", field=field)


def set_shop_amount(obj: JsonObject, key: str, path: str) -> Decimal | None:
    """Return ``{key}_set.shop_money.amount``: the amount in the shop's currency."""
    field = join(path, f"{key}_set")
    money_set = optional_object(obj.get(f"{key}_set"), field)
    shop_money = optional_object(money_set.get("shop_money"), join(field, "shop_money"))
    value = shop_money.get("amount")
    if value is None:
        return None
    return amount(value, join(field, "shop_money.amount"))


def shop_amount(obj: JsonObject, key: str, path: str) -> Decimal | None:
    """Return the shop-currency amount of ``key``, preferring its ``_set`` form.

    Plain price, total_price, subtotal and allocation amounts are read as shop
    currency too. Transactions are read differently, because their plain
    ``amount`` is in the payment's currency, named by their ``currency`` field.
    """
    from_set = set_shop_amount(obj, key, path)
    if from_set is not None:
        return from_set
    value = obj.get(key)
    if value is None:
        return None
    return amount(value, join(path, key))


def required_shop_amount(obj: JsonObject, key: str, path: str) -> Decimal:
    value = shop_amount(obj, key, path)
    if value is None:
        field = join(path, key)
        raise MappingError(f"missing amount in {field}", field=field)
    return value


def presentment_amount(obj: JsonObject, key: str, path: str) -> str | None:
    field = join(path, f"{key}_set")
    money_set = optional_object(obj.get(f"{key}_set"), field)
    presentment = optional_object(
        money_set.get("presentment_money"), join(field, "presentment_money")
    )
    value = presentment.get("amount")
    if value is None:
        return None
    return format(amount(value, join(field, "presentment_money.amount")), "f")


def product_key(item: JsonObject, path: str) -> str | None:
    """Return the product id, else ``sku:<sku>``, else ``title:<title>``.

    Line items of custom or deleted products can have a null product id. The
    SKU or title still lets top-purchase rankings group one product together.
    """
    product_id = resource_id(item.get("product_id"), join(path, "product_id"))
    if product_id is not None:
        return product_id
    sku = optional_text(item.get("sku"), join(path, "sku"))
    if sku and sku.strip():
        return f"sku:{sku.strip()}"
    title = optional_text(item.get("title"), join(path, "title"))
    if title and title.strip():
        return f"title:{title.strip()}"
    return None


def line_discount(item: JsonObject, path: str) -> Decimal:
    """Sum the discounts allocated to one line, in the shop's currency.

    Order lines list them in ``discount_allocations``, and some checkout lines
    only have ``applied_discounts``. Only one list is read, so nothing counts
    twice.
    """
    key = (
        "discount_allocations"
        if "discount_allocations" in item
        else "applied_discounts"
    )
    entries_path = join(path, key)
    total = Decimal(0)
    for index, entry in enumerate(optional_list(item.get(key), entries_path)):
        entry_path = join(entries_path, index)
        allocation = as_object(entry, entry_path)
        total = EXACT.add(total, required_shop_amount(allocation, "amount", entry_path))
    return total


def line_item(value: object, path: str) -> JsonObject:
    """Map an order or checkout line; ``total`` is price times quantity less discounts.

    ``price`` and ``total`` are in the shop's currency.
    """
    item = as_object(value, path)
    title = item.get("title")
    if title is None:
        title = item.get("name")
    if not isinstance(title, str):
        field = join(path, "title")
        raise MappingError(f"missing title in {field}", field=field)

    # Checkout lines have no id, only the cart ``key``.
    line_item_id = resource_id(item.get("id"), join(path, "id"))
    if line_item_id is None:
        line_item_id = optional_text(item.get("key"), join(path, "key")) or None

    count = quantity(item.get("quantity"), join(path, "quantity"))
    price = required_shop_amount(item, "price", path)
    gross = EXACT.multiply(price, Decimal(count))
    total = EXACT.subtract(gross, line_discount(item, path))

    return {
        "line_item_id": line_item_id,
        "product_id": product_key(item, path),
        "variant_id": resource_id(item.get("variant_id"), join(path, "variant_id")),
        "sku": optional_text(item.get("sku"), join(path, "sku")) or None,
        "title": title,
        "quantity": count,
        "price": format(price, "f"),
        "total": format(total, "f"),
    }


def consent_state(value: object, field: str) -> str | None:
    """Map Shopify's email marketing state to the canonical consent state."""
    state = optional_text(value, field)
    if state is None:
        return None
    state = state.strip().lower()
    if state == "invalid":
        # The canonical states have no "invalid", and such an address must not
        # be mailed, so it counts as not subscribed.
        return "not_subscribed"
    if state not in CONSENT_STATES:
        raise MappingError(f"unknown email marketing state in {field}", field=field)
    return state


def email_consent(customer: JsonObject, path: str) -> JsonObject | None:
    """Read consent from ``email_marketing_consent``, else from ``accepts_marketing``.

    Older API versions send only ``accepts_marketing``, a boolean with
    ``accepts_marketing_updated_at``. Newer ones send the consent object, whose
    state and time may each be null. Returns None when neither is given.
    """
    consent_path = join(path, "email_marketing_consent")
    consent = customer.get("email_marketing_consent")
    if consent is not None:
        consent = as_object(consent, consent_path)
        return {
            "state": consent_state(consent.get("state"), join(consent_path, "state")),
            "updated_at": optional_timestamp(
                consent.get("consent_updated_at"),
                join(consent_path, "consent_updated_at"),
            ),
        }
    accepts = optional_bool(
        customer.get("accepts_marketing"), join(path, "accepts_marketing")
    )
    if accepts is None:
        return None
    return {
        "state": "subscribed" if accepts else "not_subscribed",
        "updated_at": optional_timestamp(
            customer.get("accepts_marketing_updated_at"),
            join(path, "accepts_marketing_updated_at"),
        ),
    }


def tags(value: object, field: str) -> list[str]:
    """Split Shopify's comma-separated tags. A list, as GraphQL sends, works too."""
    if value is None:
        return []
    parts = value.split(",") if isinstance(value, str) else as_list(value, field)
    result = []
    for index, part in enumerate(parts):
        text = optional_text(part, join(field, index)) or ""
        if text.strip():
            result.append(text.strip())
    return result


def refund_line(value: object, path: str) -> tuple[JsonObject, Decimal]:
    """Map one refunded line, whose amount is the refunded subtotal plus tax."""
    line = as_object(value, path)
    item_path = join(path, "line_item")
    item = optional_object(line.get("line_item"), item_path)
    line_item_id = resource_id(
        line.get("line_item_id"), join(path, "line_item_id")
    ) or resource_id(item.get("id"), join(item_path, "id"))

    subtotal = required_shop_amount(line, "subtotal", path)
    tax = shop_amount(line, "total_tax", path) or Decimal(0)
    refunded = EXACT.add(subtotal, tax)
    mapped = {
        "line_item_id": line_item_id,
        "product_id": product_key(item, item_path),
        "quantity": quantity(line.get("quantity"), join(path, "quantity")),
        "amount": format(refunded, "f"),
    }
    return mapped, refunded


def refunded_by_transactions(
    refund: JsonObject, path: str, shop_currency: str | None
) -> Decimal | None:
    """Sum the successful refund transactions in the shop's currency.

    Returns None when the refund lists no refund transaction. Also returns None
    when a transaction has only a plain ``amount`` in a currency other than the
    shop's, because the payload gives no exchange rate. Callers then sum the
    refunded lines instead.
    """
    transactions_path = join(path, "transactions")
    transactions = optional_list(refund.get("transactions"), transactions_path)
    total = Decimal(0)
    has_refund = False
    for index, value in enumerate(transactions):
        transaction_path = join(transactions_path, index)
        transaction = as_object(value, transaction_path)
        if transaction.get("kind") != "refund":
            continue
        has_refund = True
        if transaction.get("status") != "success":
            continue
        refunded = set_shop_amount(transaction, "amount", transaction_path)
        if refunded is None:
            if shop_currency is None or transaction.get("currency") != shop_currency:
                return None
            refunded = required_shop_amount(transaction, "amount", transaction_path)
        total = EXACT.add(total, refunded)
    return total if has_refund else None


def refunded_by_lines(refund: JsonObject, path: str, lines_total: Decimal) -> Decimal:
    """Correct the refunded lines' total by the order adjustments and shipping.

    Shopify's REST Refund examples record a 5.00 shipping refund as an
    adjustment of ``amount: "-5.00"``, so adjustments are subtracted. API
    version 2024-10 and later also list refunded shipping in
    ``refund_shipping_lines``. Those count only when no adjustment is of kind
    ``shipping_refund``, so shipping is never counted twice.

    NOTE: refund_discrepancy adjustments are assumed to follow the same sign;
    no example of one was at hand.
    """
    total = lines_total
    has_shipping_adjustment = False
    adjustments_path = join(path, "order_adjustments")
    adjustments = optional_list(refund.get("order_adjustments"), adjustments_path)
    for index, value in enumerate(adjustments):
        adjustment_path = join(adjustments_path, index)
        adjustment = as_object(value, adjustment_path)
        has_shipping_adjustment |= adjustment.get("kind") == "shipping_refund"
        change = required_shop_amount(adjustment, "amount", adjustment_path)
        tax = shop_amount(adjustment, "tax_amount", adjustment_path)
        total = EXACT.subtract(total, EXACT.add(change, tax or 0))

    if has_shipping_adjustment:
        return total
    shipping_path = join(path, "refund_shipping_lines")
    shipping_lines = optional_list(refund.get("refund_shipping_lines"), shipping_path)
    for index, value in enumerate(shipping_lines):
        line_path = join(shipping_path, index)
        line = as_object(value, line_path)
        shipping = set_shop_amount(line, "subtotal_amount", line_path)
        if shipping is None:
            field = join(line_path, "subtotal_amount_set")
            raise MappingError(f"missing amount in {field}", field=field)
        total = EXACT.add(total, shipping)
    return total


def refund_body(value: object, path: str, shop_currency: str | None) -> JsonObject:
    """Map a refund. ``created_at`` falls back to ``processed_at``, then to null."""
    refund = as_object(value, path)
    refund_id = required_id(refund, "id", path)
    created_at = optional_timestamp(
        refund.get("created_at"), join(path, "created_at")
    ) or optional_timestamp(refund.get("processed_at"), join(path, "processed_at"))

    lines_path = join(path, "refund_line_items")
    values = optional_list(refund.get("refund_line_items"), lines_path)
    lines = [
        refund_line(line, join(lines_path, index)) for index, line in enumerate(values)
    ]
    lines_total = Decimal(0)
    for _, line_amount in lines:
        lines_total = EXACT.add(lines_total, line_amount)

    refunded = refunded_by_transactions(refund, path, shop_currency)
    if refunded is None:
        refunded = refunded_by_lines(refund, path, lines_total)

    return {
        "refund_id": refund_id,
        "created_at": created_at,
        "amount": format(refunded, "f"),
        "line_items": [mapped for mapped, _ in lines],
    }


def refund_shop_currency(refund: JsonObject) -> str | None:
    """Find the shop's currency in a standalone refund's money sets, if any."""
    money_sets: list[object] = [refund.get("total_duties_set")]
    for line in optional_list(refund.get("refund_line_items"), "refund_line_items"):
        if isinstance(line, dict):
            money_sets.append(line.get("subtotal_set"))
    for money_set in money_sets:
        if isinstance(money_set, dict) and isinstance(
            money_set.get("shop_money"), dict
        ):
            code = money_set["shop_money"].get("currency_code")
            if isinstance(code, str) and code:
                return code
    return None
