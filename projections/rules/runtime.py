"""Operator functions that compiled rules call, with json-logic-js semantics.

Generated code inlines common cases and calls these, by their STANDARD_FUNCTIONS names.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from copy import deepcopy
from decimal import Decimal
from typing import Any, Final

import structlog

from projections.rules.coercion import (
    NAN,
    compare,
    join_strings,
    loose_equals,
    parse_float,
    strict_equals,
    to_number,
    to_string,
    truthy,
)
from projections.rules.errors import RuleEvaluationError

logger = structlog.get_logger(__name__)


class _Undefined:
    """The JavaScript value undefined: a key or index that is not there."""

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = _Undefined()

Predicate = Callable[[Any], bool]
Body = Callable[[Any], Any]


def is_array_index(key: str) -> bool:
    """Return whether a property name is a canonical array index ("0", "12")."""
    return key.isascii() and key.isdigit() and (key == "0" or key[0] != "0")


def get_property(value: Any, key: str) -> Any:
    """Read one property as JavaScript's value[key] does, or return UNDEFINED.

    Arrays and strings have numeric indexes and a length. Numbers, booleans
    and null have no properties that JSON-logic reads.
    """
    # NOTE: JavaScript measures and indexes strings in UTF-16 code units, so
    # a character above U+FFFF counts twice there and once here.
    value_type = type(value)
    if value_type is dict:
        return value.get(key, UNDEFINED)
    if value_type is list or value_type is str:
        if key == "length":
            return len(value)
        if is_array_index(key):
            index = int(key)
            return value[index] if index < len(value) else UNDEFINED
        return UNDEFINED
    if isinstance(value, Mapping):
        return value.get(key, UNDEFINED)
    return UNDEFINED


def get_path(data: Any, keys: tuple[str, ...], default: Any) -> Any:
    """Read a dotted var path, returning the default where a key is absent.

    As in json-logic-js, a null value at the end of the path is returned as
    null, but a null part-way down the path returns the default.
    """
    for key in keys:
        if data is None:
            return default
        data = get_property(data, key)
        if data is UNDEFINED:
            return default
    return data


def split_path(path: Any) -> tuple[str, ...] | None:
    """Split a var path on dots, or return None when it reads the whole data."""
    if path is None or path == "":
        return None
    return tuple(to_string(path).split("."))


def get_var(data: Any, path: Any, default: Any) -> Any:
    """Read a var path computed at run time."""
    keys = split_path(path)
    if keys is None:
        return data
    return get_path(data, keys, default)


def _is_missing_value(value: Any) -> bool:
    return value is None or (type(value) is str and not value)


def find_missing_keys(
    data: Any, keys: tuple[tuple[Any, tuple[str, ...] | None], ...]
) -> list[Any]:
    """Implement missing for keys known at compile time, given with their split paths.

    Returns the keys whose value is absent, null or "".
    """
    found: list[Any] = []
    for key, path in keys:
        value = data if path is None else get_path(data, path, None)
        if _is_missing_value(value):
            found.append(key)
    return found


def find_missing(data: Any, arguments: tuple[Any, ...]) -> list[Any]:
    """Implement missing for keys computed at run time.

    The keys are the arguments, or the first argument when it is a list.
    """
    keys = arguments[0] if arguments and type(arguments[0]) is list else arguments
    return [key for key in keys if _is_missing_value(get_var(data, key, None))]


def find_missing_some(data: Any, need_count: Any, options: Any) -> list[Any]:
    """Implement missing_some: [] when at least need_count options are present."""
    if type(options) is not list:
        options = [options]
    missing_keys = find_missing(data, (options,))
    order = compare(len(options) - len(missing_keys), need_count)
    if order is not None and order >= 0:
        return []
    return missing_keys


def less_than(left: Any, right: Any) -> bool:
    """Implement < for two operands."""
    return compare(left, right) == -1


def less_or_equal(left: Any, right: Any) -> bool:
    """Implement <= for two operands."""
    order = compare(left, right)
    return order is not None and order <= 0


def greater_than(left: Any, right: Any) -> bool:
    """Implement > for two operands."""
    return compare(left, right) == 1


def greater_or_equal(left: Any, right: Any) -> bool:
    """Implement >= for two operands."""
    order = compare(left, right)
    return order is not None and order >= 0


def between_exclusive(low: Any, value: Any, high: Any) -> bool:
    """Implement < with three operands: low < value < high."""
    return less_than(low, value) and less_than(value, high)


def between_inclusive(low: Any, value: Any, high: Any) -> bool:
    """Implement <= with three operands: low <= value <= high."""
    return less_or_equal(low, value) and less_or_equal(value, high)


def add(*operands: Any) -> Any:
    """Implement +: the sum of parseFloat of each operand, 0 when there are none."""
    total: Any = 0
    for operand in operands:
        total = total + parse_float(operand)
    return total


def multiply(*operands: Any) -> Any:
    """Implement *: the product of parseFloat of each operand.

    As in json-logic-js, a single operand is returned unconverted, and no
    operands is an error.
    """
    if not operands:
        raise RuleEvaluationError(
            "'*' needs at least one operand", error_type="TypeError"
        )
    product = operands[0]
    for operand in operands[1:]:
        product = parse_float(product) * parse_float(operand)
    return product


def subtract(left: Any, right: Any) -> Any:
    """Implement - with two operands."""
    return to_number(left) - to_number(right)


def negate(value: Any) -> Any:
    """Implement - with one operand."""
    return -to_number(value)


def divide(left: Any, right: Any) -> Any:
    """Implement /: division by zero gives an infinity, or NaN for 0 / 0."""
    dividend = to_number(left)
    divisor = to_number(right)
    if divisor == 0:
        if dividend == 0 or dividend != dividend:
            return NAN
        return math.copysign(math.inf, dividend) * math.copysign(1.0, divisor)
    return dividend / divisor


def remainder(left: Any, right: Any) -> Any:
    """Implement %: the remainder takes the sign of the dividend, as in JavaScript."""
    dividend = to_number(left)
    divisor = to_number(right)
    if divisor == 0 or dividend != dividend or divisor != divisor:
        return NAN
    if math.isinf(dividend):
        return NAN
    if math.isinf(divisor):
        return dividend
    if type(dividend) is int and type(divisor) is int:
        magnitude = abs(dividend) % abs(divisor)
        return -magnitude if dividend < 0 else magnitude
    return math.fmod(dividend, divisor)


def minimum(*operands: Any) -> Any:
    """Implement min: Infinity with no operands, NaN if any operand is not a number."""
    numbers = [to_number(operand) for operand in operands]
    if any(number != number for number in numbers):
        return NAN
    return min(numbers, default=math.inf)


def maximum(*operands: Any) -> Any:
    """Implement max: -Infinity with no operands, NaN if any operand is not a number."""
    numbers = [to_number(operand) for operand in operands]
    if any(number != number for number in numbers):
        return NAN
    return max(numbers, default=-math.inf)


def contains(needle: Any, haystack: Any) -> bool:
    """Implement in: substring of a string, or strict membership of an array."""
    haystack_type = type(haystack)
    if haystack_type is list:
        if type(needle) is str:
            return needle in haystack
        return any(strict_equals(needle, item) for item in haystack)
    if haystack_type is str:
        return bool(haystack) and to_string(needle) in haystack
    return False


def concatenate(*operands: Any) -> str:
    """Implement cat: join the operands as strings, with null as ""."""
    return join_strings(list(operands), "")


def _to_integer(value: Any) -> float | int:
    number = to_number(value)
    if number != number:
        return 0
    if math.isinf(number):
        return number
    return math.trunc(number)


def _js_substr(text: str, start: Any, length: Any = UNDEFINED) -> str:
    size = len(text)
    begin = _to_integer(start)
    if begin < 0:
        begin = max(size + begin, 0)
    begin = min(begin, size)
    count = size if length is UNDEFINED else _to_integer(length)
    count = min(max(count, 0), size)
    end = min(begin + count, size)
    return text[int(begin) : int(end)]


def substring(source: Any, start: Any) -> str:
    """Implement substr with a start and no length."""
    return _js_substr(to_string(source), start)


def substring_length(source: Any, start: Any, length: Any) -> str:
    """Implement substr with a length; a negative length drops trailing characters."""
    if compare(length, 0) == -1:
        tail = _js_substr(to_string(source), start)
        # json-logic-js computes tail.length + length, which JavaScript turns
        # into string concatenation when length is a string or an array.
        if type(length) is str or type(length) is list:
            kept_length = to_number(str(len(tail)) + to_string(length))
        else:
            kept_length = len(tail) + to_number(length)
        return _js_substr(tail, 0, kept_length)
    return _js_substr(to_string(source), start, length)


def merge(*operands: Any) -> list[Any]:
    """Implement merge: flatten array operands one level, keep other operands."""
    merged: list[Any] = []
    for operand in operands:
        if type(operand) is list:
            merged.extend(operand)
        else:
            merged.append(operand)
    return merged


def log_value(value: Any = None) -> Any:
    """Implement log: log the value at debug level and return it."""
    logger.debug("rule_log", value=value)
    return value


def map_items(items: Any, body: Body) -> list[Any]:
    """Implement map: [] when items is not an array."""
    if type(items) is not list:
        return []
    return [body(item) for item in items]


def filter_items(items: Any, predicate: Predicate) -> list[Any]:
    """Implement filter: [] when items is not an array."""
    if type(items) is not list:
        return []
    return [item for item in items if predicate(item)]


def reduce_items(items: Any, body: Body, initial: Any) -> Any:
    """Implement reduce: the body reads {"current": item, "accumulator": value}."""
    if type(items) is not list:
        return initial
    accumulator = initial
    for item in items:
        accumulator = body({"current": item, "accumulator": accumulator})
    return accumulator


def all_items(items: Any, predicate: Predicate) -> bool:
    """Implement all: false for an empty array and for anything that is not an array."""
    if type(items) is not list or not items:
        return False
    return all(predicate(item) for item in items)


def some_items(items: Any, predicate: Predicate) -> bool:
    """Implement some: false when items is not an array."""
    if type(items) is not list:
        return False
    return any(predicate(item) for item in items)


def no_items(items: Any, predicate: Predicate) -> bool:
    """Implement none: true when items is not an array."""
    if type(items) is not list:
        return True
    return not any(predicate(item) for item in items)


def get_val(data: Any, segments: tuple[Any, ...]) -> Any:
    """Implement val: follow path segments, not split on dots; absent gives null."""
    for segment in segments:
        if data is None:
            return None
        data = get_property(data, _val_key(segment))
        if data is UNDEFINED:
            return None
    return data


def has_path(data: Any, segments: tuple[Any, ...]) -> bool:
    """Implement exists: whether every segment of the path is present (null counts)."""
    for segment in segments:
        data = get_property(data, _val_key(segment))
        if data is UNDEFINED:
            return False
    return True


def _val_key(segment: Any) -> str:
    if type(segment) is list:
        raise RuleEvaluationError(
            "val does not support scope access ([n] path segments)",
            error_type="Invalid Arguments",
        )
    return segment if type(segment) is str else to_string(segment)


def throw_error(value: Any) -> Any:
    """Implement throw: raise an error whose type is the value or its "type" key."""
    if type(value) is dict and "type" in value:
        value = value["type"]
    error_type = to_string(value)
    raise RuleEvaluationError(f"rule threw {error_type!r}", error_type=error_type)


def try_alternatives(first: Callable[[], Any], fallbacks: tuple[Body, ...]) -> Any:
    """Implement try: return the first alternative that raises no rule error.

    Each fallback reads the previous error as {"type": error_type}. When every
    alternative fails, the last error propagates.
    """
    try:
        return first()
    except RuleEvaluationError as error:
        last_error = error
    for fallback in fallbacks:
        try:
            return fallback({"type": last_error.error_type})
        except RuleEvaluationError as error:
            last_error = error
    raise last_error


# The names that generated code calls, bound to the standard functions.
STANDARD_FUNCTIONS: Final[Mapping[str, Any]] = {
    "NUMBER_TYPES": (int, float),
    "SCALAR_TYPES": frozenset((str, int, float, bool, type(None))),
    "Decimal": Decimal,
    "deepcopy": deepcopy,
    "truthy": truthy,
    "loose_equals": loose_equals,
    "strict_equals": strict_equals,
    "get_path": get_path,
    "get_var": get_var,
    "find_missing_keys": find_missing_keys,
    "find_missing": find_missing,
    "find_missing_some": find_missing_some,
    "less_than": less_than,
    "less_or_equal": less_or_equal,
    "greater_than": greater_than,
    "greater_or_equal": greater_or_equal,
    "between_exclusive": between_exclusive,
    "between_inclusive": between_inclusive,
    "add": add,
    "multiply": multiply,
    "subtract": subtract,
    "negate": negate,
    "divide": divide,
    "remainder": remainder,
    "minimum": minimum,
    "maximum": maximum,
    "contains": contains,
    "concatenate": concatenate,
    "substring": substring,
    "substring_length": substring_length,
    "merge": merge,
    "log_value": log_value,
    "map_items": map_items,
    "filter_items": filter_items,
    "reduce_items": reduce_items,
    "all_items": all_items,
    "some_items": some_items,
    "no_items": no_items,
    "get_val": get_val,
    "has_path": has_path,
    "throw_error": throw_error,
    "try_alternatives": try_alternatives,
}
