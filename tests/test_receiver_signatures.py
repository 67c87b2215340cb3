"""Every signature vector in tests/data/signatures.json through the HTTP endpoint."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cartstream.config import Settings
from tests.conftest import running_services
from tests.handlers.receiver_support import add_store, post_raw, topic_size
from tests.helpers import read_topic

pytestmark = pytest.mark.integration

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "data" / "signatures.json").read_text()
)

# The platform whose endpoint checks each scheme. The bare HMAC-SHA256 vector
# is sent as a WooCommerce signature, which is that primitive over the body.
PLATFORM_BY_SCHEME = {
    "shopify-hmac-sha256-base64": "shopify",
    "woocommerce-hmac-sha256-base64": "woocommerce",
    "standard-webhooks-v1": "standard",
    "hmac-sha256-base64": "woocommerce",
}

# The status each vector gets once its signature is checked. Vectors that
# verify still fail later: Shopify PRODUCTS_UPDATE and WooCommerce
# action.woocommerce_add_to_cart are unsupported topics and the Standard
# Webhooks body {"test": ...} has no "type" (all 422, quarantined), and the
# bare HMAC vector's body is English text, not JSON (400).
EXPECTED_STATUS = {
    "shopify-php-sdk-registry-test": 422,
    "shopify-php-sdk-reserialized-body": 401,
    "woocommerce-docs-delivery-378": 422,
    "standard-webhooks-sign-kat": 422,
    "standard-webhooks-multi-signature-header": 422,
    "standard-webhooks-tampered-signature": 401,
    "hmac-sha256-base64-wikipedia-kat": 400,
}

# The Standard Webhooks vectors were signed at 1614265330 (2021-02-25); a
# tolerance of 100 years lets them through the timestamp check.
LENIENT_TOLERANCE_S = 100 * 365 * 86400


def _request(vector: dict[str, Any], index: int) -> tuple[str, bytes, dict[str, str]]:
    platform = PLATFORM_BY_SCHEME[vector["scheme"]]
    headers = {name: str(value) for name, value in vector["headers"].items()}
    headers.setdefault("Content-Type", "application/json")
    if vector["scheme"] == "hmac-sha256-base64":
        headers["X-WC-Webhook-Signature"] = vector["expected"]
        headers["X-WC-Webhook-Topic"] = "order.created"
    path = f"/webhooks/{platform}/vector-{index}"
    return path, vector["body"].encode(), headers


async def _add_vector_stores(pool: asyncpg.Pool) -> None:
    for index, vector in enumerate(VECTORS):
        platform = PLATFORM_BY_SCHEME[vector["scheme"]]
        await add_store(pool, f"vector-{index}", platform, vector["secret"])


def test_expected_statuses_cover_every_vector() -> None:
    assert sorted(EXPECTED_STATUS) == sorted(vector["id"] for vector in VECTORS)
    for vector in VECTORS:
        is_rejected = EXPECTED_STATUS[vector["id"]] == 401
        assert is_rejected is not vector["headers_should_verify"], vector["id"]


async def test_vectors_pass_or_fail_as_labelled(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    await _add_vector_stores(pool)
    lenient = replace(settings, webhook_timestamp_tolerance_s=LENIENT_TOLERANCE_S)
    statuses: dict[str, tuple[int, Any]] = {}
    async with running_services(lenient, consume=False):
        for index, vector in enumerate(VECTORS):
            path, body, headers = _request(vector, index)
            statuses[vector["id"]] = await post_raw(lenient, path, body, headers)
    quarantined = await read_topic(settings, settings.topics.quarantine)

    for vector in VECTORS:
        status, answer = statuses[vector["id"]]
        assert status == EXPECTED_STATUS[vector["id"]], vector["id"]
        if status == 401:
            assert answer["error"]["code"] == "invalid_signature"
    assert await topic_size(settings, settings.topics.events) == 0
    # One whole quarantine record per vector that got 422.
    expected_bodies = sorted(
        vector["body"] for vector in VECTORS if EXPECTED_STATUS[vector["id"]] == 422
    )
    assert sorted(record["body"] for record in quarantined) == expected_bodies
    for record in quarantined:
        assert "x-shopify-hmac-sha256" not in record["headers"]
        assert "x-wc-webhook-signature" not in record["headers"]
        assert "webhook-signature" not in record["headers"]


async def test_standard_vectors_rejected_at_default_tolerance(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """Signed in 2021, every Standard Webhooks vector is too old at 300 s."""
    await _add_vector_stores(pool)
    answers = []
    async with running_services(settings, consume=False):
        for index, vector in enumerate(VECTORS):
            if vector["scheme"] != "standard-webhooks-v1":
                continue
            path, body, headers = _request(vector, index)
            answers.append(await post_raw(settings, path, body, headers))

    assert len(answers) == 3
    for status, answer in answers:
        assert status == 401
        assert "over the 300 s tolerance" in answer["error"]["message"]
    assert await topic_size(settings, settings.topics.quarantine) == 0
