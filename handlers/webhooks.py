"""The webhook endpoint: verify, map and publish one delivery per request.

``POST /webhooks/{platform}/{store_id}``. The receiver responds 2xx to a
delivery only after Kafka acknowledged every event made from it, and the
platform retries any other response. Checks run cheapest first: platform,
store, size, ping, content type, signature, JSON, delivery id (duplicates),
mapping.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from datetime import UTC, datetime

import asyncpg
import orjson
import structlog
from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import Counter

from cartstream.errors import InvalidSignatureError, MappingError, PublishTimeoutError
from cartstream.events import Event
from handlers.deliveries import find_delivery, prune_deliveries, record_delivery
from handlers.keys import PLATFORMS_KEY, POOL_KEY, PUBLISHER_KEY, SETTINGS_KEY
from handlers.platforms.base import Delivery, ParsedDelivery, Platform
from handlers.quarantine import QuarantineRecord
from handlers.responses import json_error
from projections.stores import STORE_ID_PATTERN, active_secrets

logger = structlog.get_logger(__name__)

DELIVERIES = Counter(
    "cartstream_deliveries_total",
    "Webhook deliveries by platform and outcome.",
    ["platform", "outcome"],
)

JSON_TYPES = ("application/json", "text/json")
# Errors that mean PostgreSQL is unreachable. The response is 503, so the
# platform retries.
DATABASE_ERRORS = (OSError, asyncpg.PostgresConnectionError)
# Deleting expired delivery ids on about 1 in 100 published deliveries keeps
# the table near (rate x window) rows without a timer task.
PRUNE_PROBABILITY = 0.01
RETRY_AFTER = {"Retry-After": "5"}


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


def _database_unavailable(platform: str) -> web.Response:
    return _reject(
        platform,
        "database_unavailable",
        json_error(
            503,
            "database_unavailable",
            "PostgreSQL is unreachable; retry later",
            headers=RETRY_AFTER,
        ),
    )


async def receive_delivery(request: web.Request) -> web.Response:
    """Handle ``POST /webhooks/{platform}/{store_id}``."""
    settings = request.app[SETTINGS_KEY]
    platform_name = request.match_info["platform"]
    store_id = request.match_info["store_id"]
    platforms = request.app[PLATFORMS_KEY]
    platform = platforms.get(platform_name)
    if platform is None:
        # Not counted: the label would take any value a client sends.
        names = ", ".join(sorted(platforms))
        return json_error(
            404, "unknown_platform", f"unknown platform {platform_name!r}: use {names}"
        )
    log = logger.bind(platform=platform_name, store_id=store_id)

    unknown_store = json_error(404, "unknown_store", f"store {store_id!r} not found")
    # Checked before the query because PostgreSQL rejects some text (NUL).
    if STORE_ID_PATTERN.fullmatch(store_id) is None:
        return _reject(platform_name, "unknown_store", unknown_store)
    try:
        secrets = await active_secrets(request.app[POOL_KEY], store_id, platform_name)
    except DATABASE_ERRORS as exc:
        log.warning("delivery_not_verified", error=type(exc).__name__)
        return _database_unavailable(platform_name)
    if secrets is None:
        return _reject(platform_name, "unknown_store", unknown_store)

    limit = settings.max_body_bytes
    try:
        async with asyncio.timeout(settings.body_read_timeout_s):
            body = await _read_body(request, limit)
    except TimeoutError:
        # A client that announces a body and sends it slowly would hold a
        # connection for ever otherwise.
        log.info("delivery_rejected", reason="body_timeout")
        return _reject(
            platform_name,
            "body_timeout",
            json_error(
                408,
                "body_timeout",
                f"the body did not arrive within {settings.body_read_timeout_s} s",
            ),
        )
    except (HttpProcessingError, ClientPayloadError) as exc:
        log.info("delivery_rejected", reason="invalid_body", error=type(exc).__name__)
        return _reject(
            platform_name,
            "invalid_body",
            json_error(400, "invalid_body", "the request body could not be read"),
        )
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

    rejection = _check_delivery(request, platform, delivery, secrets, log)
    if rejection is not None:
        return rejection

    try:
        parsed = platform.parse(delivery)
    except MappingError as exc:
        return await _quarantine(request, platform_name, delivery, exc, None, log)
    except Exception as exc:
        error = _mapper_failure(platform_name, exc, log)
        return await _quarantine(request, platform_name, delivery, error, None, log)
    log = log.bind(topic=parsed.topic, delivery_id=parsed.delivery_id)
    return await _map_and_publish(request, platform, delivery, parsed, log)


def _check_delivery(
    request: web.Request,
    platform: Platform,
    delivery: Delivery,
    secrets: list[str],
    log: structlog.typing.FilteringBoundLogger,
) -> web.Response | None:
    """Check the content type, the signature and the JSON.

    Returns the error response of the first check that fails, or None.
    """
    settings = request.app[SETTINGS_KEY]
    name = platform.name
    content_type = request.content_type
    if content_type not in JSON_TYPES:
        return _reject(
            name,
            "wrong_type",
            json_error(
                415,
                "unsupported_media_type",
                f"content type {content_type!r} is not supported: "
                "send application/json",
            ),
        )

    if not secrets:
        log.info("delivery_rejected", reason="no_active_secret")
        return _reject(
            name,
            "invalid_signature",
            json_error(
                401,
                "invalid_signature",
                f"store {delivery.store_id!r} has no active {name} secret",
            ),
        )
    try:
        platform.verify(delivery, secrets)
    except InvalidSignatureError as exc:
        log.info(
            "delivery_rejected",
            reason="invalid_signature",
            size_bytes=len(delivery.body),
        )
        return _reject(
            name, "invalid_signature", json_error(401, "invalid_signature", str(exc))
        )

    try:
        decoded = orjson.loads(delivery.body)
    except orjson.JSONDecodeError:
        return _reject(
            name,
            "invalid_json",
            json_error(400, "invalid_json", "body is not valid JSON"),
        )
    if json_depth_exceeds(decoded, settings.max_json_depth):
        return _reject(
            name,
            "too_deep",
            json_error(
                400,
                "json_too_deep",
                f"body nests deeper than {settings.max_json_depth} levels",
            ),
        )
    return None


async def _map_and_publish(
    request: web.Request,
    platform: Platform,
    delivery: Delivery,
    parsed: ParsedDelivery,
    log: structlog.typing.FilteringBoundLogger,
) -> web.Response:
    """Drop a duplicate, else map the delivery, publish it and record its id."""
    pool = request.app[POOL_KEY]
    name = platform.name
    recorded = None
    if parsed.delivery_id is not None:
        try:
            recorded = await find_delivery(
                pool, delivery.store_id, name, parsed.delivery_id
            )
        except DATABASE_ERRORS as exc:
            log.warning("delivery_not_checked", error=type(exc).__name__)
            return _database_unavailable(name)
    if recorded is not None and recorded.outcome == "published":
        log.info("delivery_duplicate")
        DELIVERIES.labels(name, "duplicate").inc()
        return web.json_response(
            {"status": "duplicate", "event_ids": recorded.event_ids}
        )

    is_quarantined = recorded is not None
    try:
        events = platform.map(delivery, parsed)
        _check_storable(events)
    except MappingError as exc:
        return await _quarantine(
            request, name, delivery, exc, parsed, log, is_quarantined=is_quarantined
        )
    except Exception as exc:
        error = _mapper_failure(name, exc, log)
        return await _quarantine(
            request, name, delivery, error, parsed, log, is_quarantined=is_quarantined
        )

    try:
        await request.app[PUBLISHER_KEY].publish_events(events)
    except PublishTimeoutError as exc:
        log.warning("delivery_not_acknowledged", events=len(events), error=str(exc))
        return _reject(
            name,
            "kafka_unavailable",
            json_error(503, "kafka_unavailable", str(exc), headers=RETRY_AFTER),
        )

    event_ids = [event["id"] for event in events]
    if parsed.delivery_id is not None:
        await _record(request, delivery.store_id, name, parsed.delivery_id, events, log)
    log.info("delivery_accepted", events=len(events), size_bytes=len(delivery.body))
    DELIVERIES.labels(name, "accepted").inc()
    return web.json_response({"status": "accepted", "event_ids": event_ids})


def _nul_path(value: object, path: str) -> str | None:
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        items: Iterable[tuple[object, object]] = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, child in items:
        found = _nul_path(key, path) or _nul_path(child, f"{path}.{key}")
        if found is not None:
            return found
    return None


def _check_storable(events: list[Event]) -> None:
    """Reject text that PostgreSQL cannot store, before anything is published.

    Raises:
        MappingError: a string contains a NUL character; ``field`` names it.
    """
    for event in events:
        path = _nul_path(event["data"], "data") or _nul_path(
            event["customer"], "customer"
        )
        if path is not None:
            raise MappingError(
                f"{path} contains a NUL character, which cannot be stored",
                field=path,
            )


def _mapper_failure(
    platform: str, exc: Exception, log: structlog.typing.FilteringBoundLogger
) -> MappingError:
    """Log a platform code bug and describe it for the quarantine.

    A bug must not lose a verified delivery, so it is quarantined and can be
    redriven once the code is fixed.
    """
    log.error("mapper_failed", error=type(exc).__name__, exc_info=exc)
    return MappingError(f"the {platform} mapper failed with {type(exc).__name__}")


async def _record(
    request: web.Request,
    store_id: str,
    platform: str,
    delivery_id: str,
    events: list[Event],
    log: structlog.typing.FilteringBoundLogger,
) -> None:
    """Record a published delivery. If that fails, a later retry is published again."""
    pool = request.app[POOL_KEY]
    settings = request.app[SETTINGS_KEY]
    event_ids = [event["id"] for event in events]
    try:
        await record_delivery(
            pool, store_id, platform, delivery_id, "published", event_ids
        )
        if random.random() < PRUNE_PROBABILITY:
            pruned = await prune_deliveries(pool, settings.dedupe_window_hours)
            log.debug("deliveries_pruned", deleted=pruned)
    except DATABASE_ERRORS as exc:
        # The events are in Kafka, so the response is still 200. A retry of
        # the delivery is published again, with the same event ids.
        log.warning("delivery_not_recorded", error=type(exc).__name__)


async def _quarantine(
    request: web.Request,
    platform_name: str,
    delivery: Delivery,
    error: MappingError,
    parsed: ParsedDelivery | None,
    log: structlog.typing.FilteringBoundLogger,
    *,
    is_quarantined: bool = False,
) -> web.Response:
    """Keep an unmappable delivery on the quarantine topic and respond 422.

    A retry of a delivery already in quarantine (``is_quarantined``, from the
    delivery log) gets 422 again without a second copy.
    """
    response = json_error(422, "unmappable_delivery", str(error), field=error.field)
    if is_quarantined:
        log.info("delivery_already_quarantined", reason=str(error))
        DELIVERIES.labels(platform_name, "quarantined").inc()
        return response

    record = QuarantineRecord.from_delivery(
        platform_name,
        delivery,
        reason=str(error),
        field=error.field,
        topic=parsed.topic if parsed else None,
        delivery_id=parsed.delivery_id if parsed else None,
    )
    try:
        await request.app[PUBLISHER_KEY].quarantine(record)
    except PublishTimeoutError as exc:
        # Not kept anywhere yet, so the platform must retry it.
        log.warning("quarantine_not_acknowledged", error=str(exc))
        return _reject(
            platform_name,
            "kafka_unavailable",
            json_error(503, "kafka_unavailable", str(exc), headers=RETRY_AFTER),
        )

    if parsed is not None and parsed.delivery_id is not None:
        try:
            await record_delivery(
                request.app[POOL_KEY],
                delivery.store_id,
                platform_name,
                parsed.delivery_id,
                "quarantined",
            )
        except DATABASE_ERRORS as exc:
            log.warning("delivery_not_recorded", error=type(exc).__name__)
    log.warning(
        "delivery_quarantined",
        reason=str(error),
        field=error.field,
        quarantine_id=record.quarantine_id,
    )
    DELIVERIES.labels(platform_name, "quarantined").inc()
    return response
