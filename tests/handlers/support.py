"""Shared set-up of the platform tests: event validation, signature vectors, servers."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from jsonschema import Draft202012Validator, FormatChecker

from cartstream.errors import InvalidSignatureError, MappingError
from cartstream.events import Event
from handlers.platforms.base import Delivery, ParsedDelivery, Platform

ROOT = Path(__file__).resolve().parents[2]
EVENT_SCHEMA = json.loads((ROOT / "schemas" / "event.json").read_text(encoding="utf-8"))
SIGNATURES_PATH = ROOT / "tests" / "data" / "signatures.json"

# jsonschema checks "date-time" only when rfc3339-validator is installed, so
# this checker adds an RFC 3339 check of its own.
FORMAT_CHECKER = FormatChecker()
RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", re.IGNORECASE
)


def is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if RFC3339.fullmatch(value) is None:
        return False
    datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    return True


FORMAT_CHECKER.checks("date-time", raises=ValueError)(is_rfc3339)
EVENT_VALIDATOR = Draft202012Validator(EVENT_SCHEMA, format_checker=FORMAT_CHECKER)


def assert_valid_event(event: Event) -> None:
    """Assert that an event matches ``schemas/event.json``, RFC 3339 times included."""
    errors = [error.message for error in EVENT_VALIDATOR.iter_errors(event)]
    assert errors == []


def assert_valid_unless_mapping_error(
    platform: Platform,
    delivery: Delivery,
    parsed: ParsedDelivery | None = None,
    check: Callable[[Event], None] = assert_valid_event,
) -> None:
    """Map a delivery, parsing it first unless ``parsed`` is given.

    MappingError is the one accepted failure, so any other exception fails the
    test. Every event mapped must pass ``check``.
    """
    try:
        if parsed is None:
            parsed = platform.parse(delivery)
        events = platform.map(delivery, parsed)
    except MappingError:
        return
    for event in events:
        check(event)


def signature_vectors(scheme: str) -> list[dict[str, Any]]:
    """Return the vectors of one signing scheme from ``tests/data/signatures.json``."""
    vectors: list[dict[str, Any]] = json.loads(
        SIGNATURES_PATH.read_text(encoding="utf-8")
    )
    return [vector for vector in vectors if vector["scheme"] == scheme]


def assert_vector_outcome(
    platform: Platform, delivery: Delivery, vector: dict[str, Any]
) -> None:
    """Verify a delivery built from a vector and expect its labelled outcome."""
    if vector["headers_should_verify"]:
        platform.verify(delivery, [vector["secret"]])
    else:
        with pytest.raises(InvalidSignatureError):
            platform.verify(delivery, [vector["secret"]])


def json_paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Yield the path of every value nested in a decoded JSON document."""
    children: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        children = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value))
    for key, child in children:
        yield (*prefix, key)
        yield from json_paths(child, (*prefix, key))


@asynccontextmanager
async def serve_on_loopback(app: web.Application) -> AsyncIterator[str]:
    """Serve an app on a free port of 127.0.0.1 and yield its base URL.

    The URL has no trailing ``/``, so callers append paths that start with one.
    """
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()
