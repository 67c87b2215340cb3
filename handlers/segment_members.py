"""Using segments: preview an unsaved rule and page through a segment's members.

The member list serves on-demand sends, so it carries each member's email and
customer id and can be limited to customers opted in to email.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from handlers.api import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    decode_cursor,
    encode_cursor,
    json_response,
)
from handlers.keys import POOL_KEY
from handlers.responses import json_error
from handlers.segment_input import check_rule, read_json
from projections.catalogue import customer_record, fields_read, reads_abandoned_checkout
from projections.rules import RuleError, compile_segment_rule
from projections.segments import customer_columns

logger = structlog.get_logger(__name__)

PREVIEW_SAMPLE_SIZE = 20
# Rows fetched per round trip while a preview reads every customer.
PREVIEW_PREFETCH_ROWS = 1000


def _customer_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "customer_key": row["customer_key"],
        "customer_id": row["customer_id"],
        "email": row["email"],
        "first_name": row["first_name"],
        "last_name": row["last_name"],
        "email_opt_in": row["email_opt_in"],
    }


async def preview_segment(request: web.Request) -> web.Response:
    """``POST /api/stores/{store_id}/segments/preview``: evaluate an unsaved rule.

    Body ``{"rule": ...}``. Returns how many of the store's customers match
    now and up to ``PREVIEW_SAMPLE_SIZE`` of them, by customer key.
    """
    store_id = request.match_info["store_id"]
    body = await read_json(request)
    if not isinstance(body, dict) or "rule" not in body:
        return json_error(400, "invalid_segment", "rule is missing", field="rule")
    checked = check_rule(body["rule"])
    if isinstance(checked, web.Response):
        return checked
    compiled = compile_segment_rule(body["rule"])
    columns = customer_columns(reads_abandoned_checkout(fields_read(compiled.fields)))

    now = datetime.now(UTC)
    total = 0
    matched = 0
    sample: list[dict[str, Any]] = []
    async with (
        request.app[POOL_KEY].acquire() as connection,
        connection.transaction(readonly=True),
    ):
        rows = connection.cursor(
            f"SELECT {columns} FROM customers c WHERE c.store_id = $1 "
            "ORDER BY c.customer_key",
            store_id,
            prefetch=PREVIEW_PREFETCH_ROWS,
        )
        async for row in rows:
            total += 1
            try:
                is_match = compiled.matches(customer_record(row, now))
            except RuleError as exc:
                return json_error(
                    400,
                    "invalid_rule",
                    f"rule failed on customer {row['customer_key']!r}: {exc}",
                    field="rule",
                )
            if not is_match:
                continue
            matched += 1
            if len(sample) < PREVIEW_SAMPLE_SIZE:
                sample.append(_customer_view(row))

    return json_response(
        {
            "matched": matched,
            "total": total,
            "sample": sample,
            "fields": checked,
            "evaluated_at": now,
        }
    )


def _query_error(code: str, message: str, field: str) -> web.Response:
    return json_error(400, code, message, field=field)


async def list_members(request: web.Request) -> web.Response:
    """``GET /api/stores/{store_id}/segments/{segment_id}/members``.

    Query: ``opted_in=true`` keeps members whose email opt-in is subscribed;
    ``limit`` (1-500, default 50) and ``cursor`` page through members by
    customer key.
    """
    store_id = request.match_info["store_id"]
    segment_id = request.match_info["segment_id"]

    opted_in = request.query.get("opted_in", "false")
    if opted_in not in ("true", "false"):
        return _query_error(
            "invalid_opted_in", "opted_in must be true or false", "opted_in"
        )
    raw_limit = request.query.get("limit", str(DEFAULT_PAGE_SIZE))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE_SIZE:
        return _query_error(
            "invalid_limit",
            f"limit must be an integer from 1 to {MAX_PAGE_SIZE}",
            "limit",
        )
    limit = int(raw_limit)
    after = ""
    cursor = request.query.get("cursor")
    if cursor:
        values = decode_cursor(cursor)
        if values is None or len(values) != 1:
            return _query_error(
                "invalid_cursor", "cursor is not one this API issued", "cursor"
            )
        after = values[0]

    pool = request.app[POOL_KEY]
    exists = await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM segments WHERE store_id = $1 "
        "AND segment_id = $2)",
        store_id,
        segment_id,
    )
    if not exists:
        return json_error(404, "segment_not_found", f"segment {segment_id!r} not found")
    opt_in_sql = "AND c.email_opt_in = 'subscribed' " if opted_in == "true" else ""
    rows = await pool.fetch(
        "SELECT c.*, m.changed_at AS member_since, m.version AS membership_version, "
        "m.segment_version FROM memberships m JOIN customers c "
        "ON c.store_id = m.store_id AND c.customer_key = m.customer_key "
        "WHERE m.store_id = $1 AND m.segment_id = $2 AND m.is_member "
        f"AND m.customer_key > $3 {opt_in_sql}"
        "ORDER BY m.customer_key LIMIT $4",
        store_id,
        segment_id,
        after,
        limit + 1,
    )
    page = rows[:limit]
    members = []
    for row in page:
        member = _customer_view(row)
        member["since"] = row["member_since"]
        member["membership_version"] = row["membership_version"]
        member["segment_version"] = row["segment_version"]
        members.append(member)
    next_cursor = (
        encode_cursor([page[-1]["customer_key"]]) if len(rows) > limit else None
    )
    return json_response({"members": members, "next_cursor": next_cursor})
