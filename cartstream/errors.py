"""The error hierarchy shared by the receiver, the consumer and the CLI."""

from __future__ import annotations


class CartstreamError(Exception):
    """Base of every error cartstream raises on purpose.

    ``retriable`` decides whether the consumer tries an event again or sends it
    to the dead-letter topic.
    """

    retriable: bool = False


class ConfigError(CartstreamError):
    """A setting is missing or invalid; the message names the variable."""


class MappingError(CartstreamError):
    """A verified delivery cannot be turned into canonical events.

    ``field`` names the JSON path that was missing or invalid, such as
    ``line_items[0].quantity``.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidSignatureError(CartstreamError):
    """A delivery's signature is missing or does not match any active secret."""


class PublishTimeoutError(CartstreamError):
    """Kafka did not acknowledge a write in time."""

    retriable = True
