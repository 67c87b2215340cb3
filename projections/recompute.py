"""Recompute customers' projection rows from every record that counts for them.

The records are those of the customer's own key plus, for an account, those of
the guest keys whose email joined it (``projections.identity``). A batch of
customers of one store is loaded with a fixed number of queries, whatever its
size.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
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


async def _load_orders(
    connection: asyncpg.Connection, store_id: str, keys: list[str]
) -> dict[str, list[Order]]:
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
    orders: dict[str, list[Order]] = defaultdict(list)
    for row in rows:
        refunds = merge_refunds(
            _refunds_from_json(orjson.loads(row["embedded_refunds"])),
            _refunds_from_json(orjson.loads(row["separate_refunds"])),
        )
        orders[row["customer_key"]].append(
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
) -> dict[str, list[Checkout]]:
    # A checkout is completed when the platform sets completed_at or when an
    # order that names it exists, whichever arrives first.
    rows = await connection.fetch(
        """
        SELECT c.customer_key, c.checkout_id, c.created_at, c.total,
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
    checkouts: dict[str, list[Checkout]] = defaultdict(list)
    for r in rows:
        checkouts[r["customer_key"]].append(
            Checkout(r["checkout_id"], r["created_at"], r["total"], r["is_completed"])
        )
    return checkouts


async def _load_consent(
    connection: asyncpg.Connection, store_id: str, keys: list[str]
) -> dict[str, list[ConsentSignal]]:
    rows = await connection.fetch(
        "SELECT customer_key, at, state, event_id, source FROM consent_signals "
        "WHERE store_id = $1 AND customer_key = ANY($2)",
        store_id,
        keys,
    )
    signals: dict[str, list[ConsentSignal]] = defaultdict(list)
    for r in rows:
        signals[r["customer_key"]].append(
            ConsentSignal(
                r["at"],
                r["state"],
                r["event_id"],
                is_weak=r["source"] in ("checkout", "order")
                and r["state"] == "not_subscribed",
            )
        )
    return signals


async def _load_messages(
    connection: asyncpg.Connection, store_id: str, keys: list[str]
) -> dict[str, list[MessageEvent]]:
    rows = await connection.fetch(
        "SELECT customer_key, event_id, message_id, workflow_id, kind, occurred_at "
        "FROM messages WHERE store_id = $1 AND customer_key = ANY($2)",
        store_id,
        keys,
    )
    messages: dict[str, list[MessageEvent]] = defaultdict(list)
    for r in rows:
        messages[r["customer_key"]].append(
            MessageEvent(
                r["event_id"],
                r["message_id"],
                r["workflow_id"],
                r["kind"],
                r["occurred_at"],
            )
        )
    return messages


async def _newest_activity(
    connection: asyncpg.Connection, store_id: str, keys: list[str]
) -> dict[str, datetime]:
    """Return the time of the newest record of each key that has records.

    The customers row stores it as ``updated_at`` in place of the wall clock, so
    a replay rebuilds the same row.
    """
    rows = await connection.fetch(
        """
        SELECT customer_key, max(at) AS at FROM (
            SELECT customer_key, version_at AS at FROM orders
                WHERE store_id = $1 AND customer_key = ANY($2)
            UNION ALL SELECT customer_key, version_at FROM checkouts
                WHERE store_id = $1 AND customer_key = ANY($2)
            UNION ALL SELECT customer_key, at FROM consent_signals
                WHERE store_id = $1 AND customer_key = ANY($2)
            UNION ALL SELECT customer_key, occurred_at FROM messages
                WHERE store_id = $1 AND customer_key = ANY($2)
            UNION ALL SELECT customer_key, version_at FROM customer_profiles
                WHERE store_id = $1 AND customer_key = ANY($2)
        ) AS activity
        GROUP BY customer_key
        """,
        store_id,
        keys,
    )
    return {row["customer_key"]: row["at"] for row in rows}


async def _newest_emails(
    connection: asyncpg.Connection, store_id: str, members: dict[str, list[str]]
) -> dict[str, str]:
    """Return, per customer key, the email of the newest order or checkout snapshot.

    ``members`` maps each customer key to the keys whose records count for it.
    A customer whose snapshots carry no email is absent from the result.
    """
    targets = [key for key, keys in members.items() for _ in keys]
    member_keys = [member for keys in members.values() for member in keys]
    rows = await connection.fetch(
        """
        SELECT DISTINCT ON (member.target) member.target, known.email
        FROM unnest($2::text[], $3::text[]) AS member (target, customer_key)
        JOIN (
            SELECT customer_key, email, version_at, version_event FROM orders
                WHERE store_id = $1 AND customer_key = ANY($3) AND email IS NOT NULL
            UNION ALL SELECT customer_key, email, version_at, version_event
                FROM checkouts
                WHERE store_id = $1 AND customer_key = ANY($3) AND email IS NOT NULL
        ) AS known USING (customer_key)
        ORDER BY member.target, known.version_at DESC, known.version_event DESC
        """,
        store_id,
        targets,
        member_keys,
    )
    return {row["target"]: row["email"] for row in rows}


async def accounts_for_emails(
    connection: asyncpg.Connection,
    store_id: str,
    emails: Sequence[str],
    customer_ids: Sequence[str] = (),
) -> dict[str, str]:
    """Return the customer id that each email joins, as ``identity.account_for_email``.

    Covers the given emails and every email with an alias to one of
    ``customer_ids``. An email that joins no account is absent. The newest
    alias (by ``at``, then event id) decides.
    """
    rows = await connection.fetch(
        """
        SELECT DISTINCT ON (email) email, customer_id FROM customer_aliases
        WHERE store_id = $1 AND (email = ANY($2::text[]) OR email IN (
            SELECT email FROM customer_aliases
            WHERE store_id = $1 AND customer_id = ANY($3::text[])
        ))
        ORDER BY email, at DESC, event_id DESC
        """,
        store_id,
        list(emails),
        list(customer_ids),
    )
    return {row["email"]: row["customer_id"] for row in rows}


async def _member_keys(
    connection: asyncpg.Connection, store_id: str, keys: Sequence[str]
) -> dict[str, list[str] | None]:
    """Return, per key, every key whose records count for it, itself first.

    Gives the result of ``identity.member_keys`` for many keys at once. A guest
    key whose email joined an account maps to None, because that guest has no
    projection row of its own.
    """
    emails = [email for key in keys if (email := identity.guest_email(key))]
    customer_ids = [
        key[len(identity.ACCOUNT_PREFIX) :]
        for key in keys
        if key.startswith(identity.ACCOUNT_PREFIX)
    ]
    accounts = await accounts_for_emails(connection, store_id, emails, customer_ids)
    joined: dict[str, list[str]] = defaultdict(list)
    for email in sorted(accounts):
        joined[accounts[email]].append(f"{identity.GUEST_PREFIX}{email}")

    members: dict[str, list[str] | None] = {}
    for key in keys:
        email = identity.guest_email(key)
        if email is not None:
            members[key] = None if email in accounts else [key]
        else:
            members[key] = [key, *joined.get(key[len(identity.ACCOUNT_PREFIX) :], [])]
    return members


@dataclass(frozen=True)
class _Records:
    """The records of a batch of customer keys, grouped by key."""

    orders: dict[str, list[Order]]
    checkouts: dict[str, list[Checkout]]
    consent: dict[str, list[ConsentSignal]]
    messages: dict[str, list[MessageEvent]]

    def metrics(self, keys: list[str], attribution_window: timedelta) -> Metrics:
        """Compute the metrics of the records of ``keys`` together."""
        return compute_metrics(
            [order for key in keys for order in self.orders.get(key, ())],
            [checkout for key in keys for checkout in self.checkouts.get(key, ())],
            [signal for key in keys for signal in self.consent.get(key, ())],
            [message for key in keys for message in self.messages.get(key, ())],
            attribution_window,
        )


async def _load_records(
    connection: asyncpg.Connection, store_id: str, keys: list[str]
) -> _Records:
    return _Records(
        await _load_orders(connection, store_id, keys),
        await _load_checkouts(connection, store_id, keys),
        await _load_consent(connection, store_id, keys),
        await _load_messages(connection, store_id, keys),
    )


async def recompute_customer(
    connection: asyncpg.Connection,
    store_id: str,
    key: str,
    *,
    attribution_window_days: int = DEFAULT_ATTRIBUTION_WINDOW_DAYS,
) -> CustomerChange:
    """Recompute one customer's projection row from their current records."""
    (change,) = await recompute_customers(
        connection, store_id, [key], attribution_window_days=attribution_window_days
    )
    return change


async def recompute_customers(
    connection: asyncpg.Connection,
    store_id: str,
    keys: Sequence[str],
    *,
    attribution_window_days: int = DEFAULT_ATTRIBUTION_WINDOW_DAYS,
) -> list[CustomerChange]:
    """Recompute the projection rows of distinct customer keys of one store.

    Deletes the row of a customer without records and of a guest whose email
    joined an account. Returns one change per key, in the order of ``keys``,
    and writes the rows in that order too.
    """
    key_list = list(keys)
    before = {
        row["customer_key"]: row
        for row in await connection.fetch(
            "SELECT * FROM customers WHERE store_id = $1 AND customer_key = ANY($2)",
            store_id,
            key_list,
        )
    }
    members = await _member_keys(connection, store_id, key_list)
    every_member = sorted({m for keys in members.values() if keys for m in keys})
    activity = await _newest_activity(connection, store_id, every_member)

    # A customer's updated_at is the newest activity of any of its keys.
    updated_at: dict[str, datetime] = {}
    live: dict[str, list[str]] = {}
    for key in key_list:
        moments = [activity[m] for m in members[key] or () if m in activity]
        if moments:
            updated_at[key] = max(moments)
            live[key] = members[key] or []
    removed_keys = [key for key in key_list if key not in live]
    if removed_keys:
        await connection.execute(
            "DELETE FROM customers WHERE store_id = $1 AND customer_key = ANY($2)",
            store_id,
            removed_keys,
        )

    after: dict[str, asyncpg.Record] = {}
    if live:
        after = await _write_customers(
            connection,
            store_id,
            live,
            updated_at,
            timedelta(days=attribution_window_days),
        )
    return [
        CustomerChange(store_id, key, before.get(key), after.get(key))
        for key in key_list
    ]


async def _write_customers(
    connection: asyncpg.Connection,
    store_id: str,
    members: dict[str, list[str]],
    updated_at: dict[str, datetime],
    attribution_window: timedelta,
) -> dict[str, asyncpg.Record]:
    """Compute and upsert the rows of customers with records, by customer key."""
    every_member = sorted({m for keys in members.values() for m in keys})
    records = await _load_records(connection, store_id, every_member)
    profiles = {
        row["customer_key"]: row
        for row in await connection.fetch(
            "SELECT * FROM customer_profiles "
            "WHERE store_id = $1 AND customer_key = ANY($2)",
            store_id,
            list(members),
        )
    }

    # Email falls back from the profile to the guest key's own email, then to
    # the newest order or checkout snapshot.
    emails: dict[str, str | None] = {}
    for key in members:
        profile = profiles.get(key)
        emails[key] = profile["email"] if profile else None
        if emails[key] is None:
            emails[key] = identity.guest_email(key)
    without_email = {key: members[key] for key in members if emails[key] is None}
    if without_email:
        emails.update(await _newest_emails(connection, store_id, without_email))

    rows = []
    for key, keys in members.items():
        profile = profiles.get(key)
        customer_id = profile["customer_id"] if profile else None
        if customer_id is None and key.startswith(identity.ACCOUNT_PREFIX):
            customer_id = key[len(identity.ACCOUNT_PREFIX) :]
        identity_columns = {
            "customer_id": customer_id,
            "email": emails[key],
            "first_name": profile["first_name"] if profile else None,
            "last_name": profile["last_name"] if profile else None,
            "tags": profile["tags"] if profile else "[]",
            "country": profile["country"] if profile else None,
            "customer_created_at": profile["created_at"] if profile else None,
            "updated_at": updated_at[key],
        }
        metrics = records.metrics(keys, attribution_window)
        rows.append((key, {**identity_columns, **_metric_columns(metrics)}))
    return await _upsert_customers(connection, store_id, rows)


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


async def _upsert_customers(
    connection: asyncpg.Connection,
    store_id: str,
    rows: list[tuple[str, dict[str, Any]]],
) -> dict[str, asyncpg.Record]:
    # Every row has the same columns, so one statement runs once per row.
    # asyncpg's fetchmany (0.30 and newer) sends every execution before a single
    # Sync, so all rows are written in about one round trip.
    names = list(rows[0][1])
    placeholders = ", ".join(f"${index}" for index in range(3, len(names) + 3))
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in names)
    written: list[asyncpg.Record] = await connection.fetchmany(
        f"INSERT INTO customers (store_id, customer_key, {', '.join(names)}) "
        f"VALUES ($1, $2, {placeholders}) "
        f"ON CONFLICT (store_id, customer_key) DO UPDATE SET {updates} "
        "RETURNING *",
        [(store_id, key, *columns.values()) for key, columns in rows],
    )
    return {row["customer_key"]: row for row in written}
