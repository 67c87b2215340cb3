"""Quarantine records: a verified delivery that could not be mapped, kept whole.

A record contains the raw body, the headers the mappers read (never the
signatures) and the time of receipt. A redrive maps it again with newer
platform code and gets the same event ids it would have got at receipt.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from multidict import CIMultiDict

from handlers.platforms.base import Delivery

# Headers kept with a quarantined delivery because mappers read them. The
# signature headers are left out on purpose.
KEPT_HEADERS = frozenset(
    {
        "x-shopify-topic",
        "x-shopify-webhook-id",
        "x-shopify-event-id",
        "x-shopify-shop-domain",
        "x-shopify-api-version",
        "x-wc-webhook-topic",
        "x-wc-webhook-delivery-id",
        "x-wc-webhook-resource",
        "x-wc-webhook-event",
        "x-wc-webhook-source",
        "webhook-id",
        "webhook-timestamp",
        "content-type",
    }
)


class InvalidQuarantineRecordError(ValueError):
    """A quarantine topic record is not JSON or lacks a required field."""


@dataclass(frozen=True)
class QuarantineRecord:
    """One quarantined delivery and the reason it could not be mapped."""

    quarantine_id: str
    platform: str
    store_id: str
    received_at: datetime
    reason: str
    field: str | None
    topic: str | None
    delivery_id: str | None
    headers: dict[str, str]
    body: bytes

    @classmethod
    def from_delivery(
        cls,
        platform: str,
        delivery: Delivery,
        *,
        reason: str,
        field: str | None,
        topic: str | None,
        delivery_id: str | None,
    ) -> QuarantineRecord:
        """Build a record with a new random id from a delivery at receipt."""
        headers = {
            name.lower(): _clean_text(value)
            for name, value in delivery.headers.items()
            if name.lower() in KEPT_HEADERS
        }
        return cls(
            quarantine_id=str(uuid.uuid4()),
            platform=platform,
            store_id=delivery.store_id,
            received_at=delivery.received_at,
            reason=_clean_text(reason),
            field=_clean_text(field) if field is not None else None,
            topic=_clean_text(topic) if topic is not None else None,
            delivery_id=_clean_text(delivery_id) if delivery_id is not None else None,
            headers=headers,
            body=delivery.body,
        )

    def to_json(self) -> bytes:
        """Serialise the record as JSON; a body that is not UTF-8 goes in base64."""
        value: dict[str, Any] = {
            "quarantine_id": self.quarantine_id,
            "platform": self.platform,
            "store_id": self.store_id,
            "received_at": self.received_at.isoformat(),
            "reason": self.reason,
            "field": self.field,
            "topic": self.topic,
            "delivery_id": self.delivery_id,
            "headers": self.headers,
        }
        try:
            value["body"] = self.body.decode("utf-8")
            value["body_encoding"] = "utf-8"
        except UnicodeDecodeError:
            value["body"] = base64.b64encode(self.body).decode()
            value["body_encoding"] = "base64"
        return orjson.dumps(value)

    @classmethod
    def from_json(cls, value: bytes | None, fallback_id: str) -> QuarantineRecord:
        """Read a record, naming one written without an id ``fallback_id``.

        Raises:
            InvalidQuarantineRecordError: the value is not a quarantine record.
        """
        try:
            data = orjson.loads(value or b"")
        except orjson.JSONDecodeError as exc:
            raise InvalidQuarantineRecordError("record value is not JSON") from exc
        if not isinstance(data, dict):
            raise InvalidQuarantineRecordError("record value is not a JSON object")
        try:
            body_text = str(data["body"])
            if data.get("body_encoding") == "base64":
                body = base64.b64decode(body_text, validate=True)
            else:
                body = body_text.encode("utf-8")
            headers = data.get("headers") or {}
            if not isinstance(headers, dict):
                raise InvalidQuarantineRecordError("headers is not a JSON object")
            return cls(
                quarantine_id=str(data.get("quarantine_id") or fallback_id),
                platform=str(data["platform"]),
                store_id=str(data["store_id"]),
                received_at=datetime.fromisoformat(str(data["received_at"])),
                reason=str(data.get("reason") or ""),
                field=_optional_text(data.get("field")),
                topic=_optional_text(data.get("topic")),
                delivery_id=_optional_text(data.get("delivery_id")),
                headers={str(k): str(v) for k, v in headers.items()},
                body=body,
            )
        except (KeyError, ValueError, binascii.Error) as exc:
            raise InvalidQuarantineRecordError(
                f"quarantine record {fallback_id} is incomplete: {exc!r}"
            ) from exc

    def to_delivery(self) -> Delivery:
        """Rebuild the delivery as the mapper saw it at receipt."""
        headers: Mapping[str, str] = CIMultiDict(self.headers)
        return Delivery(
            store_id=self.store_id,
            body=self.body,
            headers=headers,
            received_at=self.received_at,
        )


def _optional_text(value: object) -> str | None:
    return None if value is None else str(value)


def _clean_text(value: str) -> str:
    """Replace what aiohttp decoded with ``surrogateescape`` by U+FFFD.

    Header bytes that are not UTF-8 arrive as lone surrogates, which orjson
    rejects.
    """
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        # Surrogates outside surrogateescape's range, such as from a JSON escape.
        raw = value.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")
