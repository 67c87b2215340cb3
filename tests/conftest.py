"""Shared fixtures: the real local stack once per session, fresh names per test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from cartstream.config import Settings, Topics, load_settings
from cartstream.stack.kafka import ensure_kafka_jars, start_kafka, stop_kafka
from cartstream.stack.ports import free_port
from cartstream.stack.postgres import start_postgres, stop_postgres
from cartstream.topics import ensure_topics
from projections.migrate import migrate

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def stack_dir() -> Path:
    """The state folder of the test stack, apart from the user's own stack."""
    path = ROOT / ".cartstream" / f"test-stack-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def stack(stack_dir: Path) -> Iterator[Settings]:
    """Start a real Kafka broker and PostgreSQL server for the test session."""
    # The jars are shared by every test session and the user's own stack.
    cache = os.environ.get("CARTSTREAM_JAR_CACHE") or ROOT / ".cartstream" / "cache"
    lib_dir = ensure_kafka_jars(Path(cache).resolve())
    kafka = start_kafka(stack_dir, lib_dir)
    postgres = start_postgres(stack_dir)
    settings = load_settings(
        {
            "CARTSTREAM_STATE_DIR": str(stack_dir),
            "CARTSTREAM_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
            "CARTSTREAM_DATABASE_URL": postgres.database_url,
            "CARTSTREAM_PARTITIONS": "3",
        }
    )
    yield settings
    stop_postgres(stack_dir)
    stop_kafka(stack_dir)
    shutil.rmtree(stack_dir, ignore_errors=True)


@pytest.fixture
async def settings(stack: Settings) -> AsyncIterator[Settings]:
    """Settings with a fresh database and fresh topics for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin_url = stack.database_url.rsplit("/", 1)[0] + "/postgres"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()

    test_settings = replace(
        stack,
        database_url=type(stack.database_url)(
            stack.database_url.rsplit("/", 1)[0] + f"/{name}"
        ),
        topics=Topics(prefix=f"{name}-"),
        consumer_group=f"{name}-projections",
        http_port=free_port(),
        publish_timeout_ms=5000,
    )
    connection = await asyncpg.connect(test_settings.database_url)
    await migrate(connection)
    await connection.close()
    await ensure_topics(test_settings)
    yield test_settings

    admin = await asyncpg.connect(admin_url)
    with contextlib.suppress(asyncpg.PostgresError):
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    await admin.close()


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=5)
    yield pool
    await pool.close()


@contextlib.asynccontextmanager
async def running_services(
    settings: Settings, *, serve: bool = True, consume: bool = True
) -> AsyncIterator[asyncio.Event]:
    """Run the services in this event loop until the block ends."""
    from cartstream.runner import run_services

    stop = asyncio.Event()
    task = asyncio.create_task(
        run_services(
            settings, serve=serve, consume=consume, stop=stop, handle_signals=False
        )
    )
    try:
        if serve:
            await _wait_for_port(settings.http_host, settings.http_port, task)
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def _wait_for_port(host: str, port: int, task: asyncio.Task[None]) -> None:
    for _ in range(300):
        if task.done():
            task.result()
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise TimeoutError(f"services did not listen on {host}:{port}")
