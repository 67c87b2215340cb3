"""Validators for the JSON Schemas in ``schemas/``, built once per process."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from jsonschema import Draft202012Validator


@cache
def load_schema(name: str) -> dict[str, object]:
    """Read one schema file of the ``schemas`` package."""
    text = (resources.files("schemas") / name).read_text()
    schema: dict[str, object] = json.loads(text)
    return schema


@cache
def event_validator() -> Draft202012Validator:
    """Return the validator of canonical events, with format checks."""
    schema = load_schema("event.json")
    return Draft202012Validator(
        schema, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
