"""Property-based deliveries against the real receiver: it stays up, responds to
each with the right status and publishes only what it accepted.

Hypothesis runs in a worker thread with a blocking HTTP client, while the
receiver serves from the test's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http.client
import json
import socket
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from cartstream.config import Settings
from tests import helpers
from tests.conftest import running_services
from tests.handlers.receiver_support import STANDARD_ORDER, add_store, topic_size

pytestmark = pytest.mark.integration

MAX_BODY_BYTES = 32768
PLATFORM_STORES = {
    "shopify": "fuzz-shop",
    "woocommerce": "fuzz-woo",
    "bigcommerce": "fuzz-bc",
    "standard": "fuzz-std",
}
JSON_CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "text/json",
]
OTHER_CONTENT_TYPES = ["text/plain", "application/xml", "multipart/form-data", ""]
SHOPIFY_TOPICS = [
    "orders/create",
    "orders/updated",
    "refunds/create",
    "checkouts/create",
    "customers/update",
    "customers/redact",
    "products/update",
    "",
]
WOO_TOPICS = ["order.created", "customer.updated", "coupon.created"]
# The topics WooCommercePlatform maps; a delivery parsed under one of them is
# deduplicated by topic and body.
WOO_SUPPORTED_TOPICS = {
    "order.created",
    "order.updated",
    "order.restored",
    "order.deleted",
    "customer.created",
    "customer.updated",
}
WHSEC = "whsec_" + base64.b64encode(b"fuzz-key-of-thirty-two-bytes-123").decode()
EXAMPLES = 120

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Draw a JSON object, truncated JSON, deep nesting, text, bytes or a big body."""
    kind = draw(st.sampled_from(["json", "truncated", "deep", "text", "bytes", "big"]))
    if kind == "json":
        value = draw(st.dictionaries(st.text(max_size=12), json_values))
        return json.dumps(value, ensure_ascii=False).encode("utf-8")
    if kind == "truncated":
        whole = json.dumps(draw(json_values), ensure_ascii=False).encode("utf-8")
        return whole[: draw(st.integers(0, max(len(whole) - 1, 0)))]
    if kind == "deep":
        depth = draw(st.integers(55, 75))
        return b"[" * depth + b"]" * depth
    if kind == "text":
        return draw(st.text(min_size=1, max_size=200)).encode("utf-8")
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    return (
        b'{"a":"' + b"x" * draw(st.integers(MAX_BODY_BYTES, MAX_BODY_BYTES * 2)) + b'"}'
    )


# Bytes a header value may hold (RFC 9110 field-value): visible ASCII, space,
# tab and obs-text (0x80-0xff), which aiohttp decodes as UTF-8 with
# surrogateescape, so invalid UTF-8 reaches the verifiers too.
FIELD_VALUE_BYTES = [9, 32, *range(33, 127), *range(128, 256)]
header_bytes = st.lists(st.sampled_from(FIELD_VALUE_BYTES), max_size=120).map(bytes)


def _fixture_cases() -> list[tuple[str, str, dict[str, Any]]]:
    """Return (platform, topic, payload) for the fixtures and a Standard order."""
    cases: list[tuple[str, str, dict[str, Any]]] = [("standard", "", STANDARD_ORDER)]
    for path in sorted(helpers.WEBHOOKS_DIR.glob("*.json")):
        payload = json.loads(path.read_text())
        parts = path.stem.split("-")
        if parts[0] == "shopify":
            cases.append(("shopify", helpers.shopify_topic(path.name), payload))
        elif parts[0] == "woocommerce":
            cases.append(("woocommerce", f"{parts[1]}.{parts[2]}", payload))
        elif parts[0] == "bigcommerce":
            cases.append(("bigcommerce", payload["scope"], payload))
    return cases


FIXTURE_CASES = _fixture_cases()


@st.composite
def fixture_deliveries(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """Draw a fixture as (platform, topic, body), with one top-level field
    replaced by any JSON value half of the time."""
    platform, topic, fixture = draw(st.sampled_from(FIXTURE_CASES))
    payload = dict(fixture)
    is_changed: bool = draw(st.booleans())
    if payload and is_changed:
        key = draw(st.sampled_from(sorted(payload)))
        payload[key] = draw(json_values)
    return platform, topic, json.dumps(payload, ensure_ascii=False).encode("utf-8")


def json_depth(value: Any) -> int:
    """Return the container nesting depth of a decoded JSON value."""
    if isinstance(value, dict):
        return 1 + max((json_depth(child) for child in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((json_depth(child) for child in value), default=0)
    return 0


def is_ping(body: bytes) -> bool:
    text = body.strip()
    return text.startswith(b"webhook_id=") and text[11:].isdigit() and len(text) <= 31


def dedupe_key(
    platform: str, woo_topic: str, body: bytes, decoded: Any
) -> tuple[str, str] | None:
    """Return the delivery id the receiver dedupes a signed delivery by.

    Shopify and Standard Webhooks deliveries get a new id per request here.
    WooCommerce keys by topic and body, and BigCommerce by scope, hash and
    time, once the body parses as an object (and, for BigCommerce, has a scope).
    """
    if not isinstance(decoded, dict):
        return None
    if platform == "woocommerce" and woo_topic in WOO_SUPPORTED_TOPICS:
        return platform, f"{woo_topic}:{hashlib.sha256(body).hexdigest()}"
    if platform != "bigcommerce":
        return None
    scope = decoded.get("scope")
    if not isinstance(scope, str) or not scope.strip():
        return None
    digest = decoded.get("hash")
    if not isinstance(digest, str) or not digest.strip():
        digest = "sha256-" + hashlib.sha256(body).hexdigest()
    return platform, f"{scope.strip()}:{digest.strip()}:{decoded.get('created_at')}"


@dataclass
class Tally:
    """What the fuzzed requests should have written to Kafka."""

    events: int = 0
    quarantined: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def count(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1


class Client:
    """A blocking HTTP/1.1 client on 127.0.0.1 that sends header bytes as given."""

    def __init__(self, port: int) -> None:
        self.port = port

    def post(
        self, path: str, body: bytes, headers: list[tuple[str, bytes]]
    ) -> tuple[int, dict[str, Any] | None]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.putrequest("POST", path, skip_accept_encoding=True)
            for name, value in headers:
                connection.putheader(name, value)
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            raw = response.read()
            content_type = response.getheader("Content-Type", "")
        finally:
            connection.close()
        answer = (
            orjson.loads(raw) if content_type.startswith("application/json") else None
        )
        return response.status, answer


def sign(platform: str, body: bytes, secret: str) -> list[tuple[str, bytes]]:
    if platform == "shopify":
        digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
        return [
            ("X-Shopify-Hmac-Sha256", base64.b64encode(digest)),
            ("X-Shopify-Webhook-Id", uuid.uuid4().hex.encode()),
        ]
    if platform == "woocommerce":
        digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
        return [("X-WC-Webhook-Signature", base64.b64encode(digest))]
    if platform == "bigcommerce":
        return [("X-Cartstream-Token", secret.encode())]
    message_id = f"msg_{uuid.uuid4().hex}"
    timestamp = str(int(time.time()))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    return [
        ("webhook-id", message_id.encode()),
        ("webhook-timestamp", timestamp.encode()),
        ("webhook-signature", b"v1," + signature),
    ]


@pytest.fixture
def fuzz_settings(settings: Settings) -> Settings:
    return replace(settings, max_body_bytes=MAX_BODY_BYTES)


async def add_fuzz_stores(pool: asyncpg.Pool) -> dict[str, str]:
    secrets = {}
    for platform, store_id in PLATFORM_STORES.items():
        secret = WHSEC if platform == "standard" else None
        _, _, secrets[platform] = await add_store(pool, store_id, platform, secret)
    return secrets


FUZZ_SETTINGS = hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


async def test_unsigned_deliveries_publish_nothing(
    fuzz_settings: Settings, pool: asyncpg.Pool
) -> None:
    """Missing or wrong signatures, any body, headers and content type: 4xx only."""
    settings = fuzz_settings
    await add_fuzz_stores(pool)
    client = Client(settings.http_port)
    tally = Tally()

    @FUZZ_SETTINGS
    @given(
        platform=st.sampled_from(sorted(PLATFORM_STORES)),
        body=bodies(),
        content_type=st.sampled_from(JSON_CONTENT_TYPES + OTHER_CONTENT_TYPES),
        signature=header_bytes,
        topic=header_bytes,
    )
    def deliver(
        platform: str, body: bytes, content_type: str, signature: bytes, topic: bytes
    ) -> None:
        headers = [
            ("Content-Type", content_type.encode()),
            ("X-Shopify-Hmac-Sha256", signature),
            ("X-Shopify-Topic", topic),
            ("X-WC-Webhook-Signature", signature),
            ("X-WC-Webhook-Topic", topic),
            ("X-Cartstream-Token", signature),
            ("webhook-id", topic),
            ("webhook-timestamp", signature),
            ("webhook-signature", b"v1," + signature),
        ]
        path = f"/webhooks/{platform}/{PLATFORM_STORES[platform]}"
        status, answer = client.post(path, body, headers)
        tally.count(status)

        if len(body) > MAX_BODY_BYTES:
            assert status == 413
        elif platform == "woocommerce" and is_ping(body):
            assert (status, answer) == (200, {"status": "ping"})
        elif content_type.split(";")[0] not in ("application/json", "text/json"):
            assert status == 415
        else:
            assert status == 401
        if status != 200:
            assert answer is not None
            assert answer["error"]["code"]

    async with running_services(settings, consume=False):
        await asyncio.to_thread(deliver)
        events = await topic_size(settings, settings.topics.events)
        quarantined = await topic_size(settings, settings.topics.quarantine)

    assert events == 0
    assert quarantined == 0
    assert sum(tally.statuses.values()) >= EXAMPLES
    assert 500 not in tally.statuses


async def test_signed_deliveries_publish_what_was_accepted(
    fuzz_settings: Settings, pool: asyncpg.Pool
) -> None:
    """Correctly signed garbage: 200, 400, 413, 415 or 422, and the topics hold
    exactly the events accepted and the deliveries quarantined."""
    settings = fuzz_settings
    secrets = await add_fuzz_stores(pool)
    client = Client(settings.http_port)
    tally = Tally()
    quarantined_keys: set[tuple[str, str]] = set()

    @FUZZ_SETTINGS
    @given(
        platform=st.sampled_from(sorted(PLATFORM_STORES)),
        body=bodies(),
        content_type=st.sampled_from(JSON_CONTENT_TYPES + ["text/plain"]),
        shopify_topic=st.sampled_from(SHOPIFY_TOPICS),
        woo_topic=st.sampled_from(WOO_TOPICS),
        fixture=st.none() | fixture_deliveries(),
    )
    def deliver(
        platform: str,
        body: bytes,
        content_type: str,
        shopify_topic: str,
        woo_topic: str,
        fixture: tuple[str, str, bytes] | None,
    ) -> None:
        if fixture is not None:
            # A real payload, perhaps with one field replaced, under its topic.
            platform, topic, body = fixture
            shopify_topic = woo_topic = topic
        headers = [
            ("Content-Type", content_type.encode()),
            ("X-Shopify-Topic", shopify_topic.encode()),
            ("X-WC-Webhook-Topic", woo_topic.encode()),
            *sign(platform, body, secrets[platform]),
        ]
        path = f"/webhooks/{platform}/{PLATFORM_STORES[platform]}"
        status, answer = client.post(path, body, headers)
        tally.count(status)
        assert answer is not None

        if len(body) > MAX_BODY_BYTES:
            assert status == 413
            return
        if platform == "woocommerce" and is_ping(body):
            assert status == 200
            return
        if content_type == "text/plain":
            assert status == 415
            return
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError:
            assert (status, answer["error"]["code"]) == (400, "invalid_json")
            return
        if json_depth(decoded) > settings.max_json_depth:
            assert (status, answer["error"]["code"]) == (400, "json_too_deep")
            return
        assert status in (200, 422), answer
        if status == 200:
            # WooCommerce dedupes by content, so a repeated body is a duplicate.
            assert answer["status"] in ("accepted", "duplicate")
            if answer["status"] == "accepted":
                tally.events += len(answer["event_ids"])
        else:
            assert answer["error"]["code"] == "unmappable_delivery"
            key = dedupe_key(platform, woo_topic, body, decoded)
            if key is None or key not in quarantined_keys:
                tally.quarantined += 1
            if key is not None:
                quarantined_keys.add(key)

    async with running_services(settings, consume=False):
        await asyncio.to_thread(deliver)
        events = await topic_size(settings, settings.topics.events)
        quarantined = await topic_size(settings, settings.topics.quarantine)

    assert 500 not in tally.statuses
    assert events == tally.events
    assert quarantined == tally.quarantined


async def test_malformed_http_leaves_receiver_up(
    fuzz_settings: Settings, pool: asyncpg.Pool
) -> None:
    """Raw bytes that are not valid HTTP get a 4xx or a closed connection."""
    settings = fuzz_settings
    await add_fuzz_stores(pool)
    client = Client(settings.http_port)
    first_lines: list[bytes] = []

    @hypothesis_settings(max_examples=60, deadline=None, database=None)
    @given(
        raw=st.one_of(
            st.binary(min_size=1, max_size=400),
            st.builds(
                lambda method, target, tail: (
                    method + b" " + target + b" HTTP/1.1\r\n" + tail
                ),
                st.sampled_from([b"POST", b"GET", b"P\xffST", b"", b"CONNECT"]),
                st.binary(max_size=60),
                st.binary(max_size=200),
            ),
        )
    )
    def send(raw: bytes) -> None:
        with socket.create_connection(("127.0.0.1", settings.http_port), 10) as sock:
            sock.sendall(raw + b"\r\n\r\n")
            sock.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        first_lines.append(received.split(b"\r\n", 1)[0])

    async with running_services(settings, consume=False):
        await asyncio.to_thread(send)
        status, _ = await asyncio.to_thread(
            client.post, "/webhooks/shopify/fuzz-shop", b"{}", []
        )
        events = await topic_size(settings, settings.topics.events)

    assert status == 415
    assert events == 0
    assert len(first_lines) >= 60
    for line in first_lines:
        assert not line.startswith(b"HTTP/1.1 5"), line
