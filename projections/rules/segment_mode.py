"""Segment-mode versions of the runtime functions, for null and missing operands.

An absent operand makes ordering comparisons false and arithmetic null.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from projections.rules.coercion import to_number
from projections.rules.runtime import (
    STANDARD_FUNCTIONS,
    add,
    between_exclusive,
    between_inclusive,
    contains,
    divide,
    get_path,
    get_var,
    greater_or_equal,
    greater_than,
    less_or_equal,
    less_than,
    maximum,
    minimum,
    multiply,
    negate,
    remainder,
    substring,
    substring_length,
    subtract,
)


def _has_null(operands: tuple[Any, ...]) -> bool:
    return any(operand is None for operand in operands)


def _nan_to_null(value: Any) -> Any:
    return None if value != value else value


def get_path_or_default(data: Any, keys: tuple[str, ...], default: Any) -> Any:
    """Read a dotted var path, returning the default for absent and null values."""
    value = get_path(data, keys, None)
    return default if value is None else value


def get_var_or_default(data: Any, path: Any, default: Any) -> Any:
    """Read a var path computed at run time; null values give the default."""
    value = get_var(data, path, None)
    return default if value is None else value


def segment_less_than(left: Any, right: Any) -> bool:
    """Implement < in segment mode: false when an operand is null."""
    return left is not None and right is not None and less_than(left, right)


def segment_less_or_equal(left: Any, right: Any) -> bool:
    """Implement <= in segment mode: false when an operand is null."""
    return left is not None and right is not None and less_or_equal(left, right)


def segment_greater_than(left: Any, right: Any) -> bool:
    """Implement > in segment mode: false when an operand is null."""
    return left is not None and right is not None and greater_than(left, right)


def segment_greater_or_equal(left: Any, right: Any) -> bool:
    """Implement >= in segment mode: false when an operand is null."""
    return left is not None and right is not None and greater_or_equal(left, right)


def segment_between_exclusive(low: Any, value: Any, high: Any) -> bool:
    """Implement three-operand < in segment mode: false when an operand is null."""
    if low is None or value is None or high is None:
        return False
    return between_exclusive(low, value, high)


def segment_between_inclusive(low: Any, value: Any, high: Any) -> bool:
    """Implement three-operand <= in segment mode: false when an operand is null."""
    if low is None or value is None or high is None:
        return False
    return between_inclusive(low, value, high)


def segment_add(*operands: Any) -> Any:
    """Implement + in segment mode: null when an operand is null or the sum is NaN."""
    if _has_null(operands):
        return None
    return _nan_to_null(add(*operands))


def segment_multiply(*operands: Any) -> Any:
    """Implement * in segment mode: null for a null operand or a NaN product."""
    if _has_null(operands):
        return None
    return _nan_to_null(multiply(*operands))


def segment_subtract(left: Any, right: Any) -> Any:
    """Implement two-operand - in segment mode: null for null operands or NaN."""
    if left is None or right is None:
        return None
    return _nan_to_null(subtract(left, right))


def segment_negate(value: Any) -> Any:
    """Implement one-operand - in segment mode: null for null or NaN."""
    if value is None:
        return None
    return _nan_to_null(negate(value))


def segment_divide(left: Any, right: Any) -> Any:
    """Implement / in segment mode: null for null operands, NaN or division by zero."""
    if left is None or right is None or to_number(right) == 0:
        return None
    return _nan_to_null(divide(left, right))


def segment_remainder(left: Any, right: Any) -> Any:
    """Implement % in segment mode: null for null operands, NaN or division by zero."""
    if left is None or right is None or to_number(right) == 0:
        return None
    return _nan_to_null(remainder(left, right))


def segment_minimum(*operands: Any) -> Any:
    """Implement min in segment mode: null when an operand is null or there are none."""
    if not operands or _has_null(operands):
        return None
    return _nan_to_null(minimum(*operands))


def segment_maximum(*operands: Any) -> Any:
    """Implement max in segment mode: null when an operand is null or there are none."""
    if not operands or _has_null(operands):
        return None
    return _nan_to_null(maximum(*operands))


def segment_contains(needle: Any, haystack: Any) -> bool:
    """Implement in for segment mode: false when the needle is null."""
    return needle is not None and contains(needle, haystack)


def segment_substring(source: Any, start: Any) -> str | None:
    """Implement substr without a length in segment mode: null for a null source."""
    return None if source is None else substring(source, start)


def segment_substring_length(source: Any, start: Any, length: Any) -> str | None:
    """Implement substr with a length in segment mode: null for a null source."""
    return None if source is None else substring_length(source, start, length)


# The same names with the segment-mode functions where null handling differs.
SEGMENT_FUNCTIONS: Final[Mapping[str, Any]] = {
    **STANDARD_FUNCTIONS,
    "get_path": get_path_or_default,
    "get_var": get_var_or_default,
    "less_than": segment_less_than,
    "less_or_equal": segment_less_or_equal,
    "greater_than": segment_greater_than,
    "greater_or_equal": segment_greater_or_equal,
    "between_exclusive": segment_between_exclusive,
    "between_inclusive": segment_between_inclusive,
    "add": segment_add,
    "multiply": segment_multiply,
    "subtract": segment_subtract,
    "negate": segment_negate,
    "divide": segment_divide,
    "remainder": segment_remainder,
    "minimum": segment_minimum,
    "maximum": segment_maximum,
    "contains": segment_contains,
    "substring": segment_substring,
    "substring_length": segment_substring_length,
}
