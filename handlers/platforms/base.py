"""The contract every store platform's webhook support fulfils."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from cartstream.events import Event


@dataclass(frozen=True)
class Delivery:
    """One inbound webhook request, after the size and type checks."""

    store_id: str
    body: bytes
    headers: Mapping[str, str]  # case-insensitive in the server (CIMultiDictProxy)
    received_at: datetime


@dataclass(frozen=True)
class ParsedDelivery:
    """The topic, delivery id and payload read from a verified delivery."""

    topic: str
    delivery_id: str | None  # the platform's id of this delivery, same on retries
    payload: Any  # decoded JSON, or a dict of form fields for form bodies


class Platform(Protocol):
    """Verification and mapping for one store platform; pure, no I/O."""

    name: str

    def verify(self, delivery: Delivery, secrets: Sequence[str]) -> None:
        """Check the delivery against every active secret of the store.

        Raises:
            InvalidSignatureError: no secret matches, or the signature is missing.
        """

    def parse(self, delivery: Delivery) -> ParsedDelivery:
        """Read the topic, the delivery id and the payload.

        Raises:
            MappingError: the topic header or the body is missing or invalid.
        """

    def map(self, delivery: Delivery, parsed: ParsedDelivery) -> list[Event]:
        """Turn a verified delivery into canonical events (possibly none).

        Raises:
            MappingError: a required field is missing or invalid; ``field`` names it.
        """
