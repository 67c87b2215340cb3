"""Code generation for equality, ordering and arithmetic operators.

These operators inline a fast path for int, float and Decimal operands.
"""

from __future__ import annotations

import math
from typing import Final

from projections.rules.codegen import (
    IS_NUMBER,
    IS_ORDERED_DECIMAL,
    Expression,
    Operation,
    OperatorHandler,
    call_source,
    choose_source,
    is_number_literal,
    is_scalar_literal,
    is_static,
)
from projections.rules.coercion import as_decimal

_COMPARISONS: Final = {
    "<": ("<", "less_than"),
    "<=": ("<=", "less_or_equal"),
    ">": (">", "greater_than"),
    ">=": (">=", "greater_or_equal"),
}
_BETWEEN_FUNCTIONS: Final = {"<": "between_exclusive", "<=": "between_inclusive"}


def equality(*, strict: bool, negate: bool) -> OperatorHandler:
    def handler(operation: Operation) -> Expression:
        source = _equality_source(operation, strict=strict)
        return Expression(f"(not {source})" if negate else source, is_bool=True)

    return handler


def _equality_source(operation: Operation, *, strict: bool) -> str:
    function = "strict_equals" if strict else "loose_equals"
    arguments = operation.arguments

    # A missing operand is JavaScript's undefined, which only null equals loosely.
    if not arguments:
        return "True"
    if len(arguments) == 1:
        if is_static(arguments[0]):
            return repr(not strict and arguments[0] is None)
        return "False" if strict else f"({operation.value(0).source} is None)"
    if is_static(arguments[0]) and is_static(arguments[1]):
        return call_source(function, operation.sources(2))

    # Put the literal operand, if there is one, on the right.
    other_index, literal = 0, arguments[1]
    if is_scalar_literal(arguments[0]):
        other_index, literal = 1, arguments[0]
    other = operation.value(other_index).source
    if not is_scalar_literal(literal):
        return _equality_general(operation, function, other)

    temporary = operation.generator.temporary()
    assigned = f"({temporary} := {other})"
    if literal is None:
        return f"({other} is None)"
    if isinstance(literal, bool):
        if strict:
            return f"({other} is {literal!r})"
        fallback = call_source(function, [temporary, repr(literal)])
        return choose_source(
            f"{temporary} is {literal!r}", f"type{assigned} is bool", fallback
        )
    if isinstance(literal, str):
        text = str.__repr__(literal)
        if strict:
            return f"(type{assigned} is str and {temporary} == {text})"
        fallback = call_source(function, [temporary, text])
        return choose_source(
            f"{temporary} == {text}", f"type{assigned} is str", fallback
        )
    number = operation.generator.literal(literal, operation.pointer)
    decimal = operation.generator.constant(as_decimal(literal))
    fallback = call_source(function, [temporary, number])
    decimal_test = choose_source(
        f"{temporary} == {decimal}", f"type({temporary}) is Decimal", fallback
    )
    return choose_source(
        f"{temporary} == {number}", f"type{assigned} {IS_NUMBER}", decimal_test
    )


def _equality_general(operation: Operation, function: str, first: str) -> str:
    second_source = operation.value(1).source
    left = operation.generator.temporary()
    right = operation.generator.temporary()
    # Values of the same scalar type compare the same in Python and JavaScript.
    guard = (
        f"type({left} := {first}) is type({right} := {second_source})"
        f" and type({left}) in SCALAR_TYPES"
    )
    return choose_source(
        f"{left} == {right}", guard, call_source(function, [left, right])
    )


def comparison(operator: str) -> OperatorHandler:
    symbol, function = _COMPARISONS[operator]

    def handler(operation: Operation) -> Expression:
        arguments = operation.arguments
        # JavaScript compares with undefined as with NaN, which is false.
        if len(arguments) < 2:
            return Expression("False", is_bool=True)
        if len(arguments) > 2 and operator in _BETWEEN_FUNCTIONS:
            return Expression(_between(operation, symbol, operator), is_bool=True)
        return Expression(_compare_two(operation, symbol, function), is_bool=True)

    return handler


def _compare_two(operation: Operation, symbol: str, function: str) -> str:
    left, right = operation.arguments[0], operation.arguments[1]
    temporary = operation.generator.temporary()
    for literal, other_index in ((right, 0), (left, 1)):
        if not (is_number_literal(literal) or isinstance(literal, str)):
            continue
        literal_source = operation.generator.literal(literal, operation.pointer)
        other = operation.value(other_index).source
        operands = [temporary, literal_source]
        if other_index == 1:
            operands.reverse()
        fallback = call_source(function, operands)
        if isinstance(literal, str):
            guard = f"type({temporary} := {other}) is str"
            return choose_source(
                f"{operands[0]} {symbol} {operands[1]}", guard, fallback
            )

        # A Decimal record value compares exactly with the literal's decimal.
        decimal = operation.generator.constant(as_decimal(literal))
        decimal_operands = [decimal, temporary] if other_index else [temporary, decimal]
        decimal_test = choose_source(
            f"{decimal_operands[0]} {symbol} {decimal_operands[1]}",
            IS_ORDERED_DECIMAL.format(temporary),
            fallback,
        )
        guard = f"type({temporary} := {other}) {IS_NUMBER}"
        return choose_source(
            f"{operands[0]} {symbol} {operands[1]}", guard, decimal_test
        )

    first = operation.value(0).source
    second_source = operation.value(1).source
    second = operation.generator.temporary()
    guard = (
        f"(type({temporary} := {first}) {IS_NUMBER})"
        f" & (type({second} := {second_source}) {IS_NUMBER})"
    )
    fallback = call_source(function, [temporary, second])
    return choose_source(f"{temporary} {symbol} {second}", guard, fallback)


def _between(operation: Operation, symbol: str, operator: str) -> str:
    function = _BETWEEN_FUNCTIONS[operator]
    low, high = operation.arguments[0], operation.arguments[2]
    if not (is_number_literal(low) and is_number_literal(high)):
        return call_source(function, operation.sources(3))

    generator = operation.generator
    low_source = generator.literal(low, operation.pointer)
    high_source = generator.literal(high, operation.pointer)
    low_decimal = generator.constant(as_decimal(low))
    high_decimal = generator.constant(as_decimal(high))
    temporary = generator.temporary()
    middle = operation.value(1).source
    fallback = call_source(function, [low_source, temporary, high_source])
    decimal_test = choose_source(
        f"{low_decimal} {symbol} {temporary} {symbol} {high_decimal}",
        IS_ORDERED_DECIMAL.format(temporary),
        fallback,
    )
    return choose_source(
        f"{low_source} {symbol} {temporary} {symbol} {high_source}",
        f"type({temporary} := {middle}) {IS_NUMBER}",
        decimal_test,
    )


# Arithmetic.


def _nan(operation: Operation) -> Expression:
    # A missing operand is undefined in JavaScript and makes the result NaN,
    # which segment mode reports as null.
    if operation.generator.strict_nulls:
        return Expression("None")
    return Expression(operation.generator.constant(math.nan))


def _binary_arithmetic(operation: Operation, symbol: str, function: str) -> str:
    left, right = operation.sources(2)
    generator = operation.generator
    first = generator.temporary()
    second = generator.temporary()
    guard = (
        f"(type({first} := {left}) {IS_NUMBER})"
        f" & (type({second} := {right}) {IS_NUMBER})"
    )
    if symbol == "/":
        guard += f" and {second}"
    fallback = call_source(function, [first, second])
    if generator.strict_nulls:
        # A NaN result (from NaN or infinite operands) falls through to the
        # runtime function, which turns it into null.
        result = generator.temporary()
        guard += f" and ({result} := {first} {symbol} {second}) == {result}"
        return choose_source(result, guard, fallback)
    return choose_source(f"{first} {symbol} {second}", guard, fallback)


def _unary_number(operation: Operation, prefix: str, function: str) -> str:
    temporary = operation.generator.temporary()
    guard = f"type({temporary} := {operation.value(0).source}) {IS_NUMBER}"
    if operation.generator.strict_nulls:
        guard += f" and {temporary} == {temporary}"
    return choose_source(f"{prefix}{temporary}", guard, f"{function}({temporary})")


def add(operation: Operation) -> Expression:
    count = len(operation.arguments)
    if count == 0:
        return Expression("0")
    if count == 1:
        return Expression(_unary_number(operation, "", "add"))
    if count == 2:
        return Expression(_binary_arithmetic(operation, "+", "add"))
    return Expression(call_source("add", operation.sources()))


def multiply(operation: Operation) -> Expression:
    if len(operation.arguments) == 2:
        return Expression(_binary_arithmetic(operation, "*", "multiply"))
    return Expression(call_source("multiply", operation.sources()))


def subtract(operation: Operation) -> Expression:
    count = len(operation.arguments)
    if count == 0:
        return _nan(operation)
    if count == 1:
        return Expression(_unary_number(operation, "-", "negate"))
    return Expression(_binary_arithmetic(operation, "-", "subtract"))


def divide(operation: Operation) -> Expression:
    if len(operation.arguments) < 2:
        return _nan(operation)
    return Expression(_binary_arithmetic(operation, "/", "divide"))


def remainder(operation: Operation) -> Expression:
    if len(operation.arguments) < 2:
        return _nan(operation)
    return Expression(call_source("remainder", operation.sources(2)))
