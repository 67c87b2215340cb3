"""Segment endpoints: create, edit, archive, list and read a store's segments.

Every create or edit adds a version and starts a backfill that evaluates it
for all of the store's customers. Archiving starts one that makes every
member exit. Preview and member listing live in ``handlers.segment_members``.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
import structlog
from aiohttp import web

from handlers import segment_members
from handlers.api import json_response
from handlers.backfill import setup_backfills, start_backfill
from handlers.keys import POOL_KEY
from handlers.responses import json_error
from handlers.segment_input import check_segment_id, check_segment_input, read_json
from projections.backfills import BackfillJob, create_job, latest_progress

logger = structlog.get_logger(__name__)


def segment_view(row: asyncpg.Record) -> dict[str, Any]:
    """Shape one ``segments`` row for the API."""
    return {
        "segment_id": row["segment_id"],
        "name": row["name"],
        "version": row["version"],
        "rule": orjson.loads(row["rule"]),
        "fields": orjson.loads(row["fields"]),
        "created_at": row["created_at"],
        "archived_at": row["archived_at"],
    }


async def _insert_version(
    connection: asyncpg.Connection,
    store_id: str,
    segment_id: str,
    version: int,
    name: str,
    rule: Any,
    fields: list[str],
) -> asyncpg.Record:
    row: asyncpg.Record = await connection.fetchrow(
        "INSERT INTO segments (store_id, segment_id, version, name, rule, fields) "
        "VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
        store_id,
        segment_id,
        version,
        name,
        orjson.dumps(rule).decode(),
        orjson.dumps(fields).decode(),
    )
    return row


async def _latest_row(
    connection: asyncpg.Connection | asyncpg.Pool,
    store_id: str,
    segment_id: str,
    *,
    for_update: bool = False,
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    row: asyncpg.Record | None = await connection.fetchrow(
        "SELECT * FROM segments WHERE store_id = $1 AND segment_id = $2 "
        f"ORDER BY version DESC LIMIT 1{lock}",
        store_id,
        segment_id,
    )
    return row


def _not_found(segment_id: str) -> web.Response:
    return json_error(404, "segment_not_found", f"segment {segment_id!r} not found")


async def _view_with_progress(
    connection: asyncpg.Connection, row: asyncpg.Record
) -> dict[str, Any]:
    view = segment_view(row)
    view["backfill"] = await latest_progress(
        connection, row["store_id"], row["segment_id"]
    )
    return view


async def create_segment(request: web.Request) -> web.Response:
    """``POST /api/stores/{store_id}/segments``: create version 1 of a segment.

    ``"initial_snapshot": true`` fills the memberships without change events.
    """
    store_id = request.match_info["store_id"]
    body = await read_json(request)
    checked = check_segment_input(body, is_create=True)
    if isinstance(checked, web.Response):
        return checked
    assert checked.name is not None
    segment_id = check_segment_id(body, checked.name)
    if isinstance(segment_id, web.Response):
        return segment_id

    try:
        async with (
            request.app[POOL_KEY].acquire() as connection,
            connection.transaction(),
        ):
            row = await _insert_version(
                connection,
                store_id,
                segment_id,
                1,
                checked.name,
                checked.rule,
                checked.fields,
            )
            job = await create_job(
                connection,
                store_id,
                segment_id,
                1,
                kind="evaluate",
                emit_events=not checked.initial_snapshot,
            )
            view = await _view_with_progress(connection, row)
    except asyncpg.UniqueViolationError:
        return json_error(
            409,
            "segment_exists",
            f"segment {segment_id!r} already exists; edit it with PUT",
            field="segment_id",
        )
    logger.info("segment_created", store_id=store_id, segment_id=segment_id)
    start_backfill(request.app, job)
    return json_response(view, status=201)


async def update_segment(request: web.Request) -> web.Response:
    """``PUT /api/stores/{store_id}/segments/{segment_id}``: add a version.

    A missing name or rule keeps the previous one. Every customer is
    evaluated again for the new version.
    """
    store_id = request.match_info["store_id"]
    segment_id = request.match_info["segment_id"]
    checked = check_segment_input(await read_json(request), is_create=False)
    if isinstance(checked, web.Response):
        return checked

    try:
        async with (
            request.app[POOL_KEY].acquire() as connection,
            connection.transaction(),
        ):
            latest = await _latest_row(
                connection, store_id, segment_id, for_update=True
            )
            if latest is None:
                return _not_found(segment_id)
            if latest["archived_at"] is not None:
                return json_error(
                    409,
                    "segment_archived",
                    f"segment {segment_id!r} is archived; create a new segment",
                )
            rule = checked.rule if checked.has_rule else orjson.loads(latest["rule"])
            fields = (
                checked.fields if checked.has_rule else orjson.loads(latest["fields"])
            )
            version = latest["version"] + 1
            row = await _insert_version(
                connection,
                store_id,
                segment_id,
                version,
                checked.name or latest["name"],
                rule,
                fields,
            )
            job = await create_job(
                connection,
                store_id,
                segment_id,
                version,
                kind="evaluate",
                emit_events=not checked.initial_snapshot,
            )
            view = await _view_with_progress(connection, row)
    except asyncpg.UniqueViolationError:
        return json_error(
            409,
            "segment_changed",
            f"segment {segment_id!r} was edited at the same time; read it and retry",
        )
    logger.info(
        "segment_updated", store_id=store_id, segment_id=segment_id, version=version
    )
    start_backfill(request.app, job)
    return json_response(view)


async def archive_segment(request: web.Request) -> web.Response:
    """``DELETE /api/stores/{store_id}/segments/{segment_id}``: archive it.

    The segment is no longer evaluated, and every member exits with a change
    event. Archiving an archived segment changes nothing.
    """
    store_id = request.match_info["store_id"]
    segment_id = request.match_info["segment_id"]
    job: BackfillJob | None = None
    async with (
        request.app[POOL_KEY].acquire() as connection,
        connection.transaction(),
    ):
        latest = await _latest_row(connection, store_id, segment_id, for_update=True)
        if latest is None:
            return _not_found(segment_id)
        if latest["archived_at"] is None:
            await connection.execute(
                "UPDATE segments SET archived_at = now() "
                "WHERE store_id = $1 AND segment_id = $2",
                store_id,
                segment_id,
            )
            job = await create_job(
                connection,
                store_id,
                segment_id,
                latest["version"],
                kind="archive",
                emit_events=True,
            )
        row = await _latest_row(connection, store_id, segment_id)
        assert row is not None
        view = await _view_with_progress(connection, row)
    if job is not None:
        logger.info("segment_archived", store_id=store_id, segment_id=segment_id)
        start_backfill(request.app, job)
    return json_response(view)


async def list_segments(request: web.Request) -> web.Response:
    """``GET /api/stores/{store_id}/segments``: the newest version of each.

    Archived segments are left out.
    """
    rows = await request.app[POOL_KEY].fetch(
        "SELECT DISTINCT ON (segment_id) * FROM segments WHERE store_id = $1 "
        "AND archived_at IS NULL ORDER BY segment_id, version DESC",
        request.match_info["store_id"],
    )
    return json_response({"segments": [segment_view(row) for row in rows]})


async def get_segment(request: web.Request) -> web.Response:
    """``GET /api/stores/{store_id}/segments/{segment_id}``: the newest version.

    Adds the member count and the progress of the newest backfill.
    """
    store_id = request.match_info["store_id"]
    segment_id = request.match_info["segment_id"]
    pool = request.app[POOL_KEY]
    row = await _latest_row(pool, store_id, segment_id)
    if row is None:
        return _not_found(segment_id)
    members = await pool.fetchval(
        "SELECT count(*) FROM memberships WHERE store_id = $1 AND segment_id = $2 "
        "AND is_member",
        store_id,
        segment_id,
    )
    view = segment_view(row)
    view["member_count"] = members
    view["backfill"] = await latest_progress(pool, store_id, segment_id)
    return json_response(view)


async def list_versions(request: web.Request) -> web.Response:
    """``GET /api/stores/{store_id}/segments/{segment_id}/versions``: newest first."""
    store_id = request.match_info["store_id"]
    segment_id = request.match_info["segment_id"]
    rows = await request.app[POOL_KEY].fetch(
        "SELECT * FROM segments WHERE store_id = $1 AND segment_id = $2 "
        "ORDER BY version DESC",
        store_id,
        segment_id,
    )
    if not rows:
        return _not_found(segment_id)
    return json_response(
        {"segment_id": segment_id, "versions": [segment_view(row) for row in rows]}
    )


def add_routes(app: web.Application) -> None:
    setup_backfills(app)
    base = "/api/stores/{store_id}/segments"
    app.router.add_post(base, create_segment)
    app.router.add_get(base, list_segments)
    app.router.add_post(f"{base}/preview", segment_members.preview_segment)
    app.router.add_get(base + "/{segment_id}", get_segment)
    app.router.add_put(base + "/{segment_id}", update_segment)
    app.router.add_delete(base + "/{segment_id}", archive_segment)
    app.router.add_get(base + "/{segment_id}/versions", list_versions)
    app.router.add_get(base + "/{segment_id}/members", segment_members.list_members)
