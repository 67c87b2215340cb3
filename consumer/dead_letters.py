"""Listing the dead-letter topic: events the consumers could not apply, and why."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass

import orjson

from cartstream.config import Settings, load_settings
from consumer.topic_reader import TopicReader


@dataclass(frozen=True)
class DeadLetterEntry:
    """One dead letter with where it sits and where its record came from."""

    partition: int
    offset: int
    reason: str
    source: str  # topic/partition/offset of the record that failed


async def read_dead_letters(settings: Settings) -> list[DeadLetterEntry]:
    """Read the dead-letter topic from its start up to its current end."""
    reader = TopicReader(settings, settings.topics.dead_letter)
    ends = await reader.start()
    entries: list[DeadLetterEntry] = []
    try:
        next_records = reader.records_until(ends)
        while records := await next_records():
            for record in records:
                entries.append(_entry(record.partition, record.offset, record.value))
    finally:
        await reader.stop()
    return sorted(entries, key=lambda entry: (entry.partition, entry.offset))


def _entry(partition: int, offset: int, value: bytes | None) -> DeadLetterEntry:
    try:
        letter = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        letter = None
    if not isinstance(letter, dict):
        return DeadLetterEntry(partition, offset, "(not a dead-letter record)", "-")
    source = f"{letter.get('topic')}/{letter.get('partition')}/{letter.get('offset')}"
    return DeadLetterEntry(partition, offset, str(letter.get("reason")), source)


def _list(args: argparse.Namespace) -> int:
    entries = asyncio.run(read_dead_letters(load_settings()))
    for entry in entries:
        print(f"{entry.partition}/{entry.offset}\t{entry.source}\t{entry.reason}")
    print(f"{len(entries)} dead letters")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``cartstream dead-letters list`` to the command line."""
    group = commands.add_parser(
        "dead-letters", help="show events the consumers could not apply, with reasons"
    )
    actions = group.add_subparsers(dest="action", required=True)
    listing = actions.add_parser(
        "list", help="list every dead letter: position, failed record, reason"
    )
    listing.set_defaults(handler=_list)
