"""Settings: the only module that reads the environment (prefix ``CARTSTREAM_``).

Kafka and PostgreSQL default to the local stack that ``cartstream stack up``
starts; set ``CARTSTREAM_KAFKA_BOOTSTRAP`` and ``CARTSTREAM_DATABASE_URL`` to use
servers of your own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cartstream.errors import ConfigError

PREFIX = "CARTSTREAM_"


class Secret(str):
    """A string whose repr is masked, so it never lands in a log or traceback."""

    def __repr__(self) -> str:
        return "Secret('**********')"


@dataclass(frozen=True)
class Topics:
    """Kafka topic names; a prefix lets several deployments share a cluster."""

    prefix: str = ""

    @property
    def events(self) -> str:
        return f"{self.prefix}store-events"

    @property
    def quarantine(self) -> str:
        return f"{self.prefix}deliveries-quarantine"

    @property
    def segment_changes(self) -> str:
        return f"{self.prefix}segment-changes"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}store-events-dead-letter"


@dataclass(frozen=True)
class Settings:
    """Every setting of a cartstream process, read once at start-up."""

    state_dir: Path
    kafka_bootstrap: str
    database_url: Secret
    topics: Topics = field(default_factory=Topics)
    partitions: int = 6
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    max_body_bytes: int = 1_048_576
    max_json_depth: int = 64
    body_read_timeout_s: int = 30
    # HTTP parser limits that aiohttp enforces before a handler runs. The
    # defaults are aiohttp's own (3.14).
    max_request_line_bytes: int = 8190
    max_header_bytes: int = 8190
    max_headers: int = 128
    # Largest accepted gap between a Standard Webhooks ``webhook-timestamp``
    # and the time of receipt, in either direction.
    webhook_timestamp_tolerance_s: int = 300
    # How long a delivery id is remembered to drop a platform's retries.
    dedupe_window_hours: int = 72
    bigcommerce_api_url: str = "https://api.bigcommerce.com"
    publish_timeout_ms: int = 10_000
    consumer_group: str = "cartstream-projections"
    batch_max_records: int = 500
    attribution_window_days: int = 5
    segment_tick_s: int = 60
    log_format: str = "console"
    log_level: str = "info"


def _read(env: Mapping[str, str], key: str) -> str | None:
    value = env.get(PREFIX + key)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _int(env: Mapping[str, str], key: str, default: int, minimum: int = 0) -> int:
    raw = _read(env, key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{key} must be an integer") from None
    if value < minimum:
        raise ConfigError(f"{PREFIX}{key} must be at least {minimum}")
    return value


def _choice(env: Mapping[str, str], key: str, default: str, allowed: set[str]) -> str:
    value = (_read(env, key) or default).lower()
    if value not in allowed:
        names = ", ".join(sorted(allowed))
        raise ConfigError(f"{PREFIX}{key} must be one of {names}")
    return value


def _url(env: Mapping[str, str], key: str, default: str) -> str:
    value = _read(env, key) or default
    if not value.startswith(("https://", "http://")):
        raise ConfigError(f"{PREFIX}{key} must be an http:// or https:// URL")
    return value.rstrip("/")


def state_dir_from(env: Mapping[str, str]) -> Path:
    """Return the folder of the local stack's data, logs and caches."""
    return Path(_read(env, "STATE_DIR") or ".cartstream").resolve()


def _local_stack_value(state_dir: Path, service: str, key: str) -> str | None:
    node_file = state_dir / service / "node.json"
    try:
        node = json.loads(node_file.read_text())
    except (OSError, ValueError):
        return None
    value = node.get(key)
    return value if isinstance(value, str) else None


def load_settings(
    env: Mapping[str, str] | None = None, *, require_servers: bool = True
) -> Settings:
    """Build the settings from the environment.

    Raises:
        ConfigError: a value is invalid, or no Kafka or PostgreSQL address is set
            and no local stack is running (when ``require_servers``).
    """
    env = os.environ if env is None else env
    state_dir = state_dir_from(env)

    bootstrap = _read(env, "KAFKA_BOOTSTRAP") or _local_stack_value(
        state_dir, "kafka", "bootstrap_servers"
    )
    database_url = _read(env, "DATABASE_URL") or _local_stack_value(
        state_dir, "postgres", "database_url"
    )
    if require_servers and bootstrap is None:
        raise ConfigError(
            f"{PREFIX}KAFKA_BOOTSTRAP is not set and no local stack runs in "
            f"{state_dir}: run `cartstream stack up` or set the variable"
        )
    if require_servers and database_url is None:
        raise ConfigError(
            f"{PREFIX}DATABASE_URL is not set and no local stack runs in "
            f"{state_dir}: run `cartstream stack up` or set the variable"
        )

    return Settings(
        state_dir=state_dir,
        kafka_bootstrap=bootstrap or "",
        database_url=Secret(database_url or ""),
        topics=Topics(prefix=_read(env, "TOPIC_PREFIX") or ""),
        partitions=_int(env, "PARTITIONS", 6, minimum=1),
        http_host=_read(env, "HTTP_HOST") or "127.0.0.1",
        http_port=_int(env, "HTTP_PORT", 8080),
        max_body_bytes=_int(env, "MAX_BODY_BYTES", 1_048_576, minimum=1024),
        max_json_depth=_int(env, "MAX_JSON_DEPTH", 64, minimum=4),
        body_read_timeout_s=_int(env, "BODY_READ_TIMEOUT_S", 30, minimum=1),
        max_request_line_bytes=_int(env, "MAX_REQUEST_LINE_BYTES", 8190, minimum=256),
        max_header_bytes=_int(env, "MAX_HEADER_BYTES", 8190, minimum=256),
        max_headers=_int(env, "MAX_HEADERS", 128, minimum=8),
        webhook_timestamp_tolerance_s=_int(
            env, "WEBHOOK_TIMESTAMP_TOLERANCE_S", 300, minimum=1
        ),
        dedupe_window_hours=_int(env, "DEDUPE_WINDOW_HOURS", 72, minimum=1),
        bigcommerce_api_url=_url(
            env, "BIGCOMMERCE_API_URL", "https://api.bigcommerce.com"
        ),
        publish_timeout_ms=_int(env, "PUBLISH_TIMEOUT_MS", 10_000, minimum=100),
        consumer_group=_read(env, "CONSUMER_GROUP") or "cartstream-projections",
        batch_max_records=_int(env, "BATCH_MAX_RECORDS", 500, minimum=1),
        attribution_window_days=_int(env, "ATTRIBUTION_WINDOW_DAYS", 5, minimum=0),
        segment_tick_s=_int(env, "SEGMENT_TICK_S", 60, minimum=1),
        log_format=_choice(env, "LOG_FORMAT", "console", {"console", "json"}),
        log_level=_choice(
            env, "LOG_LEVEL", "info", {"debug", "info", "warning", "error"}
        ),
    )
