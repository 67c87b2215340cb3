"""Validate merchant segment rules against the catalogue of customer fields.

Validate before storing a rule, so each mistake is reported with its place.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Literal, get_args

from projections.rules.errors import InvalidRuleError
from projections.rules.runtime import is_array_index

FieldType = Literal["number", "string", "boolean", "date", "array"]


@dataclass(frozen=True)
class FieldSpec:
    """A customer field that segment rules may read.

    ``type`` is the JSON type of the field's values. Dates are ISO 8601
    strings, or numbers of days when the field is a "days since" count.
    """

    name: str
    type: FieldType
    description: str = ""

    def __post_init__(self) -> None:
        if self.type not in get_args(FieldType):
            raise ValueError(
                f"invalid type {self.type!r} for field {self.name!r}: use one of "
                + ", ".join(get_args(FieldType))
            )


# Allowed argument counts (minimum, maximum or None for no maximum) of every
# operator a segment rule may use. An argument that is not a list counts as one.
_ARITY: Final[Mapping[str, tuple[int, int | None]]] = {
    "var": (0, 2),
    "val": (0, None),
    "exists": (1, None),
    "missing": (1, None),
    "missing_some": (2, 2),
    "if": (2, None),
    "?:": (3, 3),
    "==": (2, 2),
    "===": (2, 2),
    "!=": (2, 2),
    "!==": (2, 2),
    "!": (1, 1),
    "!!": (1, 1),
    "or": (1, None),
    "and": (1, None),
    "??": (1, None),
    ">": (2, 2),
    ">=": (2, 2),
    "<": (2, 3),
    "<=": (2, 3),
    "max": (1, None),
    "min": (1, None),
    "+": (1, None),
    "-": (1, 2),
    "*": (2, None),
    "/": (2, 2),
    "%": (2, 2),
    "map": (2, 2),
    "filter": (2, 2),
    "reduce": (2, 3),
    "all": (2, 2),
    "none": (2, 2),
    "some": (2, 2),
    "merge": (1, None),
    "in": (2, 2),
    "cat": (1, None),
    "substr": (2, 3),
}

# Operators the compiler supports that have no place in a segment rule: log
# would write a line per customer, and the others only serve error handling.
_NOT_ALLOWED: Final = frozenset({"log", "throw", "try", "preserve"})

_ITERATIONS: Final = frozenset({"map", "filter", "all", "none", "some"})
_REDUCE_KEYS: Final = ("current", "accumulator")


class _Scope(Enum):
    """The kind of data that var paths read in one part of a rule."""

    RECORD = "record"
    ITEM = "item"
    REDUCE = "reduce"


class _Validator:
    def __init__(
        self, catalogue: Mapping[str, FieldSpec], max_nodes: int, max_depth: int
    ) -> None:
        self.catalogue = catalogue
        self.max_nodes = max_nodes
        self.max_depth = max_depth
        self.node_count = 0

    def visit(self, node: Any, pointer: str, depth: int, scope: _Scope) -> None:
        self.node_count += 1
        if self.node_count > self.max_nodes:
            raise InvalidRuleError(f"rule has more than {self.max_nodes} nodes")
        if depth > self.max_depth:
            raise InvalidRuleError(
                f"rule is nested deeper than {self.max_depth} levels at {pointer}"
            )

        if isinstance(node, Mapping):
            self._visit_object(node, pointer, depth, scope)
        elif isinstance(node, list):
            for index, item in enumerate(node):
                self.visit(item, f"{pointer}/{index}", depth + 1, scope)
        else:
            _check_scalar(node, pointer)

    def _visit_object(
        self, node: Mapping[Any, Any], pointer: str, depth: int, scope: _Scope
    ) -> None:
        if len(node) != 1:
            raise InvalidRuleError(
                f"object at {pointer or '/'} has {len(node)} keys, but an operation"
                " has exactly one key, the operator"
            )
        ((operator, raw_arguments),) = node.items()
        if not isinstance(operator, str):
            raise InvalidRuleError(
                f"operator {operator!r} at {pointer or '/'} is not a string"
            )
        where = pointer or "/"
        if operator in _NOT_ALLOWED:
            raise InvalidRuleError(
                f"operator {operator!r} at {where} is not allowed in segment rules"
            )
        if operator not in _ARITY:
            raise InvalidRuleError(f"unknown operator {operator!r} at {where}")

        arguments = (
            raw_arguments if isinstance(raw_arguments, list) else [raw_arguments]
        )
        _check_arity(operator, len(arguments), where)
        operation_pointer = f"{pointer}/{_escape(operator)}"
        self._check_fields(operator, arguments, operation_pointer, scope)

        for index, argument in enumerate(arguments):
            argument_pointer = (
                f"{operation_pointer}/{index}"
                if isinstance(raw_arguments, list)
                else operation_pointer
            )
            self.visit(
                argument,
                argument_pointer,
                depth + 1,
                _argument_scope(operator, index, scope),
            )

    def _check_fields(
        self, operator: str, arguments: list[Any], pointer: str, scope: _Scope
    ) -> None:
        if operator == "var":
            path = arguments[0] if arguments else None
            self._check_path(path, pointer, scope)
        elif operator in ("val", "exists"):
            if any(isinstance(segment, list) for segment in arguments):
                raise InvalidRuleError(
                    f"{operator} at {pointer} uses scope access ([n] path segments),"
                    " which is not supported"
                )
            if any(isinstance(segment, Mapping) for segment in arguments):
                self._check_path(arguments[0], pointer, scope)
            else:
                path = ".".join(str(segment) for segment in arguments)
                self._check_path(path, pointer, scope)
        elif operator == "missing":
            keys = arguments[0] if isinstance(arguments[0], list) else arguments
            for key in keys:
                self._check_path(key, pointer, scope)
        elif operator == "missing_some":
            options = arguments[1]
            if not isinstance(options, list):
                raise InvalidRuleError(
                    f"missing_some at {pointer} needs a list of field names as its"
                    " second argument"
                )
            for key in options:
                self._check_path(key, pointer, scope)

    def _check_path(self, path: Any, pointer: str, scope: _Scope) -> None:
        if isinstance(path, list | Mapping):
            if scope is _Scope.RECORD:
                raise InvalidRuleError(
                    f"field name at {pointer} is computed at run time; write the"
                    " field name as a string"
                )
            return
        name = "" if path is None else str(path)
        if scope is _Scope.ITEM:
            return
        if scope is _Scope.REDUCE:
            first = name.split(".")[0]
            if first not in _REDUCE_KEYS:
                raise InvalidRuleError(
                    f"path {name!r} at {pointer} in a reduce body must start with"
                    " 'current' or 'accumulator'"
                )
            return
        if name == "":
            raise InvalidRuleError(
                f"rule reads the whole record at {pointer}; name a field instead"
            )
        if not self._is_known_field(name):
            raise InvalidRuleError(self._unknown_field_message(name, pointer))

    def _is_known_field(self, name: str) -> bool:
        if name in self.catalogue:
            return True
        # An index into an array field, or its length: "tags.0", "tags.length".
        if "." not in name:
            return False
        field_name, _, rest = name.rpartition(".")
        spec = self.catalogue.get(field_name)
        return (
            spec is not None
            and spec.type == "array"
            and (rest == "length" or is_array_index(rest))
        )

    def _unknown_field_message(self, name: str, pointer: str) -> str:
        message = f"unknown field {name!r} at {pointer}"
        suggestions = difflib.get_close_matches(name, list(self.catalogue), n=3)
        if suggestions:
            message += "; did you mean " + " or ".join(map(repr, suggestions)) + "?"
        return message


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _check_scalar(value: Any, pointer: str) -> None:
    where = pointer or "/"
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRuleError(
                f"number {value!r} at {where} is not JSON; NaN and infinity are"
                " not allowed"
            )
        return
    raise InvalidRuleError(
        f"value of type {type(value).__name__} at {where} is not JSON"
    )


def _check_arity(operator: str, count: int, where: str) -> None:
    minimum, maximum = _ARITY[operator]
    if minimum <= count and (maximum is None or count <= maximum):
        return
    if maximum is None:
        expected = f"at least {minimum}"
    elif minimum == maximum:
        expected = str(minimum)
    else:
        expected = f"{minimum} to {maximum}"
    noun = "argument" if expected == "1" else "arguments"
    raise InvalidRuleError(
        f"operator {operator!r} at {where} takes {expected} {noun}, got {count}"
    )


def _argument_scope(operator: str, index: int, scope: _Scope) -> _Scope:
    if index == 1 and operator in _ITERATIONS:
        return _Scope.ITEM
    if index == 1 and operator == "reduce":
        return _Scope.REDUCE
    return scope


def validate_rule(
    rule: Any,
    catalogue: Mapping[str, FieldSpec],
    *,
    max_nodes: int = 500,
    max_depth: int = 32,
) -> None:
    """Check a segment rule before it is stored and compiled.

    ``catalogue`` maps field names to their specs. Var paths inside the
    bodies of map, filter, all, none and some read the current item, so they
    are not checked against it, and paths in a reduce body must start with
    "current" or "accumulator". A node is any JSON value in the rule. Depth
    counts nested operations and literal arrays, so an operation's list of
    arguments is not a level of its own.

    Raises:
        InvalidRuleError: naming the first problem found and its JSON Pointer:
            an unknown or disallowed operator, a wrong number of arguments,
            an unknown field, too many nodes, too deep nesting, or a value
            that is not JSON.
    """
    _Validator(catalogue, max_nodes, max_depth).visit(rule, "", 0, _Scope.RECORD)
