"""A throwaway Kafka broker and PostgreSQL server for one benchmark run."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from cartstream.config import Settings, load_settings
from cartstream.stack.kafka import ensure_kafka_jars, start_kafka, stop_kafka
from cartstream.stack.postgres import start_postgres, stop_postgres

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def private_stack(env: Mapping[str, str] | None = None) -> Iterator[Settings]:
    """Start both servers in a temporary state folder; stop and delete it after.

    ``env`` adds ``CARTSTREAM_*`` settings to the ones that point at the servers.
    """
    state_dir = Path(
        tempfile.mkdtemp(prefix="cartstream-bench-", dir=ROOT / ".cartstream")
    )
    try:
        kafka = start_kafka(
            state_dir, ensure_kafka_jars(ROOT / ".cartstream" / "cache")
        )
        postgres = start_postgres(state_dir)
        yield load_settings(
            {
                "CARTSTREAM_STATE_DIR": str(state_dir),
                "CARTSTREAM_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
                "CARTSTREAM_DATABASE_URL": postgres.database_url,
                **(env or {}),
            }
        )
    finally:
        stop_postgres(state_dir)
        stop_kafka(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)
