"""The field catalogue: every customer field a segment rule may read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

import asyncpg


@dataclass(frozen=True)
class CatalogueField:
    name: str
    type: str
    description: str


@cache
def load_catalogue() -> dict[str, CatalogueField]:
    """Read ``schemas/fields.json`` into a mapping of field name to field."""
    text = (resources.files("schemas") / "fields.json").read_text()
    return {
        item["name"]: CatalogueField(item["name"], item["type"], item["description"])
        for item in json.loads(text)["fields"]
    }


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat().replace("+00:00", "Z")


def _days_since(moment: datetime | None, now: datetime) -> int | None:
    if moment is None:
        return None
    return (now - moment).days


def customer_record(
    row: asyncpg.Record | dict[str, Any], now: datetime
) -> dict[str, Any]:
    """Build the record a segment rule is evaluated on from a customers row.

    Money stays ``Decimal``; the rule compiler compares it exactly with numbers.
    """
    tags = row["tags"]
    if isinstance(tags, str):
        tags = json.loads(tags)
    return {
        "lifetime_orders": row["lifetime_orders"],
        "lifetime_sales": row["lifetime_sales"],
        "total_products": row["total_products"],
        "average_purchase_frequency_days": row["average_purchase_frequency_days"],
        "first_order_at": _iso(row["first_order_at"]),
        "last_order_at": _iso(row["last_order_at"]),
        "days_since_last_order": _days_since(row["last_order_at"], now),
        "days_since_first_order": _days_since(row["first_order_at"], now),
        "email_opt_in": row["email_opt_in"],
        "is_subscribed": row["email_opt_in"] == "subscribed",
        "checkouts_started": row["checkouts_started"],
        "checkouts_completed": row["checkouts_completed"],
        "checkouts_abandoned": row["checkouts_abandoned"],
        "open_cart_value": row["open_cart_value"],
        "tags": tags,
        "country": row["country"],
        "customer_created_at": _iso(row["customer_created_at"]),
        "days_since_created": _days_since(row["customer_created_at"], now),
        "has_account": row["customer_id"] is not None,
    }
