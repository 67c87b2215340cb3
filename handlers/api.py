"""The read and admin API for merchants and the messaging service.

Every route under ``/api/stores/{store_id}`` needs ``Authorization: Bearer
<token>`` with that store's API token.
"""

from __future__ import annotations

import base64
import binascii
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
import structlog
from aiohttp import web

from handlers.keys import POOL_KEY
from handlers.responses import Handler, json_error
from projections.catalogue import load_catalogue
from projections.stores import store_for_token

logger = structlog.get_logger(__name__)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError


def json_response(body: Any, status: int = 200) -> web.Response:
    """Serialise with orjson; datetimes as RFC 3339, decimals as strings."""
    return web.Response(
        body=orjson.dumps(body, default=_default, option=orjson.OPT_UTC_Z),
        status=status,
        content_type="application/json",
    )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the bearer token of every ``/api/stores/...`` request."""
    store_id = request.match_info.get("store_id")
    if not request.path.startswith("/api/stores/") or store_id is None:
        return await handler(request)

    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return json_error(
            401, "unauthorized", "missing bearer token in the Authorization header"
        )
    owner = await store_for_token(request.app[POOL_KEY], token.strip())
    if owner is None:
        return json_error(401, "unauthorized", "invalid API token")
    if owner != store_id:
        return json_error(
            403, "forbidden", f"this token does not grant access to store {store_id!r}"
        )
    return await handler(request)


def _page_size(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_PAGE_SIZE))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise web.HTTPBadRequest(
            text=orjson.dumps(
                {
                    "error": {
                        "code": "invalid_limit",
                        "message": (
                            f"limit must be an integer from 1 to {MAX_PAGE_SIZE}"
                        ),
                        "field": "limit",
                    }
                }
            ).decode(),
            content_type="application/json",
        )
    return int(raw)


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any] | None:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = orjson.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        return None
    return values


def _invalid_cursor() -> web.Response:
    return json_error(
        400, "invalid_cursor", "cursor is not one this API issued", field="cursor"
    )


def _customer_summary(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "customer_key": row["customer_key"],
        "customer_id": row["customer_id"],
        "email": row["email"],
        "first_name": row["first_name"],
        "last_name": row["last_name"],
        "last_order_id": row["last_order_id"],
        "last_order_at": row["last_order_at"],
        "lifetime_orders": row["lifetime_orders"],
        "lifetime_sales": row["lifetime_sales"],
        "currency": row["currency"],
        "email_opt_in": row["email_opt_in"],
    }


async def list_customers(request: web.Request) -> web.Response:
    """``GET /api/stores/{store_id}/customers``: newest last order id first."""
    store_id = request.match_info["store_id"]
    limit = _page_size(request)
    cursor = request.query.get("cursor")
    pool = request.app[POOL_KEY]
    if cursor:
        after = decode_cursor(cursor)
        if after is None or len(after) != 2:
            return _invalid_cursor()
        rows = await pool.fetch(
            "SELECT * FROM customers WHERE store_id = $1 "
            "AND (last_order_sort, customer_key) < ($2, $3) "
            "ORDER BY last_order_sort DESC, customer_key DESC LIMIT $4",
            store_id,
            after[0],
            after[1],
            limit + 1,
        )
    else:
        rows = await pool.fetch(
            "SELECT * FROM customers WHERE store_id = $1 "
            "ORDER BY last_order_sort DESC, customer_key DESC LIMIT $2",
            store_id,
            limit + 1,
        )
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = encode_cursor([last["last_order_sort"], last["customer_key"]])
    return json_response(
        {
            "customers": [_customer_summary(row) for row in page],
            "next_cursor": next_cursor,
        }
    )


def customer_details(
    row: asyncpg.Record, segments: list[asyncpg.Record]
) -> dict[str, Any]:
    """Shape one customers row and its memberships for the API."""
    details = _customer_summary(row)
    details.update(
        {
            "country": row["country"],
            "tags": orjson.loads(row["tags"]),
            "customer_created_at": row["customer_created_at"],
            "email_opt_in_at": row["email_opt_in_at"],
            "total_products": row["total_products"],
            "first_order_id": row["first_order_id"],
            "first_order_at": row["first_order_at"],
            "average_purchase_frequency_days": row["average_purchase_frequency_days"],
            "checkouts": {
                "started": row["checkouts_started"],
                "completed": row["checkouts_completed"],
                "abandoned": row["checkouts_abandoned"],
                "open_cart_value": row["open_cart_value"],
            },
            "latest_orders": orjson.loads(row["latest_orders"]),
            "top_purchases": orjson.loads(row["top_purchases"]),
            "messages": {
                "sent": row["messages_sent"],
                "opened": row["messages_opened"],
                "clicked": row["messages_clicked"],
            },
            "workflow_stats": orjson.loads(row["workflow_stats"]),
            "conversion_rate": row["conversion_rate"],
            "conversion_totals": {
                "orders": row["converted_orders"],
                "revenue": row["converted_revenue"],
            },
            "segments": [
                {
                    "segment_id": segment["segment_id"],
                    "name": segment["name"],
                    "since": segment["changed_at"],
                    "membership_version": segment["version"],
                }
                for segment in segments
            ],
            "updated_at": row["updated_at"],
        }
    )
    return details


async def get_customer(request: web.Request) -> web.Response:
    """``GET /api/stores/{store_id}/customers/{customer_key}``."""
    store_id = request.match_info["store_id"]
    key = request.match_info["customer_key"]
    pool = request.app[POOL_KEY]
    row = await pool.fetchrow(
        "SELECT * FROM customers WHERE store_id = $1 AND customer_key = $2",
        store_id,
        key,
    )
    if row is None:
        return json_error(404, "customer_not_found", f"customer {key!r} not found")
    segments = await pool.fetch(
        """
        SELECT m.segment_id, m.changed_at, m.version, s.name
        FROM memberships m
        JOIN LATERAL (
            SELECT name FROM segments
            WHERE store_id = m.store_id AND segment_id = m.segment_id
            ORDER BY version DESC LIMIT 1
        ) s ON true
        WHERE m.store_id = $1 AND m.customer_key = $2 AND m.is_member
        ORDER BY m.segment_id
        """,
        store_id,
        key,
    )
    return json_response(customer_details(row, list(segments)))


async def list_fields(request: web.Request) -> web.Response:
    """``GET /api/fields``: the catalogue of fields a rule may read."""
    return json_response(
        {
            "fields": [
                {"name": f.name, "type": f.type, "description": f.description}
                for f in load_catalogue().values()
            ]
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/fields", list_fields)
    app.router.add_get("/api/stores/{store_id}/customers", list_customers)
    app.router.add_get("/api/stores/{store_id}/customers/{customer_key}", get_customer)
