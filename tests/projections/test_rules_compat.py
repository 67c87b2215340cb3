"""The json-logic community compatibility suites, with known failures marked.

tests/data/jsonlogic/compat-tables contains the suites of the json-logic
compat-tables project (Apache-2.0 licence beside them). In places they
specify newer behaviour than json-logic-js, which this compiler follows.
Those tests are strict xfails grouped by reason, so the test summary shows
how many pass and how many fail.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from projections.rules import InvalidRuleError, RuleEvaluationError, compile_rule

pytestmark = pytest.mark.filterwarnings("error::SyntaxWarning")

SUITES = Path(__file__).resolve().parent.parent / "data" / "jsonlogic" / "compat-tables"

# Known failures: the reason, then the test descriptions by suite file.
KNOWN_FAILURES: dict[str, dict[str, list[str]]] = {
    (
        "json-logic-js + and * convert with parseFloat, so null, '', true and "
        "false are NaN and a single * operand is returned unconverted. The "
        "community suites convert like Number()."
    ): {
        "arithmetic/plus.json": [
            "Addition with Booleans",
            "Addition with Multiple Value Types",
            "Plus Operator with Single Operand, Direct (true)",
            "Plus Operator with Single Operand, Direct (false)",
            "Plus Operator with Single Operand, Direct (Empty String)",
            "Plus Operator with a Single Operand, Direct (null)",
        ],
        "arithmetic/multiply.json": [
            "Multiply with Booleans",
            "Multiply with Multiple Value Types",
            "Multiply with Multiple Value Types (3)",
            "Multiply with zero operands is 1 (Product)",
            "Multiply Operator with Single Operand (String)",
            "Multiply Operator with Single Operand, Direct (Negative Number String)",
            "Multiply Operator with Single Operand, Direct (String 0)",
            "Multiply Operator with Single Operand, Direct (true)",
            "Multiply Operator with Single Operand, Direct (false)",
            "Multiply Operator with Single Operand, Direct (Empty String)",
            "Multiply Operator with a Single Operand, Direct (null)",
        ],
        "array/reduce.json": [
            "Initial value is optional",
        ],
    },
    (
        "The community suites raise a NaN error. json-logic-js returns NaN, or "
        "false from a comparison with NaN, and so does this compiler. The try "
        "cases expect to catch that error."
    ): {
        "arithmetic/plus.json": [
            "Addition with string produces NaN",
            "Addition with Array produces NaN",
            "Addition with Array from context produces NaN",
            "Addition with Object produces NaN",
            "Plus Operator with Single Operand, Invalid String Produces NaN",
            "Plus Operator with Single Operand, Array Input Produces NaN",
            "Plus Operator with Single Operand, Object Input Produces NaN",
            "Plus Operator with Single Operand, Direct Object Input Produces NaN",
        ],
        "arithmetic/multiply.json": [
            "Multiply with string produces NaN",
            "Multiply with a single string produces NaN",
            "Multiply with Array produces NaN",
        ],
        "arithmetic/minus.json": [
            "Subtraction with string produces NaN",
            "Subtraction with Array produces NaN",
        ],
        "arithmetic/divide.json": [
            "Divide with Single Operand, Direct (0)",
            "Divide Operator with Single Operand, Direct (0)",
            "Divide Operator with Single Operand, Direct (String 0)",
            "Divide Operator with Single Operand, Direct (false)",
            "Divide Operator with Single Operand, Direct (Empty String)",
            "Divide Operator with a Single Operand, Direct (null)",
            "Divide by Zero",
            "Divide with String produces NaN",
            "Divide with Array produces NaN",
            "Any division by zero should return NaN",
            "Any division by zero should return NaN (2)",
        ],
        "arithmetic/modulo.json": [
            "Modulo with string produces NaN",
            "Modulo with array produces NaN",
        ],
        "comparison/greaterThan.json": [
            "> with (2023n, 2024-01-01s)",
            "> with (1n, As)",
            "> with [] and [1]",
            "> with [1] and 5",
            "> with {} and 1",
            "> with 1 and {}",
        ],
        "comparison/greaterThanEquals.json": [
            ">= with (1n, As)",
            ">= with [] and [1]",
            ">= with [1] and 5",
            ">= with {} and 1",
            ">= with 1 and {}",
        ],
        "comparison/lessThan.json": [
            "< with (2023n, 2024-01-01s)",
            "< with (1n, As)",
            "< with [] and [1]",
            "< with [1] and 5",
            "< with {} and 1",
            "< with 1 and {}",
        ],
        "comparison/lessThanEquals.json": [
            "<= with (2023n, 2024-01-01s)",
            "<= with (1n, As)",
            "<= with [] and [1]",
            "<= with [1] and 5",
            "<= with {} and 1",
            "<= with 1 and {}",
        ],
        "comparison/softEquals.json": [
            "== with (2023n, 2024-01-01s)",
            "== with (1n, As)",
            "== with [] and [1]",
            "== with [1] and 5",
            "== with {} and 1",
            "== with 1 and {}",
        ],
        "comparison/softNotEquals.json": [
            "!= with (2023n, 2024-01-01s)",
            "!= with (1n, As)",
            "!= with [] and [1]",
            "!= with [1] and 5",
            "!= with {} and 1",
            "!= with 1 and {}",
        ],
        "try.json": [
            "Coalesce an error emitted from an operator",
            "Try is variadic",
            "Panics if none of the values are valid (2)",
            "Panics if none of the values are valid (3)",
            "Panic with an error emitted from an operator",
            "Panic within an iterator",
            "Try can work further up the AST with Exceptions",
            "Try can work further up the AST with Exceptions, and return the error",
            "Handles NaN Explicitly",
        ],
    },
    (
        "The community suites spread the array that an operator's only "
        "argument returns into operands. json-logic-js passes it as one operand."
    ): {
        "arithmetic/plus.extra.json": [
            "Plus operator with empty array dynamic",
            "Plus operator with array dynamic",
        ],
        "arithmetic/multiply.extra.json": [
            "Multiply with dynamic empty array",
            "Multiply with dynamic unary array",
            "Multiply with dynamic array",
        ],
        "arithmetic/minus.extra.json": [
            "Minus with dynamic empty array",
            "Minus with dynamic array",
        ],
        "arithmetic/divide.extra.json": [
            "Divide with dynamic empty array",
            "Divide with dynamic unary array",
            "Divide with dynamic array",
        ],
        "arithmetic/modulo.extra.json": [
            "Modulo with dynamic array invalid",
        ],
        "chained.json": [
            "Max with Logic Chaining",
            "Cat with Logic Chaining",
            "Cat with Logic Chaining (Simple)",
            "Max with Logic Chaining (Complex)",
            "Addition Chained w/ Merge",
        ],
    },
    (
        "The community suites apply -, /, %, >, >= and === to every operand and "
        "read one-operand / as 1/x. json-logic-js uses the first two operands."
    ): {
        "arithmetic/minus.json": [
            "Subtraction with Multiple Operands",
            "Subtraction with Negative Numbers",
            "Subtraction with Strings",
            "Subtraction with Booleans",
            "Subtraction with Multiple Value Types",
        ],
        "arithmetic/divide.json": [
            "Divide with Multiple Operands",
            "Divide with Strings",
            "Divide with Multiple Value Types",
            "Divide with Single Operand (Number)",
            "Divide with Single Operand, Direct (Number)",
            "Divide Operator with Single Operand (Number)",
            "Divide Operator with Single Operand (Negative Number)",
            "Divide Operator with Single Operand, Direct (Number)",
            "Divide Operator with Single Operand, Direct (2)",
            "Divide Operator with Single Operand (String)",
            "Divide Operator with Single Operand, Direct (Negative Number String)",
            "Divide Operator with Single Operand, Direct (true)",
        ],
        "arithmetic/modulo.json": [
            "Modulo with Multiple Value Types",
        ],
        "comparison/greaterThan.json": [
            "> with 3 arguments failing",
        ],
        "comparison/greaterThanEquals.json": [
            ">= with 3 arguments failing",
        ],
        "comparison/strictEquals.json": [
            "=== with 3 arguments failing",
        ],
    },
    (
        "The community suites reject these argument counts and non-array "
        "arguments. json-logic-js accepts them, and validate_rule rejects them "
        "in segment rules."
    ): {
        "arithmetic/minus.json": [
            "Minus with zero operands is an error",
        ],
        "arithmetic/divide.json": [
            "Divide with zero operands is an error",
        ],
        "arithmetic/modulo.json": [
            "Modulo with Single Operand (Number)",
            "Modulo with Single Operand, Direct (Number)",
            "Modulo with Single Operand, Direct (0)",
            "Modulo Operator with Single Operand (Number)",
            "Modulo Operator with Single Operand (Negative Number)",
            "Modulo with zero operands is an error",
            "Modulo Operator with Single Operand, Direct (Number)",
            "Modulo Operator with Single Operand, Direct (0)",
            "Modulo Operator with Single Operand (String)",
            "Modulo Operator with Single Operand, Direct (Negative Number String)",
            "Modulo Operator with Single Operand, Direct (String 0)",
            "Modulo Operator with Single Operand, Direct (true)",
            "Modulo Operator with Single Operand, Direct (false)",
            "Modulo Operator with Single Operand, Direct (Empty String)",
            "Modulo Operator with a Single Operand, Direct (null)",
        ],
        "comparison/greaterThan.json": [
            "> with 1 argument",
            "> with direct argument",
            "> with empty argument",
        ],
        "comparison/greaterThanEquals.json": [
            ">= with 1 argument",
            ">= with direct argument",
            ">= with empty argument",
        ],
        "comparison/lessThan.json": [
            "< with 1 argument",
            "< with direct argument",
            "< with empty argument",
        ],
        "comparison/softEquals.json": [
            "== with 1 argument",
            "== with direct argument",
            "== with empty argument",
        ],
        "comparison/softNotEquals.json": [
            "!= with 1 argument",
            "!= with direct argument",
            "!= with empty argument",
        ],
        "comparison/strictEquals.json": [
            "=== with 1 argument",
            "=== with direct argument",
            "=== with empty argument",
        ],
        "comparison/strictNotEquals.json": [
            "!== with 1 argument",
            "!== with direct argument",
            "!== with empty argument",
        ],
        "control/and.json": [
            "And with non-array arguments should throw",
        ],
        "control/if.json": [
            "If with non-array arguments throws",
        ],
        "control/or.json": [
            "OR with non-array arguments should throw",
        ],
        "array/map.json": [
            "Map with null mapper should throw",
            "Map with null array should throw",
        ],
        "array/filter.json": [
            "Filter with null predicate should throw",
            "Filter with null array should throw",
        ],
        "array/all.json": [
            "Null array should throw",
            "Missing array returns error",
        ],
        "array/some.json": [
            "Null array should throw",
            "Missing array returns error",
        ],
        "array/none.json": [
            "Null array should throw",
            "Missing array returns error",
        ],
        "iterators.extra.json": [
            "if with dynamic arguments throws",
            "or with dynamic arguments throws",
            "and with dynamic arguments throws",
            "map with dynamic arguments throws",
            "filter with dynamic arguments throws",
            "reduce with dynamic arguments throws",
            "some with dynamic arguments throws",
            "all with dynamic arguments throws",
            "none with dynamic arguments throws",
            "< with dynamic arguments throws",
            "<= with dynamic arguments throws",
            "> with dynamic arguments throws",
            ">= with dynamic arguments throws",
            "== with dynamic arguments throws",
            "!= with dynamic arguments throws",
            "=== with dynamic arguments throws",
            "!== with dynamic arguments throws",
            "if with static non-array argument throws",
            "or with static non-array argument throws",
            "and with static non-array argument throws",
            "map with static non-array argument throws",
            "filter with static non-array argument throws",
            "reduce with static non-array argument throws",
            "some with static non-array argument throws",
            "all with static non-array argument throws",
            "none with static non-array argument throws",
            "< with static non-array argument throws",
            "<= with static non-array argument throws",
            "> with static non-array argument throws",
            ">= with static non-array argument throws",
            "== with static non-array argument throws",
            "!= with static non-array argument throws",
            "=== with static non-array argument throws",
            "!== with static non-array argument throws",
        ],
    },
    ("json-logic-js evaluates every operand of < and <= before it compares."): {
        "comparison/lessThan.json": [
            "< is lazily evaluated",
        ],
        "comparison/lessThanEquals.json": [
            "<= is lazily evaluated",
        ],
    },
    ("The community suites make null == 0 true. JavaScript's == makes it false."): {
        "comparison/softEquals.json": [
            "== with (null, 0)",
        ],
        "comparison/softNotEquals.json": [
            "!= with (null, 0)",
        ],
    },
    ("json-logic-js returns undefined, here null, for and/or without operands."): {
        "control/and.json": [
            "And with no arguments should return false",
        ],
        "control/or.json": [
            "Empty OR returns false",
        ],
    },
    ("val scope access ([n] path segments) is not supported."): {
        "scopes.json": [
            "Map can add each number to index",
            "Map can add each number to value from context",
            "Filter can use parent context to filter",
            "Access an escaped key from above",
        ],
        "try.extra.json": [
            "Try can work further up the AST with Exceptions;"
            " Grabbing other Context value",
        ],
        "val.extra.json": [
            "Climb up to get adder",
            "Climb up to get index",
            "Nested get adder",
        ],
    },
}


def same_json(actual: Any, expected: Any) -> bool:
    """Compare JSON values strictly: true is not 1, but 2.0 equals 2."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        return actual == expected or (math.isnan(actual) and math.isnan(expected))
    if isinstance(actual, list) and isinstance(expected, list):
        return len(actual) == len(expected) and all(
            same_json(item, other) for item, other in zip(actual, expected, strict=True)
        )
    if isinstance(actual, dict) and isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(
            same_json(actual[key], expected[key]) for key in actual
        )
    return type(actual) is type(expected) and bool(actual == expected)


def load_suites() -> list[Any]:
    """Return every suite test as a pytest param, marked when it is a known failure."""
    reasons = {
        (file_name, description): reason
        for reason, files in KNOWN_FAILURES.items()
        for file_name, descriptions in files.items()
        for description in descriptions
    }
    params = []
    for file_name in json.loads((SUITES / "index.json").read_text()):
        for entry in json.loads((SUITES / file_name).read_text()):
            if isinstance(entry, str):
                continue
            description = entry["description"]
            reason = reasons.get((file_name, description))
            marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
            params.append(
                pytest.param(entry, id=f"{file_name}: {description}", marks=marks)
            )
    return params


COMPAT_TESTS = load_suites()


def test_suites_have_1138_tests() -> None:
    assert len(COMPAT_TESTS) == 1138


def test_known_failures_exist_in_suites() -> None:
    """Every listed failure names a real test, so a typo cannot hide a pass."""
    described = {
        (file_name, entry["description"])
        for file_name in json.loads((SUITES / "index.json").read_text())
        for entry in json.loads((SUITES / file_name).read_text())
        if not isinstance(entry, str)
    }
    listed = {
        (file_name, description)
        for files in KNOWN_FAILURES.values()
        for file_name, descriptions in files.items()
        for description in descriptions
    }

    assert listed - described == set()


@pytest.mark.parametrize("case", COMPAT_TESTS)
def test_community_suite(case: dict[str, Any]) -> None:
    data = case.get("data", {})
    if "error" in case:
        with pytest.raises((RuleEvaluationError, InvalidRuleError)) as raised:
            compile_rule(case["rule"]).evaluate(data)
        error_type = getattr(raised.value, "error_type", "InvalidRule")
        assert error_type == case["error"]["type"]
    else:
        actual = compile_rule(case["rule"]).evaluate(data)
        assert same_json(actual, case["result"]), f"{actual!r} != {case['result']!r}"
