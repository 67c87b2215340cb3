"""Validation of merchant segment rules against a field catalogue."""

from __future__ import annotations

import math
from typing import Any

import pytest

from projections.rules import InvalidRuleError, RuleError, compile_segment_rule
from projections.rules.validate import FieldSpec, validate_rule

CATALOGUE = {
    spec.name: spec
    for spec in (
        FieldSpec("lifetime_orders", "number", "Orders placed"),
        FieldSpec("lifetime_sales", "number", "Sum of order totals"),
        FieldSpec("days_since_last_order", "number", "Days since the last order"),
        FieldSpec("last_order_at", "date", "Time of the last order"),
        FieldSpec("email_opt_in", "boolean", "Accepts marketing e-mail"),
        FieldSpec("country", "string", "ISO 3166 country code"),
        FieldSpec("tags", "array", "Store tags"),
        FieldSpec("orders", "array", "Recent orders"),
    )
}

ORDERS = {"var": "lifetime_orders"}


def problem_of(rule: Any, **limits: int) -> str:
    with pytest.raises(InvalidRuleError) as raised:
        validate_rule(rule, CATALOGUE, **limits)
    return raised.value.problem


# Valid rules.


@pytest.mark.parametrize(
    "rule",
    [
        {"and": [{">=": [ORDERS, 3]}, {"in": ["vip", {"var": "tags"}]}]},
        {"or": [{"var": "email_opt_in"}, {"!": {"missing": ["country"]}}]},
        {"<=": [30, {"var": "days_since_last_order"}, 90]},
        {"<": [{"var": "last_order_at"}, "2025-01-01"]},
        {"in": [{"var": "country"}, ["US", "CA"]]},
        {"missing_some": [1, ["country", "tags"]]},
        {"==": [{"var": ["lifetime_sales", 0]}, 0]},
        {">": [{"var": "tags.length"}, 2]},
        {"==": [{"var": "tags.0"}, "vip"]},
        {"some": [{"var": "orders"}, {">": [{"var": "total"}, 100]}]},
        {"all": [{"var": "tags"}, {"!=": [{"var": ""}, "blocked"]}]},
        {"none": [{"var": "orders"}, {"==": [{"val": []}, None]}]},
        {"filter": [{"var": "orders"}, {"var": "paid"}]},
        {
            "reduce": [
                {"var": "orders"},
                {"+": [{"var": "accumulator"}, {"var": "current.total"}]},
                0,
            ]
        },
        {"map": [{"var": "orders"}, {"some": [{"var": "lines"}, {"var": "gift"}]}]},
        {"if": [{"var": "email_opt_in"}, {">": [ORDERS, 1]}, False]},
        {"?:": [{"var": "email_opt_in"}, True, False]},
        {"??": [{"var": "country"}, "unknown"]},
        {"exists": "country"},
        {"val": ["lifetime_orders"]},
        {"+": "3"},
        {"cat": ["a", {"var": "country"}]},
        {"substr": [{"var": "country"}, 0, 1]},
        {"max": [ORDERS, 1]},
        True,
        None,
    ],
)
def test_valid_rule_passes(rule: Any) -> None:
    validate_rule(rule, CATALOGUE)

    compile_segment_rule(rule)


# Operators.


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({"nope": [1]}, "unknown operator 'nope' at /"),
        ({"and": [True, {"bogus": []}]}, "unknown operator 'bogus' at /and/1"),
        ({"!": {"Math.abs": 1}}, "unknown operator 'Math.abs' at /!"),
        ({"log": [1]}, "operator 'log' at / is not allowed in segment rules"),
        ({"throw": "x"}, "operator 'throw' at / is not allowed in segment rules"),
        ({"try": [1, 2]}, "operator 'try' at / is not allowed in segment rules"),
        ({"preserve": [1]}, "operator 'preserve' at / is not allowed in segment rules"),
        (
            {"a": 1, "b": 2},
            "object at / has 2 keys, but an operation has exactly one key,"
            " the operator",
        ),
        (
            {"and": [{}]},
            "object at /and/0 has 0 keys, but an operation has exactly one key,"
            " the operator",
        ),
    ],
)
def test_operator_problem(rule: Any, problem: str) -> None:
    assert problem_of(rule) == problem


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({"!": [1, 2]}, "operator '!' at / takes 1 argument, got 2"),
        ({"!!": []}, "operator '!!' at / takes 1 argument, got 0"),
        ({">": [1]}, "operator '>' at / takes 2 arguments, got 1"),
        ({">": [1, 2, 3]}, "operator '>' at / takes 2 arguments, got 3"),
        ({">=": 1}, "operator '>=' at / takes 2 arguments, got 1"),
        ({"<": [1, 2, 3, 4]}, "operator '<' at / takes 2 to 3 arguments, got 4"),
        ({"<=": [1]}, "operator '<=' at / takes 2 to 3 arguments, got 1"),
        ({"==": [1]}, "operator '==' at / takes 2 arguments, got 1"),
        ({"!==": [1, 2, 3]}, "operator '!==' at / takes 2 arguments, got 3"),
        ({"and": []}, "operator 'and' at / takes at least 1 arguments, got 0"),
        ({"or": []}, "operator 'or' at / takes at least 1 arguments, got 0"),
        ({"if": [True]}, "operator 'if' at / takes at least 2 arguments, got 1"),
        ({"?:": [True, 1]}, "operator '?:' at / takes 3 arguments, got 2"),
        ({"var": ["a", 1, 2]}, "operator 'var' at / takes 0 to 2 arguments, got 3"),
        ({"missing": []}, "operator 'missing' at / takes at least 1 arguments, got 0"),
        (
            {"missing_some": [1]},
            "operator 'missing_some' at / takes 2 arguments, got 1",
        ),
        ({"-": [1, 2, 3]}, "operator '-' at / takes 1 to 2 arguments, got 3"),
        ({"*": [2]}, "operator '*' at / takes at least 2 arguments, got 1"),
        ({"/": [1]}, "operator '/' at / takes 2 arguments, got 1"),
        ({"%": [1, 2, 3]}, "operator '%' at / takes 2 arguments, got 3"),
        ({"max": []}, "operator 'max' at / takes at least 1 arguments, got 0"),
        ({"in": ["a"]}, "operator 'in' at / takes 2 arguments, got 1"),
        ({"substr": ["a"]}, "operator 'substr' at / takes 2 to 3 arguments, got 1"),
        ({"map": [[1]]}, "operator 'map' at / takes 2 arguments, got 1"),
        ({"reduce": [[1]]}, "operator 'reduce' at / takes 2 to 3 arguments, got 1"),
        (
            {"and": [{"some": [[1], True, False]}]},
            "operator 'some' at /and/0 takes 2 arguments, got 3",
        ),
    ],
)
def test_wrong_arity(rule: Any, problem: str) -> None:
    assert problem_of(rule) == problem


# Fields.


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        (
            {">": [{"var": "lifetime_order"}, 1]},
            "unknown field 'lifetime_order' at />/0/var; did you mean"
            " 'lifetime_orders' or 'lifetime_sales'?",
        ),
        ({"var": "zzz"}, "unknown field 'zzz' at /var"),
        ({"var": "tags.first"}, "unknown field 'tags.first' at /var"),
        (
            {"var": "country.0"},
            "unknown field 'country.0' at /var; did you mean 'country'?",
        ),
        ({"missing": ["country", "nope"]}, "unknown field 'nope' at /missing"),
        (
            {"missing_some": [1, ["country", "nope"]]},
            "unknown field 'nope' at /missing_some",
        ),
        ({"val": ["nope", "x"]}, "unknown field 'nope.x' at /val"),
        ({"exists": "nope"}, "unknown field 'nope' at /exists"),
        ({"var": ""}, "rule reads the whole record at /var; name a field instead"),
        ({"var": []}, "rule reads the whole record at /var; name a field instead"),
        (
            {"var": {"cat": ["country", ""]}},
            "field name at /var is computed at run time; write the field name as"
            " a string",
        ),
        (
            {"missing": {"merge": ["country"]}},
            "field name at /missing is computed at run time; write the field"
            " name as a string",
        ),
        (
            {"missing_some": [1, {"var": "tags"}]},
            "missing_some at /missing_some needs a list of field names as its"
            " second argument",
        ),
        (
            {"reduce": [{"var": "orders"}, {"var": "total"}, 0]},
            "path 'total' at /reduce/1/var in a reduce body must start with"
            " 'current' or 'accumulator'",
        ),
        (
            {"val": [[1], "index"]},
            "val at /val uses scope access ([n] path segments), which is not supported",
        ),
        (
            {"some": [{"var": "nope"}, True]},
            "unknown field 'nope' at /some/0/var",
        ),
    ],
)
def test_field_problem(rule: Any, problem: str) -> None:
    assert problem_of(rule) == problem


def test_reduce_initial_value_reads_record() -> None:
    rule = {"reduce": [{"var": "orders"}, {"var": "current"}, {"var": "nope"}]}

    assert problem_of(rule) == "unknown field 'nope' at /reduce/2/var"


def test_iteration_body_may_nest_reduce() -> None:
    rule = {
        "some": [
            {"var": "orders"},
            {"reduce": [{"var": "lines"}, {"var": "accumulator.count"}, 0]},
        ]
    }

    validate_rule(rule, CATALOGUE)


# Size, depth and JSON values.


def test_too_many_nodes() -> None:
    rule = {"and": [{">": [ORDERS, index]} for index in range(100)]}

    assert problem_of(rule, max_nodes=300) == "rule has more than 300 nodes"
    validate_rule(rule, CATALOGUE, max_nodes=600)


def test_default_node_limit_is_500() -> None:
    rule = {"in": [{"var": "country"}, [f"C{index}" for index in range(497)]]}

    assert problem_of(rule) == "rule has more than 500 nodes"


def test_too_deep() -> None:
    """Each operation and each literal array or object is one level."""
    rule: Any = ORDERS
    for _ in range(40):
        rule = {"!": [rule]}

    assert problem_of(rule) == (
        "rule is nested deeper than 32 levels at " + "/!/0" * 33
    )
    validate_rule(rule, CATALOGUE, max_depth=41)


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({"==": [ORDERS, math.nan]}, "number nan at /==/1 is not JSON; NaN and"),
        ({"<": [ORDERS, math.inf]}, "number inf at /</1 is not JSON; NaN and"),
        ({"in": ["a", {"a", "b"}]}, "value of type set at /in/1 is not JSON"),
        ({"==": [ORDERS, (1, 2)]}, "value of type tuple at /==/1 is not JSON"),
        ({"==": [ORDERS, b"1"]}, "value of type bytes at /==/1 is not JSON"),
        ({1: 2}, "operator 1 at / is not a string"),
    ],
)
def test_non_json_value(rule: Any, problem: str) -> None:
    assert problem_of(rule).startswith(problem)


def test_pointer_escapes_slash_and_tilde() -> None:
    rule = {"and": [{"a/b~c": 1}]}

    assert problem_of(rule) == "unknown operator 'a/b~c' at /and/0"

    nested = {"and": [{"!": {"x/y": 1}}]}
    assert problem_of(nested) == "unknown operator 'x/y' at /and/0/!"


def test_invalid_rule_error_is_a_rule_error() -> None:
    with pytest.raises(RuleError) as raised:
        validate_rule({"nope": 1}, CATALOGUE)

    assert isinstance(raised.value, InvalidRuleError)
    assert raised.value.retriable is False
    assert str(raised.value) == raised.value.problem


def test_field_spec_rejects_unknown_type() -> None:
    with pytest.raises(ValueError, match="invalid type 'integer' for field 'n'"):
        FieldSpec("n", "integer", "")  # type: ignore[arg-type]
