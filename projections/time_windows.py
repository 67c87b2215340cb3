"""Candidate customers: those a time-based segment rule can move between two moments.

A time-based field counts whole units from a stored date to now, so for one
customer it steps from k - 1 to k exactly when now reaches date + k units.
Without a new event, a rule's result can change only at those steps. When the
rule compares the field with number literals only, just the steps next to
those numbers matter, and the customers to re-evaluate are found with range
conditions on the stored date.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from projections.catalogue import CatalogueField, time_fields
from projections.segments import SegmentVersion

# The column of each time base, for a condition on the customers row ``c``.
_CUSTOMER_COLUMNS = {
    "last_order_at": "c.last_order_at",
    "first_order_at": "c.first_order_at",
    "customer_created_at": "c.customer_created_at",
}
# The newest abandoned checkout is a maximum over the open checkouts, so a
# condition that holds for any open checkout selects a superset of the
# customers whose newest one meets it.
_OPEN_CHECKOUT_BASE = "last_abandoned_checkout_at"

_COMPARISONS = frozenset({"<", "<=", ">", ">=", "==", "!=", "===", "!=="})
_BETWEEN = frozenset({"<", "<="})
# The operator with its operands swapped: "n < field" is "field > n".
_MIRRORED = {
    "<": ">",
    "<=": ">=",
    ">": "<",
    ">=": "<=",
    "==": "==",
    "!=": "!=",
    "===": "===",
    "!==": "!==",
}


@dataclass(frozen=True)
class TimeDependency:
    """A time-based field a rule reads, and where its steps can change the result.

    ``steps`` contains the values k such that the rule's result can differ
    between the field being k - 1 and k; None means any step can.
    """

    field: CatalogueField
    steps: frozenset[int] | None


def supported_bases() -> frozenset[str]:
    """Return the time bases this module can turn into SQL conditions."""
    return frozenset({*_CUSTOMER_COLUMNS, _OPEN_CHECKOUT_BASE})


def time_dependencies(segment: SegmentVersion) -> list[TimeDependency]:
    """Return the time-based fields a segment reads, with the steps that matter."""
    fields = time_fields()
    if segment.reads is None:
        return [TimeDependency(field, None) for field in fields.values()]
    return [
        TimeDependency(fields[name], crossing_steps(segment.rule, name))
        for name in sorted(segment.reads & fields.keys())
    ]


def crossing_steps(rule: Any, field_name: str) -> frozenset[int] | None:
    """Return the steps of a field at which the rule's result can change.

    Returns None unless every use of the field is a comparison with a number
    literal, such as ``{">": [{"var": field}, 30]}`` or the between form
    ``{"<": [1, {"var": field}, 7]}``. For "field > n" and "field <= n" the
    result changes only between floor(n) and floor(n) + 1. For "field >= n"
    and "field < n" it changes only between ceil(n) - 1 and ceil(n), and for
    equality on both sides of n.
    """
    steps: set[int] = set()
    rest = _strip_comparisons(rule, field_name, steps)
    if _mentions(rest, field_name):
        return None
    return frozenset(steps)


def _is_field(node: Any, name: str) -> bool:
    if not isinstance(node, dict) or len(node) != 1 or "var" not in node:
        return False
    argument = node["var"]
    if isinstance(argument, list):
        if not 1 <= len(argument) <= 2:
            return False
        # A default replaces null, and null does not change with time.
        if len(argument) == 2 and isinstance(argument[1], dict | list):
            return False
        argument = argument[0]
    return bool(argument == name)


def _number(node: Any) -> float | int | None:
    if isinstance(node, bool) or not isinstance(node, int | float):
        return None
    return node if math.isfinite(node) else None


def _strip_comparisons(node: Any, name: str, steps: set[int]) -> Any:
    """Return the rule with its comparisons of the field against numbers removed."""
    if isinstance(node, list):
        return [_strip_comparisons(item, name, steps) for item in node]
    if not isinstance(node, dict) or len(node) != 1:
        return node
    ((operator, arguments),) = node.items()
    if operator in _COMPARISONS and isinstance(arguments, list):
        found = _comparison_steps(operator, arguments, name)
        if found is not None:
            steps |= found
            return [
                None if _is_field(argument, name) else argument
                for argument in arguments
            ]
    return {operator: _strip_comparisons(arguments, name, steps)}


def _comparison_steps(
    operator: str, arguments: list[Any], name: str
) -> set[int] | None:
    if not (len(arguments) == 2 or (len(arguments) == 3 and operator in _BETWEEN)):
        return None
    positions = [i for i, argument in enumerate(arguments) if _is_field(argument, name)]
    if not positions:
        return None
    found: set[int] = set()
    for position in positions:
        for neighbour in (position - 1, position + 1):
            if not 0 <= neighbour < len(arguments):
                continue
            number = _number(arguments[neighbour])
            if number is None:
                return None
            # Read the comparison as "field <operator> number".
            field_operator = operator if neighbour > position else _MIRRORED[operator]
            found |= _steps(field_operator, number)
    return found


def _steps(operator: str, number: float) -> set[int]:
    """Return k such that "field <operator> number" differs at k - 1 and k."""
    if operator in (">", "<="):
        return {math.floor(number) + 1}
    if operator in (">=", "<"):
        return {math.ceil(number)}
    # Equality is true at one whole number at most and changes on both sides.
    return {math.ceil(number), math.floor(number) + 1}


def _mentions(node: Any, name: str) -> bool:
    if isinstance(node, str):
        return node == name or node.startswith(name + ".")
    if isinstance(node, list):
        return any(_mentions(item, name) for item in node)
    if isinstance(node, dict):
        return any(
            _mentions(key, name) or _mentions(value, name)
            for key, value in node.items()
        )
    return False


class SqlParameters:
    """Positional parameters of a query under construction."""

    def __init__(self, first: int = 1) -> None:
        self.first = first
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${self.first + len(self.values) - 1}"


def candidate_condition(
    dependencies: Iterable[TimeDependency],
    since: datetime | None,
    until: datetime,
    parameters: SqlParameters,
) -> str:
    """Return a SQL condition on customers row ``c`` for the window (since, until].

    It is true for every customer with a dependency that crosses a step that
    matters within the window, and possibly for some others. With ``since``
    None (no earlier window) it is true for every customer.
    """
    if since is None:
        return "TRUE"
    conditions = [
        _dependency_condition(dependency, since, until, parameters)
        for dependency in dependencies
    ]
    return "(" + " OR ".join(conditions) + ")" if conditions else "FALSE"


def _dependency_condition(
    dependency: TimeDependency,
    since: datetime,
    until: datetime,
    parameters: SqlParameters,
) -> str:
    field = dependency.field
    base = field.time_base
    unit_s = field.time_unit_s
    assert base is not None and unit_s is not None
    column = "k.created_at" if base == _OPEN_CHECKOUT_BASE else _CUSTOMER_COLUMNS[base]

    if dependency.steps is None:
        # The value floor((now - date) / unit) differs at the two ends.
        unit = parameters.add(unit_s)
        since_value = parameters.add(since)
        until_value = parameters.add(until)
        condition = (
            f"({column} IS NOT NULL AND "
            f"floor(extract(epoch FROM ({until_value}::timestamptz - {column}))"
            f" / {unit}::integer) <> "
            f"floor(extract(epoch FROM ({since_value}::timestamptz - {column}))"
            f" / {unit}::integer))"
        )
    else:
        # Step k happens at date + k units, inside the window exactly when
        # since - k units < date <= until - k units.
        ranges = []
        for step in sorted(dependency.steps):
            offset = timedelta(seconds=unit_s * step)
            lower = parameters.add(since - offset)
            upper = parameters.add(until - offset)
            ranges.append(f"({column} > {lower} AND {column} <= {upper})")
        condition = "(" + " OR ".join(ranges) + ")" if ranges else "FALSE"

    if base == _OPEN_CHECKOUT_BASE:
        return (
            "EXISTS (SELECT 1 FROM checkouts k WHERE k.store_id = c.store_id "
            "AND k.customer_key = c.customer_key AND k.completed_at IS NULL "
            f"AND {condition})"
        )
    return condition
