"""The webhook endpoint: verify, map and publish one delivery per request.

``POST /webhooks/{platform}/{store_id}``. A delivery is answered 2xx only after
Kafka acknowledged every event made from it; the platform retries anything else.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import structlog
from aiohttp import web
from prometheus_client import Counter

from cartstream.errors import InvalidSignatureError, MappingError, PublishTimeoutError
from handlers.keys import PLATFORMS_KEY, POOL_KEY, PUBLISHER_KEY, SETTINGS_KEY
from handlers.platforms.base import Delivery
from handlers.responses import json_error
from projections.stores import active_secrets

logger = structlog.get_logger(__name__)

DELIVERIES = Counter(
    "cartstream_deliveries_total",
    "Webhook deliveries by platform and outcome.",
    ["platform", "outcome"],
)

JSON_TYPES = ("application/json", "text/json")
FORM_TYPE = "application/x-www-form-urlencoded"
# Headers kept with a quarantined delivery; signatures are left out on purpose.
KEPT_HEADER_PREFIXES = (
    "x-shopify-topic",
    "x-shopify-webhook-id",
    "x-shopify-event-id",
    "x-shopify-shop-domain",
    "x-shopify-api-version",
    "x-wc-webhook-topic",
    "x-wc-webhook-delivery-id",
    "x-wc-webhook-resource",
    "x-wc-webhook-event",
    "x-wc-webhook-source",
    "webhook-id",
    "webhook-timestamp",
    "content-type",
)


def json_depth_exceeds(value: object, max_depth: int) -> bool:
    """Tell whether a decoded JSON value nests deeper than ``max_depth``."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > max_depth:
                return True
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            if depth > max_depth:
                return True
            stack.extend((child, depth + 1) for child in item)
    return False


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """Read the body, stopping as soon as it passes ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks = []
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _reject(platform: str, outcome: str, response: web.Response) -> web.Response:
    DELIVERIES.labels(platform, outcome).inc()
    return response


async def receive_delivery(request: web.Request) -> web.Response:
    """Handle ``POST /webhooks/{platform}/{store_id}``."""
    settings = request.app[SETTINGS_KEY]
    platform_name = request.match_info["platform"]
    store_id = request.match_info["store_id"]
    platform = request.app[PLATFORMS_KEY].get(platform_name)
    log = logger.bind(platform=platform_name, store_id=store_id)
    if platform is None:
        names = ", ".join(sorted(request.app[PLATFORMS_KEY]))
        return json_error(
            404, "unknown_platform", f"unknown platform {platform_name!r}: use {names}"
        )

    secrets = await active_secrets(request.app[POOL_KEY], store_id, platform_name)
    if secrets is None:
        return _reject(
            platform_name,
            "unknown_store",
            json_error(404, "unknown_store", f"store {store_id!r} not found"),
        )

    limit = settings.max_body_bytes
    body = await _read_body(request, limit)
    if body is None:
        log.info("delivery_rejected", reason="body_too_large")
        return _reject(
            platform_name,
            "too_large",
            json_error(413, "body_too_large", f"body is larger than {limit} bytes"),
        )

    delivery = Delivery(
        store_id=store_id,
        body=body,
        headers=request.headers,
        received_at=datetime.now(UTC),
    )
    is_ping = getattr(platform, "is_ping", None)
    if is_ping is not None and is_ping(delivery):
        log.info("delivery_ping")
        DELIVERIES.labels(platform_name, "ping").inc()
        return web.json_response({"status": "ping"})

    content_type = request.content_type
    if content_type not in JSON_TYPES:
        return _reject(
            platform_name,
            "wrong_type",
            json_error(
                415,
                "unsupported_media_type",
                f"content type {content_type!r} is not supported: send application/json",
            ),
        )

    try:
        platform.verify(delivery, secrets)
    except InvalidSignatureError as exc:
        log.info("delivery_rejected", reason="invalid_signature", size_bytes=len(body))
        return _reject(
            platform_name,
            "invalid_signature",
            json_error(401, "invalid_signature", str(exc)),
        )

    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _reject(
            platform_name,
            "invalid_json",
            json_error(400, "invalid_json", "body is not valid JSON"),
        )
    if json_depth_exceeds(decoded, settings.max_json_depth):
        return _reject(
            platform_name,
            "too_deep",
            json_error(
                400,
                "json_too_deep",
                f"body nests deeper than {settings.max_json_depth} levels",
            ),
        )

    publisher = request.app[PUBLISHER_KEY]
    try:
        parsed = platform.parse(delivery)
        log = log.bind(topic=parsed.topic, delivery_id=parsed.delivery_id)
        events = platform.map(delivery, parsed)
    except MappingError as exc:
        return await _quarantine(request, platform_name, delivery, exc, log)

    try:
        await publisher.publish_events(events)
    except PublishTimeoutError as exc:
        log.warning("delivery_not_acknowledged", events=len(events), error=str(exc))
        return _reject(
            platform_name,
            "kafka_unavailable",
            json_error(
                503, "kafka_unavailable", str(exc), headers={"Retry-After": "5"}
            ),
        )

    log.info("delivery_accepted", events=len(events), size_bytes=len(body))
    DELIVERIES.labels(platform_name, "accepted").inc()
    return web.json_response(
        {"status": "accepted", "event_ids": [event["id"] for event in events]}
    )


async def _quarantine(
    request: web.Request,
    platform_name: str,
    delivery: Delivery,
    error: MappingError,
    log: structlog.typing.FilteringBoundLogger,
) -> web.Response:
    headers = {
        name.lower(): value
        for name, value in delivery.headers.items()
        if name.lower() in KEPT_HEADER_PREFIXES
    }
    try:
        await request.app[PUBLISHER_KEY].quarantine(
            platform=platform_name,
            store_id=delivery.store_id,
            body=delivery.body,
            headers=headers,
            reason=str(error),
            field=error.field,
            received_at=delivery.received_at.isoformat(),
        )
    except PublishTimeoutError as exc:
        # Not kept anywhere yet, so the platform must retry it.
        log.warning("quarantine_not_acknowledged", error=str(exc))
        return json_error(
            503, "kafka_unavailable", str(exc), headers={"Retry-After": "5"}
        )
    log.warning("delivery_quarantined", reason=str(error), field=error.field)
    DELIVERIES.labels(platform_name, "quarantined").inc()
    return json_error(422, "unmappable_delivery", str(error), field=error.field)
