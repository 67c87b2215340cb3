"""The aiohttp application: webhook endpoints, the read API and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import prometheus_client
import structlog
from aiohttp import web

from cartstream.config import Settings
from handlers import api, openapi, segments_api
from handlers.backfill import BACKFILLS_KEY
from handlers.keys import PLATFORMS_KEY, POOL_KEY, PUBLISHER_KEY, SETTINGS_KEY
from handlers.platforms.registry import default_platforms
from handlers.publisher import EventPublisher
from handlers.responses import error_middleware
from handlers.webhooks import receive_delivery

logger = structlog.get_logger(__name__)


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics`` in the Prometheus text format."""
    return web.Response(
        body=prometheus_client.generate_latest(),
        headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST},
    )


async def health(request: web.Request) -> web.Response:
    """``GET /healthz``: 200 when PostgreSQL responds, else 503."""
    await request.app[POOL_KEY].fetchval("SELECT 1")
    return web.json_response({"status": "ok"})


def build_app(
    settings: Settings, *, pool: asyncpg.Pool | None = None
) -> web.Application:
    """Build the receiver and API application; it opens its own pool and producer
    unless a pool is given."""
    app = web.Application(
        middlewares=[error_middleware, api.auth_middleware],
        client_max_size=settings.max_body_bytes,
        # aiohttp's HTTP parser rejects a request over these limits with a
        # plain-text 400, before the JSON error middleware runs.
        handler_args={
            "max_line_size": settings.max_request_line_bytes,
            "max_field_size": settings.max_header_bytes,
            "max_headers": settings.max_headers,
        },
    )
    app[SETTINGS_KEY] = settings
    app[PLATFORMS_KEY] = default_platforms(
        timestamp_tolerance_s=settings.webhook_timestamp_tolerance_s
    )
    app[BACKFILLS_KEY] = set()

    async def resources(app: web.Application) -> AsyncIterator[None]:
        own_pool = pool is None
        app[POOL_KEY] = pool or await asyncpg.create_pool(
            settings.database_url, min_size=1, max_size=10
        )
        publisher = EventPublisher(settings)
        await publisher.start()
        app[PUBLISHER_KEY] = publisher
        yield
        backfills = app[BACKFILLS_KEY]
        for task in list(backfills):
            task.cancel()
        await publisher.stop()
        if own_pool:
            await app[POOL_KEY].close()

    app.cleanup_ctx.append(resources)
    app.router.add_post("/webhooks/{platform}/{store_id}", receive_delivery)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", health)
    api.add_routes(app)
    segments_api.add_routes(app)
    openapi.add_routes(app)
    return app
