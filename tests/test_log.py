"""Repeated library log records are counted instead of printed each time."""

from __future__ import annotations

import logging

from cartstream.log import RepeatFilter


def _record(message: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("aiokafka", level, __file__, 1, message, None, None)


def test_repeats_within_window_are_dropped() -> None:
    now = [0.0]
    repeat_filter = RepeatFilter(window_s=60, clock=lambda: now[0])

    assert repeat_filter.filter(_record("Unable connect to node")) is True
    now[0] = 1.0
    assert repeat_filter.filter(_record("Unable connect to node")) is False
    assert repeat_filter.filter(_record("Unable connect to node")) is False


def test_next_record_after_window_reports_count() -> None:
    now = [0.0]
    repeat_filter = RepeatFilter(window_s=60, clock=lambda: now[0])
    repeat_filter.filter(_record("Unable connect to node"))
    now[0] = 10.0
    repeat_filter.filter(_record("Unable connect to node"))
    repeat_filter.filter(_record("Unable connect to node"))

    now[0] = 61.0
    record = _record("Unable connect to node")
    assert repeat_filter.filter(record) is True
    assert record.getMessage() == (
        "Unable connect to node (and 2 more like it in the last 60 s)"
    )


def test_other_messages_and_levels_pass() -> None:
    repeat_filter = RepeatFilter(window_s=60, clock=lambda: 0.0)

    assert repeat_filter.filter(_record("Unable connect to node")) is True
    assert repeat_filter.filter(_record("Group coordinator lookup failed")) is True
    assert repeat_filter.filter(_record("Unable connect to node", logging.WARNING))
