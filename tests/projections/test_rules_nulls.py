"""Missing and null customer fields in segment mode, against standard mode.

A customer field is absent when its key is missing or its value is null, and
segment mode treats both the same. Each case runs on a dict record and on a
read-only mapping, which take different code paths in compiled rules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest

from projections.rules import compile_rule, compile_segment_rule

pytestmark = pytest.mark.filterwarnings("error::SyntaxWarning")

X = {"var": "x"}
NAN = math.nan

ABSENT_RECORDS = [
    pytest.param({"y": 1}, id="missing"),
    pytest.param({"x": None, "y": 1}, id="null"),
    pytest.param(MappingProxyType({"y": 1}), id="missing-mapping"),
    pytest.param(MappingProxyType({"x": None, "y": 1}), id="null-mapping"),
]


def same_value(actual: Any, expected: Any) -> bool:
    """Compare results strictly: True is not 1, 2.0 equals 2, NaN equals NaN."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        return actual == expected or (math.isnan(actual) and math.isnan(expected))
    return type(actual) is type(expected) and bool(actual == expected)


# Each row: the rule, its value in segment mode and its value in standard mode
# when x is absent (missing or null). y is 1.
CASES = [
    # Ordering comparisons: false in segment mode, null as 0 in standard mode.
    ("x < 5", {"<": [X, 5]}, False, True),
    ("5 < x", {"<": [5, X]}, False, False),
    ("x <= 0", {"<=": [X, 0]}, False, True),
    ("0 <= x", {"<=": [0, X]}, False, True),
    ("x > -1", {">": [X, -1]}, False, True),
    ("-1 > x", {">": [-1, X]}, False, False),
    ("x >= 0", {">=": [X, 0]}, False, True),
    ("0 >= x", {">=": [0, X]}, False, True),
    ("x < date", {"<": [X, "2025-01-01"]}, False, False),
    ("x < y", {"<": [X, {"var": "y"}]}, False, True),
    ("y > x", {">": [{"var": "y"}, X]}, False, True),
    ("between low", {"<": [X, 5, 10]}, False, True),
    ("between middle", {"<=": [-1, X, 10]}, False, True),
    ("between high", {"<": [-5, 0, X]}, False, False),
    ("not x <= 90", {"!": {"<=": [X, 90]}}, True, False),
    ("comparison of sum", {">": [{"+": [X, 1]}, 0]}, False, False),
    # Equality: the same in both modes, null equals only null.
    ("x == null", {"==": [X, None]}, True, True),
    ("x == 0", {"==": [X, 0]}, False, False),
    ("x == empty", {"==": [X, ""]}, False, False),
    ("x == false", {"==": [X, False]}, False, False),
    ("x != US", {"!=": [X, "US"]}, True, True),
    ("x != null", {"!=": [X, None]}, False, False),
    ("x === null", {"===": [X, None]}, True, True),
    ("x !== 0", {"!==": [X, 0]}, True, True),
    ("x == y", {"==": [X, {"var": "y"}]}, False, False),
    # Arithmetic: null in segment mode.
    ("x + 1", {"+": [X, 1]}, None, NAN),
    ("1 + x", {"+": [1, X]}, None, NAN),
    ("+x", {"+": [X]}, None, NAN),
    ("x + y + 1", {"+": [X, {"var": "y"}, 1]}, None, NAN),
    ("x - 1", {"-": [X, 1]}, None, -1),
    ("1 - x", {"-": [1, X]}, None, 1),
    ("-x", {"-": [X]}, None, 0),
    ("x * 2", {"*": [X, 2]}, None, NAN),
    ("x * y * 2", {"*": [X, {"var": "y"}, 2]}, None, NAN),
    ("*x", {"*": [X]}, None, None),
    ("x / 2", {"/": [X, 2]}, None, 0.0),
    ("2 / x", {"/": [2, X]}, None, math.inf),
    ("x % 2", {"%": [X, 2]}, None, 0),
    ("2 % x", {"%": [2, X]}, None, NAN),
    ("min", {"min": [X, 5]}, None, 0),
    ("max", {"max": [X, -5]}, None, 0),
    # Data access.
    ("var", X, None, None),
    ("missing", {"missing": ["x", "y"]}, ["x"], ["x"]),
    ("missing_some", {"missing_some": [2, ["x", "y"]]}, ["x"], ["x"]),
    ("val", {"val": "x"}, None, None),
    ("?? fallback", {"??": [X, 3]}, 3, 3),
    # Strings and arrays.
    ("in list", {"in": [X, ["a", None]]}, False, True),
    ("in string", {"in": [X, "nullable"]}, False, True),
    ("in absent", {"in": ["vip", X]}, False, False),
    ("cat", {"cat": ["a", X]}, "a", "a"),
    ("substr", {"substr": [X, 0, 2]}, None, "nu"),
    ("substr start", {"substr": [X, 1]}, None, "ull"),
    ("merge", {"merge": [[1], X]}, [1, None], [1, None]),
    # Logic: null is falsy in both modes.
    ("not", {"!": [X]}, True, True),
    ("double not", {"!!": [X]}, False, False),
    ("and", {"and": [True, X]}, None, None),
    ("or", {"or": [X, 0]}, 0, 0),
    ("if", {"if": [X, "yes", "no"]}, "no", "no"),
    # Iteration over an absent array.
    ("map", {"map": [X, {"var": ""}]}, [], []),
    ("filter", {"filter": [X, True]}, [], []),
    ("reduce", {"reduce": [X, {"var": "current"}, 5]}, 5, 5),
    ("all", {"all": [X, True]}, False, False),
    ("some", {"some": [X, True]}, False, False),
    ("none", {"none": [X, True]}, True, True),
]


@pytest.mark.parametrize("record", ABSENT_RECORDS)
@pytest.mark.parametrize(
    ("rule", "segment_value", "standard_value"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_absent_operand(
    rule: Any, segment_value: Any, standard_value: Any, record: Mapping[str, Any]
) -> None:
    segment = compile_segment_rule(rule).evaluate(record)
    standard = compile_rule(rule).evaluate(record)

    assert same_value(segment, segment_value), f"segment mode: {segment!r}"
    assert same_value(standard, standard_value), f"standard mode: {standard!r}"


@pytest.mark.parametrize("record", ABSENT_RECORDS)
@pytest.mark.parametrize(
    ("rule", "segment_value", "standard_value"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_absent_operand_matches(
    rule: Any, segment_value: Any, standard_value: Any, record: Mapping[str, Any]
) -> None:
    """matches() compiles conditions separately; it must agree with evaluate()."""
    segment = compile_segment_rule(rule).matches(record)
    standard = compile_rule(rule).matches(record)

    assert segment is _truthy(segment_value)
    assert standard is _truthy(standard_value)


def _truthy(value: Any) -> bool:
    if isinstance(value, float) and math.isnan(value):
        return False
    if isinstance(value, dict):
        return True
    return bool(value)


@pytest.mark.parametrize("record", ABSENT_RECORDS)
def test_var_default_in_segment_mode(record: Mapping[str, Any]) -> None:
    rule = {"var": ["x", 7]}

    assert compile_segment_rule(rule).evaluate(record) == 7


def test_var_default_in_standard_mode() -> None:
    """json-logic-js uses the default only when the key is missing."""
    rule = compile_rule({"var": ["x", 7]})

    assert rule.evaluate({}) == 7
    assert rule.evaluate({"x": None}) is None
    assert rule.evaluate(MappingProxyType({"x": None})) is None


def test_dotted_path_through_null_in_both_modes() -> None:
    rule = {"var": ["a.b", 7]}

    assert compile_rule(rule).evaluate({"a": None}) == 7
    assert compile_rule(rule).evaluate({"a": {"b": None}}) is None
    assert compile_segment_rule(rule).evaluate({"a": {"b": None}}) == 7


# Present values: zero, false and "" are values, not absences.


@pytest.mark.parametrize(
    ("rule", "record", "expected"),
    [
        ({"<": [X, 5]}, {"x": 0}, True),
        ({"<=": [X, 0]}, {"x": False}, True),
        ({">=": [X, 0]}, {"x": ""}, True),
        ({"+": [X, 1]}, {"x": 0}, 1),
        ({"*": [X, 3]}, {"x": "2"}, 6.0),
        ({"var": ["x", 7]}, {"x": 0}, 0),
        ({"var": ["x", 7]}, {"x": False}, False),
        ({"missing": ["x"]}, {"x": 0}, []),
        ({"missing": ["x"]}, {"x": ""}, ["x"]),
        ({"in": [X, ["a", "b"]]}, {"x": "a"}, True),
        ({"<": [1, X, 3]}, {"x": 2}, True),
    ],
)
def test_present_value_in_segment_mode(rule: Any, record: Any, expected: Any) -> None:
    assert same_value(compile_segment_rule(rule).evaluate(record), expected)


# Division by zero and NaN results.


@pytest.mark.parametrize(
    ("rule", "standard_value"),
    [
        ({"/": [1, 0]}, math.inf),
        ({"/": [X, 0]}, NAN),
        ({"/": [{"var": "zero"}, {"var": "zero"}]}, NAN),
        ({"%": [5, 0]}, NAN),
        ({"-": ["abc", 1]}, NAN),
        ({"min": [1, "abc"]}, NAN),
        ({"max": []}, -math.inf),
        ({"-": [{"var": "infinity"}, {"var": "infinity"}]}, NAN),
        ({"+": [{"var": "not_a_number"}, 1]}, NAN),
    ],
)
def test_undefined_arithmetic_is_null_in_segment_mode(
    rule: Any, standard_value: Any
) -> None:
    record = {"x": 0, "zero": 0, "infinity": math.inf, "not_a_number": NAN}

    assert compile_segment_rule(rule).evaluate(record) is None
    assert same_value(compile_rule(rule).evaluate(record), standard_value)


def test_average_order_value_excludes_customers_without_orders() -> None:
    rule = {">": [{"/": [{"var": "sales"}, {"var": "orders"}]}, 100]}

    assert compile_segment_rule(rule).matches({"sales": 50, "orders": 0}) is False
    assert compile_rule(rule).matches({"sales": 50, "orders": 0}) is True


def test_last_order_date_excludes_customers_without_orders() -> None:
    before = {"<": [{"var": "last_order_at"}, "2025-01-01"]}
    recent = {"<=": [{"var": "days_since_last_order"}, 90]}
    customer = {"last_order_at": None, "days_since_last_order": None}

    assert compile_segment_rule(before).matches(customer) is False
    assert compile_segment_rule(recent).matches(customer) is False
    assert compile_rule(recent).matches(customer) is True


def test_decimal_money_in_segment_mode() -> None:
    record = {"lifetime_sales": Decimal("100.10"), "refunds": None}

    assert compile_segment_rule({">=": [{"var": "lifetime_sales"}, 100.1]}).matches(
        record
    )
    assert compile_segment_rule({"==": [{"var": "lifetime_sales"}, "100.1"]}).matches(
        record
    )
    assert (
        compile_segment_rule(
            {"-": [{"var": "lifetime_sales"}, {"var": "refunds"}]}
        ).evaluate(record)
        is None
    )
