"""Schema migrations: numbered SQL files applied once each, in order."""

from __future__ import annotations

from importlib import resources

import asyncpg
import structlog

logger = structlog.get_logger(__name__)

# Any fixed number works; it keeps two processes from migrating at once.
MIGRATION_LOCK_ID = 0x63617274


def migration_files() -> list[tuple[str, str]]:
    """Return (name, SQL) of every migration, sorted by name."""
    folder = resources.files("projections") / "migrations"
    files = [entry for entry in folder.iterdir() if entry.name.endswith(".sql")]
    return [(entry.name, entry.read_text()) for entry in sorted(files, key=str)]


async def migrate(connection: asyncpg.Connection) -> list[str]:
    """Apply the migrations this database lacks; return their names."""
    applied_now: list[str] = []
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_ID)
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        rows = await connection.fetch("SELECT name FROM schema_migrations")
        done = {row["name"] for row in rows}
        for name, sql in migration_files():
            if name in done:
                continue
            await connection.execute(sql)
            await connection.execute(
                "INSERT INTO schema_migrations (name) VALUES ($1)", name
            )
            applied_now.append(name)

    if applied_now:
        logger.info("migrations_applied", names=applied_now)
    return applied_now
