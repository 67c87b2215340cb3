"""The OpenAPI description names exactly the routes the application serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cartstream.config import Secret, Settings
from handlers.app import build_app
from handlers.openapi import openapi_document
from handlers.platforms.registry import default_platforms

ROOT = Path(__file__).resolve().parents[2]
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}


def documented_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def served_routes() -> set[tuple[str, str]]:
    """Return (method, path) of every route; the platform segment is expanded."""
    settings = Settings(state_dir=ROOT, kafka_bootstrap="", database_url=Secret(""))
    app = build_app(settings)
    routes = set()
    for route in app.router.routes():
        # aiohttp adds HEAD beside each GET.
        if route.method == "HEAD":
            continue
        path = route.resource.canonical if route.resource else ""
        if "{platform}" in path:
            for name in default_platforms():
                routes.add((route.method, path.replace("{platform}", name)))
        else:
            routes.add((route.method, path))
    return routes


def test_description_lists_every_served_route() -> None:
    document = json.loads((ROOT / "handlers" / "openapi.json").read_text())
    assert documented_routes(document) == served_routes()


def test_description_is_openapi_3_1_with_error_schema() -> None:
    document = json.loads(openapi_document())
    assert document["openapi"] == "3.1.0"
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert error["properties"]["error"]["required"] == ["code", "message"]
