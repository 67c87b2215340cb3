"""Runs the receiver, the consumer and the outbox relay until a signal stops them."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import asyncpg
import structlog
from aiohttp import web

from cartstream.config import Settings
from cartstream.topics import ensure_topics
from consumer.hydrator import run_hydrator
from consumer.relay import OutboxRelay
from consumer.runtime import ProjectionConsumer
from consumer.scheduler import SegmentScheduler
from handlers.app import build_app
from handlers.server import JsonErrorAppRunner
from projections.migrate import migrate

logger = structlog.get_logger(__name__)


async def prepare(settings: Settings) -> None:
    """Apply database migrations and create the Kafka topics."""
    connection = await asyncpg.connect(settings.database_url)
    try:
        await migrate(connection)
    finally:
        await connection.close()
    await ensure_topics(settings)


async def run_services(
    settings: Settings,
    *,
    serve: bool = True,
    consume: bool = True,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
) -> None:
    """Run the chosen services until SIGINT, SIGTERM or ``stop``."""
    stop = stop or asyncio.Event()
    if handle_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)

    await prepare(settings)
    pool = await asyncpg.create_pool(settings.database_url, min_size=2, max_size=10)
    tasks: list[asyncio.Task[None]] = []
    runner: web.AppRunner | None = None
    try:
        if consume:
            tasks.append(
                asyncio.create_task(ProjectionConsumer(settings, pool).run(stop))
            )
            relay = OutboxRelay(pool, settings.kafka_bootstrap)
            tasks.append(asyncio.create_task(relay.run(stop)))
            tasks.append(asyncio.create_task(run_hydrator(settings, pool, stop)))
            scheduler = SegmentScheduler(
                pool,
                topic=settings.topics.segment_changes,
                interval_s=settings.segment_tick_s,
            )
            tasks.append(asyncio.create_task(scheduler.run(stop)))
        if serve:
            runner = JsonErrorAppRunner(build_app(settings, pool=pool), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, settings.http_host, settings.http_port)
            await site.start()
            logger.info(
                "http_started", host=settings.http_host, port=settings.http_port
            )

        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait(
            [stopper, *tasks], return_when=asyncio.FIRST_COMPLETED
        )
        stop.set()
        stopper.cancel()
        # A service that ended on its own failed; re-raise its error.
        for task in done:
            if task is not stopper and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        stop.set()
        if runner is not None:
            await runner.cleanup()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(
                result, asyncio.CancelledError
            ):
                logger.error("service_failed", error=repr(result))
        await pool.close()
        logger.info("services_stopped")
