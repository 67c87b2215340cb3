"""Recompute one customer's projection row from every record that counts for them.

The records are those of the customer's own key plus, for an account, those of
the guest keys whose email joined it (``projections.identity``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from projections import identity
from projections.conversions import MessageEvent
from projections.metrics import (
    DEFAULT_ATTRIBUTION_WINDOW,
    Checkout,
    ConsentSignal,
    Metrics,
    Order,
    OrderLine,
    Refund,
    RefundLine,
    compute_metrics,
    merge_refunds,
    order_sort_key,
)

DEFAULT_ATTRIBUTION_WINDOW_DAYS = DEFAULT_ATTRIBUTION_WINDOW.days


@dataclass(frozen=True)
class CustomerChange:
    """A customer's projection row before and after a recompute (None: no row)."""

    store_id: str
    customer_key: str
    before: asyncpg.Record | None
    after: asyncpg.Record | None


def _refunds_from_json(items: Any) -> list[Refund]:
    refunds = []
    for item in items:
        lines = tuple(
            RefundLine(
                line_item_id=line.get("line_item_id"),
                product_id=line.get("product_id"),
                quantity=int(line.get("quantity") or 0),
                amount=Decimal(line.get("amount") or "0"),
            )
            for line in item.get("line_items", [])
        )
        refunds.append(Refund(item["refund_id"], Decimal(item["amount"]), lines))
    return refunds


def _line_total(item: Any) -> Decimal:
    """Return a line's total, or its price times quantity when it has none."""
    if item.get("total") is not None:
        return Decimal(item["total"])
    return Decimal(item.get("price") or "0") * int(item.get("quantity") or 0)


def _lines_from_json(items: Any) -> tuple[OrderLine, ...]:
    return tuple(
        OrderLine(
            line_item_id=item.get("line_item_id"),
            product_id=item.get("product_id"),
            title=item.get("title") or "",
            quantity=int(item.get("quantity") or 0),
            total=_line_total(item),
        )
        for item in items
    )


async def load_orders(
    connection: asyncpg.Connection, store_id: str, keys: list[str]
) -> list[Order]:
    """Load the orders of some customer keys with every refund known for them."""
    rows = await connection.fetch(
        """
        SELECT o.*, COALESCE(
            (SELECT jsonb_agg(jsonb_build_object(
                'refund_id', r.refund_id, 'amount', r.amount::text,
                'line_items', r.line_items) ORDER BY r.refund_id)
             FROM refunds r
             WHERE r.store_id = o.store_id AND r.order_id = o.order_id),
            '[]'::jsonb) AS separate_refunds,
            EXISTS (
                SELECT 1 FROM order_tombstones t
                WHERE t.store_id = o.store_id AND t.order_id = o.order_id
                AND (t.deleted_at, t.event_id) > (o.version_at, o.version_event)
            ) AS is_deleted
        FROM orders o
        WHERE o.store_id = $1 AND o.customer_key = ANY($2)
        """,
        store_id,
        keys,
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
                is_deleted=row["is_deleted"],
            )
        )
    return orders


async def _load_checkouts(
    connection: asyncpg.Connection, store_id: str, keys: list[str]
) -> list[Checkout]:
    # A checkout is completed when the platform sets completed_at or when an
    # order that names it exists, whichever arrives first.
    rows = await connection.fetch(
        """
        SELECT c.checkout_id, c.created_at, c.total,
            c.completed_at IS NOT NULL OR EXISTS (
                SELECT 1 FROM orders o
                WHERE o.store_id = c.store_id AND o.checkout_id = c.checkout_id
            ) AS is_completed
        FROM checkouts c
        WHERE c.store_id = $1 AND c.customer_key = ANY($2)
        """,
        store_id,
        keys,
    )
    return [
        Checkout(r["checkout_id"], r["created_at"], r["total"], r["is_completed"])
        for r in rows
    ]


async def _load_consent(
    connection: asyncpg.Connection, store_id: str, keys: list[str]
) -> list[ConsentSignal]:
    rows = await connection.fetch(
        "SELECT at, state, event_id, source FROM consent_signals "
        "WHERE store_id = $1 AND customer_key = ANY($2)",
        store_id,
        keys,
    )
    return [
        ConsentSignal(
            r["at"],
            r["state"],
            r["event_id"],
            is_weak=r["source"] in ("checkout", "order")
            and r["state"] == "not_subscribed",
        )
        for r in rows
    ]


async def _load_messages(
    connection: asyncpg.Connection, store_id: str, keys: list[str]
) -> list[MessageEvent]:
    rows = await connection.fetch(
        "SELECT event_id, message_id, workflow_id, kind, occurred_at FROM messages "
        "WHERE store_id = $1 AND customer_key = ANY($2)",
        store_id,
        keys,
    )
    return [
        MessageEvent(
            r["event_id"],
            r["message_id"],
            r["workflow_id"],
            r["kind"],
            r["occurred_at"],
        )
        for r in rows
    ]


async def _newest_activity(
    connection: asyncpg.Connection, store_id: str, keys: list[str]
) -> Any:
    """Return the time of the newest record of some keys, or None without records.

    The customers row stores it as ``updated_at`` in place of the wall clock, so
    a replay rebuilds the same row.
    """
    return await connection.fetchval(
        """
        SELECT max(at) FROM (
            SELECT version_at AS at FROM orders
                WHERE store_id = $1 AND customer_key = ANY($2)
            UNION ALL SELECT version_at FROM checkouts
                WHERE store_id = $1 AND customer_key = ANY($2)
            UNION ALL SELECT at FROM consent_signals
                WHERE store_id = $1 AND customer_key = ANY($2)
            UNION ALL SELECT occurred_at FROM messages
                WHERE store_id = $1 AND customer_key = ANY($2)
            UNION ALL SELECT version_at FROM customer_profiles
                WHERE store_id = $1 AND customer_key = ANY($2)
        ) AS activity
        """,
        store_id,
        keys,
    )


async def _newest_email(
    connection: asyncpg.Connection, store_id: str, keys: list[str]
) -> str | None:
    email: str | None = await connection.fetchval(
        "SELECT email FROM (SELECT email, version_at, version_event FROM orders"
        " WHERE store_id = $1 AND customer_key = ANY($2) AND email IS NOT NULL"
        " UNION ALL SELECT email, version_at, version_event FROM checkouts"
        " WHERE store_id = $1 AND customer_key = ANY($2) AND email IS NOT NULL)"
        " AS known ORDER BY version_at DESC, version_event DESC LIMIT 1",
        store_id,
        keys,
    )
    return email


async def load_metrics(
    connection: asyncpg.Connection,
    store_id: str,
    keys: list[str],
    attribution_window: timedelta,
) -> Metrics:
    """Load the records of some customer keys and compute their metrics together."""
    return compute_metrics(
        await load_orders(connection, store_id, keys),
        await _load_checkouts(connection, store_id, keys),
        await _load_consent(connection, store_id, keys),
        await _load_messages(connection, store_id, keys),
        attribution_window,
    )


async def recompute_customer(
    connection: asyncpg.Connection,
    store_id: str,
    key: str,
    *,
    attribution_window_days: int = DEFAULT_ATTRIBUTION_WINDOW_DAYS,
) -> CustomerChange:
    """Recompute one customer's projection row from their current records.

    Deletes the row of a customer without records and of a guest whose email
    joined an account.
    """
    before = await connection.fetchrow(
        "SELECT * FROM customers WHERE store_id = $1 AND customer_key = $2",
        store_id,
        key,
    )
    keys = await identity.member_keys(connection, store_id, key)
    updated_at = None
    if keys is not None:
        updated_at = await _newest_activity(connection, store_id, keys)
    if keys is None or updated_at is None:
        await connection.execute(
            "DELETE FROM customers WHERE store_id = $1 AND customer_key = $2",
            store_id,
            key,
        )
        return CustomerChange(store_id, key, before, None)

    metrics = await load_metrics(
        connection, store_id, keys, timedelta(days=attribution_window_days)
    )
    profile = await connection.fetchrow(
        "SELECT * FROM customer_profiles WHERE store_id = $1 AND customer_key = $2",
        store_id,
        key,
    )
    customer_id = profile["customer_id"] if profile else None
    if customer_id is None and key.startswith(identity.ACCOUNT_PREFIX):
        customer_id = key[len(identity.ACCOUNT_PREFIX) :]
    email = profile["email"] if profile else None
    if email is None:
        email = identity.guest_email(key)
    if email is None:
        email = await _newest_email(connection, store_id, keys)

    after = await _upsert_customer(
        connection,
        store_id,
        key,
        {
            "customer_id": customer_id,
            "email": email,
            "first_name": profile["first_name"] if profile else None,
            "last_name": profile["last_name"] if profile else None,
            "tags": profile["tags"] if profile else "[]",
            "country": profile["country"] if profile else None,
            "customer_created_at": profile["created_at"] if profile else None,
            "updated_at": updated_at,
        },
        metrics,
    )
    return CustomerChange(store_id, key, before, after)


def _metric_columns(metrics: Metrics) -> dict[str, Any]:
    return {
        "currency": metrics.currency,
        "lifetime_orders": metrics.lifetime_orders,
        "lifetime_sales": metrics.lifetime_sales,
        "total_products": metrics.total_products,
        "first_order_id": metrics.first_order_id,
        "first_order_at": metrics.first_order_at,
        "last_order_id": metrics.last_order_id,
        "last_order_at": metrics.last_order_at,
        "last_order_sort": order_sort_key(metrics.last_order_id),
        "average_purchase_frequency_days": metrics.average_purchase_frequency_days,
        "email_opt_in": metrics.email_opt_in,
        "email_opt_in_at": metrics.email_opt_in_at,
        "checkouts_started": metrics.checkouts_started,
        "checkouts_completed": metrics.checkouts_completed,
        "checkouts_abandoned": metrics.checkouts_abandoned,
        "open_cart_value": metrics.open_cart_value,
        "latest_orders": orjson.dumps(metrics.latest_orders).decode(),
        "top_purchases": orjson.dumps(metrics.top_purchases).decode(),
        "messages_sent": metrics.messages_sent,
        "messages_opened": metrics.messages_opened,
        "messages_clicked": metrics.messages_clicked,
        "converted_orders": metrics.converted_orders,
        "converted_revenue": metrics.converted_revenue,
        "conversion_rate": metrics.conversion_rate,
        "workflow_stats": orjson.dumps(metrics.workflow_stats).decode(),
    }


async def _upsert_customer(
    connection: asyncpg.Connection,
    store_id: str,
    key: str,
    identity_columns: dict[str, Any],
    metrics: Metrics,
) -> asyncpg.Record:
    columns = {**identity_columns, **_metric_columns(metrics)}
    names = list(columns)
    placeholders = ", ".join(f"${index}" for index in range(3, len(names) + 3))
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in names)
    row: asyncpg.Record = await connection.fetchrow(
        f"INSERT INTO customers (store_id, customer_key, {', '.join(names)}) "
        f"VALUES ($1, $2, {placeholders}) "
        f"ON CONFLICT (store_id, customer_key) DO UPDATE SET {updates} "
        "RETURNING *",
        store_id,
        key,
        *columns.values(),
    )
    return row
