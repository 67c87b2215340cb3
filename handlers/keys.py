"""Typed keys of the aiohttp application's shared state."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from cartstream.config import Settings
from handlers.platforms.base import Platform
from handlers.publisher import EventPublisher

SETTINGS_KEY = web.AppKey("settings", Settings)
POOL_KEY = web.AppKey("pool", asyncpg.Pool)
PUBLISHER_KEY = web.AppKey("publisher", EventPublisher)
PLATFORMS_KEY = web.AppKey("platforms", dict[str, Platform])
