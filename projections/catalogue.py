"""The field catalogue: every customer field a segment rule may read, and its values.

``schemas/fields.json`` lists the fields; ``customer_record`` builds the record
a rule is evaluated on from a row of the customers table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any, TypeAlias, cast

import asyncpg

from projections.rules import ANY_FIELD
from projections.rules.validate import FieldSpec, FieldType

TIME_UNITS_S = {"day": 86_400, "hour": 3_600}

# Column that segment queries add to a customers row: the newest checkout of
# the customer that has not become an order. The customers table has no such
# column, so rows from it carry no value here.
# NOTE: because of that, a change of this value is inferred from the checkout
# counts and open cart value (depends_on in fields.json). A checkout snapshot
# that moves only its created_at goes unnoticed until the customer's next
# change. A column of its own in the customers table would end the inference.
ABANDONED_CHECKOUT_COLUMN = "newest_abandoned_checkout_at"

CustomerRow: TypeAlias = "asyncpg.Record | Mapping[str, Any]"


@dataclass(frozen=True)
class CatalogueField:
    """A field of the catalogue with its rule type, meaning and derivation.

    ``depends_on`` names the fields this one is computed from. ``time_unit``
    is set on fields whose value grows with time: whole units from the first
    field in ``depends_on`` to now.
    """

    name: str
    type: FieldType
    description: str
    depends_on: tuple[str, ...] = ()
    time_unit: str | None = None

    @property
    def time_unit_s(self) -> int | None:
        """Length of the time unit in seconds, or None for fields fixed in time."""
        return TIME_UNITS_S[self.time_unit] if self.time_unit is not None else None

    @property
    def time_base(self) -> str | None:
        """The date field whose distance to now this field counts."""
        return self.depends_on[0] if self.time_unit is not None else None

    @property
    def spec(self) -> FieldSpec:
        return FieldSpec(self.name, self.type, self.description)


@cache
def load_catalogue() -> dict[str, CatalogueField]:
    """Read ``schemas/fields.json`` into a mapping of field name to field.

    Raises:
        ValueError: a field has an unknown type or time unit, or depends on a
            field the catalogue does not list.
    """
    text = (resources.files("schemas") / "fields.json").read_text()
    fields: dict[str, CatalogueField] = {}
    for item in json.loads(text)["fields"]:
        field = CatalogueField(
            name=item["name"],
            type=cast(FieldType, item["type"]),
            description=item["description"],
            depends_on=tuple(item.get("depends_on", ())),
            time_unit=item.get("time_unit"),
        )
        # Building the spec checks the type against the rule validator's types.
        field.spec  # noqa: B018
        if field.time_unit is not None and field.time_unit not in TIME_UNITS_S:
            raise ValueError(
                f"field {field.name!r} has time unit {field.time_unit!r}; use one of "
                + ", ".join(TIME_UNITS_S)
            )
        if field.time_unit is not None and not field.depends_on:
            raise ValueError(f"field {field.name!r} has a time unit but no depends_on")
        fields[field.name] = field
    for field in fields.values():
        unknown = [name for name in field.depends_on if name not in fields]
        if unknown:
            raise ValueError(f"field {field.name!r} depends on unknown {unknown}")
    return fields


@cache
def field_specs() -> dict[str, FieldSpec]:
    """Return the catalogue as the rule validator takes it."""
    return {name: field.spec for name, field in load_catalogue().items()}


@cache
def time_fields() -> dict[str, CatalogueField]:
    """Return the fields whose value changes with time alone."""
    return {
        name: field
        for name, field in load_catalogue().items()
        if field.time_unit is not None
    }


@cache
def _dependents() -> dict[str, frozenset[str]]:
    """Map each field to every field computed from it, directly or not."""
    direct: dict[str, set[str]] = {name: set() for name in load_catalogue()}
    for field in load_catalogue().values():
        for base in field.depends_on:
            direct[base].add(field.name)
    closure: dict[str, frozenset[str]] = {}
    for name in direct:
        seen: set[str] = set()
        pending = list(direct[name])
        while pending:
            current = pending.pop()
            if current not in seen:
                seen.add(current)
                pending.extend(direct[current])
        closure[name] = frozenset(seen)
    return closure


def reads_abandoned_checkout(fields: frozenset[str] | None) -> bool:
    """Return whether rules reading ``fields`` (None: any) need the checkout column."""
    if fields is None:
        return True
    base = "last_abandoned_checkout_at"
    return base in fields or not fields.isdisjoint(_dependents()[base])


def fields_read(paths: Iterable[str]) -> frozenset[str] | None:
    """Map the var paths a compiled rule reads to catalogue field names.

    A path into an array field ("tags.0", "tags.length") reads that field.
    Returns None when the rule may read any field: it computes a path at run
    time, or reads a path that is not in the catalogue.
    """
    catalogue = load_catalogue()
    names: set[str] = set()
    for path in paths:
        if path == ANY_FIELD:
            return None
        name = path if path in catalogue else path.split(".", 1)[0]
        if name not in catalogue:
            return None
        names.add(name)
    return frozenset(names)


# The customers columns each field is computed from by ``customer_record``.
_SOURCE_COLUMNS: dict[str, tuple[str, ...]] = {
    "lifetime_orders": ("lifetime_orders",),
    "lifetime_sales": ("lifetime_sales",),
    "total_products": ("total_products",),
    "average_purchase_frequency_days": ("average_purchase_frequency_days",),
    "currency": ("currency",),
    "first_order_at": ("first_order_at",),
    "last_order_at": ("last_order_at",),
    "days_since_last_order": ("last_order_at",),
    "days_since_first_order": ("first_order_at",),
    "email_opt_in": ("email_opt_in",),
    "email_opt_in_at": ("email_opt_in_at",),
    "is_subscribed": ("email_opt_in",),
    "checkouts_started": ("checkouts_started",),
    "checkouts_completed": ("checkouts_completed",),
    "checkouts_abandoned": ("checkouts_abandoned",),
    "open_cart_value": ("open_cart_value",),
    "last_abandoned_checkout_at": (ABANDONED_CHECKOUT_COLUMN,),
    "hours_since_abandoned_checkout": (ABANDONED_CHECKOUT_COLUMN,),
    "messages_sent": ("messages_sent",),
    "messages_opened": ("messages_opened",),
    "messages_clicked": ("messages_clicked",),
    "converted_orders": ("converted_orders",),
    "converted_revenue": ("converted_revenue",),
    "conversion_rate": ("conversion_rate",),
    "tags": ("tags",),
    "country": ("country",),
    "customer_created_at": ("customer_created_at",),
    "days_since_created": ("customer_created_at",),
    "has_account": ("customer_id",),
}


def source_columns() -> dict[str, tuple[str, ...]]:
    """Return the customers columns each catalogue field is computed from."""
    return dict(_SOURCE_COLUMNS)


@cache
def _fields_by_column() -> tuple[tuple[str, frozenset[str]], ...]:
    """Map each source column to the fields that change with it, derived included."""
    dependents = _dependents()
    fields: dict[str, set[str]] = {}
    for name, columns in _SOURCE_COLUMNS.items():
        for column in columns:
            fields.setdefault(column, set()).update({name, *dependents[name]})
    return tuple((column, frozenset(names)) for column, names in fields.items())


def changed_fields(
    before: CustomerRow | None, after: CustomerRow | None
) -> frozenset[str] | None:
    """Return the catalogue fields whose value can differ between two customers rows.

    It compares the columns the fields are computed from, which is cheaper
    than building both records. A field derived from a changed field counts
    as changed even when its own value is the same, so time-based fields are
    re-evaluated whenever their base moves. Returns None, meaning every
    field, when the customer is new or deleted, and no field when there was
    no row before or after.
    """
    if before is None and after is None:
        return frozenset()
    if before is None or after is None:
        return None
    changed: set[str] = set()
    for column, names in _fields_by_column():
        if before.get(column) != after.get(column):
            changed |= names
    return frozenset(changed)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat().replace("+00:00", "Z")


def elapsed_units(moment: datetime | None, now: datetime, unit_s: int) -> int | None:
    """Return the whole time units from ``moment`` to ``now``, rounded down."""
    if moment is None:
        return None
    return (now - moment) // timedelta(seconds=unit_s)


def customer_record(row: CustomerRow, now: datetime) -> dict[str, Any]:
    """Build the record a segment rule is evaluated on from a customers row.

    ``now`` is the moment time-based fields count to. Money stays ``Decimal``;
    the rule compiler compares it exactly with numbers. The abandoned-checkout
    fields are null unless the row carries ``ABANDONED_CHECKOUT_COLUMN``.
    """
    day_s = TIME_UNITS_S["day"]
    tags = row["tags"]
    if isinstance(tags, str):
        tags = json.loads(tags)
    abandoned_at = row.get(ABANDONED_CHECKOUT_COLUMN)
    return {
        "lifetime_orders": row["lifetime_orders"],
        "lifetime_sales": row["lifetime_sales"],
        "total_products": row["total_products"],
        "average_purchase_frequency_days": row["average_purchase_frequency_days"],
        "currency": row["currency"],
        "first_order_at": _iso(row["first_order_at"]),
        "last_order_at": _iso(row["last_order_at"]),
        "days_since_last_order": elapsed_units(row["last_order_at"], now, day_s),
        "days_since_first_order": elapsed_units(row["first_order_at"], now, day_s),
        "email_opt_in": row["email_opt_in"],
        "email_opt_in_at": _iso(row["email_opt_in_at"]),
        "is_subscribed": row["email_opt_in"] == "subscribed",
        "checkouts_started": row["checkouts_started"],
        "checkouts_completed": row["checkouts_completed"],
        "checkouts_abandoned": row["checkouts_abandoned"],
        "open_cart_value": row["open_cart_value"],
        "last_abandoned_checkout_at": _iso(abandoned_at),
        "hours_since_abandoned_checkout": elapsed_units(
            abandoned_at, now, TIME_UNITS_S["hour"]
        ),
        "messages_sent": row["messages_sent"],
        "messages_opened": row["messages_opened"],
        "messages_clicked": row["messages_clicked"],
        "converted_orders": row["converted_orders"],
        "converted_revenue": row["converted_revenue"],
        "conversion_rate": row["conversion_rate"],
        "tags": tags,
        "country": row["country"],
        "customer_created_at": _iso(row["customer_created_at"]),
        "days_since_created": elapsed_units(row["customer_created_at"], now, day_s),
        "has_account": row["customer_id"] is not None,
    }
