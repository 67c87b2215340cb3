"""The projection store: applies canonical events to PostgreSQL in a transaction.

Order, checkout and customer events are snapshots: a row is replaced only by a
snapshot with a newer ``(occurred_at, event id)``. Refunds and consent signals
are facts keyed by their own id. After the rows change, the metrics of every
customer they touch are recomputed from that customer's current rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from cartstream.events import Event
from projections.identity import customer_key
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


def parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _required_time(value: str) -> datetime:
    moment = parse_time(value)
    assert moment is not None
    return moment


@dataclass
class BatchEffects:
    """Customers touched by a batch, with the last event that touched each."""

    causes: dict[tuple[str, str], str] = field(default_factory=dict)

    def touch(self, store_id: str, key: str | None, event_id: str) -> None:
        if key is not None:
            self.causes[(store_id, key)] = event_id


def _lock_id(*parts: str) -> str:
    return "\x1f".join(parts)


async def _lock(connection: asyncpg.Connection, names: Iterable[str]) -> None:
    # Transaction-scoped advisory locks serialise consumers that touch the same
    # order or customer from different partitions. Taking them sorted, orders
    # before customers, rules out deadlocks between concurrent batches.
    for name in sorted(set(names)):
        await connection.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", name
        )


def _order_lock_names(events: Sequence[Event]) -> list[str]:
    names = []
    for event in events:
        if event["type"] in ("order", "refund"):
            names.append(_lock_id("o", event["store_id"], event["data"]["order_id"]))
        elif event["type"] == "checkout":
            names.append(_lock_id("k", event["store_id"], event["data"]["checkout_id"]))
    return names


async def _newest_wins(
    connection: asyncpg.Connection, table: str, key_sql: str, keys: Sequence[Any]
) -> asyncpg.Record | None:
    return await connection.fetchrow(
        f"SELECT version_at, version_event, customer_key FROM {table} "
        f"WHERE {key_sql} FOR UPDATE",
        *keys,
    )


def _is_newer(event: Event, current: asyncpg.Record | None) -> bool:
    if current is None:
        return True
    moment = _required_time(event["occurred_at"])
    return (moment, event["id"]) > (current["version_at"], current["version_event"])


async def _apply_order(
    connection: asyncpg.Connection, event: Event, effects: BatchEffects
) -> None:
    store_id = event["store_id"]
    data = event["data"]
    key = customer_key(event["customer"])
    current = await _newest_wins(
        connection,
        "orders",
        "store_id = $1 AND order_id = $2",
        (store_id, data["order_id"]),
    )
    if not _is_newer(event, current):
        return

    await connection.execute(
        """
        INSERT INTO orders (store_id, order_id, customer_key, name, created_at,
            currency, total, is_test, cancelled_at, status, checkout_id,
            line_items, embedded_refunds, version_at, version_event, email)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
            $16)
        ON CONFLICT (store_id, order_id) DO UPDATE SET
            customer_key = EXCLUDED.customer_key, name = EXCLUDED.name,
            email = EXCLUDED.email,
            created_at = EXCLUDED.created_at, currency = EXCLUDED.currency,
            total = EXCLUDED.total, is_test = EXCLUDED.is_test,
            cancelled_at = EXCLUDED.cancelled_at, status = EXCLUDED.status,
            checkout_id = EXCLUDED.checkout_id, line_items = EXCLUDED.line_items,
            embedded_refunds = EXCLUDED.embedded_refunds,
            version_at = EXCLUDED.version_at, version_event = EXCLUDED.version_event
        """,
        store_id,
        data["order_id"],
        key,
        data.get("name"),
        _required_time(data["created_at"]),
        data["currency"],
        Decimal(data["total"]),
        data["is_test"],
        parse_time(data.get("cancelled_at")),
        data.get("status") or data.get("financial_status"),
        data.get("checkout_id"),
        orjson.dumps(data["line_items"]).decode(),
        orjson.dumps(data.get("refunds", [])).decode(),
        _required_time(event["occurred_at"]),
        event["id"],
        event["customer"].get("email"),
    )
    effects.touch(store_id, key, event["id"])
    if current is not None:
        effects.touch(store_id, current["customer_key"], event["id"])

    if data.get("checkout_id"):
        checkout_owner = await connection.fetchval(
            "SELECT customer_key FROM checkouts WHERE store_id = $1 AND checkout_id = $2",
            store_id,
            data["checkout_id"],
        )
        effects.touch(store_id, checkout_owner, event["id"])

    if data.get("accepts_marketing") is not None and key is not None:
        await _add_consent(
            connection,
            store_id,
            key,
            event["id"],
            _required_time(data["created_at"]),
            "subscribed" if data["accepts_marketing"] else "not_subscribed",
            "order",
        )


async def _apply_refund(
    connection: asyncpg.Connection, event: Event, effects: BatchEffects
) -> None:
    store_id = event["store_id"]
    data = event["data"]
    await connection.execute(
        """
        INSERT INTO refunds (store_id, refund_id, order_id, created_at, amount,
            line_items)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (store_id, refund_id) DO NOTHING
        """,
        store_id,
        data["refund_id"],
        data["order_id"],
        parse_time(data.get("created_at")),
        Decimal(data["amount"]),
        orjson.dumps(data["line_items"]).decode(),
    )
    owner = await connection.fetchval(
        "SELECT customer_key FROM orders WHERE store_id = $1 AND order_id = $2",
        store_id,
        data["order_id"],
    )
    effects.touch(store_id, owner, event["id"])


async def _apply_checkout(
    connection: asyncpg.Connection, event: Event, effects: BatchEffects
) -> None:
    store_id = event["store_id"]
    data = event["data"]
    key = customer_key(event["customer"])
    current = await _newest_wins(
        connection,
        "checkouts",
        "store_id = $1 AND checkout_id = $2",
        (store_id, data["checkout_id"]),
    )
    if _is_newer(event, current):
        await connection.execute(
            """
            INSERT INTO checkouts (store_id, checkout_id, customer_key, created_at,
                completed_at, currency, total, version_at, version_event, email)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (store_id, checkout_id) DO UPDATE SET
                customer_key = EXCLUDED.customer_key, email = EXCLUDED.email,
                created_at = EXCLUDED.created_at,
                completed_at = EXCLUDED.completed_at, currency = EXCLUDED.currency,
                total = EXCLUDED.total, version_at = EXCLUDED.version_at,
                version_event = EXCLUDED.version_event
            """,
            store_id,
            data["checkout_id"],
            key,
            _required_time(data["created_at"]),
            parse_time(data.get("completed_at")),
            data["currency"],
            Decimal(data["total"]),
            _required_time(event["occurred_at"]),
            event["id"],
            event["customer"].get("email"),
        )
        effects.touch(store_id, key, event["id"])
        if current is not None:
            effects.touch(store_id, current["customer_key"], event["id"])

    if data.get("accepts_marketing") is not None and key is not None:
        await _add_consent(
            connection,
            store_id,
            key,
            event["id"],
            _required_time(event["occurred_at"]),
            "subscribed" if data["accepts_marketing"] else "not_subscribed",
            "checkout",
        )
        effects.touch(store_id, key, event["id"])


async def _apply_customer(
    connection: asyncpg.Connection, event: Event, effects: BatchEffects
) -> None:
    store_id = event["store_id"]
    data = event["data"]
    key = customer_key(event["customer"])
    if key is None:
        return
    current = await connection.fetchrow(
        "SELECT version_at, version_event FROM customer_profiles "
        "WHERE store_id = $1 AND customer_key = $2 FOR UPDATE",
        store_id,
        key,
    )
    if _is_newer(event, current):
        await connection.execute(
            """
            INSERT INTO customer_profiles (store_id, customer_key, customer_id, email,
                first_name, last_name, created_at, tags, country, version_at,
                version_event)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
            ON CONFLICT (store_id, customer_key) DO UPDATE SET
                customer_id = EXCLUDED.customer_id, email = EXCLUDED.email,
                first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name,
                created_at = EXCLUDED.created_at, tags = EXCLUDED.tags,
                country = EXCLUDED.country, version_at = EXCLUDED.version_at,
                version_event = EXCLUDED.version_event
            """,
            store_id,
            key,
            data.get("customer_id"),
            data.get("email") or event["customer"].get("email"),
            data.get("first_name"),
            data.get("last_name"),
            parse_time(data.get("created_at")),
            orjson.dumps(data.get("tags") or []).decode(),
            data.get("country"),
            _required_time(event["occurred_at"]),
            event["id"],
        )
    effects.touch(store_id, key, event["id"])

    consent = data.get("email_consent")
    if consent and consent.get("state"):
        moment = parse_time(consent.get("updated_at")) or _required_time(
            event["occurred_at"]
        )
        await _add_consent(
            connection, store_id, key, event["id"], moment, consent["state"], "profile"
        )


async def _apply_consent(
    connection: asyncpg.Connection, event: Event, effects: BatchEffects
) -> None:
    key = customer_key(event["customer"])
    state = event["data"].get("state")
    if key is None or not state:
        return
    await _add_consent(
        connection,
        event["store_id"],
        key,
        event["id"],
        _required_time(event["data"]["updated_at"]),
        state,
        event["data"].get("source") or event["platform"],
    )
    effects.touch(event["store_id"], key, event["id"])


async def _add_consent(
    connection: asyncpg.Connection,
    store_id: str,
    key: str,
    event_id: str,
    at: datetime,
    state: str,
    source: str,
) -> None:
    await connection.execute(
        """
        INSERT INTO consent_signals (store_id, customer_key, event_id, at, state,
            source)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT DO NOTHING
        """,
        store_id,
        key,
        event_id,
        at,
        state,
        source,
    )


APPLIERS = {
    "order": _apply_order,
    "refund": _apply_refund,
    "checkout": _apply_checkout,
    "customer": _apply_customer,
    "consent": _apply_consent,
}


async def apply_event(
    connection: asyncpg.Connection, event: Event, effects: BatchEffects
) -> None:
    """Apply one event's row changes; the caller recomputes touched customers."""
    applier = APPLIERS.get(event["type"])
    if applier is not None:
        await applier(connection, event, effects)


async def lock_for_batch(
    connection: asyncpg.Connection, events: Sequence[Event]
) -> None:
    """Take the order and checkout locks a batch needs, before changing rows."""
    await _lock(connection, _order_lock_names(events))


def _refunds_from_json(items: Any) -> list[Refund]:
    refunds = []
    for item in items:
        lines = tuple(
            RefundLine(
                product_id=line.get("product_id"),
                quantity=int(line.get("quantity") or 0),
                amount=Decimal(line.get("amount") or "0"),
            )
            for line in item.get("line_items", [])
        )
        refunds.append(Refund(item["refund_id"], Decimal(item["amount"]), lines))
    return refunds


def _lines_from_json(items: Any) -> tuple[OrderLine, ...]:
    return tuple(
        OrderLine(
            product_id=item.get("product_id"),
            title=item.get("title") or "",
            quantity=int(item.get("quantity") or 0),
            total=Decimal(item.get("total") or item.get("price") or "0")
            if "total" in item
            else Decimal(item.get("price") or "0") * int(item.get("quantity") or 0),
        )
        for item in items
    )


async def load_orders(
    connection: asyncpg.Connection, store_id: str, key: str
) -> list[Order]:
    """Load a customer's orders with every refund known for them."""
    rows = await connection.fetch(
        """
        SELECT o.*, COALESCE(
            (SELECT jsonb_agg(jsonb_build_object(
                'refund_id', r.refund_id, 'amount', r.amount::text,
                'line_items', r.line_items) ORDER BY r.refund_id)
             FROM refunds r
             WHERE r.store_id = o.store_id AND r.order_id = o.order_id),
            '[]'::jsonb) AS separate_refunds
        FROM orders o
        WHERE o.store_id = $1 AND o.customer_key = $2
        """,
        store_id,
        key,
    )
    orders = []
    for row in rows:
        refunds = merge_refunds(
            _refunds_from_json(orjson.loads(row["embedded_refunds"])),
            _refunds_from_json(orjson.loads(row["separate_refunds"])),
        )
        orders.append(
            Order(
                order_id=row["order_id"],
                name=row["name"],
                created_at=row["created_at"],
                currency=row["currency"],
                total=row["total"],
                is_test=row["is_test"],
                cancelled_at=row["cancelled_at"],
                status=row["status"],
                lines=_lines_from_json(orjson.loads(row["line_items"])),
                refunds=refunds,
            )
        )
    return orders


@dataclass(frozen=True)
class CustomerChange:
    """A customer's projection row before and after a recompute (None: no row)."""

    store_id: str
    customer_key: str
    before: asyncpg.Record | None
    after: asyncpg.Record | None


async def recompute_customer(
    connection: asyncpg.Connection, store_id: str, key: str
) -> CustomerChange:
    """Recompute one customer's projection row from their current records."""
    before = await connection.fetchrow(
        "SELECT * FROM customers WHERE store_id = $1 AND customer_key = $2",
        store_id,
        key,
    )
    orders = await load_orders(connection, store_id, key)
    checkout_rows = await connection.fetch(
        """
        SELECT c.checkout_id, c.created_at, c.total,
            c.completed_at IS NOT NULL OR EXISTS (
                SELECT 1 FROM orders o
                WHERE o.store_id = c.store_id AND o.checkout_id = c.checkout_id
            ) AS is_completed
        FROM checkouts c
        WHERE c.store_id = $1 AND c.customer_key = $2
        """,
        store_id,
        key,
    )
    consent_rows = await connection.fetch(
        "SELECT at, state, event_id, source FROM consent_signals "
        "WHERE store_id = $1 AND customer_key = $2",
        store_id,
        key,
    )
    profile = await connection.fetchrow(
        "SELECT * FROM customer_profiles WHERE store_id = $1 AND customer_key = $2",
        store_id,
        key,
    )
    if not orders and not checkout_rows and not consent_rows and profile is None:
        await connection.execute(
            "DELETE FROM customers WHERE store_id = $1 AND customer_key = $2",
            store_id,
            key,
        )
        return CustomerChange(store_id, key, before, None)

    metrics = compute_metrics(
        orders,
        [
            Checkout(r["checkout_id"], r["created_at"], r["total"], r["is_completed"])
            for r in checkout_rows
        ],
        [
            ConsentSignal(
                r["at"],
                r["state"],
                r["event_id"],
                is_weak=r["source"] in ("checkout", "order")
                and r["state"] == "not_subscribed",
            )
            for r in consent_rows
        ],
    )
    customer_id = profile["customer_id"] if profile else None
    if customer_id is None and key.startswith("c:"):
        customer_id = key[2:]
    email = profile["email"] if profile else None
    if email is None and key.startswith("e:"):
        email = key[2:]
    if email is None:
        email = await connection.fetchval(
            "SELECT email FROM (SELECT email, version_at FROM orders"
            " WHERE store_id = $1 AND customer_key = $2 AND email IS NOT NULL"
            " UNION ALL SELECT email, version_at FROM checkouts"
            " WHERE store_id = $1 AND customer_key = $2 AND email IS NOT NULL) AS known"
            " ORDER BY version_at DESC LIMIT 1",
            store_id,
            key,
        )
    activity = [order.created_at for order in orders]
    activity += [row["created_at"] for row in checkout_rows]
    activity += [row["at"] for row in consent_rows]
    if profile is not None:
        activity.append(profile["version_at"])
    updated_at = max(activity)

    after = await connection.fetchrow(
        """
        INSERT INTO customers (store_id, customer_key, customer_id, email,
            first_name, last_name, currency, lifetime_orders, lifetime_sales,
            total_products, first_order_id, first_order_at, last_order_id,
            last_order_at, last_order_sort, average_purchase_frequency_days,
            email_opt_in, email_opt_in_at, checkouts_started, checkouts_completed,
            checkouts_abandoned, open_cart_value, latest_orders, top_purchases,
            tags, country, customer_created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
            $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)
        ON CONFLICT (store_id, customer_key) DO UPDATE SET
            customer_id = EXCLUDED.customer_id, email = EXCLUDED.email,
            first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name,
            currency = EXCLUDED.currency, lifetime_orders = EXCLUDED.lifetime_orders,
            lifetime_sales = EXCLUDED.lifetime_sales,
            total_products = EXCLUDED.total_products,
            first_order_id = EXCLUDED.first_order_id,
            first_order_at = EXCLUDED.first_order_at,
            last_order_id = EXCLUDED.last_order_id,
            last_order_at = EXCLUDED.last_order_at,
            last_order_sort = EXCLUDED.last_order_sort,
            average_purchase_frequency_days =
                EXCLUDED.average_purchase_frequency_days,
            email_opt_in = EXCLUDED.email_opt_in,
            email_opt_in_at = EXCLUDED.email_opt_in_at,
            checkouts_started = EXCLUDED.checkouts_started,
            checkouts_completed = EXCLUDED.checkouts_completed,
            checkouts_abandoned = EXCLUDED.checkouts_abandoned,
            open_cart_value = EXCLUDED.open_cart_value,
            latest_orders = EXCLUDED.latest_orders,
            top_purchases = EXCLUDED.top_purchases, tags = EXCLUDED.tags,
            country = EXCLUDED.country,
            customer_created_at = EXCLUDED.customer_created_at,
            updated_at = EXCLUDED.updated_at
        RETURNING *
        """,
        store_id,
        key,
        customer_id,
        email,
        profile["first_name"] if profile else None,
        profile["last_name"] if profile else None,
        metrics.currency,
        metrics.lifetime_orders,
        metrics.lifetime_sales,
        metrics.total_products,
        metrics.first_order_id,
        metrics.first_order_at,
        metrics.last_order_id,
        metrics.last_order_at,
        order_sort_key(metrics.last_order_id),
        metrics.average_purchase_frequency_days,
        metrics.email_opt_in,
        metrics.email_opt_in_at,
        metrics.checkouts_started,
        metrics.checkouts_completed,
        metrics.checkouts_abandoned,
        metrics.open_cart_value,
        orjson.dumps(metrics.latest_orders).decode(),
        orjson.dumps(metrics.top_purchases).decode(),
        profile["tags"] if profile else "[]",
        profile["country"] if profile else None,
        profile["created_at"] if profile else None,
        updated_at,
    )
    return CustomerChange(store_id, key, before, after)


async def lock_customers(
    connection: asyncpg.Connection, keys: Iterable[tuple[str, str]]
) -> None:
    """Take the customer locks of a batch, after its order locks."""
    await _lock(connection, (_lock_id("c", store, key) for store, key in keys))
