"""The projection store: applies canonical events to PostgreSQL in a transaction.

Order, checkout and customer events are snapshots: a row is replaced only by a
snapshot with a newer ``(occurred_at, event id)``. Refunds are kept the same
way by refund id, and aliases by email and account. Consent signals, message
events and order deletions are facts keyed by their event id. An erasure
deletes a customer's or a whole store's records and is recorded, so that older
events for them are skipped from then on. After the rows change, the metrics
of every customer they touch are recomputed (``projections.recompute``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
import structlog

from cartstream.events import Event
from projections import identity
from projections.identity import customer_key
from projections.recompute import (
    CustomerChange,
    accounts_for_emails,
    recompute_customer,
    recompute_customers,
)

__all__ = [
    "APPLY_ERRORS",
    "PROJECTION_TABLES",
    "BatchEffects",
    "CustomerChange",
    "ErasureIndex",
    "apply_event",
    "apply_events",
    "customers_to_recompute",
    "hold_projection_lock",
    "load_erasures",
    "lock_customers",
    "lock_for_batch",
    "parse_time",
    "recompute_customer",
    "recompute_customers",
    "share_projection_lock",
]

logger = structlog.get_logger(__name__)

# Every table that is a pure function of the store-events topic, in the order
# a replay rebuilds them. Stores, segments, memberships, the outbox and the
# checkpoints are state of their own and are kept.
PROJECTION_TABLES = (
    "orders",
    "refunds",
    "order_tombstones",
    "checkouts",
    "customer_profiles",
    "consent_signals",
    "customer_aliases",
    "messages",
    "erasures",
    "customers",
)

# Every table of records that an erasure deletes, with the column that stores
# the time of the event that wrote each row.
ERASED_TABLES = (
    ("orders", "version_at"),
    ("refunds", "version_at"),
    ("order_tombstones", "deleted_at"),
    ("checkouts", "version_at"),
    ("customer_profiles", "version_at"),
    ("consent_signals", "at"),
    ("customer_aliases", "at"),
    ("messages", "occurred_at"),
)

# Errors that make one event fail to apply while the rest of its batch goes on.
APPLY_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    ValueError,
    KeyError,
    TypeError,
)

# Any fixed number works. Consumer batches take it shared and a replay takes it
# exclusively while it swaps rebuilt tables in, so no batch writes in between.
PROJECTION_LOCK_ID = 0x63617275

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


async def share_projection_lock(connection: asyncpg.Connection) -> None:
    """Hold the projection lock shared until the transaction ends."""
    await connection.execute(
        "SELECT pg_advisory_xact_lock_shared($1)", PROJECTION_LOCK_ID
    )


async def hold_projection_lock(connection: asyncpg.Connection) -> None:
    """Hold the projection lock exclusively until the transaction ends.

    Waits for every consumer batch in flight, and later batches wait for this
    transaction.
    """
    await connection.execute("SELECT pg_advisory_xact_lock($1)", PROJECTION_LOCK_ID)


def _lock_id(*parts: str) -> str:
    return "\x1f".join(parts)


async def _lock(connection: asyncpg.Connection, names: Iterable[str]) -> None:
    # Transaction-scoped advisory locks serialise consumers that touch the same
    # order, email or customer from different partitions. Every batch takes
    # them in three rounds, each sorted: orders and checkouts, then emails,
    # then customers, all after its store locks (``_lock_stores``). A common
    # order rules out deadlocks between batches.
    ordered = sorted(set(names))
    if not ordered:
        return
    # One statement takes them all, in the array's order.
    await connection.execute(
        "SELECT count(pg_advisory_xact_lock(hashtextextended(name, 0))) "
        "FROM unnest($1::text[]) WITH ORDINALITY AS locks (name, position)",
        ordered,
    )


def _order_id_of(event: Event) -> str | None:
    """Return the order an order, refund or order-deletion event changes."""
    data = event["data"]
    if event["type"] in ("order", "refund"):
        return str(data["order_id"])
    if _is_order_deletion(event):
        return str(data["resource_id"])
    return None


def _checkout_ids_of(event: Event) -> list[str]:
    data = event["data"]
    if event["type"] == "checkout":
        return [str(data["checkout_id"])]
    if event["type"] == "order" and data.get("checkout_id"):
        return [str(data["checkout_id"])]
    return []


def _resource_lock_names(events: Sequence[Event]) -> list[str]:
    names = []
    for event in events:
        order_id = _order_id_of(event)
        if order_id is not None:
            names.append(_lock_id("o", event["store_id"], order_id))
        for checkout_id in _checkout_ids_of(event):
            names.append(_lock_id("k", event["store_id"], checkout_id))
    return names


async def _current_owners(
    connection: asyncpg.Connection, events: Sequence[Event]
) -> set[tuple[str, str]]:
    """Return the stored customer keys of the orders and checkouts a batch changes."""
    orders: dict[str, set[str]] = {}
    checkouts: dict[str, set[str]] = {}
    for event in events:
        order_id = _order_id_of(event)
        if order_id is not None:
            orders.setdefault(event["store_id"], set()).add(order_id)
        for checkout_id in _checkout_ids_of(event):
            checkouts.setdefault(event["store_id"], set()).add(checkout_id)

    owners: set[tuple[str, str]] = set()
    for table, id_column, ids_by_store in (
        ("orders", "order_id", orders),
        ("checkouts", "checkout_id", checkouts),
    ):
        for store_id, ids in ids_by_store.items():
            rows = await connection.fetch(
                f"SELECT DISTINCT customer_key FROM {table} "
                f"WHERE store_id = $1 AND {id_column} = ANY($2) "
                "AND customer_key IS NOT NULL",
                store_id,
                sorted(ids),
            )
            owners.update((store_id, row["customer_key"]) for row in rows)
    return owners


def _is_store_erasure(event: Event) -> bool:
    return event["type"] == "erasure" and customer_key(event["customer"]) is None


async def _lock_stores(connection: asyncpg.Connection, events: Sequence[Event]) -> None:
    erased = {event["store_id"] for event in events if _is_store_erasure(event)}
    # Sorted, so two batches take the locks of their stores in one order.
    for store_id in sorted({event["store_id"] for event in events}):
        function = (
            "pg_advisory_xact_lock"
            if store_id in erased
            else "pg_advisory_xact_lock_shared"
        )
        await connection.execute(
            f"SELECT {function}(hashtextextended($1, 0))", _lock_id("s", store_id)
        )


async def _aliased_emails_of_erasures(
    connection: asyncpg.Connection, events: Sequence[Event]
) -> set[tuple[str, str]]:
    """Return (store id, email) of every alias to an account the batch erases."""
    accounts: dict[str, set[str]] = {}
    for event in events:
        customer_id = (event.get("customer") or {}).get("id")
        if event["type"] == "erasure" and customer_id:
            accounts.setdefault(event["store_id"], set()).add(str(customer_id))
    emails: set[tuple[str, str]] = set()
    for store_id, customer_ids in sorted(accounts.items()):
        rows = await connection.fetch(
            "SELECT DISTINCT email FROM customer_aliases "
            "WHERE store_id = $1 AND customer_id = ANY($2::text[])",
            store_id,
            sorted(customer_ids),
        )
        emails.update((store_id, row["email"]) for row in rows)
    return emails


async def lock_for_batch(
    connection: asyncpg.Connection, events: Sequence[Event]
) -> None:
    """Take the order, checkout and email locks a batch needs, before changing rows.

    Email locks cover every email whose guest key the batch may touch or whose
    alias it may write: those in the events' customer references and those of
    guests that own the orders and checkouts the batch changes. Holding them
    keeps the account a guest joined fixed until the batch commits. An erasure
    of an account also locks the emails that joined it.

    Store locks come before all of these: shared, or exclusive for a store
    that the batch erases whole, because that erasure deletes rows of every
    customer of the store.
    """
    await _lock_stores(connection, events)
    await _lock(connection, _resource_lock_names(events))

    emails: set[tuple[str, str]] = set()
    for event in events:
        email = (event.get("customer") or {}).get("email")
        if email:
            emails.add((event["store_id"], str(email)))
    for store_id, email in await _aliased_emails_of_erasures(connection, events):
        emails.add((store_id, email))
    for store_id, key in await _current_owners(connection, events):
        email = identity.guest_email(key)
        if email is not None:
            emails.add((store_id, email))
    await _lock(connection, (_lock_id("m", store, email) for store, email in emails))


async def lock_customers(
    connection: asyncpg.Connection, keys: Iterable[tuple[str, str]]
) -> None:
    """Take the customer locks of a batch, after its order and email locks."""
    await _lock(connection, (_lock_id("c", store, key) for store, key in keys))


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


@dataclass
class ErasureIndex:
    """The newest ``erased_at`` of each erased customer key and order of a batch.

    ``keys`` maps (store id, customer key) to it, with a None key for an
    erasure of the whole store. ``orders`` maps (store id, order id) to it.
    """

    keys: dict[tuple[str, str | None], datetime] = field(default_factory=dict)
    orders: dict[tuple[str, str], datetime] = field(default_factory=dict)

    def add(
        self,
        store_id: str,
        key: str | None,
        order_ids: Iterable[str],
        erased_at: datetime,
    ) -> None:
        self.keys[(store_id, key)] = max(
            erased_at, self.keys.get((store_id, key), erased_at)
        )
        for order_id in order_ids:
            self.orders[(store_id, order_id)] = max(
                erased_at, self.orders.get((store_id, order_id), erased_at)
            )

    def is_erased(self, store_id: str, key: str | None, moment: datetime) -> bool:
        """Return whether the store, or the key, was erased at or after ``moment``."""
        for target in ((store_id, None), (store_id, key)):
            erased_at = self.keys.get(target)
            if erased_at is not None and moment <= erased_at:
                return True
        return False

    def covers(self, event: Event) -> bool:
        """Return whether an erasure at or after the event's time names its subject.

        The subject is the event's store, customer key or order. An erasure
        event is never covered, so applying one again is harmless.
        """
        if event["type"] == "erasure":
            return False
        store_id = event["store_id"]
        moment = _required_time(event["occurred_at"])
        if self.is_erased(store_id, customer_key(event.get("customer")), moment):
            return True
        order_id = _order_id_of(event)
        erased_at = None if order_id is None else self.orders.get((store_id, order_id))
        return erased_at is not None and moment <= erased_at


async def load_erasures(
    connection: asyncpg.Connection, events: Sequence[Event]
) -> ErasureIndex:
    """Load, in one query, the erasures that may cover a batch's events."""
    store_ids: set[str] = set()
    keys: set[str] = set()
    order_ids: set[str] = set()
    for event in events:
        store_ids.add(event["store_id"])
        ref = event.get("customer")
        key = customer_key(ref)
        if key is not None:
            keys.add(key)
        # The guest key of the email decides whether the event records an alias.
        email = (ref or {}).get("email")
        if email:
            keys.add(f"{identity.GUEST_PREFIX}{email}")
        order_id = _order_id_of(event)
        if order_id is not None:
            order_ids.add(order_id)

    index = ErasureIndex()
    if not store_ids:
        return index
    rows = await connection.fetch(
        "SELECT store_id, customer_key, order_ids, erased_at FROM erasures "
        "WHERE store_id = ANY($1::text[]) AND (customer_key IS NULL "
        "OR customer_key = ANY($2::text[]) OR order_ids && $3::text[])",
        sorted(store_ids),
        sorted(keys),
        sorted(order_ids),
    )
    for row in rows:
        index.add(
            row["store_id"], row["customer_key"], row["order_ids"], row["erased_at"]
        )
    return index


async def _erase_store(
    connection: asyncpg.Connection,
    event: Event,
    effects: BatchEffects,
    erasures: ErasureIndex,
) -> None:
    """Delete every record of a store written at or before the erasure."""
    store_id = event["store_id"]
    erased_at = _required_time(event["occurred_at"])
    for table, time_column in ERASED_TABLES:
        await connection.execute(
            f"DELETE FROM {table} WHERE store_id = $1 "
            f"AND ({time_column} IS NULL OR {time_column} <= $2)",
            store_id,
            erased_at,
        )
    # Every customer is recomputed: those without records left lose their row,
    # and their memberships exit.
    rows = await connection.fetch(
        "SELECT customer_key FROM customers WHERE store_id = $1", store_id
    )
    for row in rows:
        effects.touch(store_id, row["customer_key"], event["id"])

    await connection.execute(
        "INSERT INTO erasures (store_id, event_id, customer_key, email, reason, "
        "erased_at) VALUES ($1, $2, NULL, NULL, $3, $4) ON CONFLICT DO NOTHING",
        store_id,
        event["id"],
        event["data"]["reason"],
        erased_at,
    )
    erasures.add(store_id, None, (), erased_at)


async def _erased_keys(
    connection: asyncpg.Connection, store_id: str, ref: dict[str, Any]
) -> list[str]:
    """Return the customer keys an erasure of ``ref`` covers, the main key first.

    These are ``c:<id>``, ``e:<email>`` and the guest keys whose email joined
    the account.

    NOTE: which emails joined the account depends on the aliases applied so
    far. An alias to another account written on another partition at about
    the same time can make a replay erase a different set of guest keys.
    """
    keys: list[str] = []
    if ref.get("id"):
        account = f"{identity.ACCOUNT_PREFIX}{ref['id']}"
        keys.extend(await identity.member_keys(connection, store_id, account) or ())
    if ref.get("email"):
        keys.append(f"{identity.GUEST_PREFIX}{ref['email']}")
    return list(dict.fromkeys(keys))


async def _erase_customer(
    connection: asyncpg.Connection,
    event: Event,
    effects: BatchEffects,
    erasures: ErasureIndex,
) -> None:
    """Delete a customer's records written at or before the erasure.

    The records are those of every erased key (``_erased_keys``), the orders
    the request lists, the refunds and deletions of the deleted orders, and the
    aliases of the customer's account and emails.
    """
    store_id = event["store_id"]
    ref = event["customer"]
    erased_at = _required_time(event["occurred_at"])
    keys = await _erased_keys(connection, store_id, ref)
    # NOTE: a refund of an erased order that the request did not list, delivered
    # after the erasure, is still stored. It contains no customer data and counts
    # for no one, because its order is gone.
    listed_orders = sorted(
        {str(order_id) for order_id in event["data"].get("order_ids") or ()}
    )
    emails = sorted({email for key in keys if (email := identity.guest_email(key))})

    deleted_orders = await connection.fetch(
        "DELETE FROM orders WHERE store_id = $1 "
        "AND (customer_key = ANY($2::text[]) OR order_id = ANY($3::text[])) "
        "AND version_at <= $4 RETURNING order_id, customer_key, checkout_id",
        store_id,
        keys,
        listed_orders,
        erased_at,
    )
    order_ids = sorted({row["order_id"] for row in deleted_orders} | set(listed_orders))
    for table, time_column in (
        ("refunds", "version_at"),
        ("order_tombstones", "deleted_at"),
    ):
        await connection.execute(
            f"DELETE FROM {table} WHERE store_id = $1 AND order_id = ANY($2::text[]) "
            f"AND ({time_column} IS NULL OR {time_column} <= $3)",
            store_id,
            order_ids,
            erased_at,
        )
    for table, time_column in (
        ("checkouts", "version_at"),
        ("customer_profiles", "version_at"),
        ("consent_signals", "at"),
        ("messages", "occurred_at"),
    ):
        await connection.execute(
            f"DELETE FROM {table} WHERE store_id = $1 "
            f"AND customer_key = ANY($2::text[]) AND {time_column} <= $3",
            store_id,
            keys,
            erased_at,
        )
    deleted_aliases = await connection.fetch(
        "DELETE FROM customer_aliases WHERE store_id = $1 "
        "AND (customer_id = $2 OR email = ANY($3::text[])) AND at <= $4 "
        "RETURNING customer_id",
        store_id,
        ref.get("id"),
        emails,
        erased_at,
    )

    # Other customers whose records changed: owners of listed orders, the
    # checkouts those orders completed, and accounts that lost an alias.
    checkout_ids = sorted(
        {row["checkout_id"] for row in deleted_orders if row["checkout_id"]}
    )
    checkout_owners = await connection.fetch(
        "SELECT DISTINCT customer_key FROM checkouts WHERE store_id = $1 "
        "AND checkout_id = ANY($2::text[])",
        store_id,
        checkout_ids,
    )
    touched = [
        *keys,
        *(row["customer_key"] for row in deleted_orders),
        *(row["customer_key"] for row in checkout_owners),
        *(f"{identity.ACCOUNT_PREFIX}{row['customer_id']}" for row in deleted_aliases),
    ]
    for key in touched:
        effects.touch(store_id, key, event["id"])

    await connection.executemany(
        "INSERT INTO erasures (store_id, event_id, customer_key, email, order_ids, "
        "reason, erased_at) VALUES ($1, $2, $3, $4, $5, $6, $7) "
        "ON CONFLICT DO NOTHING",
        [
            (
                store_id,
                event["id"],
                key,
                identity.guest_email(key) or ref.get("email"),
                listed_orders if position == 0 else [],
                event["data"]["reason"],
                erased_at,
            )
            for position, key in enumerate(keys)
        ],
    )
    for position, key in enumerate(keys):
        erasures.add(store_id, key, listed_orders if position == 0 else (), erased_at)


async def _apply_erasure(
    connection: asyncpg.Connection,
    event: Event,
    effects: BatchEffects,
    erasures: ErasureIndex,
) -> None:
    """Apply an erasure: of the whole store when it names no customer."""
    if customer_key(event.get("customer")) is None:
        await _erase_store(connection, event, effects, erasures)
    else:
        await _erase_customer(connection, event, effects, erasures)


APPLIERS = {
    "order": _apply_order,
    "refund": _apply_refund,
    "checkout": _apply_checkout,
    "customer": _apply_customer,
    "consent": _apply_consent,
    "message": _apply_message,
    "notification": _apply_notification,
}


async def apply_event(
    connection: asyncpg.Connection,
    event: Event,
    effects: BatchEffects,
    order_versions: OrderVersions | None = None,
    erasures: ErasureIndex | None = None,
) -> None:
    """Apply one event's row changes; the caller recomputes touched customers.

    ``order_versions`` holds the locked order rows from ``_lock_orders`` and is
    kept up to date as orders are written. ``erasures`` contains the erasures
    from ``load_erasures``: an event they cover is skipped, and an applied erasure
    is added. Without it they are loaded for this event alone. Idempotent:
    applying an event again changes no row.
    """
    if event["type"] != "erasure" and event["type"] not in APPLIERS:
        return
    if erasures is None:
        erasures = await load_erasures(connection, [event])
    if erasures.covers(event):
        logger.debug(
            "event_skipped_erased", event_id=event["id"], store_id=event["store_id"]
        )
        return
    if event["type"] == "erasure":
        await _apply_erasure(connection, event, effects, erasures)
        return

    # An event from before an erasure of its email records no alias, so the
    # erased email joins no account again.
    email = (event.get("customer") or {}).get("email")
    guest = None if not email else f"{identity.GUEST_PREFIX}{email}"
    moment = _required_time(event["occurred_at"])
    if not erasures.is_erased(event["store_id"], guest, moment):
        await _record_alias(connection, event, effects)
    applier = APPLIERS[event["type"]]
    if applier is _apply_order:
        await _apply_order(connection, event, effects, order_versions)
    else:
        await applier(connection, event, effects)


async def apply_events(
    connection: asyncpg.Connection, events: Sequence[Event], effects: BatchEffects
) -> list[tuple[Event, str]]:
    """Apply events in order, each in a savepoint; return those that failed.

    A savepoint per event lets one event that the database rejects be reported
    without undoing the rest. Each failure comes with its reason. The
    erasures that cover the batch are loaded once, so an event from before an
    erasure is skipped, also when the erasure comes earlier in the batch.
    """
    # Most batches apply cleanly, so all events first share one savepoint. Only
    # when one fails is the batch rolled back and applied again event by event.
    touched = dict(effects.causes)
    try:
        async with connection.transaction():
            order_versions = await _lock_orders(connection, events)
            erasures = await load_erasures(connection, events)
            for event in events:
                await apply_event(connection, event, effects, order_versions, erasures)
        return []
    except APPLY_ERRORS:
        effects.causes = touched

    failures: list[tuple[Event, str]] = []
    erasures = await load_erasures(connection, events)
    for event in events:
        try:
            async with connection.transaction():
                await apply_event(connection, event, effects, erasures=erasures)
        except APPLY_ERRORS as exc:
            reason = f"event {event['id']} failed to apply: {type(exc).__name__}"
            failures.append((event, reason))
    return failures


async def customers_to_recompute(
    connection: asyncpg.Connection, effects: BatchEffects
) -> dict[tuple[str, str], str]:
    """Return every customer key to recompute, with the event that caused it.

    A touched guest key is recomputed itself, so its row goes once it joined an
    account, and the account it joined is recomputed too. The caller holds the
    email locks of the touched guest keys.
    """
    emails_by_store: dict[str, list[str]] = {}
    for store_id, key in effects.causes:
        email = identity.guest_email(key)
        if email is not None:
            emails_by_store.setdefault(store_id, []).append(email)
    accounts = {
        store_id: await accounts_for_emails(connection, store_id, sorted(emails))
        for store_id, emails in sorted(emails_by_store.items())
    }

    targets: dict[tuple[str, str], str] = {}
    for (store_id, key), cause in sorted(effects.causes.items()):
        targets[(store_id, key)] = cause
        email = identity.guest_email(key)
        customer_id = None if email is None else accounts[store_id].get(email)
        if customer_id is not None:
            targets[(store_id, f"{identity.ACCOUNT_PREFIX}{customer_id}")] = cause
    return targets
