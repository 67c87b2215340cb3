"""Erase a customer's or a whole store's records and record each erasure.

Older events for an erased customer, order or store are skipped from then on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from cartstream.events import Event
from projections import identity
from projections.appliers import BatchEffects, _order_id_of, _required_time
from projections.identity import customer_key

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
