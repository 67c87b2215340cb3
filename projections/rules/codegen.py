"""Translate a JSON-logic rule into Python expression source.

Operators come only from the operator tables, rule values only as repr() of JSON types.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from projections.rules.coercion import truthy
from projections.rules.errors import InvalidRuleError

ANY_FIELD: Final = "*"
"""The entry of ``CompiledRule.fields`` for a rule that may read any field.

A rule gets it when it reads a var path computed at run time, the whole
record (``{"var": ""}``), or a missing list computed at run time.
"""

# Python's parser rejects more than 200 nested brackets, and every operation
# nests a few. At every this-many levels of nesting, an operation is compiled
# as a separate function that the outer expression calls.
_SPLIT_DEPTH: Final = 12

# Literal lists and dicts nested deeper than this become constants that are
# copied on use, which keeps deep literals within the same bracket limit.
_MAX_LITERAL_DEPTH: Final = 8


@dataclass(frozen=True)
class Expression:
    """Source of a Python expression, and whether it always returns a bool."""

    source: str
    is_bool: bool = False


@dataclass(frozen=True)
class Scope:
    """The data that var paths read in one part of a rule.

    ``variable`` is the generated parameter name bound to that data.
    ``is_dict`` is true when the data is known to be a dict, and ``is_root``
    when it is the record itself, whose var paths are record fields.
    """

    variable: str
    is_dict: bool
    is_root: bool


# Guards used in generated code. Ordering a NaN Decimal raises
# InvalidOperation, so a NaN Decimal takes the runtime function instead.
IS_NUMBER: Final = "in NUMBER_TYPES"
IS_ORDERED_DECIMAL: Final = "type({0}) is Decimal and not {0}.is_nan()"


def is_number_literal(node: Any) -> bool:
    """Return whether a rule node is a finite number that can be inlined."""
    return (
        isinstance(node, int | float)
        and not isinstance(node, bool)
        and math.isfinite(node)
        and abs(node) < 10**100
    )


def is_scalar_literal(node: Any) -> bool:
    """Return whether a rule node is null, a boolean, a string or a number to inline."""
    return node is None or isinstance(node, bool | str) or is_number_literal(node)


def call_source(function: str, sources: list[str]) -> str:
    """Return the source of a call."""
    return f"{function}({', '.join(sources)})"


def tuple_source(sources: list[str]) -> str:
    """Return the source of a tuple, with a trailing comma for one item."""
    return "(" + "".join(f"{source}, " for source in sources) + ")"


def choose_source(fast: str, guard: str, fallback: str) -> str:
    """Return the source of a conditional expression: fast when guard holds."""
    return f"({fast} if {guard} else {fallback})"


def _escape_pointer(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def is_operation(node: Any) -> bool:
    """Return whether a rule node is an operation: an object with one key."""
    return isinstance(node, Mapping) and len(node) == 1


def is_static(node: Any) -> bool:
    """Return whether a rule node contains no operation, so it is a constant."""
    if isinstance(node, Mapping):
        return len(node) != 1
    if isinstance(node, list):
        return all(is_static(item) for item in node)
    return True


def operation_arguments(arguments: Any) -> list[Any]:
    """Return an operation's arguments: a single non-list argument becomes a list."""
    return arguments if isinstance(arguments, list) else [arguments]


@dataclass(frozen=True)
class Operation:
    """One operation being compiled: its arguments and where it is in the rule.

    ``pointer`` is the JSON Pointer of the operator's value, used in error
    messages. ``is_list`` is false when that value is a single argument
    rather than a list, and ``depth`` counts the operations around it.
    """

    generator: CodeGenerator
    arguments: list[Any]
    scope: Scope
    pointer: str
    is_list: bool
    depth: int

    def argument_pointer(self, index: int) -> str:
        """Return the JSON Pointer of one argument."""
        return f"{self.pointer}/{index}" if self.is_list else self.pointer

    def value(self, index: int, scope: Scope | None = None) -> Expression:
        """Return the expression for one argument's value."""
        return self.generator.value(
            self.arguments[index],
            scope or self.scope,
            self.argument_pointer(index),
            self.depth,
        )

    def condition(self, index: int, scope: Scope | None = None) -> str:
        """Return the bool expression for one argument's truthiness."""
        return self.generator.condition(
            self.arguments[index],
            scope or self.scope,
            self.argument_pointer(index),
            self.depth,
        )

    def sources(self, limit: int | None = None) -> list[str]:
        """Return the value expressions of the first ``limit`` arguments, or all."""
        count = (
            len(self.arguments) if limit is None else min(limit, len(self.arguments))
        )
        return [self.value(index).source for index in range(count)]


OperatorHandler = Callable[[Operation], Expression]
"""Build the expression of an operation's value."""

BoolOperatorHandler = Callable[[Operation], str]
"""Build the bool expression of an operation used as a condition."""


class CodeGenerator:
    """Generator of expression sources for one rule in one null-handling mode.

    Constants and split-out functions are stored in ``namespace``, which
    must also contain the runtime functions before the source is evaluated.
    ``fields`` collects the record fields that the rule reads.
    """

    def __init__(
        self,
        *,
        strict_nulls: bool,
        namespace: dict[str, Any],
        value_operators: Mapping[str, OperatorHandler],
        bool_operators: Mapping[str, BoolOperatorHandler],
    ) -> None:
        self.strict_nulls = strict_nulls
        self.namespace = namespace
        self.value_operators = value_operators
        self.bool_operators = bool_operators
        self.fields: set[str] = set()
        self._counter = itertools.count(1)

    def generate(self, rule: Any, *, data_is_dict: bool, as_bool: bool) -> str:
        """Return the source of an expression over ``data``: its value or truthiness."""
        scope = Scope("data", is_dict=data_is_dict, is_root=True)
        if as_bool:
            body = self.condition(rule, scope, "", 0)
        else:
            body = self.value(rule, scope, "", 0).source
        return body

    # Names and literals.

    def temporary(self) -> str:
        """Return a new local name for an assignment expression."""
        return f"_t{next(self._counter)}"

    def constant(self, value: Any) -> str:
        """Store a value in the namespace and return its name."""
        name = f"_c{next(self._counter)}"
        self.namespace[name] = value
        return name

    def literal(self, value: Any, pointer: str, depth: int = 0) -> str:
        """Return source that builds a fresh copy of a JSON value.

        Raises:
            InvalidRuleError: the value is not JSON (for example a set, or a
                dict with a key that is not a string).
        """
        if value is None or value is True or value is False:
            return repr(value)
        if isinstance(value, str):
            return str.__repr__(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return int.__repr__(value) if abs(value) < 10**100 else self.constant(value)
        if isinstance(value, float):
            return (
                float.__repr__(value) if math.isfinite(value) else self.constant(value)
            )
        if isinstance(value, list | Mapping) and depth >= _MAX_LITERAL_DEPTH:
            self.literal_check(value, pointer)
            return f"deepcopy({self.constant(value)})"
        if isinstance(value, list):
            items = (
                self.literal(item, f"{pointer}/{index}", depth + 1)
                for index, item in enumerate(value)
            )
            return "[" + ", ".join(items) + "]"
        if isinstance(value, Mapping):
            entries = []
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InvalidRuleError(
                        f"object key {key!r} at {pointer or '/'} is not a string"
                    )
                item_pointer = f"{pointer}/{_escape_pointer(key)}"
                item_source = self.literal(item, item_pointer, depth + 1)
                entries.append(f"{str.__repr__(key)}: {item_source}")
            return "{" + ", ".join(entries) + "}"
        raise InvalidRuleError(
            f"value of type {type(value).__name__} at {pointer or '/'} is not JSON"
        )

    def literal_check(self, value: Any, pointer: str) -> None:
        """Raise InvalidRuleError unless a value is JSON, without building source."""
        stack = [(value, pointer)]
        while stack:
            item, item_pointer = stack.pop()
            if isinstance(item, list):
                stack.extend(
                    (child, f"{item_pointer}/{index}")
                    for index, child in enumerate(item)
                )
            elif isinstance(item, Mapping):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise InvalidRuleError(
                            f"object key {key!r} at {item_pointer or '/'} is not"
                            " a string"
                        )
                    stack.append((child, f"{item_pointer}/{_escape_pointer(key)}"))
            elif not (item is None or isinstance(item, bool | int | float | str)):
                raise InvalidRuleError(
                    f"value of type {type(item).__name__} at {item_pointer or '/'}"
                    " is not JSON"
                )

    # Rule nodes.

    def value(self, node: Any, scope: Scope, pointer: str, depth: int) -> Expression:
        """Return the expression for a rule node's value."""
        if is_operation(node):
            return self._operation(node, scope, pointer, depth, as_bool=False)
        if isinstance(node, list) and not is_static(node):
            items = [
                self.value(item, scope, f"{pointer}/{index}", depth).source
                for index, item in enumerate(node)
            ]
            return Expression("[" + ", ".join(items) + "]")
        return Expression(self.literal(node, pointer), is_bool=isinstance(node, bool))

    def condition(self, node: Any, scope: Scope, pointer: str, depth: int) -> str:
        """Return the source of a bool expression for a rule node's truthiness."""
        if is_operation(node):
            return self._operation(node, scope, pointer, depth, as_bool=True).source
        if is_static(node):
            self.literal_check(node, pointer)
            return repr(truthy(node))
        return self.truth(self.value(node, scope, pointer, depth))

    def truth(self, expression: Expression) -> str:
        """Return the source of a bool expression for an expression's truthiness."""
        if expression.is_bool:
            return expression.source
        return f"truthy({expression.source})"

    def body_scope(self, *, is_dict: bool) -> Scope:
        """Return a new scope for the body of map, filter, reduce or a try fallback."""
        return Scope(f"_s{next(self._counter)}", is_dict=is_dict, is_root=False)

    def add_field(self, scope: Scope, name: str) -> None:
        """Record that the rule reads a record field, if the scope is the record."""
        if scope.is_root:
            self.fields.add(name)

    def _operation(
        self,
        node: Mapping[Any, Any],
        scope: Scope,
        pointer: str,
        depth: int,
        *,
        as_bool: bool,
    ) -> Expression:
        ((operator, raw_arguments),) = node.items()
        if not isinstance(operator, str):
            raise InvalidRuleError(
                f"operator {operator!r} at {pointer or '/'} is not a string"
            )
        if depth and depth % _SPLIT_DEPTH == 0:
            return self._split(node, scope, pointer, depth, as_bool=as_bool)
        child_pointer = f"{pointer}/{_escape_pointer(operator)}"
        if operator == "preserve":
            return Expression(self.literal(raw_arguments, child_pointer))
        arguments = operation_arguments(raw_arguments)
        is_list = isinstance(raw_arguments, list)
        operation = Operation(self, arguments, scope, child_pointer, is_list, depth + 1)
        if as_bool and operator in self.bool_operators:
            source = self.bool_operators[operator](operation)
            return Expression(source, is_bool=True)
        value_handler = self.value_operators.get(operator)
        if value_handler is None:
            raise InvalidRuleError(f"unknown operator {operator!r} at {pointer or '/'}")
        expression = value_handler(operation)
        if as_bool:
            return Expression(self.truth(expression), is_bool=True)
        return expression

    def _split(
        self,
        node: Mapping[Any, Any],
        scope: Scope,
        pointer: str,
        depth: int,
        *,
        as_bool: bool,
    ) -> Expression:
        # Compile the operation as its own function so that no single
        # expression nests deeper than the parser allows.
        if as_bool:
            inner = Expression(self.condition(node, scope, pointer, depth + 1), True)
        else:
            inner = self.value(node, scope, pointer, depth + 1)
        name = f"_f{next(self._counter)}"
        source = f"lambda {scope.variable}: {inner.source}"
        self.namespace[name] = eval(
            compile(source, f"<rule {name}>", "eval"), self.namespace
        )
        return Expression(f"{name}({scope.variable})", inner.is_bool)
