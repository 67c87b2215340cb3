"""Background evaluation of a new or edited segment for all of a store's customers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog
from aiohttp import web

from handlers.keys import POOL_KEY, SETTINGS_KEY
from projections.segments import SegmentCache, backfill_segment

logger = structlog.get_logger(__name__)

BACKFILLS_KEY = web.AppKey("backfills", set[asyncio.Task[int]])


def start_backfill(app: web.Application, store_id: str, segment_id: str) -> None:
    """Start evaluating a segment for every customer; the task ends with the app."""
    settings = app[SETTINGS_KEY]

    async def run() -> int:
        changes = await backfill_segment(
            app[POOL_KEY],
            SegmentCache(),
            store_id,
            segment_id,
            topic=settings.topics.segment_changes,
            now=datetime.now(UTC),
        )
        logger.info(
            "segment_backfilled",
            store_id=store_id,
            segment_id=segment_id,
            membership_changes=changes,
        )
        return changes

    task = asyncio.create_task(run())
    app[BACKFILLS_KEY].add(task)
    task.add_done_callback(app[BACKFILLS_KEY].discard)
