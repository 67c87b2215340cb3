"""Segment endpoints: create, list and read segments of a store."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import orjson
import structlog
from aiohttp import web

from handlers.api import json_response
from handlers.backfill import start_backfill
from handlers.keys import POOL_KEY
from handlers.responses import json_error
from projections.catalogue import load_catalogue
from projections.rules import InvalidRuleError, compile_segment_rule
from projections.rules.validate import validate_rule

logger = structlog.get_logger(__name__)

SEGMENT_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


async def _read_json(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(
            text=orjson.dumps(
                {
                    "error": {
                        "code": "unsupported_media_type",
                        "message": "send the body as application/json",
                    }
                }
            ).decode(),
            content_type="application/json",
        )
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise web.HTTPBadRequest(
            text=orjson.dumps(
                {"error": {"code": "invalid_json", "message": "body is not valid JSON"}}
            ).decode(),
            content_type="application/json",
        ) from None


def _segment_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "segment_id": row["segment_id"],
        "name": row["name"],
        "version": row["version"],
        "rule": orjson.loads(row["rule"]),
        "fields": orjson.loads(row["fields"]),
        "created_at": row["created_at"],
    }


def _check_segment_body(body: Any) -> tuple[str | None, str, Any] | web.Response:
    if not isinstance(body, dict):
        return json_error(400, "invalid_segment", "body must be a JSON object")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        return json_error(400, "invalid_segment", "name is missing", field="name")
    if "rule" not in body:
        return json_error(400, "invalid_segment", "rule is missing", field="rule")
    segment_id = body.get("segment_id")
    if segment_id is not None and (
        not isinstance(segment_id, str) or not SEGMENT_ID_PATTERN.match(segment_id)
    ):
        return json_error(
            400,
            "invalid_segment",
            "segment_id must be 1-63 lower-case letters, digits, dashes or underscores",
            field="segment_id",
        )
    try:
        validate_rule(body["rule"], load_catalogue())
    except InvalidRuleError as exc:
        return json_error(400, "invalid_rule", str(exc), field="rule")
    return segment_id, name.strip(), body["rule"]


async def create_segment(request: web.Request) -> web.Response:
    """``POST /api/stores/{store_id}/segments``: create version 1 of a segment."""
    store_id = request.match_info["store_id"]
    checked = _check_segment_body(await _read_json(request))
    if isinstance(checked, web.Response):
        return checked
    segment_id, name, rule = checked
    if segment_id is None:
        segment_id = (
            re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63] or "segment"
        )
    fields = sorted(compile_segment_rule(rule).fields)
    pool = request.app[POOL_KEY]
    try:
        row = await pool.fetchrow(
            "INSERT INTO segments (store_id, segment_id, version, name, rule, fields) "
            "VALUES ($1, $2, 1, $3, $4, $5) RETURNING *",
            store_id,
            segment_id,
            name,
            orjson.dumps(rule).decode(),
            orjson.dumps(fields).decode(),
        )
    except asyncpg.UniqueViolationError:
        return json_error(
            409,
            "segment_exists",
            f"segment {segment_id!r} already exists",
            field="segment_id",
        )
    logger.info("segment_created", store_id=store_id, segment_id=segment_id)
    start_backfill(request.app, store_id, segment_id)
    return json_response(_segment_view(row), status=201)


async def list_segments(request: web.Request) -> web.Response:
    """``GET /api/stores/{store_id}/segments``: the newest version of each."""
    rows = await request.app[POOL_KEY].fetch(
        "SELECT DISTINCT ON (segment_id) * FROM segments WHERE store_id = $1 "
        "ORDER BY segment_id, version DESC",
        request.match_info["store_id"],
    )
    return json_response({"segments": [_segment_view(row) for row in rows]})


async def get_segment(request: web.Request) -> web.Response:
    """``GET /api/stores/{store_id}/segments/{segment_id}`` with its member count."""
    store_id = request.match_info["store_id"]
    segment_id = request.match_info["segment_id"]
    pool = request.app[POOL_KEY]
    row = await pool.fetchrow(
        "SELECT * FROM segments WHERE store_id = $1 AND segment_id = $2 "
        "ORDER BY version DESC LIMIT 1",
        store_id,
        segment_id,
    )
    if row is None:
        return json_error(404, "segment_not_found", f"segment {segment_id!r} not found")
    members = await pool.fetchval(
        "SELECT count(*) FROM memberships WHERE store_id = $1 AND segment_id = $2 "
        "AND is_member",
        store_id,
        segment_id,
    )
    view = _segment_view(row)
    view["member_count"] = members
    return json_response(view)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/stores/{store_id}/segments", create_segment)
    app.router.add_get("/api/stores/{store_id}/segments", list_segments)
    app.router.add_get("/api/stores/{store_id}/segments/{segment_id}", get_segment)
