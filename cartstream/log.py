"""Logging: structlog configured once, JSON when deployed and console locally."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import structlog

REPEAT_WINDOW_S = 60.0


class RepeatFilter(logging.Filter):
    """Lets one record per logger, level and message template through a window.

    While Kafka is unreachable, aiokafka logs the same connection error many
    times a second. The first record of a kind passes. Repeats within
    ``window_s`` are counted, and the next record after the window carries that
    count in its message.
    """

    def __init__(
        self,
        window_s: float = REPEAT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._window_s = window_s
        self._clock = clock
        self._last_passed: dict[tuple[str, int, str], float] = {}
        self._suppressed: dict[tuple[str, int, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        last = self._last_passed.get(key)
        if last is not None and now - last < self._window_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False

        self._last_passed[key] = now
        repeats = self._suppressed.pop(key, 0)
        if repeats:
            record.msg = (
                f"{record.msg} (and {repeats} more like it in the last "
                f"{self._window_s:g} s)"
            )
        return True


def configure_logging(log_format: str = "console", level: str = "info") -> None:
    """Route structlog and the standard library's loggers to stderr."""
    numeric_level = logging.getLevelName(level.upper())
    renderer: structlog.types.Processor
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, force=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RepeatFilter())
