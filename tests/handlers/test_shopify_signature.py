"""Shopify webhook signatures: the public vectors, raw-byte coverage and bad headers."""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from cartstream.errors import InvalidSignatureError, MappingError
from handlers.platforms.base import Delivery
from handlers.platforms.shopify import HMAC_HEADER, ShopifyPlatform
from tests.handlers.receiver_support import hmac_base64
from tests.handlers.support import assert_vector_outcome, signature_vectors

VECTORS = signature_vectors("shopify-hmac-sha256-base64")
PLATFORM = ShopifyPlatform()
RECEIVED_AT = datetime(2025, 2, 1, 12, 0, tzinfo=UTC)
SECRET = "test-secret"


def make_delivery(body: bytes, headers: dict[str, str]) -> Delivery:
    return Delivery(
        store_id="store-1", body=body, headers=headers, received_at=RECEIVED_AT
    )


def vector_delivery(vector: dict[str, Any]) -> Delivery:
    return make_delivery(vector["body"].encode(), dict(vector["headers"]))


def test_vectors_cover_both_outcomes_when_loaded() -> None:
    """The vector file must keep a passing and a failing Shopify case."""
    outcomes = {vector["headers_should_verify"] for vector in VECTORS}
    assert outcomes == {True, False}


@pytest.mark.parametrize("vector", VECTORS, ids=lambda vector: vector["id"])
def test_verify_matches_label_when_vector_checked(vector: dict[str, Any]) -> None:
    assert_vector_outcome(PLATFORM, vector_delivery(vector), vector)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda vector: vector["id"])
def test_verify_accepts_expected_digest_when_vector_body_signed(
    vector: dict[str, Any],
) -> None:
    """``expected`` is the digest of the vector's own body, re-serialized or not."""
    headers = {**vector["headers"], HMAC_HEADER: vector["expected"]}
    delivery = make_delivery(vector["body"].encode(), headers)

    PLATFORM.verify(delivery, [vector["secret"]])


def test_verify_rejects_body_when_reserialized_with_other_whitespace() -> None:
    vector = next(vector for vector in VECTORS if vector["headers_should_verify"])
    reserialized = json.dumps(json.loads(vector["body"]), indent=2).encode()
    assert reserialized != vector["body"].encode()
    delivery = make_delivery(reserialized, dict(vector["headers"]))

    with pytest.raises(InvalidSignatureError):
        PLATFORM.verify(delivery, [vector["secret"]])


def test_verify_rejects_body_when_one_byte_changed() -> None:
    body = b'{"id":1,"total_price":"10.00"}'
    delivery = make_delivery(
        body.replace(b"10.00", b"11.00"), {HMAC_HEADER: hmac_base64(body, SECRET)}
    )

    with pytest.raises(InvalidSignatureError):
        PLATFORM.verify(delivery, [SECRET])


def test_verify_accepts_when_second_secret_matches() -> None:
    """During rotation the old and the new secret are both active."""
    body = b'{"id":1}'
    delivery = make_delivery(body, {HMAC_HEADER: hmac_base64(body, "new-secret")})

    PLATFORM.verify(delivery, ["old-secret", "new-secret"])


def test_verify_raises_when_no_secret_is_active() -> None:
    body = b'{"id":1}'
    delivery = make_delivery(body, {HMAC_HEADER: hmac_base64(body, SECRET)})

    with pytest.raises(InvalidSignatureError):
        PLATFORM.verify(delivery, [])


def test_verify_reads_header_when_name_lower_case() -> None:
    body = b'{"id":1}'
    delivery = make_delivery(body, {HMAC_HEADER.lower(): hmac_base64(body, SECRET)})

    PLATFORM.verify(delivery, [SECRET])


def test_verify_reads_header_when_headers_are_aiohttp_multidict() -> None:
    body = b'{"id":1}'
    headers = CIMultiDictProxy(
        CIMultiDict({"x-shopify-hmac-sha256": hmac_base64(body, SECRET)})
    )
    delivery = Delivery(
        store_id="store-1", body=body, headers=headers, received_at=RECEIVED_AT
    )

    PLATFORM.verify(delivery, [SECRET])


def test_verify_names_header_when_header_missing() -> None:
    delivery = make_delivery(b'{"id":1}', {})

    with pytest.raises(InvalidSignatureError) as raised:
        PLATFORM.verify(delivery, [SECRET])

    assert HMAC_HEADER in str(raised.value)


@pytest.mark.parametrize(
    "header",
    ["not base64 at all!", "", "   ", "c2hvcnQ=", "é" * 44],
    ids=["garbled", "empty", "blank", "short-digest", "non-ascii"],
)
def test_verify_hides_value_when_header_invalid(header: str) -> None:
    delivery = make_delivery(b'{"id":1}', {HMAC_HEADER: header})

    with pytest.raises(InvalidSignatureError) as raised:
        PLATFORM.verify(delivery, [SECRET])

    message = str(raised.value)
    assert HMAC_HEADER in message
    if header.strip():
        assert header.strip() not in message


def test_parse_reads_sdk_topic_when_vector_parsed() -> None:
    vector = next(vector for vector in VECTORS if vector["headers_should_verify"])

    parsed = PLATFORM.parse(vector_delivery(vector))

    assert parsed.topic == "products/update"
    assert parsed.payload == {"foo": "bar"}
    assert parsed.delivery_id is None


def test_map_rejects_vector_topic_when_unsupported() -> None:
    vector = next(vector for vector in VECTORS if vector["headers_should_verify"])
    delivery = vector_delivery(vector)

    with pytest.raises(MappingError) as raised:
        PLATFORM.map(delivery, PLATFORM.parse(delivery))

    assert raised.value.field == "X-Shopify-Topic"


header_values = st.one_of(
    st.text(max_size=60),
    st.binary(min_size=0, max_size=40).map(lambda raw: base64.b64encode(raw).decode()),
)
header_maps = st.dictionaries(
    st.sampled_from([HMAC_HEADER, HMAC_HEADER.lower(), "X-Shopify-Topic", "Other"]),
    header_values,
    max_size=3,
)


@given(
    body=st.binary(max_size=200),
    headers=header_maps,
    secrets=st.lists(st.text(max_size=20), max_size=3),
)
def test_verify_raises_only_invalid_signature_when_input_random(
    body: bytes, headers: dict[str, str], secrets: list[str]
) -> None:
    delivery = make_delivery(body, headers)

    with contextlib.suppress(InvalidSignatureError):
        PLATFORM.verify(delivery, secrets)
