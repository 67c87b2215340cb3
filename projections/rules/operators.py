"""Code generation for data access, logic, string and array operators.

Also the operator tables that map each JSON-logic operator to its generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from projections.rules.codegen import (
    ANY_FIELD,
    BoolOperatorHandler,
    Expression,
    Operation,
    OperatorHandler,
    call_source,
    choose_source,
    is_static,
    tuple_source,
)
from projections.rules.coercion import to_string
from projections.rules.errors import InvalidRuleError
from projections.rules.numeric import (
    add,
    comparison,
    divide,
    equality,
    multiply,
    remainder,
    subtract,
)
from projections.rules.runtime import split_path


def _field_name(path: Any) -> str:
    return ANY_FIELD if split_path(path) is None else to_string(path)


# Data access.


def _var(operation: Operation) -> Expression:
    generator = operation.generator
    arguments = operation.arguments
    data = operation.scope.variable
    path = arguments[0] if arguments else None
    has_default = len(arguments) > 1
    default = operation.value(1).source if has_default else "None"
    if not is_static(path):
        generator.add_field(operation.scope, ANY_FIELD)
        path_source = operation.value(0).source
        return Expression(call_source("get_var", [data, path_source, default]))

    generator.literal_check(path, operation.argument_pointer(0))
    generator.add_field(operation.scope, _field_name(path))
    keys = split_path(path)
    if keys is None:
        if generator.strict_nulls and has_default:
            return Expression(_default_if_null(operation, data, default))
        return Expression(data)

    keys_source = tuple_source([str.__repr__(key) for key in keys])
    if len(keys) > 1 or (has_default and not is_static(arguments[1])):
        return Expression(call_source("get_path", [data, keys_source, default]))

    # One key and a literal default: inline dict.get for dict data.
    key = str.__repr__(keys[0])
    dict_default = "" if generator.strict_nulls or not has_default else f", {default}"
    lookup = f"{data}.get({key}{dict_default})"
    if not operation.scope.is_dict:
        path_default = "None" if generator.strict_nulls else default
        fallback = call_source("get_path", [data, keys_source, path_default])
        lookup = choose_source(lookup, f"type({data}) is dict", fallback)
    if generator.strict_nulls and has_default:
        return Expression(_default_if_null(operation, lookup, default))
    return Expression(lookup)


def _default_if_null(operation: Operation, source: str, default: str) -> str:
    temporary = operation.generator.temporary()
    return choose_source(default, f"({temporary} := {source}) is None", temporary)


def _missing(operation: Operation) -> Expression:
    generator = operation.generator
    arguments = operation.arguments
    data = operation.scope.variable
    if not is_static(arguments):
        generator.add_field(operation.scope, ANY_FIELD)
        return Expression(
            call_source("find_missing", [data, tuple_source(operation.sources())])
        )

    generator.literal_check(arguments, operation.pointer)
    keys = arguments[0] if arguments and isinstance(arguments[0], list) else arguments
    for key in keys:
        generator.add_field(operation.scope, _field_name(key))
    entries = generator.constant(tuple((key, split_path(key)) for key in keys))
    return Expression(call_source("find_missing_keys", [data, entries]))


def _missing_some(operation: Operation) -> Expression:
    arguments = operation.arguments
    options = arguments[1] if len(arguments) > 1 else None
    if isinstance(options, list) and is_static(options):
        for key in options:
            operation.generator.add_field(operation.scope, _field_name(key))
    else:
        operation.generator.add_field(operation.scope, ANY_FIELD)
    sources = operation.sources(2)
    sources += ["None"] * (2 - len(sources))
    return Expression(
        call_source("find_missing_some", [operation.scope.variable, *sources])
    )


def _path_segments(operation: Operation) -> str:
    arguments = operation.arguments
    if is_static(arguments):
        operation.generator.literal_check(arguments, operation.pointer)
        if any(isinstance(segment, list) for segment in arguments):
            raise InvalidRuleError(
                f"scope access ([n] path segments) at {operation.pointer} is not"
                " supported"
            )
        name = ".".join(to_string(segment) for segment in arguments)
        operation.generator.add_field(operation.scope, name if arguments else ANY_FIELD)
    else:
        operation.generator.add_field(operation.scope, ANY_FIELD)
    return tuple_source(operation.sources())


def _val(operation: Operation) -> Expression:
    segments = _path_segments(operation)
    arguments = operation.arguments
    data = operation.scope.variable
    if (
        operation.scope.is_dict
        and len(arguments) == 1
        and isinstance(arguments[0], str)
    ):
        return Expression(f"{data}.get({str.__repr__(arguments[0])})")
    return Expression(call_source("get_val", [data, segments]))


def _exists(operation: Operation) -> Expression:
    segments = _path_segments(operation)
    return Expression(
        call_source("has_path", [operation.scope.variable, segments]), is_bool=True
    )


# Logic and branching.


def _if(operation: Operation) -> Expression:
    arguments = operation.arguments
    if not arguments:
        return Expression("None")

    # Python's conditional expression chains without nesting:
    # "a if c1 else b if c2 else d".
    branches: list[str] = []
    all_bool = True
    index = 0
    while index + 1 < len(arguments):
        condition = operation.condition(index)
        then = operation.value(index + 1)
        all_bool = all_bool and then.is_bool
        branches.append(f"{then.source} if {condition} else")
        index += 2
    fallback = operation.value(index) if index < len(arguments) else Expression("None")
    all_bool = all_bool and fallback.is_bool
    return Expression("(" + " ".join([*branches, fallback.source]) + ")", all_bool)


def _if_condition(operation: Operation) -> str:
    arguments = operation.arguments
    if not arguments:
        return "False"
    branches: list[str] = []
    index = 0
    while index + 1 < len(arguments):
        then = operation.condition(index + 1)
        branches.append(f"{then} if {operation.condition(index)} else")
        index += 2
    fallback = operation.condition(index) if index < len(arguments) else "False"
    return "(" + " ".join([*branches, fallback]) + ")"


def _and_or(operator: str) -> OperatorHandler:
    def handler(operation: Operation) -> Expression:
        if not operation.arguments:
            return Expression("None")
        operands = [operation.value(index) for index in range(len(operation.arguments))]
        if all(operand.is_bool for operand in operands):
            joined = f" {operator} ".join(operand.source for operand in operands)
            return Expression(f"({joined})", is_bool=True)

        # Return the operand that decides the result, as JavaScript's && and
        # || do, but test JSON-logic truthiness rather than Python's.
        generator = operation.generator
        temporary = generator.temporary()
        negation = "not " if operator == "and" else ""
        parts = []
        for operand in operands[:-1]:
            assigned = Expression(f"({temporary} := {operand.source})", operand.is_bool)
            parts.append(f"{temporary} if {negation}{generator.truth(assigned)} else")
        return Expression("(" + " ".join([*parts, operands[-1].source]) + ")")

    return handler


def _and_or_condition(operator: str) -> BoolOperatorHandler:
    def handler(operation: Operation) -> str:
        if not operation.arguments:
            return "False"
        conditions = [
            operation.condition(index) for index in range(len(operation.arguments))
        ]
        return "(" + f" {operator} ".join(conditions) + ")"

    return handler


def _not(operation: Operation) -> Expression:
    if not operation.arguments:
        return Expression("True", is_bool=True)
    return Expression(f"(not {operation.condition(0)})", is_bool=True)


def _double_not(operation: Operation) -> Expression:
    if not operation.arguments:
        return Expression("False", is_bool=True)
    return Expression(operation.condition(0), is_bool=True)


def _coalesce(operation: Operation) -> Expression:
    if not operation.arguments:
        return Expression("None")
    operands = operation.sources()
    temporary = operation.generator.temporary()
    parts = [
        f"{temporary} if ({temporary} := {source}) is not None else"
        for source in operands[:-1]
    ]
    return Expression("(" + " ".join([*parts, operands[-1]]) + ")")


def _throw(operation: Operation) -> Expression:
    return Expression(call_source("throw_error", operation.sources(1) or ["None"]))


def _try(operation: Operation) -> Expression:
    if not operation.arguments:
        return Expression("None")
    fallbacks = []
    for index in range(1, len(operation.arguments)):
        error_scope = operation.generator.body_scope(is_dict=True)
        body = operation.value(index, error_scope).source
        fallbacks.append(f"lambda {error_scope.variable}: {body}")
    first = operation.value(0).source
    return Expression(
        call_source("try_alternatives", [f"lambda: {first}", tuple_source(fallbacks)])
    )


def _function_call(function: str, limit: int | None = None) -> OperatorHandler:
    def handler(operation: Operation) -> Expression:
        return Expression(call_source(function, operation.sources(limit)))

    return handler


# Strings and arrays.


def _in(operation: Operation) -> Expression:
    # json-logic-js returns false when the haystack is undefined.
    if len(operation.arguments) < 2:
        return Expression("False", is_bool=True)
    needle, haystack = operation.arguments[0], operation.arguments[1]
    generator = operation.generator
    temporary = generator.temporary()
    if isinstance(haystack, list) and is_static(haystack):
        generator.literal_check(haystack, operation.argument_pointer(1))
        needle_source = operation.value(0).source
        if all(isinstance(item, str) for item in haystack):
            # Only a string is strictly equal to a string, so a set lookup
            # returns the same result as indexOf.
            members = generator.constant(frozenset(haystack))
            guard = f"type({temporary} := {needle_source}) is str"
            return Expression(f"({guard} and {temporary} in {members})", is_bool=True)
        items = generator.constant(list(haystack))
        return Expression(call_source("contains", [needle_source, items]), is_bool=True)

    haystack_source = operation.value(1).source
    if isinstance(needle, str):
        text = str.__repr__(needle)
        guard = f"type({temporary} := {haystack_source}) is list"
        fallback = call_source("contains", [text, temporary])
        return Expression(
            choose_source(f"{text} in {temporary}", guard, fallback), is_bool=True
        )
    needle_source = operation.value(0).source
    return Expression(
        call_source("contains", [needle_source, haystack_source]), is_bool=True
    )


def _substr(operation: Operation) -> Expression:
    sources = operation.sources(3)
    if not sources:
        # String(undefined).substr() in json-logic-js.
        return Expression("'undefined'")
    if len(sources) == 1:
        return Expression(call_source("substring", [sources[0], "0"]))
    if len(sources) == 2:
        return Expression(call_source("substring", sources))
    return Expression(call_source("substring_length", sources))


# Iteration: the body reads each item as its data.


def _iteration(
    function: str, *, predicate: bool, returns_bool: bool
) -> OperatorHandler:
    def handler(operation: Operation) -> Expression:
        arguments = operation.arguments
        items = operation.value(0).source if arguments else "None"
        body_scope = operation.generator.body_scope(is_dict=False)
        if len(arguments) < 2:
            body = "False" if predicate else "None"
        elif predicate:
            body = operation.condition(1, body_scope)
        else:
            body = operation.value(1, body_scope).source
        source = f"{function}({items}, lambda {body_scope.variable}: {body})"
        return Expression(source, is_bool=returns_bool)

    return handler


def _reduce(operation: Operation) -> Expression:
    arguments = operation.arguments
    items = operation.value(0).source if arguments else "None"
    # The body reads {"current": item, "accumulator": value}, always a dict.
    body_scope = operation.generator.body_scope(is_dict=True)
    body = operation.value(1, body_scope).source if len(arguments) > 1 else "None"
    initial = operation.value(2).source if len(arguments) > 2 else "None"
    return Expression(
        f"reduce_items({items}, lambda {body_scope.variable}: {body}, {initial})"
    )


VALUE_OPERATORS: Final[Mapping[str, OperatorHandler]] = {
    "var": _var,
    "missing": _missing,
    "missing_some": _missing_some,
    "val": _val,
    "exists": _exists,
    "if": _if,
    "?:": _if,
    "and": _and_or("and"),
    "or": _and_or("or"),
    "!": _not,
    "!!": _double_not,
    "??": _coalesce,
    "throw": _throw,
    "try": _try,
    "==": equality(strict=False, negate=False),
    "!=": equality(strict=False, negate=True),
    "===": equality(strict=True, negate=False),
    "!==": equality(strict=True, negate=True),
    "<": comparison("<"),
    "<=": comparison("<="),
    ">": comparison(">"),
    ">=": comparison(">="),
    "+": add,
    "*": multiply,
    "-": subtract,
    "/": divide,
    "%": remainder,
    "min": _function_call("minimum"),
    "max": _function_call("maximum"),
    "in": _in,
    "cat": _function_call("concatenate"),
    "substr": _substr,
    "merge": _function_call("merge"),
    "log": _function_call("log_value", 1),
    "map": _iteration("map_items", predicate=False, returns_bool=False),
    "filter": _iteration("filter_items", predicate=True, returns_bool=False),
    "all": _iteration("all_items", predicate=True, returns_bool=True),
    "some": _iteration("some_items", predicate=True, returns_bool=True),
    "none": _iteration("no_items", predicate=True, returns_bool=True),
    "reduce": _reduce,
}
"""Every operator the compiler supports, besides ``preserve``."""

BOOL_OPERATORS: Final[Mapping[str, BoolOperatorHandler]] = {
    "if": _if_condition,
    "?:": _if_condition,
    "and": _and_or_condition("and"),
    "or": _and_or_condition("or"),
}
"""Operators with a cheaper form when only their truthiness is needed."""
