"""The local stack: one Kafka broker and one PostgreSQL cluster under a state folder.

The Kafka jars are cached in ``<state>/cache`` (override with
``CARTSTREAM_JAR_CACHE``), so they are fetched once per machine and state folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from cartstream.stack.kafka import (
    ensure_kafka_jars,
    running_kafka,
    start_kafka,
    stop_kafka,
)
from cartstream.stack.postgres import running_postgres, start_postgres, stop_postgres


def jar_cache_dir(state_dir: Path) -> Path:
    """Return the folder where the Kafka jars are cached."""
    override = os.environ.get("CARTSTREAM_JAR_CACHE", "").strip()
    return Path(override).resolve() if override else state_dir / "cache"


def stack_up(state_dir: Path) -> list[str]:
    """Start Kafka and PostgreSQL (each only if not already running)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    lib_dir = ensure_kafka_jars(jar_cache_dir(state_dir))
    kafka = start_kafka(state_dir, lib_dir)
    postgres = start_postgres(state_dir)
    return [
        f"kafka      {kafka.bootstrap_servers} (pid {kafka.pid}, log {kafka.log_path})",
        f"postgresql 127.0.0.1:{postgres.port} "
        f"(pid {postgres.pid}, log {postgres.log_path})",
        f"state      {state_dir}",
    ]


def stack_down(state_dir: Path) -> list[str]:
    """Stop PostgreSQL and Kafka; data stays in the state folder."""
    postgres = stop_postgres(state_dir)
    kafka = stop_kafka(state_dir)
    return [
        "postgresql stopped" if postgres else "postgresql was not running",
        "kafka      stopped" if kafka else "kafka      was not running",
    ]


def stack_status(state_dir: Path) -> list[str]:
    """Describe what runs from the state folder."""
    kafka = running_kafka(state_dir)
    postgres = running_postgres(state_dir)
    return [
        f"kafka      {kafka.bootstrap_servers} (pid {kafka.pid})"
        if kafka
        else "kafka      not running",
        f"postgresql 127.0.0.1:{postgres.port} (pid {postgres.pid})"
        if postgres
        else "postgresql not running",
    ]
