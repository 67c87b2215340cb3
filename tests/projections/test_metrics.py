"""Unit tests of compute_metrics and summarise_messages on hand-worked numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from projections.conversions import (
    ConvertibleOrder,
    MessageEvent,
    conversion_rate,
    summarise_messages,
)
from projections.metrics import (
    Checkout,
    ConsentSignal,
    Order,
    OrderLine,
    Refund,
    RefundLine,
    compute_metrics,
    merge_refunds,
    order_sort_key,
)

T0 = datetime(2024, 3, 1, tzinfo=UTC)
WINDOW = timedelta(days=5)


def day(days: float) -> datetime:
    return T0 + timedelta(days=days)


def order(
    order_id: str,
    *,
    at: datetime = T0,
    total: str = "10.00",
    lines: tuple[OrderLine, ...] = (),
    refunds: tuple[Refund, ...] = (),
    is_test: bool = False,
    cancelled: bool = False,
    is_deleted: bool = False,
    currency: str = "USD",
    status: str | None = "paid",
) -> Order:
    return Order(
        order_id=order_id,
        name=f"#{order_id}",
        created_at=at,
        currency=currency,
        total=Decimal(total),
        is_test=is_test,
        cancelled_at=at if cancelled else None,
        status=status,
        lines=lines,
        refunds=refunds,
        is_deleted=is_deleted,
    )


def item(line_id: str, product: str | None, quantity: int, total: str) -> OrderLine:
    return OrderLine(line_id, product, f"Title {product}", quantity, Decimal(total))


def refund(
    refund_id: str, amount: str, *lines: tuple[str | None, str | None, int]
) -> Refund:
    return Refund(
        refund_id,
        Decimal(amount),
        tuple(RefundLine(li, pi, q, Decimal("0")) for li, pi, q in lines),
    )


# Orders, sales and products


def test_lifetime_sales_subtracts_partial_refunds() -> None:
    orders = [
        order("1", total="100.00", refunds=(refund("r1", "30.00"),)),
        order("2", total="20.50", at=day(1)),
    ]

    metrics = compute_metrics(orders)

    assert metrics.lifetime_orders == 2
    assert metrics.lifetime_sales == Decimal("90.50")


@pytest.mark.parametrize(
    ("is_test", "cancelled", "is_deleted"),
    [(True, False, False), (False, True, False), (False, False, True)],
)
def test_excluded_order_counts_for_nothing(
    is_test: bool, cancelled: bool, is_deleted: bool
) -> None:
    lines = (item("l1", "p1", 2, "20.00"),)
    excluded = order(
        "1",
        total="20.00",
        lines=lines,
        is_test=is_test,
        cancelled=cancelled,
        is_deleted=is_deleted,
    )

    metrics = compute_metrics([excluded])

    assert metrics.lifetime_orders == 0
    assert metrics.lifetime_sales == Decimal(0)
    assert metrics.total_products == 0
    assert metrics.top_purchases == []
    assert metrics.first_order_id is None


def test_total_products_less_refunded_units() -> None:
    lines = (item("l1", "p1", 3, "30.00"), item("l2", "p2", 1, "9.99"))
    orders = [
        order(
            "1",
            total="39.99",
            lines=lines,
            refunds=(refund("r", "10.00", ("l1", None, 1)),),
        )
    ]

    metrics = compute_metrics(orders)

    assert metrics.total_products == 3


def test_refund_matched_by_line_id_before_product_id() -> None:
    # The refund line names p2, but its line item is the p1 line.
    lines = (item("l1", "p1", 2, "20.00"), item("l2", "p2", 2, "8.00"))
    refunds = (refund("r", "10.00", ("l1", "p2", 1)),)

    metrics = compute_metrics([order("1", lines=lines, refunds=refunds)])

    assert metrics.top_purchases == [
        {"product_id": "p2", "title": "Title p2", "quantity": 2, "spend": "8.00"},
        {"product_id": "p1", "title": "Title p1", "quantity": 1, "spend": "10.00"},
    ]


def test_refunded_units_never_go_below_zero() -> None:
    lines = (item("l1", "p1", 1, "5.00"), item("l2", "p2", 2, "4.00"))
    refunds = (
        refund("r1", "5.00", ("l1", None, 1)),
        refund("r2", "5.00", ("l1", None, 1)),
    )

    metrics = compute_metrics([order("1", lines=lines, refunds=refunds)])

    assert metrics.total_products == 2
    assert [p["product_id"] for p in metrics.top_purchases] == ["p2"]


def test_top_purchase_spend_prorated_half_even() -> None:
    # 10.00 for 3 units; 2 left: 6.666... rounds to 6.67.
    lines = (item("l1", "p1", 3, "10.00"),)
    refunds = (refund("r", "3.50", ("l1", "p1", 1)),)

    metrics = compute_metrics([order("1", lines=lines, refunds=refunds)])

    assert metrics.top_purchases == [
        {"product_id": "p1", "title": "Title p1", "quantity": 2, "spend": "6.67"}
    ]


def test_top_purchases_rank_by_quantity_then_spend() -> None:
    lines = tuple(
        item(f"l{n}", f"p{n:02d}", 1 + n % 3, f"{n}.00") for n in range(1, 13)
    )

    top = compute_metrics([order("1", lines=lines)]).top_purchases

    # Quantities: n % 3 == 2 gives 3 units (p02, p05, p08, p11), == 1 gives
    # 2 (p01, p04, p07, p10), == 0 gives 1; ties go to the higher spend.
    assert [p["product_id"] for p in top] == [
        "p11",
        "p08",
        "p05",
        "p02",
        "p10",
        "p07",
        "p04",
        "p01",
        "p12",
        "p09",
    ]


def test_top_purchases_sum_across_orders() -> None:
    orders = [
        order("1", lines=(item("a", "p1", 1, "5.00"),)),
        order("2", at=day(1), lines=(item("b", "p1", 2, "9.00"),)),
    ]

    top = compute_metrics(orders).top_purchases

    assert top == [
        {"product_id": "p1", "title": "Title p1", "quantity": 3, "spend": "14.00"}
    ]


# Latest orders, dates and frequency


def test_latest_orders_newest_first_without_test_orders() -> None:
    orders = [
        order("9", at=day(0), lines=(item("a", "p", 2, "4.00"),)),
        order("10", at=day(2), cancelled=True, refunds=(refund("r", "10.00"),)),
        order("11", at=day(3), is_test=True),
        order("12", at=day(1), status="refunded"),
    ]

    latest = compute_metrics(orders).latest_orders

    assert [o["order_id"] for o in latest] == ["10", "12", "9"]
    assert latest[0] == {
        "order_id": "10",
        "name": "#10",
        "created_at": "2024-03-03T00:00:00Z",
        "status": "cancelled",
        "total": "10.00",
        "refunded": "10.00",
        "item_count": 0,
    }
    assert latest[1]["status"] == "refunded"
    assert latest[2]["item_count"] == 2


def test_latest_orders_keep_ten() -> None:
    orders = [order(str(n), at=day(n)) for n in range(12)]

    latest = compute_metrics(orders).latest_orders

    assert [o["order_id"] for o in latest] == [str(n) for n in range(11, 1, -1)]


def test_average_frequency_is_mean_gap_in_days() -> None:
    orders = [
        order("1", at=day(0)),
        order("2", at=day(3)),
        order("3", at=day(10)),
        order("4", at=day(4), cancelled=True),
    ]

    metrics = compute_metrics(orders)

    # Gaps of 3 and 7 days; the cancelled order is not a purchase.
    assert metrics.average_purchase_frequency_days == Decimal("5.00")
    assert metrics.first_order_id == "1"
    assert metrics.first_order_at == day(0)
    assert metrics.last_order_id == "3"
    assert metrics.last_order_at == day(10)


def test_average_frequency_rounds_to_hundredths() -> None:
    orders = [order("1", at=day(0)), order("2", at=T0 + timedelta(hours=37))]

    # 37 hours = 1.541666... days.
    assert compute_metrics(orders).average_purchase_frequency_days == Decimal("1.54")


def test_average_frequency_null_below_two_orders() -> None:
    assert compute_metrics([order("1")]).average_purchase_frequency_days is None
    assert compute_metrics([]).average_purchase_frequency_days is None


def test_orders_at_same_time_sort_by_numeric_id() -> None:
    orders = [order("9"), order("10")]

    metrics = compute_metrics(orders)

    assert metrics.last_order_id == "10"
    assert order_sort_key("9") < order_sort_key("10") < order_sort_key("A1")


def test_currency_of_newest_counted_order() -> None:
    orders = [
        order("1", currency="HKD"),
        order("2", at=day(1), currency="USD", is_test=True),
    ]

    assert compute_metrics(orders).currency == "HKD"
    assert compute_metrics(orders[1:]).currency == "USD"


def test_merge_refunds_prefers_first_group() -> None:
    embedded = [refund("r1", "5.00")]
    separate = [refund("r1", "4.00"), refund("r0", "1.00")]

    merged = merge_refunds(embedded, separate)

    assert [(r.refund_id, r.amount) for r in merged] == [
        ("r0", Decimal("1.00")),
        ("r1", Decimal("5.00")),
    ]


# Checkouts and opt-in


def test_checkouts_started_completed_abandoned() -> None:
    checkouts = [
        Checkout("k1", T0, Decimal("30.00"), is_completed=True),
        Checkout("k2", T0, Decimal("12.50"), is_completed=False),
        Checkout("k3", T0, Decimal("7.25"), is_completed=False),
    ]

    metrics = compute_metrics([], checkouts)

    assert metrics.checkouts_started == 3
    assert metrics.checkouts_completed == 1
    assert metrics.checkouts_abandoned == 2
    assert metrics.open_cart_value == Decimal("19.75")


def test_unticked_box_yields_to_any_other_signal() -> None:
    signals = [
        ConsentSignal(day(5), "not_subscribed", "e2", is_weak=True),
        ConsentSignal(day(1), "subscribed", "e1"),
    ]

    metrics = compute_metrics([], consent=signals)

    assert metrics.email_opt_in == "subscribed"
    assert metrics.email_opt_in_at == day(1)


# Messages and conversions


def message(
    event_id: str, message_id: str, kind: str, at: datetime, workflow: str = "w1"
) -> MessageEvent:
    return MessageEvent(event_id, message_id, workflow, kind, at)


def test_click_converts_over_later_send() -> None:
    events = [
        message("e1", "m1", "sent", day(0)),
        message("e2", "m1", "clicked", day(1)),
        message("e3", "m2", "sent", day(2), workflow="w2"),
    ]
    orders = [ConvertibleOrder("o1", day(3), Decimal("40.00"))]

    summary = summarise_messages(events, orders, WINDOW)

    assert summary.attributions == {"o1": "m1"}
    assert summary.converted_orders == 1
    assert summary.converted_revenue == Decimal("40.00")
    assert summary.conversion_rate == Decimal("0.5000")


def test_latest_send_converts_without_click() -> None:
    events = [
        message("e1", "m1", "sent", day(0)),
        message("e2", "m2", "sent", day(1), workflow="w2"),
        message("e3", "m2", "opened", day(1.5), workflow="w2"),
    ]
    orders = [ConvertibleOrder("o1", day(2), Decimal("10.00"))]

    summary = summarise_messages(events, orders, WINDOW)

    assert summary.attributions == {"o1": "m2"}
    assert [w.as_json() for w in summary.workflows] == [
        {
            "workflow_id": "w1",
            "sent": 1,
            "opened": 0,
            "clicked": 0,
            "unsubscribed": 0,
            "converted_orders": 0,
            "converted_revenue": "0",
            "conversion_rate": "0.0000",
        },
        {
            "workflow_id": "w2",
            "sent": 1,
            "opened": 1,
            "clicked": 0,
            "unsubscribed": 0,
            "converted_orders": 1,
            "converted_revenue": "10.00",
            "conversion_rate": "1.0000",
        },
    ]


def test_click_outside_window_falls_back_to_send() -> None:
    events = [
        message("e1", "m1", "clicked", day(0)),
        message("e2", "m2", "sent", day(4)),
    ]
    orders = [ConvertibleOrder("o1", day(6), Decimal("10.00"))]

    summary = summarise_messages(events, orders, WINDOW)

    assert summary.attributions == {"o1": "m2"}


def test_window_includes_both_ends() -> None:
    events = [message("e1", "m1", "sent", day(0))]
    orders = [
        ConvertibleOrder("at-send", day(0), Decimal("1.00")),
        ConvertibleOrder("at-limit", day(5), Decimal("2.00")),
        ConvertibleOrder("past-limit", day(5) + timedelta(seconds=1), Decimal("4.00")),
        ConvertibleOrder("before-send", day(0) - timedelta(seconds=1), Decimal("8")),
    ]

    summary = summarise_messages(events, orders, WINDOW)

    assert sorted(summary.attributions) == ["at-limit", "at-send"]
    assert summary.converted_revenue == Decimal("3.00")


def test_message_counted_once_per_kind() -> None:
    # Two opened events of one message, and a message known only by a click.
    events = [
        message("e1", "m1", "sent", day(0)),
        message("e2", "m1", "opened", day(0.1)),
        message("e3", "m1", "opened", day(0.2)),
        message("e4", "m2", "clicked", day(1)),
    ]

    summary = summarise_messages(events, [], WINDOW)

    assert summary.sent == 2
    assert summary.opened == 1
    assert summary.clicked == 1
    assert summary.conversion_rate == Decimal("0.0000")


def test_message_without_sent_event_received_at_first_event() -> None:
    events = [
        message("e1", "m1", "opened", day(1)),
        message("e2", "m1", "unsubscribed", day(2)),
    ]
    # One second after the window that starts at the open.
    orders = [ConvertibleOrder("o1", day(6) + timedelta(seconds=1), Decimal("5"))]

    summary = summarise_messages(events, orders, WINDOW)

    assert summary.attributions == {}
    assert summary.workflows[0].unsubscribed == 1


def test_conversion_rate_null_without_messages() -> None:
    summary = summarise_messages([], [ConvertibleOrder("o", T0, Decimal("1"))], WINDOW)

    assert summary.conversion_rate is None
    assert summary.converted_orders == 0
    assert conversion_rate(1, 3) == Decimal("0.3333")
    assert conversion_rate(2, 3) == Decimal("0.6667")


def test_only_counted_orders_convert() -> None:
    events = [message("e1", "m1", "clicked", T0)]
    orders = [
        order("1", at=day(1), total="50.00", refunds=(refund("r", "20.00"),)),
        order("2", at=day(1), is_test=True),
        order("3", at=day(1), cancelled=True),
    ]

    metrics = compute_metrics(orders, messages=events)

    assert metrics.converted_orders == 1
    assert metrics.converted_revenue == Decimal("30.00")
    assert metrics.conversion_rate == Decimal("1.0000")
    assert metrics.messages_sent == 1
    assert metrics.messages_clicked == 1


def test_attribution_window_is_a_parameter() -> None:
    events = [message("e1", "m1", "sent", T0)]
    orders = [order("1", at=day(3))]

    wide = compute_metrics(orders, messages=events, attribution_window=WINDOW)
    narrow = compute_metrics(
        orders, messages=events, attribution_window=timedelta(days=2)
    )

    assert wide.converted_orders == 1
    assert narrow.converted_orders == 0
