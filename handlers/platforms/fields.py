"""Readers of webhook and API payload fields that every platform's mapper shares.

Each reader raises MappingError naming the JSON path, like ``line_items[1].quantity``.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from cartstream.errors import MappingError
from cartstream.events import money, optional_id, to_utc

JsonObject = dict[str, Any]

# Amounts are bounded before ``money`` expands them, because "1e999999999" is
# 11 bytes of JSON that would expand to a billion digits.
MAX_AMOUNT_DIGITS = 15
MAX_AMOUNT_DECIMALS = 12


def decode_json_object(body: bytes) -> JsonObject:
    """Decode a delivery body that must be one JSON object.

    Raises:
        MappingError: the body is not valid JSON or not an object. The error's
            ``field`` is ``body``.
    """
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MappingError("body is not valid JSON", field="body") from exc
    if not isinstance(payload, dict):
        raise MappingError("body is not a JSON object", field="body")
    return payload


def join(path: str, key: str | int) -> str:
    """Extend a JSON path with an object key or a list index."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def as_object(value: object, field: str) -> JsonObject:
    if not isinstance(value, dict):
        raise MappingError(f"missing or invalid object in {field}", field=field)
    return value


def optional_object(value: object, field: str) -> JsonObject:
    """Return the object, or an empty one for null and for [].

    PHP encodes an empty map as [], and Shopify sends [] for no address.
    """
    if value is None or value == []:
        return {}
    return as_object(value, field)


def as_list(value: object, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise MappingError(f"missing or invalid list in {field}", field=field)
    return value


def optional_list(value: object, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MappingError(f"invalid list in {field}", field=field)
    return value


def optional_text(value: object, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise MappingError(f"invalid text in {field}", field=field)


def required_text(obj: JsonObject, key: str, path: str) -> str:
    """Return ``obj[key]`` without surrounding white space. Blank text is missing."""
    field = join(path, key)
    value = optional_text(obj.get(key), field)
    if not value or not value.strip():
        raise MappingError(f"missing text in {field}", field=field)
    return value.strip()


def resource_id(value: object, field: str) -> str | None:
    """Return an id as a string, or None for 0, empty text and null (guests have 0).

    orjson reads integers up to 2^64 exactly. A float means the number was larger
    or fractional and lost digits, so it is rejected rather than rounded.
    """
    if value is None or isinstance(value, str):
        return optional_id(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return optional_id(value)
    raise MappingError(f"invalid id in {field}", field=field)


def required_id(obj: JsonObject, key: str, path: str) -> str:
    field = join(path, key)
    value = resource_id(obj.get(key), field)
    if value is None:
        raise MappingError(f"missing id in {field}", field=field)
    return value


def timestamp(value: object, field: str) -> str:
    """Convert a timestamp to UTC like ``to_utc``, also near the years 1 and 9999."""
    try:
        return to_utc(value, field)
    except OverflowError as exc:
        # NOTE: to_utc lets OverflowError escape when the UTC date leaves the
        # years 1-9999. Drop this wrapper once to_utc raises MappingError for it.
        raise MappingError(f"timestamp out of range in {field}", field=field) from exc


def optional_timestamp(value: object, field: str) -> str | None:
    if value is None or value == "":
        return None
    return timestamp(value, field)


def amount(value: object, field: str) -> Decimal:
    """Read a money value given as a string or number as an exact Decimal.

    Raises:
        MappingError: the value is not a finite number, is 10^15 or more in
            magnitude, or has more than 12 decimals.
    """
    try:
        parsed = Decimal(str(value).strip())
    except InvalidOperation:
        parsed = Decimal(0)  # money() below raises the MappingError
    exponent = parsed.as_tuple().exponent
    # The exponent is an int exactly when the number is finite.
    if isinstance(exponent, int) and (
        parsed.adjusted() >= MAX_AMOUNT_DIGITS or exponent < -MAX_AMOUNT_DECIMALS
    ):
        raise MappingError(f"amount out of range in {field}", field=field)
    return Decimal(money(value, field))


def amount_text(value: object, field: str) -> str:
    """Read a money value like ``amount`` and format it without an exponent."""
    return format(amount(value, field), "f")


MAX_QUANTITY = 1_000_000


def quantity(value: object, field: str) -> int:
    """Read a line's unit count: an integer from 0 to a million."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MappingError(f"missing or invalid quantity in {field}", field=field)
    if value > MAX_QUANTITY:
        raise MappingError(
            f"quantity in {field} is over the limit of {MAX_QUANTITY}", field=field
        )
    return value
