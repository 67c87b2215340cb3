"""``GET /openapi.json``: the OpenAPI 3.1 description of every endpoint.

The description is kept by hand in ``handlers/openapi.json``, and a test
checks that it names every route the application serves.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from aiohttp import web


@cache
def openapi_document() -> bytes:
    """Return the description's JSON bytes, read once per process."""
    return (resources.files("handlers") / "openapi.json").read_bytes()


async def serve_openapi(request: web.Request) -> web.Response:
    """Handle ``GET /openapi.json``."""
    return web.Response(body=openapi_document(), content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/openapi.json", serve_openapi)
