"""JSON error responses and the middleware that turns every failure into one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog
from aiohttp import web

logger = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """Build an error response: ``{"error": {"code", "message", "field"}}``."""
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return web.json_response({"error": error}, status=status, headers=headers)


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def error_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Turn aiohttp's HTTP errors and unexpected exceptions into JSON responses.

    A stack trace never reaches the client, and it is logged once here. A value
    that PostgreSQL rejects as data (a NUL character in a path segment or in
    JSON text, for example) comes from the request, so it is answered 400.
    """
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        code = _STATUS_CODES.get(exc.status, "http_error")
        message = exc.reason
        headers = None
        if exc.status == 405:
            message = f"method {request.method} is not allowed on {request.path}"
            headers = {"Allow": exc.headers.get("Allow", "")}
        elif exc.status == 404:
            message = f"no endpoint at {request.path}"
        elif exc.status == 413:
            message = exc.text or message
        return json_error(exc.status, code, message, headers=headers)
    except asyncpg.DataError as exc:
        logger.info(
            "request_rejected",
            method=request.method,
            path=request.path,
            error=type(exc).__name__,
        )
        return json_error(
            400,
            "invalid_value",
            "the request contains a value that cannot be stored, such as a NUL "
            "character",
        )
    except (
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.OperatorInterventionError,
        ConnectionError,
    ) as exc:
        logger.warning(
            "database_unavailable",
            method=request.method,
            path=request.path,
            error=type(exc).__name__,
        )
        return json_error(
            503,
            "database_unavailable",
            "PostgreSQL is not reachable; try again shortly",
            headers={"Retry-After": "5"},
        )
    except Exception:
        logger.exception("request_failed", method=request.method, path=request.path)
        return json_error(500, "internal_error", "internal error; see the server log")
