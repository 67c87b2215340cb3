"""Customer metrics computed from a customer's current snapshots; pure, no I/O.

The projection keeps the newest snapshot of every order, refund and checkout,
and recomputes a customer's metrics from them whenever one changes. Because the
result depends only on the set of newest snapshots, duplicates and deliveries
out of order cannot change it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

from projections.conversions import (
    ConvertibleOrder,
    MessageEvent,
    summarise_messages,
)

LATEST_ORDERS_LIMIT = 10
TOP_PURCHASES_LIMIT = 10
MICROSECONDS_PER_DAY = Decimal(86_400_000_000)
DAYS_QUANTUM = Decimal("0.01")
DEFAULT_ATTRIBUTION_WINDOW = timedelta(days=5)

# Amounts have at most 27 digits and quantities at most 20, so products and
# quotients in this context are exact before they are rounded on purpose. The
# default context rounds at 28 digits.
EXACT = Context(prec=80)


@dataclass(frozen=True)
class RefundLine:
    line_item_id: str | None
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
    line_item_id: str | None
    product_id: str | None
    title: str
    quantity: int
    total: Decimal


@dataclass(frozen=True)
class Order:
    """The newest snapshot of one order, with every refund known for it.

    ``is_deleted`` marks an order deleted on the platform after that snapshot.
    """

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
    is_deleted: bool = False

    @property
    def is_counted(self) -> bool:
        """Whether the order counts: not a test order, not cancelled, not deleted."""
        return not self.is_test and self.cancelled_at is None and not self.is_deleted

    @property
    def refunded(self) -> Decimal:
        return sum((refund.amount for refund in self.refunds), Decimal(0))

    @property
    def net_total(self) -> Decimal:
        """The total less every refund: what the order adds to lifetime sales."""
        return self.total - self.refunded


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
    messages_sent: int = 0
    messages_opened: int = 0
    messages_clicked: int = 0
    converted_orders: int = 0
    converted_revenue: Decimal = Decimal(0)
    conversion_rate: Decimal | None = None
    workflow_stats: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _ProductSale:
    """Units and spend of one product in one counted order, net of refunds."""

    title: str
    quantity: int
    spend: Decimal


def merge_refunds(*groups: Iterable[Refund]) -> tuple[Refund, ...]:
    """Merge refunds from order snapshots and refund events by refund id.

    The first group that has a refund id wins, so callers pass the order
    snapshot's own refunds first.
    """
    by_id: dict[str, Refund] = {}
    for group in groups:
        for refund in group:
            by_id.setdefault(refund.refund_id, refund)
    return tuple(by_id[key] for key in sorted(by_id))


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


def _order_time_key(order: Order) -> tuple[datetime, str]:
    return (order.created_at, order_sort_key(order.order_id))


def _product_sales(order: Order) -> dict[str | None, _ProductSale]:
    """Return the units and spend of each product in one order, net of refunds.

    A refunded line is matched to the order's line by ``line_item_id``, else by
    its own product id. Refunded units reduce a product's units, never below
    zero, and reduce its spend pro rata: spend is the lines' total (after line
    discounts, before tax) times remaining units over bought units, rounded
    half-even to the decimals of that total. Refund amounts are not used because
    they include the refunded tax.
    """
    bought: dict[str | None, _ProductSale] = {}
    product_of_line: dict[str, str | None] = {}
    for line in order.lines:
        sale = bought.setdefault(line.product_id, _ProductSale("", 0, Decimal(0)))
        sale.title = line.title
        sale.quantity += line.quantity
        sale.spend += line.total
        if line.line_item_id is not None:
            product_of_line[line.line_item_id] = line.product_id

    refunded: dict[str | None, int] = {}
    for refund in order.refunds:
        for refund_line in refund.lines:
            product = refund_line.product_id
            if refund_line.line_item_id in product_of_line:
                product = product_of_line[refund_line.line_item_id]
            refunded[product] = refunded.get(product, 0) + refund_line.quantity

    for product, sale in bought.items():
        returned = refunded.get(product, 0)
        if returned == 0 or sale.quantity == 0:
            continue
        remaining = max(sale.quantity - returned, 0)
        exponent = sale.spend.as_tuple().exponent
        assert isinstance(exponent, int)  # amounts are finite
        share = EXACT.divide(EXACT.multiply(sale.spend, remaining), sale.quantity)
        sale.spend = share.quantize(
            Decimal((0, (1,), exponent)), rounding=ROUND_HALF_EVEN, context=EXACT
        )
        sale.quantity = remaining
    return bought


def _top_purchases(
    sales: Sequence[dict[str | None, _ProductSale]],
) -> list[dict[str, Any]]:
    quantities: dict[str, int] = {}
    spend: dict[str, Decimal] = {}
    titles: dict[str, str] = {}
    for order_sales in sales:
        for product, sale in order_sales.items():
            if product is None:
                continue
            quantities[product] = quantities.get(product, 0) + sale.quantity
            spend[product] = spend.get(product, Decimal(0)) + sale.spend
            # Orders come oldest first, so the newest title wins.
            titles[product] = sale.title

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


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _latest_orders(orders: Sequence[Order]) -> list[dict[str, Any]]:
    listed = sorted(
        (order for order in orders if not order.is_test and not order.is_deleted),
        key=_order_time_key,
        reverse=True,
    )
    return [
        {
            "order_id": order.order_id,
            "name": order.name,
            "created_at": _iso(order.created_at),
            "status": "cancelled" if order.cancelled_at is not None else order.status,
            "total": str(order.total),
            "refunded": str(order.refunded),
            "item_count": sum(line.quantity for line in order.lines),
        }
        for order in listed[:LATEST_ORDERS_LIMIT]
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


def _average_days(counted: Sequence[Order]) -> Decimal | None:
    """Return the mean days between consecutive counted orders, to 0.01 days."""
    if len(counted) < 2:
        return None
    # The mean of consecutive gaps is the whole span over the number of gaps.
    span = counted[-1].created_at - counted[0].created_at
    span_us = Decimal(span // timedelta(microseconds=1))
    days = EXACT.divide(span_us, MICROSECONDS_PER_DAY * (len(counted) - 1))
    return days.quantize(DAYS_QUANTUM, rounding=ROUND_HALF_EVEN, context=EXACT)


def _currency(orders: Sequence[Order], counted: Sequence[Order]) -> str | None:
    """Return the currency of the newest counted order, else of the newest order."""
    pool = counted or orders
    if not pool:
        return None
    return max(pool, key=_order_time_key).currency


def compute_metrics(
    orders: Sequence[Order],
    checkouts: Sequence[Checkout] = (),
    consent: Sequence[ConsentSignal] = (),
    messages: Sequence[MessageEvent] = (),
    attribution_window: timedelta = DEFAULT_ATTRIBUTION_WINDOW,
) -> Metrics:
    """Compute a customer's metrics from the newest snapshots of their records.

    NOTE: lifetime sales adds order totals as given, so it assumes every order
    of a store is in the shop's one currency, as the platform mappers provide.
    A store that changed its currency would mix the two in one sum.
    """
    metrics = Metrics()
    counted = sorted((o for o in orders if o.is_counted), key=_order_time_key)

    metrics.currency = _currency(orders, counted)
    metrics.lifetime_orders = len(counted)
    metrics.lifetime_sales = sum((order.net_total for order in counted), Decimal(0))
    sales = [_product_sales(order) for order in counted]
    metrics.total_products = sum(
        sale.quantity for order_sales in sales for sale in order_sales.values()
    )
    metrics.top_purchases = _top_purchases(sales)
    metrics.latest_orders = _latest_orders(orders)

    if counted:
        metrics.first_order_id = counted[0].order_id
        metrics.first_order_at = counted[0].created_at
        metrics.last_order_id = counted[-1].order_id
        metrics.last_order_at = counted[-1].created_at
    metrics.average_purchase_frequency_days = _average_days(counted)

    metrics.checkouts_started = len(checkouts)
    metrics.checkouts_completed = sum(1 for c in checkouts if c.is_completed)
    metrics.checkouts_abandoned = metrics.checkouts_started - (
        metrics.checkouts_completed
    )
    metrics.open_cart_value = sum(
        (c.total for c in checkouts if not c.is_completed), Decimal(0)
    )

    metrics.email_opt_in, metrics.email_opt_in_at = _opt_in(consent)

    summary = summarise_messages(
        messages,
        [ConvertibleOrder(o.order_id, o.created_at, o.net_total) for o in counted],
        attribution_window,
    )
    metrics.messages_sent = summary.sent
    metrics.messages_opened = summary.opened
    metrics.messages_clicked = summary.clicked
    metrics.converted_orders = summary.converted_orders
    metrics.converted_revenue = summary.converted_revenue
    metrics.conversion_rate = summary.conversion_rate
    metrics.workflow_stats = [w.as_json() for w in summary.workflows]
    return metrics
