"""Customer metrics computed from a customer's current snapshots; pure, no I/O.

The projection keeps the newest snapshot of every order, refund and checkout,
and recomputes a customer's metrics from them whenever one changes. Because the
result depends only on the set of newest snapshots, duplicates and deliveries
out of order cannot change it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

LATEST_ORDERS_LIMIT = 10
TOP_PURCHASES_LIMIT = 10
SECONDS_PER_DAY = Decimal(86_400)
DAYS_QUANTUM = Decimal("0.01")


@dataclass(frozen=True)
class RefundLine:
    product_id: str | None
    quantity: int
    amount: Decimal


@dataclass(frozen=True)
class Refund:
    refund_id: str
    amount: Decimal
    lines: tuple[RefundLine, ...] = ()


@dataclass(frozen=True)
class OrderLine:
    product_id: str | None
    title: str
    quantity: int
    total: Decimal


@dataclass(frozen=True)
class Order:
    """The newest snapshot of one order, with every refund known for it."""

    order_id: str
    name: str | None
    created_at: datetime
    currency: str
    total: Decimal
    is_test: bool
    cancelled_at: datetime | None
    status: str | None
    lines: tuple[OrderLine, ...]
    refunds: tuple[Refund, ...] = ()

    @property
    def is_counted(self) -> bool:
        """Whether the order counts: neither a test order nor cancelled."""
        return not self.is_test and self.cancelled_at is None

    @property
    def refunded(self) -> Decimal:
        return sum((refund.amount for refund in self.refunds), Decimal(0))


@dataclass(frozen=True)
class Checkout:
    checkout_id: str
    created_at: datetime
    total: Decimal
    is_completed: bool


@dataclass(frozen=True)
class ConsentSignal:
    """One opt-in fact; ``is_weak`` marks an unticked box at checkout."""

    at: datetime
    state: str
    event_id: str
    is_weak: bool = False


@dataclass
class Metrics:
    """Every metric of one customer, in the projection's units."""

    currency: str | None = None
    lifetime_orders: int = 0
    lifetime_sales: Decimal = Decimal(0)
    total_products: int = 0
    first_order_id: str | None = None
    first_order_at: datetime | None = None
    last_order_id: str | None = None
    last_order_at: datetime | None = None
    average_purchase_frequency_days: Decimal | None = None
    email_opt_in: str | None = None
    email_opt_in_at: datetime | None = None
    checkouts_started: int = 0
    checkouts_completed: int = 0
    checkouts_abandoned: int = 0
    open_cart_value: Decimal = Decimal(0)
    latest_orders: list[dict[str, Any]] = field(default_factory=list)
    top_purchases: list[dict[str, Any]] = field(default_factory=list)


def merge_refunds(*groups: Iterable[Refund]) -> tuple[Refund, ...]:
    """Merge refunds from order snapshots and refund events by refund id."""
    by_id: dict[str, Refund] = {}
    for group in groups:
        for refund in group:
            by_id.setdefault(refund.refund_id, refund)
    return tuple(by_id[key] for key in sorted(by_id))


def _order_time_key(order: Order) -> tuple[datetime, str]:
    return (order.created_at, order.order_id)


def _top_purchases(orders: Sequence[Order]) -> list[dict[str, Any]]:
    quantities: dict[str, int] = {}
    spend: dict[str, Decimal] = {}
    titles: dict[str, str] = {}
    for order in orders:
        for line in order.lines:
            if line.product_id is None:
                continue
            quantities[line.product_id] = quantities.get(line.product_id, 0) + (
                line.quantity
            )
            spend[line.product_id] = spend.get(line.product_id, Decimal(0)) + line.total
            titles[line.product_id] = line.title
        for refund in order.refunds:
            for refund_line in refund.lines:
                if refund_line.product_id not in quantities:
                    continue
                quantities[refund_line.product_id] -= refund_line.quantity
                spend[refund_line.product_id] -= refund_line.amount

    ranked = sorted(
        (product for product in quantities if quantities[product] > 0),
        key=lambda product: (-quantities[product], -spend[product], product),
    )
    return [
        {
            "product_id": product,
            "title": titles[product],
            "quantity": quantities[product],
            "spend": str(spend[product]),
        }
        for product in ranked[:TOP_PURCHASES_LIMIT]
    ]


def _latest_orders(orders: Sequence[Order]) -> list[dict[str, Any]]:
    shown = sorted(
        (order for order in orders if not order.is_test),
        key=_order_time_key,
        reverse=True,
    )
    return [
        {
            "order_id": order.order_id,
            "name": order.name,
            "created_at": order.created_at.isoformat().replace("+00:00", "Z"),
            "status": "cancelled" if order.cancelled_at is not None else order.status,
            "total": str(order.total),
            "refunded": str(order.refunded),
            "item_count": sum(line.quantity for line in order.lines),
        }
        for order in shown[:LATEST_ORDERS_LIMIT]
    ]


def _opt_in(signals: Sequence[ConsentSignal]) -> tuple[str | None, datetime | None]:
    # An unticked marketing box at checkout means "not asked to subscribe", not
    # "unsubscribe": it only applies while no other signal exists.
    strong = [signal for signal in signals if not signal.is_weak]
    chosen = strong or list(signals)
    if not chosen:
        return None, None
    newest = max(chosen, key=lambda signal: (signal.at, signal.event_id))
    return newest.state, newest.at


def compute_metrics(
    orders: Sequence[Order],
    checkouts: Sequence[Checkout] = (),
    consent: Sequence[ConsentSignal] = (),
) -> Metrics:
    """Compute a customer's metrics from the newest snapshots of their records."""
    metrics = Metrics()
    counted = sorted((o for o in orders if o.is_counted), key=_order_time_key)

    if orders:
        metrics.currency = max(orders, key=_order_time_key).currency
    metrics.lifetime_orders = len(counted)
    metrics.lifetime_sales = sum(
        (order.total - order.refunded for order in counted), Decimal(0)
    )
    sold = sum(line.quantity for order in counted for line in order.lines)
    refunded_quantity = sum(
        refund_line.quantity
        for order in counted
        for refund in order.refunds
        for refund_line in refund.lines
    )
    metrics.total_products = sold - refunded_quantity

    if counted:
        metrics.first_order_id = counted[0].order_id
        metrics.first_order_at = counted[0].created_at
        metrics.last_order_id = counted[-1].order_id
        metrics.last_order_at = counted[-1].created_at
    if len(counted) >= 2:
        span_s = (counted[-1].created_at - counted[0].created_at).total_seconds()
        days = Decimal(str(span_s)) / SECONDS_PER_DAY / (len(counted) - 1)
        metrics.average_purchase_frequency_days = days.quantize(DAYS_QUANTUM)

    metrics.top_purchases = _top_purchases(counted)
    metrics.latest_orders = _latest_orders(orders)

    metrics.checkouts_started = len(checkouts)
    metrics.checkouts_completed = sum(1 for c in checkouts if c.is_completed)
    metrics.checkouts_abandoned = metrics.checkouts_started - (
        metrics.checkouts_completed
    )
    metrics.open_cart_value = sum(
        (c.total for c in checkouts if not c.is_completed), Decimal(0)
    )

    metrics.email_opt_in, metrics.email_opt_in_at = _opt_in(consent)
    return metrics


def order_sort_key(order_id: str | None) -> str:
    """Return a text key that sorts order ids numerically when they are numbers.

    Shopify and WooCommerce ids grow with time, so sorting customers by their last
    order id newest first needs numeric order; non-numeric ids sort after numbers.
    """
    if order_id is None:
        return ""
    if order_id.isdigit():
        return "1" + order_id.rjust(30, "0")
    return "2" + order_id
