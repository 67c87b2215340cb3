"""An oracle for customer metrics: every metric recomputed from a customer's events.

``expected_customers`` shares no code with ``projections``: it reads the full
list of a store's events, with duplicates and in any order, and applies the
definitions in the README's "Metric definitions" from scratch. The builders
below make canonical events for the tests that compare it with the pipeline.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from cartstream.events import event_id
from projections.schemas import event_validator

Event = dict[str, Any]
Ref = dict[str, str | None]

BASE = datetime(2024, 3, 1, tzinfo=UTC)
NO_ONE: Ref = {"id": None, "email": None}


# Builders of canonical events


def at_hour(hour: float) -> str:
    """Return ``BASE`` plus some hours as an RFC 3339 UTC timestamp."""
    return (BASE + timedelta(hours=hour)).isoformat().replace("+00:00", "Z")


def _envelope(
    store_id: str, source: str, kind: str, occurred_at: str, ref: Ref, data: Event
) -> Event:
    return {
        "id": event_id("standard", store_id, source),
        "type": kind,
        "store_id": store_id,
        "platform": "standard",
        "occurred_at": occurred_at,
        "delivery_id": source,
        "topic": f"{kind}.test",
        "customer": dict(ref),
        "data": data,
    }


def line(
    line_item_id: str, product_id: str | None, quantity: int, unit: str
) -> dict[str, Any]:
    """Return an order line whose total is the unit price times the quantity."""
    return {
        "line_item_id": line_item_id,
        "product_id": product_id,
        "title": f"Product {product_id}",
        "quantity": quantity,
        "price": unit,
        "total": str(Decimal(unit) * quantity),
    }


def refund_body(
    refund_id: str, amount: str, lines: list[tuple[str | None, str | None, int]]
) -> dict[str, Any]:
    """Return a refund; each line is (line item id, product id, quantity)."""
    return {
        "refund_id": refund_id,
        "created_at": None,
        "amount": amount,
        "line_items": [
            {
                "line_item_id": line_item_id,
                "product_id": product_id,
                "quantity": quantity,
                "amount": "0.00",
            }
            for line_item_id, product_id, quantity in lines
        ],
    }


def order_event(
    store_id: str,
    source: str,
    *,
    order_id: str,
    ref: Ref,
    created_hour: float,
    updated_hour: float,
    lines: list[dict[str, Any]],
    total: str,
    is_test: bool = False,
    cancelled_hour: float | None = None,
    status: str = "paid",
    checkout_id: str | None = None,
    refunds: list[dict[str, Any]] | None = None,
    accepts_marketing: bool | None = None,
    currency: str = "USD",
) -> Event:
    data = {
        "order_id": order_id,
        "name": f"#{order_id}",
        "created_at": at_hour(created_hour),
        "updated_at": at_hour(updated_hour),
        "currency": currency,
        "total": total,
        "is_test": is_test,
        "cancelled_at": None if cancelled_hour is None else at_hour(cancelled_hour),
        "financial_status": status,
        "status": status,
        "checkout_id": checkout_id,
        "accepts_marketing": accepts_marketing,
        "line_items": lines,
        "refunds": refunds or [],
    }
    return _envelope(store_id, source, "order", at_hour(updated_hour), ref, data)


def refund_event(
    store_id: str, source: str, *, order_id: str, hour: float, body: dict[str, Any]
) -> Event:
    data = {**body, "order_id": order_id, "created_at": at_hour(hour)}
    return _envelope(store_id, source, "refund", at_hour(hour), NO_ONE, data)


def checkout_event(
    store_id: str,
    source: str,
    *,
    checkout_id: str,
    ref: Ref,
    created_hour: float,
    updated_hour: float,
    total: str,
    completed_hour: float | None = None,
    accepts_marketing: bool | None = None,
) -> Event:
    data: Event = {
        "checkout_id": checkout_id,
        "created_at": at_hour(created_hour),
        "updated_at": at_hour(updated_hour),
        "completed_at": None if completed_hour is None else at_hour(completed_hour),
        "currency": "USD",
        "total": total,
        "accepts_marketing": accepts_marketing,
        "line_items": [],
    }
    return _envelope(store_id, source, "checkout", at_hour(updated_hour), ref, data)


def customer_event(
    store_id: str,
    source: str,
    *,
    ref: Ref,
    hour: float,
    first_name: str = "Ann",
    consent: str | None = None,
) -> Event:
    assert ref["id"] is not None
    data = {
        "customer_id": ref["id"],
        "email": ref["email"],
        "first_name": first_name,
        "last_name": "Example",
        "created_at": at_hour(0),
        "updated_at": at_hour(hour),
        "tags": ["vip"],
        "country": "NZ",
        "email_consent": None
        if consent is None
        else {"state": consent, "updated_at": at_hour(hour)},
    }
    return _envelope(store_id, source, "customer", at_hour(hour), ref, data)


def consent_event(
    store_id: str, source: str, *, ref: Ref, hour: float, state: str
) -> Event:
    data = {
        "customer_id": ref["id"],
        "email": ref["email"],
        "state": state,
        "updated_at": at_hour(hour),
        "source": "merchant",
    }
    return _envelope(store_id, source, "consent", at_hour(hour), ref, data)


def message_event(
    store_id: str,
    source: str,
    *,
    ref: Ref,
    hour: float,
    message_id: str,
    workflow_id: str,
    kind: str,
) -> Event:
    data = {"message_id": message_id, "workflow_id": workflow_id, "kind": kind}
    return _envelope(store_id, source, "message", at_hour(hour), ref, data)


def order_deleted_event(
    store_id: str, source: str, *, order_id: str, hour: float
) -> Event:
    data = {"scope": "order.deleted", "resource_type": "order", "resource_id": order_id}
    return _envelope(store_id, source, "notification", at_hour(hour), NO_ONE, data)


def assert_valid_events(events: list[Event]) -> None:
    validator = event_validator()
    for event in events:
        assert validator.first_error(event) is None, event["id"]


# The oracle


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _key(ref: Ref | None) -> str | None:
    if not ref:
        return None
    if ref.get("id"):
        return f"c:{ref['id']}"
    if ref.get("email"):
        return f"e:{ref['email']}"
    return None


def _version(event: Event) -> tuple[datetime, str]:
    return (_time(event["occurred_at"]), event["id"])


def _newest_by(events: list[Event], resource: str) -> dict[str, Event]:
    newest: dict[str, Event] = {}
    for event in events:
        name = str(event["data"][resource])
        if name not in newest or _version(event) > _version(newest[name]):
            newest[name] = event
    return newest


def _id_order(order_id: str) -> tuple[int, int, str]:
    return (0, int(order_id), "") if order_id.isdigit() else (1, 0, order_id)


def _round_like(value: Fraction, like: Decimal) -> Decimal:
    """Round a fraction half-even to the number of decimals of ``like``."""
    exponent = like.as_tuple().exponent
    assert isinstance(exponent, int)
    scale = Fraction(10) ** -exponent
    scaled = value * scale
    whole, rest = divmod(scaled.numerator, scaled.denominator)
    if 2 * rest > scaled.denominator or (2 * rest == scaled.denominator and whole % 2):
        whole += 1
    return Decimal(whole).scaleb(exponent)


@dataclass
class _Order:
    event: Event
    refunds: list[Event | dict[str, Any]]
    is_deleted: bool

    @property
    def data(self) -> Event:
        data: Event = self.event["data"]
        return data

    @property
    def created(self) -> datetime:
        return _time(self.data["created_at"])

    @property
    def counted(self) -> bool:
        return (
            not self.data["is_test"]
            and self.data["cancelled_at"] is None
            and not self.is_deleted
        )

    @property
    def refunded(self) -> Decimal:
        total = Decimal(0)
        for refund in self.refunds:
            total += Decimal(refund["amount"])
        return total

    @property
    def net(self) -> Decimal:
        return Decimal(self.data["total"]) - self.refunded

    def sort_key(self) -> tuple[datetime, tuple[int, int, str]]:
        return (self.created, _id_order(self.data["order_id"]))


@dataclass
class _Customer:
    orders: list[_Order] = field(default_factory=list)
    checkouts: list[tuple[Event, bool]] = field(default_factory=list)
    signals: list[tuple[datetime, str, str, bool]] = field(default_factory=list)
    messages: list[Event] = field(default_factory=list)
    profile: Event | None = None
    activity: list[datetime] = field(default_factory=list)
    emails: list[tuple[datetime, str, str]] = field(default_factory=list)


def _account_of_email(events: list[Event]) -> dict[str, str]:
    newest: dict[str, tuple[datetime, str, str]] = {}
    for event in events:
        if event["type"] not in ("order", "checkout", "customer", "consent", "message"):
            continue
        ref = event["customer"]
        if not ref.get("id") or not ref.get("email"):
            continue
        candidate = (*_version(event), str(ref["id"]))
        if ref["email"] not in newest or candidate > newest[ref["email"]]:
            newest[ref["email"]] = candidate
    return {email: value[2] for email, value in newest.items()}


def _signals(events: list[Event]) -> list[tuple[str, datetime, str, str, str]]:
    """Return (key, at, state, event id, source) of every opt-in signal."""
    signals = []
    for event in events:
        key = _key(event["customer"])
        data = event["data"]
        if key is None:
            continue
        kind = event["type"]
        if kind == "order" and data.get("accepts_marketing") is not None:
            state = "subscribed" if data["accepts_marketing"] else "not_subscribed"
            signals.append(
                (key, _time(data["created_at"]), state, event["id"], "order")
            )
        elif kind == "checkout" and data.get("accepts_marketing") is not None:
            state = "subscribed" if data["accepts_marketing"] else "not_subscribed"
            moment = _time(event["occurred_at"])
            signals.append((key, moment, state, event["id"], "checkout"))
        elif kind == "customer" and (data.get("email_consent") or {}).get("state"):
            consent = data["email_consent"]
            moment = _time(consent.get("updated_at") or event["occurred_at"])
            signals.append((key, moment, consent["state"], event["id"], "profile"))
        elif kind == "consent" and data.get("state"):
            source = data.get("source") or event["platform"]
            moment = _time(data["updated_at"])
            signals.append((key, moment, data["state"], event["id"], source))
        elif kind == "message" and data["kind"] == "unsubscribed":
            moment = _time(event["occurred_at"])
            signals.append((key, moment, "unsubscribed", event["id"], "message"))
    return signals


def expected_customers(
    events: list[Event], attribution_window_days: int = 5
) -> dict[str, dict[str, Any]]:
    """Return every customer's expected projection values, by customer key."""
    unique = list({event["id"]: event for event in events}.values())
    accounts = _account_of_email(unique)

    def resolve(key: str) -> str:
        if key.startswith("e:") and key[2:] in accounts:
            return f"c:{accounts[key[2:]]}"
        return key

    by_type: dict[str, list[Event]] = defaultdict(list)
    for event in unique:
        by_type[event["type"]].append(event)
    customers: dict[str, _Customer] = defaultdict(_Customer)

    newest_orders = _newest_by(by_type["order"], "order_id")
    refunds = _newest_by(by_type["refund"], "refund_id")
    deletions = [
        e for e in by_type["notification"] if e["data"]["scope"] == "order.deleted"
    ]
    for order_id, event in newest_orders.items():
        key = _key(event["customer"])
        if key is None:
            continue
        merged: dict[str, Event | dict[str, Any]] = {}
        for refund in event["data"]["refunds"]:
            merged.setdefault(refund["refund_id"], refund)
        for refund in refunds.values():
            if refund["data"]["order_id"] == order_id:
                merged.setdefault(refund["data"]["refund_id"], refund["data"])
        deleted = any(
            d["data"]["resource_id"] == order_id and _version(d) > _version(event)
            for d in deletions
        )
        customer = customers[resolve(key)]
        customer.orders.append(_Order(event, list(merged.values()), deleted))
        customer.activity.append(_time(event["occurred_at"]))
        if event["customer"].get("email"):
            customer.emails.append((*_version(event), event["customer"]["email"]))

    ordered_checkouts = {
        e["data"]["checkout_id"]
        for e in newest_orders.values()
        if e["data"]["checkout_id"]
    }
    for checkout_id, event in _newest_by(by_type["checkout"], "checkout_id").items():
        key = _key(event["customer"])
        if key is None:
            continue
        completed = (
            event["data"]["completed_at"] is not None
            or checkout_id in ordered_checkouts
        )
        customer = customers[resolve(key)]
        customer.checkouts.append((event, completed))
        customer.activity.append(_time(event["occurred_at"]))
        if event["customer"].get("email"):
            customer.emails.append((*_version(event), event["customer"]["email"]))

    seen_signals: set[tuple[str, str]] = set()
    for key, moment, state, source_event, source in _signals(unique):
        if (key, source_event) in seen_signals:
            continue
        seen_signals.add((key, source_event))
        weak = source in ("checkout", "order") and state == "not_subscribed"
        customer = customers[resolve(key)]
        customer.signals.append((moment, source_event, state, weak))
        customer.activity.append(moment)

    for event in by_type["message"]:
        key = _key(event["customer"])
        if key is not None:
            customer = customers[resolve(key)]
            customer.messages.append(event)
            customer.activity.append(_time(event["occurred_at"]))

    profiles: dict[str, Event] = {}
    for event in by_type["customer"]:
        key = _key(event["customer"])
        if key is not None and (
            key not in profiles or _version(event) > _version(profiles[key])
        ):
            profiles[key] = event
    for key, event in profiles.items():
        customers[resolve(key)].profile = event
        customers[resolve(key)].activity.append(_time(event["occurred_at"]))

    window = timedelta(days=attribution_window_days)
    return {
        key: _expected_row(key, customer, window) for key, customer in customers.items()
    }


def _expected_row(key: str, customer: _Customer, window: timedelta) -> dict[str, Any]:
    counted = sorted((o for o in customer.orders if o.counted), key=_Order.sort_key)
    row: dict[str, Any] = {"customer_key": key}
    row.update(_identity(key, customer))

    pool = counted or customer.orders
    row["currency"] = max(pool, key=_Order.sort_key).data["currency"] if pool else None
    row["lifetime_orders"] = len(counted)
    row["lifetime_sales"] = sum((o.net for o in counted), Decimal(0))
    row["first_order_id"] = counted[0].data["order_id"] if counted else None
    row["first_order_at"] = counted[0].created if counted else None
    row["last_order_id"] = counted[-1].data["order_id"] if counted else None
    row["last_order_at"] = counted[-1].created if counted else None
    row["average_purchase_frequency_days"] = _mean_gap_days(counted)
    row.update(_products(counted))
    row["latest_orders"] = _latest(customer.orders)
    row.update(_checkout_counts(customer.checkouts))
    row.update(_opt_in(customer.signals))
    row.update(_messages(customer.messages, counted, window))
    row["updated_at"] = max(customer.activity)
    return row


def _identity(key: str, customer: _Customer) -> dict[str, Any]:
    profile = customer.profile
    data = profile["data"] if profile else {}
    email = (data.get("email") or profile["customer"].get("email")) if profile else None
    if email is None and key.startswith("e:"):
        email = key[2:]
    if email is None and customer.emails:
        email = max(customer.emails)[2]
    return {
        "customer_id": data.get("customer_id")
        or (key[2:] if key[:2] == "c:" else None),
        "email": email,
        "first_name": data.get("first_name"),
        "last_name": data.get("last_name"),
    }


def _mean_gap_days(counted: list[_Order]) -> Decimal | None:
    if len(counted) < 2:
        return None
    gaps = [
        (later.created - earlier.created) / timedelta(microseconds=1)
        for earlier, later in zip(counted, counted[1:], strict=False)
    ]
    mean = Fraction(sum(int(g) for g in gaps), len(gaps) * 86_400_000_000)
    return _round_like(mean, Decimal("0.01"))


def _products(counted: list[_Order]) -> dict[str, Any]:
    units: dict[str | None, int] = defaultdict(int)
    spend: dict[str, Decimal] = defaultdict(Decimal)
    titles: dict[str, str] = {}
    for order in counted:
        bought: dict[str | None, list[Any]] = {}
        line_products = {}
        for item in order.data["line_items"]:
            entry = bought.setdefault(item["product_id"], [0, Decimal(0), ""])
            entry[0] += item["quantity"]
            entry[1] += Decimal(item["total"])
            entry[2] = item["title"]
            if item["line_item_id"] is not None:
                line_products[item["line_item_id"]] = item["product_id"]
        returned: dict[str | None, int] = defaultdict(int)
        for refund in order.refunds:
            for refund_line in refund["line_items"]:
                product = line_products.get(
                    refund_line["line_item_id"], refund_line["product_id"]
                )
                returned[product] += refund_line["quantity"]
        for product, (quantity, total, title) in bought.items():
            left = quantity
            paid = total
            if returned[product] and quantity:
                left = max(quantity - returned[product], 0)
                paid = _round_like(Fraction(total) * left / quantity, total)
            units[product] += left
            if product is not None:
                spend[product] += paid
                titles[product] = title
    ranked = sorted(
        (p for p in spend if units[p] > 0), key=lambda p: (-units[p], -spend[p], p)
    )
    return {
        "total_products": sum(units.values()),
        "top_purchases": [
            {
                "product_id": p,
                "title": titles[p],
                "quantity": units[p],
                "spend": str(spend[p]),
            }
            for p in ranked[:10]
        ],
    }


def _latest(orders: list[_Order]) -> list[dict[str, Any]]:
    listed = [o for o in orders if not o.data["is_test"] and not o.is_deleted]
    listed.sort(key=_Order.sort_key, reverse=True)
    return [
        {
            "order_id": o.data["order_id"],
            "name": o.data["name"],
            "created_at": o.data["created_at"],
            "status": "cancelled" if o.data["cancelled_at"] else o.data["status"],
            "total": o.data["total"],
            "refunded": str(o.refunded),
            "item_count": sum(item["quantity"] for item in o.data["line_items"]),
        }
        for o in listed[:10]
    ]


def _checkout_counts(checkouts: list[tuple[Event, bool]]) -> dict[str, Any]:
    open_value = Decimal(0)
    for event, completed in checkouts:
        if not completed:
            open_value += Decimal(event["data"]["total"])
    done = sum(1 for _, completed in checkouts if completed)
    return {
        "checkouts_started": len(checkouts),
        "checkouts_completed": done,
        "checkouts_abandoned": len(checkouts) - done,
        "open_cart_value": open_value,
    }


def _opt_in(signals: list[tuple[datetime, str, str, bool]]) -> dict[str, Any]:
    strong = [s for s in signals if not s[3]]
    chosen = strong or signals
    if not chosen:
        return {"email_opt_in": None, "email_opt_in_at": None}
    moment, _, state, _ = max(chosen, key=lambda s: (s[0], s[1]))
    return {"email_opt_in": state, "email_opt_in_at": moment}


def _messages(
    events: list[Event], counted: list[_Order], window: timedelta
) -> dict[str, Any]:
    first: dict[str, tuple[datetime, str, str]] = {}
    sent_at: dict[str, datetime] = {}
    kinds: dict[str, set[str]] = defaultdict(set)
    clicks: list[tuple[datetime, str, str]] = []
    for event in events:
        data = event["data"]
        moment = _time(event["occurred_at"])
        message_id = data["message_id"]
        candidate = (moment, event["id"], data["workflow_id"])
        if message_id not in first or candidate < first[message_id]:
            first[message_id] = candidate
        if data["kind"] == "sent":
            sent_at[message_id] = min(moment, sent_at.get(message_id, moment))
        kinds[message_id].add(data["kind"])
        if data["kind"] == "clicked":
            clicks.append((moment, event["id"], message_id))
    workflow = {m: value[2] for m, value in first.items()}
    received = {m: sent_at.get(m, first[m][0]) for m in first}

    stats: dict[str, dict[str, Any]] = {}
    for message_id, workflow_id in workflow.items():
        entry = stats.setdefault(
            workflow_id,
            {
                "workflow_id": workflow_id,
                "sent": 0,
                "opened": 0,
                "clicked": 0,
                "unsubscribed": 0,
                "converted_orders": 0,
                "converted_revenue": Decimal(0),
            },
        )
        entry["sent"] += 1
        for kind in ("opened", "clicked", "unsubscribed"):
            entry[kind] += kind in kinds[message_id]

    converted = 0
    revenue = Decimal(0)
    for order in counted:
        low, high = order.created - window, order.created
        in_window = [c for c in clicks if low <= c[0] <= high]
        if in_window:
            message_id = max(in_window)[2]
        else:
            sends = [(t, m) for m, t in received.items() if low <= t <= high]
            if not sends:
                continue
            message_id = max(sends)[1]
        entry = stats[workflow[message_id]]
        entry["converted_orders"] += 1
        entry["converted_revenue"] += order.net
        converted += 1
        revenue += order.net

    def rate(orders: int, messages: int) -> Decimal | None:
        if messages == 0:
            return None
        return _round_like(Fraction(orders, messages), Decimal("0.0001"))

    rows = []
    for workflow_id in sorted(stats):
        entry = stats[workflow_id]
        entry_rate = rate(entry["converted_orders"], entry["sent"])
        entry["converted_revenue"] = str(entry["converted_revenue"])
        entry["conversion_rate"] = None if entry_rate is None else str(entry_rate)
        rows.append(entry)
    return {
        "messages_sent": len(workflow),
        "messages_opened": sum(1 for m in workflow if "opened" in kinds[m]),
        "messages_clicked": sum(1 for m in workflow if "clicked" in kinds[m]),
        "converted_orders": converted,
        "converted_revenue": revenue,
        "conversion_rate": rate(converted, len(workflow)),
        "workflow_stats": rows,
    }


# Hand-worked checks of the oracle itself

STORE = "oracle-store"
ANN: Ref = {"id": "101", "email": "ann@example.com"}
ANN_ACCOUNT: Ref = {"id": "101", "email": None}
ANN_GUEST: Ref = {"id": None, "email": "ann@example.com"}


def _history() -> list[Event]:
    """A guest order, the account that claims it, a refund and two messages."""
    lines = [line("l1", "p1", 3, "10.00"), line("l2", "p2", 1, "4.50")]
    refund = refund_body("r1", "10.00", [("l1", None, 1)])
    return [
        order_event(
            STORE,
            "o1-v1",
            order_id="1001",
            ref=ANN_GUEST,
            created_hour=0,
            updated_hour=0,
            lines=lines,
            total="34.50",
        ),
        order_event(
            STORE,
            "o1-v2",
            order_id="1001",
            ref=ANN_GUEST,
            created_hour=0,
            updated_hour=2,
            lines=lines,
            total="34.50",
            refunds=[refund],
        ),
        order_event(
            STORE,
            "o2",
            order_id="1002",
            ref=ANN_ACCOUNT,
            created_hour=60,
            updated_hour=60,
            lines=[line("l3", "p2", 2, "4.50")],
            total="9.00",
        ),
        order_event(
            STORE,
            "o3",
            order_id="1003",
            ref=ANN_ACCOUNT,
            created_hour=61,
            updated_hour=61,
            lines=[line("l4", "p1", 1, "10.00")],
            total="10.00",
            is_test=True,
        ),
        customer_event(STORE, "profile", ref=ANN, hour=1, consent="subscribed"),
        message_event(
            STORE,
            "m1-sent",
            ref=ANN,
            hour=40,
            message_id="m1",
            workflow_id="welcome",
            kind="sent",
        ),
        message_event(
            STORE,
            "m1-click",
            ref=ANN_GUEST,
            hour=41,
            message_id="m1",
            workflow_id="welcome",
            kind="clicked",
        ),
        message_event(
            STORE,
            "m2-sent",
            ref=ANN_ACCOUNT,
            hour=50,
            message_id="m2",
            workflow_id="winback",
            kind="sent",
        ),
    ]


def test_oracle_joins_guest_to_account() -> None:
    events = _history()
    assert_valid_events(events)

    customers = expected_customers(events + events[:3])

    assert set(customers) == {"c:101"}
    ann = customers["c:101"]
    assert ann["lifetime_orders"] == 2
    # 34.50 - 10.00 refunded + 9.00; the test order counts for nothing.
    assert ann["lifetime_sales"] == Decimal("33.50")
    # p1: 3 bought, 1 refunded; p2: 1 + 2.
    assert ann["total_products"] == 5
    assert ann["top_purchases"] == [
        {"product_id": "p2", "title": "Product p2", "quantity": 3, "spend": "13.50"},
        {"product_id": "p1", "title": "Product p1", "quantity": 2, "spend": "20.00"},
    ]
    assert ann["average_purchase_frequency_days"] == Decimal("2.50")
    assert [o["order_id"] for o in ann["latest_orders"]] == ["1002", "1001"]
    assert ann["email_opt_in"] == "subscribed"


def test_oracle_attributes_click_over_later_send() -> None:
    ann = expected_customers(_history())["c:101"]

    # Order 1002 at hour 60: m1 clicked at 41 (19 h before) beats m2 sent at 50.
    assert ann["messages_sent"] == 2
    assert ann["messages_clicked"] == 1
    assert ann["converted_orders"] == 1
    assert ann["converted_revenue"] == Decimal("9.00")
    assert ann["conversion_rate"] == Decimal("0.5000")
    assert [w["workflow_id"] for w in ann["workflow_stats"]] == ["welcome", "winback"]
    assert ann["workflow_stats"][0]["converted_orders"] == 1
    assert ann["workflow_stats"][0]["converted_revenue"] == "9.00"
    assert ann["workflow_stats"][1]["conversion_rate"] == "0.0000"


def test_oracle_keeps_guest_apart_without_alias() -> None:
    events = [e for e in _history() if e["type"] != "customer"]
    events = [e for e in events if e["customer"] != ANN]

    customers = expected_customers(events)

    assert set(customers) == {"c:101", "e:ann@example.com"}
    assert customers["e:ann@example.com"]["lifetime_sales"] == Decimal("24.50")
    assert customers["c:101"]["lifetime_sales"] == Decimal("9.00")


def test_oracle_rounds_prorated_spend_half_even() -> None:
    lines = [line("l1", "p1", 3, "3.35")]
    refund = refund_body("r1", "3.35", [("l1", "p1", 1)])
    event = order_event(
        STORE,
        "o",
        order_id="1",
        ref=ANN_ACCOUNT,
        created_hour=0,
        updated_hour=0,
        lines=lines,
        total="10.05",
        refunds=[refund],
    )

    top = expected_customers([event])["c:101"]["top_purchases"]

    # 10.05 * 2 / 3 = 6.70 exactly; 1 of 3 refunded.
    assert top == [
        {"product_id": "p1", "title": "Product p1", "quantity": 2, "spend": "6.70"}
    ]
