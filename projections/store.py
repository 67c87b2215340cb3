"""The projection store: applies canonical events to PostgreSQL in a transaction.

Order, checkout and customer events are snapshots: a row is replaced only by a
snapshot with a newer ``(occurred_at, event id)``. Refunds are kept the same
way by refund id, and aliases by email and account. Consent signals, message
events and order deletions are facts keyed by their event id. An erasure
deletes a customer's or a whole store's records and is recorded, so that older
events for them are skipped from then on. After the rows change, the metrics
of every customer they touch are recomputed (``projections.recompute``).

This module takes a batch's locks and applies its events through
``projections.appliers`` and ``projections.erasures``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import asyncpg
import structlog

from cartstream.events import Event
from projections import identity
from projections.appliers import (
    APPLIERS,
    BatchEffects,
    OrderVersions,
    _apply_order,
    _lock_orders,
    _order_id_of,
    _record_alias,
    _required_time,
    parse_time,
)
from projections.erasures import ErasureIndex, _apply_erasure, load_erasures
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
