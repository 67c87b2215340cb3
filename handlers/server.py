"""An aiohttp runner whose HTTP parse errors are JSON, like every other error.

aiohttp rejects a request it cannot parse (a header or request line over the
limits, a malformed request line) before any middleware runs. It sends a
plain-text body and logs the request at ERROR with a traceback. On the open
internet that is ordinary hostile traffic, so it gets the project's JSON error
body and one info line instead. Server errors (5xx) keep aiohttp's handling.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

logger = structlog.get_logger(__name__)


class JsonErrorRequestHandler(RequestHandler):
    """A connection handler that responds to parse errors with a JSON body."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)

        reason = message or "the request could not be parsed"
        logger.info(
            "request_unparsable",
            status=status,
            error=type(exc).__name__ if exc is not None else None,
            reason=reason,
        )
        response = web.json_response(
            {"error": {"code": "bad_request", "message": reason}}, status=status
        )
        response.force_close()
        return response


class JsonErrorServer(web.Server):
    """A server that makes its connections with ``JsonErrorRequestHandler``."""

    def __call__(self) -> RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorAppRunner(web.AppRunner):
    """An ``AppRunner`` that serves the application through ``JsonErrorServer``."""

    async def _make_server(self) -> web.Server:
        # NOTE: this copies aiohttp's own server with the private _loop and
        # _kwargs attributes (aiohttp 3.x); recheck on an aiohttp major release.
        server = await super()._make_server()
        kwargs: dict[str, Any] = dict(server._kwargs)
        return JsonErrorServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **kwargs,
        )
