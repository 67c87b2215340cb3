"""Customer identity: the key of an event's customer, and guests that join accounts.

Keys are ``c:<id>`` or ``e:<email>``. An alias (email to account) makes a guest
key count for the account; see ``account_for_email`` and ``member_keys``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg

ACCOUNT_PREFIX = "c:"
GUEST_PREFIX = "e:"


def customer_key(ref: Mapping[str, Any] | None) -> str | None:
    """Return the customer key for an event's ``customer`` reference.

    The platform's customer id when the event carries one, else the normalised
    email; None for a guest without either, whose records belong to no one.
    """
    if not ref:
        return None
    customer_id = ref.get("id")
    if customer_id:
        return f"{ACCOUNT_PREFIX}{customer_id}"
    email = ref.get("email")
    if email:
        return f"{GUEST_PREFIX}{email}"
    return None


def guest_email(key: str) -> str | None:
    """Return the email of a guest key ``e:<email>``, or None for an account key."""
    if key.startswith(GUEST_PREFIX):
        return key[len(GUEST_PREFIX) :]
    return None


def alias_of(ref: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """Return ``(email, customer_id)`` when a reference names both, else None."""
    if not ref or not ref.get("id") or not ref.get("email"):
        return None
    return str(ref["email"]), str(ref["id"])


async def account_for_email(
    connection: asyncpg.Connection, store_id: str, email: str
) -> str | None:
    """Return the customer id that a guest email joins, or None.

    Every event that names both a customer id and an email records an alias.
    When several accounts were seen with one email, the alias from the newest
    event (by occurred_at, then event id) decides, so the result depends only
    on the set of aliases and not on the order in which events arrived.
    """
    customer_id: str | None = await connection.fetchval(
        "SELECT customer_id FROM customer_aliases WHERE store_id = $1 AND email = $2 "
        "ORDER BY at DESC, event_id DESC LIMIT 1",
        store_id,
        email,
    )
    return customer_id


async def record_alias(
    connection: asyncpg.Connection,
    store_id: str,
    email: str,
    customer_id: str,
    at: datetime,
    event_id: str,
) -> tuple[str | None, str | None]:
    """Store that ``email`` belongs to ``customer_id`` as of ``at``.

    Returns the account the email joined before and after, so the caller can
    recompute the guest and both accounts when they differ. The caller holds the
    email's identity lock, so no other transaction moves the email meanwhile.
    """
    # One statement reads the current winner and writes the row. The write is
    # skipped when the winner is this account already and at least as new.
    winner = await connection.fetchrow(
        """
        WITH winner AS (
            SELECT customer_id, at, event_id FROM customer_aliases
            WHERE store_id = $1 AND email = $2
            ORDER BY at DESC, event_id DESC LIMIT 1
        ), written AS (
            INSERT INTO customer_aliases (store_id, email, customer_id, at, event_id)
            SELECT $1, $2, $3, $4, $5
            WHERE NOT EXISTS (
                SELECT 1 FROM winner
                WHERE customer_id = $3 AND (at, event_id) >= ($4, $5)
            )
            ON CONFLICT (store_id, email, customer_id) DO UPDATE SET
                at = EXCLUDED.at, event_id = EXCLUDED.event_id
            WHERE (EXCLUDED.at, EXCLUDED.event_id)
                > (customer_aliases.at, customer_aliases.event_id)
        )
        SELECT customer_id, at, event_id FROM winner
        """,
        store_id,
        email,
        customer_id,
        at,
        event_id,
    )
    if winner is None:
        return None, customer_id
    before: str = winner["customer_id"]
    # The winner is the newest row; the new row wins only when newer than it.
    if (at, event_id) > (winner["at"], winner["event_id"]):
        return before, customer_id
    return before, before


async def resolve_key(connection: asyncpg.Connection, store_id: str, key: str) -> str:
    """Return the key a customer's records count for: the account a guest joined."""
    email = guest_email(key)
    if email is None:
        return key
    customer_id = await account_for_email(connection, store_id, email)
    return key if customer_id is None else f"{ACCOUNT_PREFIX}{customer_id}"


async def member_keys(
    connection: asyncpg.Connection, store_id: str, key: str
) -> list[str] | None:
    """Return every key whose records count for ``key``, itself first.

    An account gathers the guest keys of the emails that joined it. Returns None
    for a guest key whose email joined an account, because that guest has no
    projection row of its own.
    """
    email = guest_email(key)
    if email is not None:
        if await account_for_email(connection, store_id, email) is not None:
            return None
        return [key]

    customer_id = key[len(ACCOUNT_PREFIX) :]
    rows = await connection.fetch(
        """
        SELECT email FROM (
            SELECT DISTINCT ON (email) email, customer_id
            FROM customer_aliases
            WHERE store_id = $1 AND email IN (
                SELECT email FROM customer_aliases
                WHERE store_id = $1 AND customer_id = $2
            )
            ORDER BY email, at DESC, event_id DESC
        ) AS winners
        WHERE customer_id = $2
        ORDER BY email
        """,
        store_id,
        customer_id,
    )
    return [key, *(f"{GUEST_PREFIX}{row['email']}" for row in rows)]
