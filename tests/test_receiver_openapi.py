"""Schemathesis against handlers/openapi.json and the real services on 127.0.0.1.

Every documented operation gets generated requests, valid and invalid, and each
response must have a documented status, content type and body schema, and
never be a 5xx. Schemathesis sends with a blocking client, so it runs in a
worker thread while the services run in the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cartstream.config import Settings
from tests.conftest import running_services
from tests.handlers.receiver_support import add_store, base_url

pytestmark = pytest.mark.integration

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "handlers" / "openapi.json"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    missing_required_header,
    ignored_auth,
]
EXAMPLES_PER_OPERATION = 25
STORE_ID = "api-shop"


def authorize(case: Case[Any], token: str) -> None:
    """Point a valid case at the real store and, on the API, add its token."""
    if "store_id" in (case.path_parameters or {}):
        case.path_parameters["store_id"] = STORE_ID
    if case.operation.path.startswith("/api/stores/"):
        if case.headers is None:
            case.headers = CaseInsensitiveDict()
        case.headers["Authorization"] = f"Bearer {token}"


def run_operation(
    operation: APIOperation[Any, Any, Any, Any],
    session: requests.Session,
    url: str,
    token: str,
) -> int:
    """Send generated cases of one operation; return how many were checked."""
    strategy = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )
    checked = 0

    @hypothesis_settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, is_authorized=st.booleans())
    def check(case: Case[Any], is_authorized: bool) -> None:
        nonlocal checked
        is_positive = case.meta is None or (
            case.meta.generation.mode == GenerationMode.POSITIVE
        )
        # Random store ids mostly get 404, so half of the valid cases use the
        # real store and its token.
        if is_positive and is_authorized:
            authorize(case, token)
        case.call_and_validate(base_url=url, session=session, checks=CHECKS)
        checked += 1

    check()
    return checked


def run_operations(url: str, token: str) -> dict[str, int]:
    """Test every operation; return the cases checked per operation."""
    schema = schemathesis.openapi.from_path(str(SCHEMA_PATH))
    checked: dict[str, int] = {}
    with requests.Session() as session:
        for result in schema.get_all_operations():
            if isinstance(result, Err):
                raise result.err()
            operation = result.ok()
            checked[operation.label] = run_operation(operation, session, url, token)
    return checked


async def test_every_operation_conforms_to_description(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    token, _, _ = await add_store(pool, STORE_ID, "shopify")
    async with running_services(settings, consume=False):
        checked = await asyncio.to_thread(run_operations, base_url(settings), token)

    document = json.loads(SCHEMA_PATH.read_text())
    operations = [
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch")
    ]
    assert sorted(checked) == sorted(operations)
    assert all(count >= 1 for count in checked.values()), checked
