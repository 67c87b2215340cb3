"""Per-type appliers: the row changes of each canonical event except erasures.

A snapshot replaces a row only when it is newer by ``(occurred_at, event id)``.
Facts such as consent signals, messages and order deletions are keyed by event id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from cartstream.events import Event
from projections import identity
from projections.identity import customer_key

# Event types whose customer reference records an alias (email -> account).
ALIAS_EVENT_TYPES = frozenset({"order", "checkout", "customer", "consent", "message"})


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
    """Customers touched by a batch, with the last event that touched each.

    Keys are the raw keys the rows carry; ``customers_to_recompute`` adds the
    accounts that guest keys joined.
    """

    causes: dict[tuple[str, str], str] = field(default_factory=dict)

    def touch(self, store_id: str, key: str | None, event_id: str) -> None:
        if key is not None:
            self.causes[(store_id, key)] = event_id


def _order_id_of(event: Event) -> str | None:
    """Return the order an order, refund or order-deletion event changes."""
    data = event["data"]
    if event["type"] in ("order", "refund"):
        return str(data["order_id"])
    if _is_order_deletion(event):
        return str(data["resource_id"])
    return None


async def _newest_wins(
    connection: asyncpg.Connection, table: str, key_sql: str, keys: Sequence[Any]
) -> asyncpg.Record | None:
    return await connection.fetchrow(
        f"SELECT version_at, version_event, customer_key FROM {table} "
        f"WHERE {key_sql} FOR UPDATE",
        *keys,
    )


def _is_newer(event: Event, current: asyncpg.Record | None) -> bool:
    if current is None or current["version_at"] is None:
        return True
    moment = _required_time(event["occurred_at"])
    return (moment, event["id"]) > (current["version_at"], current["version_event"])


async def _owner_of_order(
    connection: asyncpg.Connection, store_id: str, order_id: str
) -> str | None:
    owner: str | None = await connection.fetchval(
        "SELECT customer_key FROM orders WHERE store_id = $1 AND order_id = $2",
        store_id,
        order_id,
    )
    return owner


# The version columns of each order row, by (store id, order id). None marks an
# order without a row.
OrderVersions = dict[tuple[str, str], asyncpg.Record | None]


async def _lock_orders(
    connection: asyncpg.Connection, events: Sequence[Event]
) -> OrderVersions:
    """Lock the rows of the orders that a batch's order events write, in one query.

    Returns their version columns, as ``_apply_order`` would read them one by
    one. Order ids that are not strings are left out, so their events fail in
    ``_apply_order`` as before.
    """
    ids_by_store: dict[str, set[str]] = {}
    for event in events:
        data = event.get("data")
        order_id = data.get("order_id") if isinstance(data, dict) else None
        store_id = event.get("store_id")
        is_order = event.get("type") == "order"
        if is_order and isinstance(order_id, str) and isinstance(store_id, str):
            ids_by_store.setdefault(store_id, set()).add(order_id)

    versions: OrderVersions = {}
    for store_id, ids in sorted(ids_by_store.items()):
        ordered = sorted(ids)
        rows = await connection.fetch(
            "SELECT order_id, version_at, version_event, customer_key, checkout_id "
            "FROM orders WHERE store_id = $1 AND order_id = ANY($2::text[]) "
            "ORDER BY order_id FOR UPDATE",
            store_id,
            ordered,
        )
        found = {row["order_id"]: row for row in rows}
        for order_id in ordered:
            versions[(store_id, order_id)] = found.get(order_id)
    return versions


async def _apply_order(
    connection: asyncpg.Connection,
    event: Event,
    effects: BatchEffects,
    versions: OrderVersions | None = None,
) -> None:
    store_id = event["store_id"]
    data = event["data"]
    key = customer_key(event["customer"])
    version_key = (store_id, data["order_id"])
    if versions is not None and version_key in versions:
        current = versions[version_key]
    else:
        current = await connection.fetchrow(
            "SELECT version_at, version_event, customer_key, checkout_id FROM orders "
            "WHERE store_id = $1 AND order_id = $2 FOR UPDATE",
            store_id,
            data["order_id"],
        )
    # Every snapshot's marketing choice is a signal, applied or not, so the
    # signals do not depend on the order in which snapshots arrive.
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
        effects.touch(store_id, key, event["id"])
    if not _is_newer(event, current):
        return

    # The written row's version columns are returned as stored, so the next
    # snapshot of this order in the batch compares against exactly them.
    written = await connection.fetchrow(
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
        RETURNING version_at, version_event, customer_key, checkout_id
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
    if versions is not None:
        versions[version_key] = written
    effects.touch(store_id, key, event["id"])
    if current is not None:
        effects.touch(store_id, current["customer_key"], event["id"])

    # The checkout this order completes, and the one an older snapshot named,
    # which may no longer be completed.
    # NOTE: only the new checkout is locked. A batch that moves the old
    # checkout to another customer at the same moment can leave that
    # customer's completed count stale until their next event.
    checkout_ids = {data.get("checkout_id"), current and current["checkout_id"]}
    named = sorted(checkout_id for checkout_id in checkout_ids if checkout_id)
    if named:
        checkout_owners = await connection.fetch(
            "SELECT DISTINCT customer_key FROM checkouts WHERE store_id = $1 "
            "AND checkout_id = ANY($2)",
            store_id,
            named,
        )
        for row in checkout_owners:
            effects.touch(store_id, row["customer_key"], event["id"])


async def _apply_refund(
    connection: asyncpg.Connection, event: Event, effects: BatchEffects
) -> None:
    store_id = event["store_id"]
    data = event["data"]
    previous_order = await connection.fetchval(
        "SELECT order_id FROM refunds WHERE store_id = $1 AND refund_id = $2",
        store_id,
        data["refund_id"],
    )
    await connection.execute(
        """
        INSERT INTO refunds (store_id, refund_id, order_id, created_at, amount,
            line_items, version_at, version_event)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (store_id, refund_id) DO UPDATE SET
            order_id = EXCLUDED.order_id, created_at = EXCLUDED.created_at,
            amount = EXCLUDED.amount, line_items = EXCLUDED.line_items,
            version_at = EXCLUDED.version_at, version_event = EXCLUDED.version_event
        WHERE refunds.version_at IS NULL
            OR (EXCLUDED.version_at, EXCLUDED.version_event)
                > (refunds.version_at, refunds.version_event)
        """,
        store_id,
        data["refund_id"],
        data["order_id"],
        parse_time(data.get("created_at")),
        Decimal(data["amount"]),
        orjson.dumps(data["line_items"]).decode(),
        _required_time(event["occurred_at"]),
        event["id"],
    )
    for order_id in {data["order_id"], previous_order}:
        if order_id is not None:
            owner = await _owner_of_order(connection, store_id, order_id)
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


async def _apply_message(
    connection: asyncpg.Connection, event: Event, effects: BatchEffects
) -> None:
    """Store a message event; an ``unsubscribed`` one is also an opt-out signal."""
    store_id = event["store_id"]
    data = event["data"]
    key = customer_key(event["customer"])
    occurred_at = _required_time(event["occurred_at"])
    await connection.execute(
        """
        INSERT INTO messages (store_id, event_id, customer_key, message_id,
            workflow_id, kind, occurred_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (store_id, event_id) DO NOTHING
        """,
        store_id,
        event["id"],
        key,
        data["message_id"],
        data["workflow_id"],
        data["kind"],
        occurred_at,
    )
    if data["kind"] == "unsubscribed" and key is not None:
        await _add_consent(
            connection,
            store_id,
            key,
            event["id"],
            occurred_at,
            "unsubscribed",
            "message",
        )
    effects.touch(store_id, key, event["id"])


def _is_order_deletion(event: Event) -> bool:
    data = event["data"]
    return bool(
        event["type"] == "notification"
        and data.get("scope") == "order.deleted"
        and data.get("resource_type") == "order"
    )


async def _apply_notification(
    connection: asyncpg.Connection, event: Event, effects: BatchEffects
) -> None:
    """Record an order deletion; other notifications wait for their hydrated event."""
    if not _is_order_deletion(event):
        return
    store_id = event["store_id"]
    order_id = str(event["data"]["resource_id"])
    await connection.execute(
        """
        INSERT INTO order_tombstones (store_id, order_id, event_id, deleted_at)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT DO NOTHING
        """,
        store_id,
        order_id,
        event["id"],
        _required_time(event["occurred_at"]),
    )
    owner = await _owner_of_order(connection, store_id, order_id)
    effects.touch(store_id, owner, event["id"])


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


async def _record_alias(
    connection: asyncpg.Connection, event: Event, effects: BatchEffects
) -> None:
    alias = identity.alias_of(event.get("customer"))
    if alias is None or event["type"] not in ALIAS_EVENT_TYPES:
        return
    email, customer_id = alias
    store_id = event["store_id"]
    before, after = await identity.record_alias(
        connection,
        store_id,
        email,
        customer_id,
        _required_time(event["occurred_at"]),
        event["id"],
    )
    if before == after:
        return
    # The guest's records move to another account: recompute all three.
    effects.touch(store_id, f"{identity.GUEST_PREFIX}{email}", event["id"])
    for account in (before, after):
        if account is not None:
            effects.touch(store_id, f"{identity.ACCOUNT_PREFIX}{account}", event["id"])


APPLIERS = {
    "order": _apply_order,
    "refund": _apply_refund,
    "checkout": _apply_checkout,
    "customer": _apply_customer,
    "consent": _apply_consent,
    "message": _apply_message,
    "notification": _apply_notification,
}
