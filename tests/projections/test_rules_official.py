"""The official JsonLogic suite, compiler behaviour, and a differential test.

tests/data/jsonlogic/tests.json is the suite published on jsonlogic.com
(MIT licence beside it). The differential test compares compiled rules with
the panzi-json-logic interpreter on random arithmetic and comparison rules.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from json_logic import jsonLogic

from projections.rules import (
    ANY_FIELD,
    InvalidRuleError,
    RuleEvaluationError,
    compile_rule,
    compile_segment_rule,
)
from projections.rules.coercion import (
    loose_equals,
    number_to_string,
    parse_float,
    string_to_number,
    to_string,
    truthy,
)

pytestmark = pytest.mark.filterwarnings("error::SyntaxWarning")

SUITE = Path(__file__).resolve().parent.parent / "data" / "jsonlogic" / "tests.json"


def same_json(actual: Any, expected: Any) -> bool:
    """Compare JSON values strictly: true is not 1, but 2.0 equals 2."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        both_nan = math.isnan(actual) and math.isnan(expected)
        return both_nan or actual == expected
    if isinstance(actual, list) and isinstance(expected, list):
        return len(actual) == len(expected) and all(
            same_json(item, other) for item, other in zip(actual, expected, strict=True)
        )
    if isinstance(actual, dict) and isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(
            same_json(actual[key], expected[key]) for key in actual
        )
    return type(actual) is type(expected) and bool(actual == expected)


def load_suite() -> list[Any]:
    """Return the suite's tests as pytest params, named by section and rule."""
    params = []
    section = ""
    for entry in json.loads(SUITE.read_text()):
        if isinstance(entry, str):
            section = entry.lstrip("# ")
            continue
        rule, data, expected = entry
        test_id = f"{section}: {json.dumps(rule)} on {json.dumps(data)}"
        params.append(pytest.param(rule, data, expected, id=test_id))
    return params


OFFICIAL_TESTS = load_suite()


def test_suite_has_277_tests() -> None:
    assert len(OFFICIAL_TESTS) == 277


@pytest.mark.parametrize(("rule", "data", "expected"), OFFICIAL_TESTS)
def test_official_rule_standard_mode(rule: Any, data: Any, expected: Any) -> None:
    compiled = compile_rule(rule)

    actual = compiled.evaluate(data)

    assert same_json(actual, expected), f"{actual!r} != {expected!r}"
    assert compiled.matches(data) is truthy(expected)


@pytest.mark.parametrize(("rule", "data", "expected"), OFFICIAL_TESTS)
def test_official_rule_segment_mode(rule: Any, data: Any, expected: Any) -> None:
    """Segment mode changes only null handling, which the suite does not reach."""
    compiled = compile_segment_rule(rule)

    actual = compiled.evaluate(data)

    assert same_json(actual, expected), f"{actual!r} != {expected!r}"
    assert compiled.matches(data) is truthy(expected)


@pytest.mark.parametrize(
    ("rule", "data", "expected"),
    [param for param in OFFICIAL_TESTS if isinstance(param.values[1], dict)],
)
def test_official_rule_on_mapping_proxy(rule: Any, data: Any, expected: Any) -> None:
    """A mapping that is not a dict takes the general code path."""
    compiled = compile_rule(rule)

    actual = compiled.evaluate(MappingProxyType(data))

    assert same_json(actual, expected), f"{actual!r} != {expected!r}"


# Fields.


@pytest.mark.parametrize(
    ("rule", "fields"),
    [
        ({"var": "a"}, {"a"}),
        ({"var": ["a.b", 1]}, {"a.b"}),
        ({"var": 1}, {"1"}),
        ({"and": [{"var": "a"}, {"<": [{"var": "b"}, {"var": "c"}]}]}, {"a", "b", "c"}),
        ({"missing": ["a", "b.c"]}, {"a", "b.c"}),
        ({"missing": "a"}, {"a"}),
        ({"missing_some": [1, ["a", "b"]]}, {"a", "b"}),
        ({"val": ["a", "b"]}, {"a.b"}),
        ({"exists": "a"}, {"a"}),
        ({"var": ""}, {ANY_FIELD}),
        ({"var": []}, {ANY_FIELD}),
        ({"var": {"cat": ["a", "b"]}}, {ANY_FIELD}),
        ({"missing": {"merge": ["a", "b"]}}, {ANY_FIELD}),
        ({"missing_some": [1, {"var": "keys"}]}, {ANY_FIELD, "keys"}),
        ({"some": [{"var": "items"}, {">": [{"var": "qty"}, 1]}]}, {"items"}),
        (
            {"reduce": [{"var": "xs"}, {"var": "current"}, {"var": "start"}]},
            {"xs", "start"},
        ),
        ({"try": [{"var": "a"}, {"var": "type"}]}, {"a"}),
        (True, set()),
        ({"+": [1, 2]}, set()),
    ],
)
def test_fields_lists_record_paths(rule: Any, fields: set[str]) -> None:
    assert compile_rule(rule).fields == frozenset(fields)


# Compile errors and unusual input.


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({"nope": [1]}, "unknown operator 'nope' at /"),
        ({"and": [True, {"bogus": 1}]}, "unknown operator 'bogus' at /and/1"),
        ({"Math.abs": [1]}, "unknown operator 'Math.abs' at /"),
        ({"!": {"bogus": 1}}, "unknown operator 'bogus' at /!"),
        ({"in": ["a", {1, 2}]}, "value of type set at /in/1 is not JSON"),
        ({"==": [1, b"x"]}, "value of type bytes at /==/1 is not JSON"),
        ([{3: 1, 4: 2}], "object key 3 at /0 is not a string"),
        (
            {"val": [[1], "x"]},
            "scope access ([n] path segments) at /val is not supported",
        ),
    ],
)
def test_compile_rejects_invalid_rule(rule: Any, problem: str) -> None:
    with pytest.raises(InvalidRuleError) as raised:
        compile_rule(rule)

    assert raised.value.problem == problem
    assert raised.value.retriable is False


def test_compile_deeply_nested_rule() -> None:
    """Nesting past the parser's bracket limit is split into functions."""
    rule: Any = {"var": "x"}
    for _ in range(100):
        rule = {"+": [rule, 1]}

    compiled = compile_rule(rule)

    assert compiled.evaluate({"x": 1}) == 101


def test_compile_too_deep_rule_raises_invalid_rule() -> None:
    rule: Any = {"var": "x"}
    for _ in range(5000):
        rule = {"!": rule}

    with pytest.raises(InvalidRuleError, match="nested too deeply"):
        compile_rule(rule)


def test_compile_wide_rule() -> None:
    rule = {"and": [{"==": [{"var": f"f{index}"}, index]} for index in range(800)]}
    data = {f"f{index}": index for index in range(800)}

    assert compile_rule(rule).matches(data) is True


@pytest.mark.parametrize(
    "text",
    [
        "'); __import__('os').system('true'); ('",
        '"""',
        "\\",
        "\x00\n\u2028",
        "{data}",
    ],
)
def test_string_literals_stay_data(text: str) -> None:
    rule = {"cat": [text, {"val": text}]}

    compiled = compile_rule(rule)

    assert compiled.evaluate({text: "!"}) == text + "!"
    assert compiled.fields == frozenset({text})


def test_literal_results_are_fresh_copies() -> None:
    compiled = compile_rule({"if": [True, {"a": [1], "b": 2}, None]})

    first = compiled.evaluate({})
    first["a"].append(99)

    assert compiled.evaluate({}) == {"a": [1], "b": 2}


def test_non_finite_literals_compile() -> None:
    assert compile_rule({"+": [math.inf, 1]}).evaluate({}) == math.inf
    assert math.isnan(compile_rule({"+": [math.nan, 1]}).evaluate({}))


def test_multiply_without_operands_raises_evaluation_error() -> None:
    compiled = compile_rule({"*": []})

    with pytest.raises(RuleEvaluationError) as raised:
        compiled.evaluate({})

    assert raised.value.error_type == "TypeError"


def test_unsupported_data_value_raises_evaluation_error() -> None:
    from datetime import date

    compiled = compile_rule({"<": [{"var": "d"}, "2025-01-01"]})

    with pytest.raises(RuleEvaluationError, match="ISO 8601"):
        compiled.evaluate({"d": date(2024, 1, 1)})


def test_log_returns_its_argument() -> None:
    assert compile_rule({"log": [{"var": "a"}]}).evaluate({"a": [1]}) == [1]


def test_compiled_rule_repr_names_mode() -> None:
    assert repr(compile_segment_rule({"var": "a"})) == (
        "CompiledRule({'var': 'a'}, mode=segment)"
    )


# JavaScript coercion edge cases beyond the suite.


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"==": [None, 0]}, False),
        ({"==": [[], False]}, True),
        ({"==": [[1], 1]}, True),
        ({"==": ["1", True]}, True),
        ({"==": [" 12 ", 12]}, True),
        ({"==": ["0x10", 16]}, True),
        ({"==": ["", 0]}, True),
        ({"==": [{"+": [1]}, "1.0"]}, True),
        ({"===": [1, 1.0]}, True),
        ({"===": [1, True]}, False),
        ({"<": ["10", "9"]}, True),
        ({"<": ["10", 9]}, False),
        ({"<": [None, 1]}, True),
        ({"<": ["abc", 1]}, False),
        ({">=": ["abc", "abc"]}, True),
        ({"+": ["12px", 1]}, 13),
        ({"+": [True, 1]}, math.nan),
        ({"+": [None, 1]}, math.nan),
        ({"-": ["5", True]}, 4),
        ({"*": ["2"]}, "2"),
        ({"/": [1, 0]}, math.inf),
        ({"/": [-1, 0]}, -math.inf),
        ({"/": [0, 0]}, math.nan),
        ({"%": [-7, 3]}, -1),
        ({"%": [7, -3]}, 1),
        ({"%": [7.5, 2]}, 1.5),
        ({"%": [1, 0]}, math.nan),
        ({"max": []}, -math.inf),
        ({"min": [1, "x"]}, math.nan),
        (
            {"cat": [0.1, 1e21, 1e-7, -0.0, None, [1, [2, None]], {}]},
            "0.11e+211e-701,2,[object Object]",
        ),
        ({"substr": ["jsonlogic", 2, "-3"]}, ""),
        ({"substr": ["jsonlogic", 1.9, 2.9]}, "so"),
        ({"in": ["", ""]}, False),
        ({"in": [1, ["1", 1.0]]}, True),
        ({"in": [1, [True]]}, False),
        ({"in": [1, "a1"]}, True),
        ({"merge": [[1], [[2]], 3]}, [1, [2], 3]),
        ({"!!": [{}]}, True),
        ({"!!": ["0"]}, True),
        ({"and": []}, None),
        ({"if": [True]}, True),
    ],
)
def test_javascript_coercion(rule: Any, expected: Any) -> None:
    actual = compile_rule(rule).evaluate({})

    assert same_json(actual, expected), f"{actual!r} != {expected!r}"


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (0.1, "0.1"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (123456789012345680000.0, "123456789012345680000"),
        (1.5e-7, "1.5e-7"),
        (0.000001, "0.000001"),
        (-2.5, "-2.5"),
        (10**21, "1e+21"),
        (Decimal("12.50"), "12.5"),
        (math.nan, "NaN"),
        (-math.inf, "-Infinity"),
    ],
)
def test_number_to_string_matches_javascript(number: Any, text: str) -> None:
    assert number_to_string(number) == text


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("  42\n", 42),
        ("-1.5e3", -1500),
        ("Infinity", math.inf),
        ("0b101", 5),
        ("1_000", math.nan),
        ("inf", math.nan),
        ("12px", math.nan),
        ("\ufeff7", 7),
    ],
)
def test_string_to_number_matches_javascript(text: str, number: float) -> None:
    assert same_json(string_to_number(text), number)


@pytest.mark.parametrize(
    ("value", "number"),
    [("12px", 12), (".5.5", 0.5), ("-Infinityx", -math.inf), ("x1", math.nan)],
)
def test_parse_float_matches_javascript(value: str, number: float) -> None:
    assert same_json(parse_float(value), number)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({">": [{"var": "s"}, 100.1]}, False),
        ({">=": [{"var": "s"}, 100.1]}, True),
        ({"<": [100, {"var": "s"}]}, True),
        ({"==": [{"var": "s"}, 100.1]}, True),
        ({"===": [{"var": "s"}, 100.1]}, True),
        ({"==": [{"var": "s"}, "100.1"]}, True),
        ({"<=": [100.1, {"var": "s"}, 100.1]}, True),
        ({"<": [{"var": "s"}, {"var": "t"}]}, True),
        ({"<": [{"var": "nan"}, 1]}, False),
        ({">=": [{"var": "nan"}, 1]}, False),
        ({"==": [{"var": "nan"}, {"var": "nan"}]}, False),
        ({"<=": [0, {"var": "nan"}, 1]}, False),
        ({"+": [{"var": "s"}, 0.1]}, 100.19999999999999),
    ],
)
def test_decimal_compares_as_written(rule: Any, expected: Any) -> None:
    record = {"s": Decimal("100.10"), "t": 100.2, "nan": Decimal("NaN")}

    assert same_json(compile_rule(rule).evaluate(record), expected)
    assert same_json(compile_segment_rule(rule).evaluate(record), expected)


def test_decimal_coercion_helpers() -> None:
    assert loose_equals(Decimal("100.10"), 100.1) is True
    assert to_string(Decimal("3")) == "3"


# Differential test against the panzi-json-logic interpreter.
#
# panzi-json-logic departs from json-logic-js for null and boolean operands of
# arithmetic, for NaN in min and max, for % with negative operands and for
# division by zero (it raises). The strategies stay inside the domain where
# both follow json-logic-js: numbers and numeric strings, no null data.

NUMERIC_KEYS = ("a", "b", "c", "d")

numbers = st.one_of(
    st.integers(min_value=-1000, max_value=1000),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
)
numeric_strings = numbers.map(repr)
data_values = st.one_of(numbers, numeric_strings)
records = st.fixed_dictionaries({key: data_values for key in NUMERIC_KEYS})
leaves = st.one_of(
    numbers,
    st.sampled_from(NUMERIC_KEYS).map(lambda key: {"var": key}),
)


def _arithmetic(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    binary = st.tuples(st.sampled_from(["+", "-", "*", "/"]), children, children).map(
        lambda parts: {parts[0]: [parts[1], parts[2]]}
    )
    variadic = st.tuples(
        st.sampled_from(["+", "min", "max"]), st.lists(children, min_size=1, max_size=4)
    ).map(lambda parts: {parts[0]: parts[1]})
    negation = children.map(lambda child: {"-": [child]})
    return st.one_of(binary, variadic, negation)


arithmetic = st.recursive(leaves, _arithmetic, max_leaves=6)


def _comparison(operands: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    two = st.tuples(
        st.sampled_from(["<", "<=", ">", ">=", "==", "!=", "===", "!=="]),
        operands,
        operands,
    ).map(lambda parts: {parts[0]: [parts[1], parts[2]]})
    between = st.tuples(st.sampled_from(["<", "<="]), operands, operands, operands).map(
        lambda parts: {parts[0]: [parts[1], parts[2], parts[3]]}
    )
    return st.one_of(two, between)


comparisons = _comparison(arithmetic)


def _logic(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.tuples(
            st.sampled_from(["and", "or"]), st.lists(children, min_size=1, max_size=3)
        ).map(lambda parts: {parts[0]: parts[1]}),
        children.map(lambda child: {"!": [child]}),
        children.map(lambda child: {"!!": [child]}),
        st.tuples(children, arithmetic, arithmetic).map(
            lambda parts: {"if": [parts[0], parts[1], parts[2]]}
        ),
    )


rules = st.one_of(arithmetic, st.recursive(comparisons, _logic, max_leaves=4))


def _interpret(rule: Any, data: dict[str, Any]) -> Any:
    try:
        return jsonLogic(rule, data)
    except ZeroDivisionError:
        # panzi-json-logic raises where JavaScript returns Infinity or NaN.
        assume(False)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule=rules, data=records)
def test_compiled_matches_panzi_interpreter(rule: Any, data: dict[str, Any]) -> None:
    expected = _interpret(rule, data)

    actual = compile_rule(rule).evaluate(data)

    assert same_json(actual, expected), f"{rule}: {actual!r} != {expected!r}"
