"""Backfill tasks of the API process: run segment jobs and resume them at start-up.

A job's progress is stored with each batch (``projections.backfills``), so
jobs that a stop or a crash interrupted continue when the API starts again.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import structlog
from aiohttp import web

from handlers.keys import POOL_KEY, SETTINGS_KEY
from projections.backfills import BackfillJob, mark_failed, run_job, unfinished_jobs
from projections.segments import SegmentCache

logger = structlog.get_logger(__name__)

# Each running job keeps one pooled connection for its whole run.
MAX_RUNNING_BACKFILLS = 2
RETRY_DELAY_S = 1.0

BACKFILLS_KEY = web.AppKey("backfills", set[asyncio.Task[None]])
_SLOTS_KEY = web.AppKey("backfill_slots", asyncio.Semaphore)
_CACHE_KEY = web.AppKey("backfill_cache", SegmentCache)

_TRANSIENT_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    OSError,
)


def setup_backfills(app: web.Application) -> None:
    """Resume unfinished jobs when the app starts and stop running ones at shutdown."""
    app[_SLOTS_KEY] = asyncio.Semaphore(MAX_RUNNING_BACKFILLS)
    app[_CACHE_KEY] = SegmentCache()
    app.on_startup.append(resume_backfills)
    app.on_shutdown.append(stop_backfills)


def start_backfill(app: web.Application, job: BackfillJob) -> None:
    """Run a job in the background; at most ``MAX_RUNNING_BACKFILLS`` run at once."""
    task = asyncio.create_task(_run(app, job))
    app[BACKFILLS_KEY].add(task)
    task.add_done_callback(app[BACKFILLS_KEY].discard)


async def resume_backfills(app: web.Application) -> None:
    """Start every queued or running job stored in the database.

    NOTE: jobs are resumed only here, at start-up. A job whose process died
    waits for the next start of an API process, even while others run.
    """
    async with app[POOL_KEY].acquire() as connection:
        jobs = await unfinished_jobs(connection)
    for job in jobs:
        logger.info("backfill_resumed", **_log_ids(job))
        start_backfill(app, job)


async def stop_backfills(app: web.Application) -> None:
    """Cancel running jobs and wait for them; they stay resumable."""
    running: set[asyncio.Task[None]] = app[BACKFILLS_KEY]
    tasks = list(running)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _run(app: web.Application, job: BackfillJob) -> None:
    settings = app[SETTINGS_KEY]
    pool = app[POOL_KEY]
    attempt = 0
    async with app[_SLOTS_KEY]:
        while True:
            attempt += 1
            try:
                async with pool.acquire() as connection:
                    status = await run_job(
                        connection,
                        app[_CACHE_KEY],
                        job,
                        topic=settings.topics.segment_changes,
                        clock=_utc_now,
                    )
            except _TRANSIENT_ERRORS as exc:
                logger.warning(
                    "backfill_retried",
                    **_log_ids(job),
                    attempt=attempt,
                    error=type(exc).__name__,
                )
                await asyncio.sleep(min(RETRY_DELAY_S * attempt, 30.0))
                continue
            except Exception as exc:
                # The task boundary: nothing above this handles the error.
                logger.exception("backfill_failed", **_log_ids(job))
                try:
                    await mark_failed(pool, job, type(exc).__name__)
                except (asyncpg.PostgresError, *_TRANSIENT_ERRORS) as mark_error:
                    # The job stays queued or running and resumes at start-up.
                    logger.warning(
                        "backfill_not_marked_failed",
                        **_log_ids(job),
                        error=type(mark_error).__name__,
                    )
                return
            logger.info("backfill_finished", **_log_ids(job), status=status)
            return


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _log_ids(job: BackfillJob) -> dict[str, object]:
    return {
        "store_id": job.store_id,
        "segment_id": job.segment_id,
        "segment_version": job.segment_version,
        "kind": job.kind,
    }
