"""Canonical events: ids, timestamps, money and identity helpers shared by mappers.

The wire shape is described by ``schemas/event.json``; mappers build plain dicts
that validate against it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from cartstream.errors import MappingError

EventType = Literal[
    "order",
    "refund",
    "checkout",
    "customer",
    "consent",
    "message",
    "erasure",
    "notification",
]
Event = dict[str, Any]

# A fixed namespace makes event ids stable across processes and releases.
EVENT_NAMESPACE = uuid.UUID("6f1d2c3e-8a47-4c1b-9f5e-2b7d0c9a4e11")


MAX_AMOUNT = Decimal(10) ** 15
MAX_AMOUNT_DECIMALS = 12


def event_id(platform: str, store_id: str, source_id: str, index: int = 0) -> str:
    """Derive the id of the ``index``-th event made from one delivery.

    ``source_id`` is the platform's delivery or event id when it sends one, so a
    redelivered webhook maps to the same event ids.
    """
    name = f"{platform}\x1f{store_id}\x1f{source_id}\x1f{index}"
    return str(uuid.uuid5(EVENT_NAMESPACE, name))


def normalise_email(value: object) -> str | None:
    """Return the email stripped and lower-cased, or None when it is empty."""
    if not isinstance(value, str):
        return None
    email = value.strip().lower()
    return email or None


def to_utc(value: object, field: str) -> str:
    """Convert an RFC 3339 or ISO 8601 timestamp to UTC in the ``...Z`` form.

    A timestamp without an offset is taken as UTC, as WooCommerce's ``*_gmt``
    fields are.

    Raises:
        MappingError: the value is missing or not a timestamp.
    """
    if not isinstance(value, str) or not value:
        raise MappingError(f"missing timestamp in {field}", field=field)
    text = value.strip().replace(" ", "T", 1)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        utc = moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        # OverflowError: an offset that moves year 1 or 9999 out of range.
        raise MappingError(f"invalid timestamp in {field}", field=field) from exc
    return utc.isoformat().replace("+00:00", "Z")


def optional_utc(value: object, field: str) -> str | None:
    """Like ``to_utc`` but maps None and the empty string to None."""
    if value is None or value == "":
        return None
    return to_utc(value, field)


def money(value: object, field: str) -> str:
    """Return an exact decimal string for a money value given as string or number.

    Numbers are read through ``str`` so ``19.99`` stays ``19.99`` and never
    becomes a binary float expansion.

    Raises:
        MappingError: the value is missing, not a number, or not finite.
    """
    if isinstance(value, bool) or value is None:
        raise MappingError(f"missing or invalid amount in {field}", field=field)
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise MappingError(f"invalid amount in {field}", field=field) from exc
    # Bounds keep a tiny input such as "1e999999999" from expanding into a
    # billion-digit string, and no shop's amount comes near them.
    if not amount.is_finite() or amount.copy_abs() >= MAX_AMOUNT:
        raise MappingError(f"invalid amount in {field}", field=field)
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_AMOUNT_DECIMALS:
        raise MappingError(f"invalid amount in {field}", field=field)
    return format(amount, "f")


def optional_id(value: object) -> str | None:
    """Return a platform id as a string; 0, empty and None mean no id."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    if text in ("", "0"):
        return None
    return text
