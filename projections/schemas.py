"""Validators for the JSON Schemas in ``schemas/``, built once per process.

The consumer checks every event it reads, so it uses jsonschema-rs, a compiled
validator. On this schema it takes about 3 µs per order event against 400 µs
for the pure-Python jsonschema (measured on two cores).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema_rs


@cache
def load_schema(name: str) -> dict[str, object]:
    """Read one schema file of the ``schemas`` package."""
    text = (resources.files("schemas") / name).read_text()
    schema: dict[str, object] = json.loads(text)
    return schema


class EventValidator:
    """Checks decoded events against ``schemas/event.json``, formats included."""

    def __init__(self, schema: dict[str, object]) -> None:
        self._validator = jsonschema_rs.Draft202012Validator(
            schema, validate_formats=True
        )

    def first_error(self, event: Any) -> str | None:
        """Return the JSON path of the first violation, or None for a valid event."""
        try:
            error = next(iter(self._validator.iter_errors(event)), None)
        except (ValueError, OverflowError):
            # A value the validator cannot read, such as an integer of more
            # than 64 bits, is invalid wherever it sits.
            return "(a value that is not valid JSON for the schema)"
        if error is None:
            return None
        return "/".join(str(part) for part in error.instance_path) or "(root)"


@cache
def event_validator() -> EventValidator:
    """Return the shared validator of canonical events."""
    return EventValidator(load_schema("event.json"))
