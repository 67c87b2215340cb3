"""JavaScript type coercion for JSON values, as json-logic-js applies it.

Conversions and comparisons follow ECMAScript's rules for the operators involved.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
from enum import Enum
from typing import Any, Final

from projections.rules.errors import RuleEvaluationError

NAN: Final = float("nan")

# WhiteSpace and LineTerminator code points that JavaScript trims from numeric
# strings. Python's str.strip() uses a different set.
_JS_WHITESPACE: Final = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_DECIMAL_LITERAL: Final = (
    r"[+-]?(?:Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
)
_DECIMAL_PATTERN: Final = re.compile(_DECIMAL_LITERAL)
_RADIX_LITERAL: Final = re.compile(r"0([xXoObB])([0-9a-fA-F]+)")
_RADIXES: Final = {"x": 16, "o": 8, "b": 2}


class JsType(Enum):
    """The JavaScript type that a Python JSON value stands for."""

    NULL = "null"
    BOOLEAN = "boolean"
    NUMBER = "number"
    STRING = "string"
    ARRAY = "array"
    OBJECT = "object"


_EXACT_TYPES: Final[dict[type, JsType]] = {
    type(None): JsType.NULL,
    bool: JsType.BOOLEAN,
    int: JsType.NUMBER,
    float: JsType.NUMBER,
    Decimal: JsType.NUMBER,
    str: JsType.STRING,
    list: JsType.ARRAY,
    dict: JsType.OBJECT,
}


def js_type(value: Any) -> JsType:
    """Return the JavaScript type of a JSON value.

    Raises:
        RuleEvaluationError: the value is not a JSON value or a Decimal, for
            example a date. Callers convert dates to ISO strings first.
    """
    found = _EXACT_TYPES.get(type(value))
    if found is not None:
        return found
    if isinstance(value, bool):
        return JsType.BOOLEAN
    if isinstance(value, int | float | Decimal):
        return JsType.NUMBER
    if isinstance(value, str):
        return JsType.STRING
    if isinstance(value, list):
        return JsType.ARRAY
    if isinstance(value, Mapping):
        return JsType.OBJECT
    raise RuleEvaluationError(
        f"unsupported value of type {type(value).__name__} in rule data: "
        "use JSON values, with dates as ISO 8601 strings",
        error_type="TypeError",
    )


def is_nan(value: Any) -> bool:
    """Return whether a number is NaN."""
    if type(value) is float:
        return value != value
    return isinstance(value, Decimal) and value.is_nan()


def truthy(value: Any) -> bool:
    """Return the JSON-logic truthiness of a value.

    JavaScript truthiness, except that an empty array is false: null, false,
    0, NaN, "" and [] are false, everything else (including {} and "0") is true.
    """
    if value is True:
        return True
    if value is False or value is None:
        return False
    value_type = type(value)
    if value_type is str or value_type is list or value_type is int:
        return bool(value)
    if value_type is float:
        return bool(value == value and value != 0.0)
    if value_type is dict:
        return True
    if isinstance(value, Decimal):
        return not value.is_nan() and value != 0
    return js_type(value) is JsType.OBJECT or bool(value)


def string_to_number(text: str) -> int | float:
    """Convert a string to a number as JavaScript's Number(text) does."""
    stripped = text.strip(_JS_WHITESPACE)
    if not stripped:
        return 0
    if _DECIMAL_PATTERN.fullmatch(stripped):
        return float(stripped.replace("Infinity", "inf"))
    radix_match = _RADIX_LITERAL.fullmatch(stripped)
    if radix_match:
        radix = _RADIXES[radix_match.group(1).lower()]
        try:
            return int(radix_match.group(2), radix)
        except ValueError:
            return NAN
    return NAN


def to_number(value: Any) -> int | float:
    """Convert a value to a number as JavaScript's Number(value) does.

    Decimals become floats, because JavaScript numbers are doubles.
    """
    value_type = type(value)
    if value_type is int or value_type is float:
        return value  # type: ignore[no-any-return]
    kind = js_type(value)
    if kind is JsType.NUMBER:
        return float(value) if isinstance(value, Decimal) else value
    if kind is JsType.NULL:
        return 0
    if kind is JsType.BOOLEAN:
        return 1 if value else 0
    if kind is JsType.STRING:
        return string_to_number(value)
    return string_to_number(to_primitive(value))


def parse_float(value: Any) -> int | float:
    """Convert a value to a number as JavaScript's parseFloat(value) does.

    Numbers pass through. Anything else is converted to a string and its
    longest numeric prefix is parsed, so "12px" is 12, and "", null and true
    are NaN.
    """
    value_type = type(value)
    if value_type is int or value_type is float:
        return value  # type: ignore[no-any-return]
    if isinstance(value, Decimal):
        return float(value)
    text = to_string(value).lstrip(_JS_WHITESPACE)
    prefix = _DECIMAL_PATTERN.match(text)
    if prefix is None:
        return NAN
    return float(prefix.group(0).replace("Infinity", "inf"))


def number_to_string(number: int | float | Decimal) -> str:
    """Format a number as JavaScript's String(number) does."""
    if type(number) is int and -(10**21) < number < 10**21:
        return str(number)
    number = float(number)
    if number != number:
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number == 0:
        return "0"
    sign = "-" if number < 0 else ""

    # repr() gives the shortest digits that round-trip, the same digits that
    # JavaScript picks, but it places the exponent differently.
    exact = Decimal(repr(abs(number))).normalize()
    _, digit_tuple, exponent = exact.as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(str(digit) for digit in digit_tuple)
    point = len(digits) + exponent
    if len(digits) <= point <= 21:
        text = digits + "0" * (point - len(digits))
    elif 0 < point <= 21:
        text = digits[:point] + "." + digits[point:]
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        power = point - 1
        power_text = f"e+{power}" if power >= 0 else f"e-{-power}"
        mantissa = digits if len(digits) == 1 else digits[0] + "." + digits[1:]
        text = mantissa + power_text
    return sign + text


def to_string(value: Any) -> str:
    """Convert a value to a string as JavaScript's String(value) does."""
    if type(value) is str:
        return value
    kind = js_type(value)
    if kind is JsType.STRING:
        return str(value)
    if kind is JsType.NULL:
        return "null"
    if kind is JsType.BOOLEAN:
        return "true" if value else "false"
    if kind is JsType.NUMBER:
        return number_to_string(value)
    return str(to_primitive(value))


def join_strings(values: list[Any], separator: str) -> str:
    """Join values as JavaScript's Array.prototype.join does: null becomes ""."""
    return separator.join("" if item is None else to_string(item) for item in values)


def to_primitive(value: Any) -> Any:
    """Convert an array or object to its primitive value, its string form.

    Arrays join their items with commas and objects become "[object Object]".
    Other values are returned unchanged.
    """
    kind = js_type(value)
    if kind is JsType.ARRAY:
        return join_strings(value, ",")
    if kind is JsType.OBJECT:
        return "[object Object]"
    return value


def as_decimal(number: int | float | Decimal) -> Decimal:
    """Convert a number to a Decimal, a float by its shortest round-trip digits.

    The shortest digits that read back as the same float are the number as
    the rule's JSON wrote it, so 100.1 becomes Decimal("100.1").
    """
    if isinstance(number, Decimal):
        return number
    if isinstance(number, float):
        return Decimal(repr(number))
    return Decimal(number)


def _numbers_equal(left: Any, right: Any) -> bool:
    if isinstance(left, Decimal) or isinstance(right, Decimal):
        if is_nan(left) or is_nan(right):
            return False
        return as_decimal(left) == as_decimal(right)
    return bool(left == right)


def _comparable_number(value: Any) -> int | float | Decimal:
    if isinstance(value, Decimal):
        return value
    return to_number(value)


def loose_equals(left: Any, right: Any) -> bool:
    """Compare two values as JavaScript's == operator does.

    null equals only null, arrays and objects are equal only to themselves,
    and other mixed types are compared as numbers or as strings.
    """
    left_type = js_type(left)
    right_type = js_type(right)
    if left_type is right_type:
        if left_type is JsType.NUMBER:
            return _numbers_equal(left, right)
        if left_type is JsType.ARRAY or left_type is JsType.OBJECT:
            return left is right
        return bool(left == right)
    if left_type is JsType.NULL or right_type is JsType.NULL:
        return False
    if left_type is JsType.NUMBER and right_type is JsType.STRING:
        return _numbers_equal(left, string_to_number(right))
    if left_type is JsType.STRING and right_type is JsType.NUMBER:
        return _numbers_equal(string_to_number(left), right)
    if left_type is JsType.BOOLEAN:
        return loose_equals(1 if left else 0, right)
    if right_type is JsType.BOOLEAN:
        return loose_equals(left, 1 if right else 0)
    if right_type is JsType.ARRAY or right_type is JsType.OBJECT:
        return loose_equals(left, to_primitive(right))
    return loose_equals(to_primitive(left), right)


def strict_equals(left: Any, right: Any) -> bool:
    """Compare two values as JavaScript's === operator does."""
    left_type = js_type(left)
    if left_type is not js_type(right):
        return False
    if left_type is JsType.NUMBER:
        return _numbers_equal(left, right)
    if left_type is JsType.ARRAY or left_type is JsType.OBJECT:
        return left is right
    return bool(left == right)


def compare(left: Any, right: Any) -> int | None:
    """Order two values as JavaScript's relational operators do.

    Returns -1, 0 or 1, or None when the comparison is undefined because a
    side converts to NaN. Two strings compare by code point. A Decimal is
    compared exactly, with a float on the other side read as the shortest
    decimal that prints as it, so Decimal("100.10") equals 100.1.
    """
    # NOTE: JavaScript compares strings by UTF-16 code unit, so it orders
    # characters above U+FFFF before U+E000-U+FFFF. Python orders by code point.
    left = to_primitive(left)
    right = to_primitive(right)
    if type(left) is str and type(right) is str:
        return (left > right) - (left < right)
    left_number = _comparable_number(left)
    right_number = _comparable_number(right)
    if is_nan(left_number) or is_nan(right_number):
        return None
    if isinstance(left_number, Decimal) or isinstance(right_number, Decimal):
        left_number = as_decimal(left_number)
        right_number = as_decimal(right_number)
    return (left_number > right_number) - (left_number < right_number)
