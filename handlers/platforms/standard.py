"""Standard Webhooks: signature checks and canonical events sent by any signing sender.

The messaging service reports message events through this endpoint too. The
payload is ``{"type": "order.updated", "timestamp": ..., "data": {...}}``, where
``data`` is the canonical data object of that event type plus a ``customer``
object ``{"id", "email"}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from functools import cache, lru_cache
from importlib import resources
from typing import Any

import orjson
import structlog
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match

from cartstream.errors import InvalidSignatureError, MappingError
from cartstream.events import Event, event_id, normalise_email, to_utc
from handlers.platforms import fields
from handlers.platforms.base import Delivery, ParsedDelivery
from handlers.platforms.fields import JsonObject

PLATFORM = "standard"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_S = 300

EVENT_TYPES = frozenset(
    {"order", "refund", "checkout", "customer", "consent", "message"}
)
MESSAGE_KINDS = frozenset({"sent", "opened", "clicked", "unsubscribed"})

# Fields holding a timestamp in canonical data; they are normalised to UTC.
_TIMESTAMP_KEYS = frozenset(
    {"created_at", "updated_at", "cancelled_at", "completed_at"}
)

# RFC 3339 date-time, the JSON Schema "date-time" format, which jsonschema checks
# only when the optional rfc3339-validator package is installed.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)

logger = structlog.get_logger(__name__)


class StandardWebhooksPlatform:
    """Verification (Standard Webhooks v1) and mapping of canonical payloads.

    The ``standardwebhooks`` library (1.3) serves only the tests, as an
    independent signer. Its ``Webhook.verify`` reads the wall clock with a fixed
    five-minute tolerance and takes one secret. This check must instead use the
    delivery's ``received_at``, a configurable tolerance and every active secret.

    Args:
        tolerance_s: the largest accepted difference, in seconds, between
            ``webhook-timestamp`` and ``Delivery.received_at``, in either direction.
    """

    name = PLATFORM

    def __init__(self, tolerance_s: int = DEFAULT_TOLERANCE_S) -> None:
        if tolerance_s < 0:
            raise ValueError(f"tolerance_s must be 0 or more, got {tolerance_s}")
        self.tolerance_s = tolerance_s

    def verify(self, delivery: Delivery, secrets: Sequence[str]) -> None:
        """Check the ``v1`` HMAC-SHA256 of ``{id}.{timestamp}.{body}`` and the time.

        Secrets are ``whsec_`` followed by the base64 key; a bare base64 key is
        accepted too, as the reference libraries do. A secret that is not valid
        base64 is skipped, with one warning per process. Any one matching ``v1,``
        entry of the space-separated signature header passes; other versions
        are ignored.

        Raises:
            InvalidSignatureError: a header is missing or malformed, the timestamp
                is outside the tolerance, or no secret matches.
        """
        message_id = delivery.headers.get(ID_HEADER)
        timestamp = delivery.headers.get(TIMESTAMP_HEADER)
        signature_header = delivery.headers.get(SIGNATURE_HEADER)
        if not message_id or not timestamp or not signature_header:
            raise InvalidSignatureError(
                f"missing {ID_HEADER}, {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header"
            )
        self._check_timestamp(timestamp, delivery.received_at)

        signatures = list(_v1_signatures(signature_header))
        if not signatures:
            raise InvalidSignatureError(f"no v1 signature in {SIGNATURE_HEADER} header")
        try:
            signed = f"{message_id}.{timestamp}.".encode() + delivery.body
        except UnicodeEncodeError as exc:
            raise InvalidSignatureError(f"malformed {ID_HEADER} header") from exc

        for secret in secrets:
            key = _signing_key(secret)
            if key is None:
                continue
            expected = hmac.new(key, signed, hashlib.sha256).digest()
            # Every entry is compared so the time does not depend on the position.
            matches = [hmac.compare_digest(expected, sig) for sig in signatures]
            if any(matches):
                return
        raise InvalidSignatureError("Standard Webhooks signature matches no secret")

    def _check_timestamp(self, header: str, received_at: datetime) -> None:
        # The specification defines the timestamp as integer Unix seconds.
        if not header.isascii() or not header.isdigit() or len(header) > 12:
            raise InvalidSignatureError(f"malformed {TIMESTAMP_HEADER} header")
        if received_at.tzinfo is None:
            received_at = received_at.replace(tzinfo=UTC)
        age_s = received_at.timestamp() - int(header)
        if age_s > self.tolerance_s:
            raise InvalidSignatureError(
                f"{TIMESTAMP_HEADER} is {age_s:.0f} s old, over the "
                f"{self.tolerance_s} s tolerance"
            )
        if -age_s > self.tolerance_s:
            raise InvalidSignatureError(
                f"{TIMESTAMP_HEADER} is {-age_s:.0f} s in the future, over the "
                f"{self.tolerance_s} s tolerance"
            )

    def parse(self, delivery: Delivery) -> ParsedDelivery:
        """Read ``type`` as the topic and ``webhook-id`` as the delivery id.

        Raises:
            MappingError: the body is not a JSON object with a text ``type``, or
                the ``webhook-id`` header is missing.
        """
        message_id = delivery.headers.get(ID_HEADER)
        if not message_id:
            raise MappingError(f"missing {ID_HEADER} header", field=ID_HEADER)
        payload = fields.decode_json_object(delivery.body)
        event_type = payload.get("type")
        if not isinstance(event_type, str) or not event_type.strip():
            raise MappingError("missing type", field="type")

        return ParsedDelivery(
            topic=event_type.strip(), delivery_id=message_id, payload=payload
        )

    def map(self, delivery: Delivery, parsed: ParsedDelivery) -> list[Event]:
        """Validate ``data`` against the event type's schema and build one event.

        The part of ``type`` before the first dot names the canonical event type.
        For message events a missing ``kind`` is taken from the type's suffix,
        as in ``message.clicked``.

        Raises:
            MappingError: the type is unknown or ``data`` fails the schema;
                ``field`` names the first failing JSON path, such as
                ``data.line_items[0].quantity``.
        """
        payload = parsed.payload
        if not isinstance(payload, dict):
            raise MappingError("body is not a JSON object", field="body")
        event_type, _, suffix = parsed.topic.partition(".")
        if event_type not in EVENT_TYPES:
            raise MappingError(
                f"unsupported event type {parsed.topic!r}; the part before the "
                f"first dot must be one of {', '.join(sorted(EVENT_TYPES))}",
                field="type",
            )
        if not isinstance(payload.get("data"), dict):
            raise MappingError("missing or invalid object in data", field="data")

        data = dict(payload["data"])
        customer = _customer_ref(data.pop("customer", None))
        if event_type == "message":
            _fill_message_kind(data, suffix)
        _validate(event_type, data)
        data = _normalise(data)

        event: Event = {
            "id": event_id(PLATFORM, delivery.store_id, parsed.delivery_id or ""),
            "type": event_type,
            "store_id": delivery.store_id,
            "platform": PLATFORM,
            "occurred_at": _occurred_at(event_type, data, payload),
            "delivery_id": parsed.delivery_id,
            "topic": parsed.topic,
            "customer": customer,
            "data": data,
        }
        return [event]


def _v1_signatures(header: str) -> Iterator[bytes]:
    for entry in header.split():
        version, _, encoded = entry.partition(",")
        if version != "v1":
            continue
        try:
            yield base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue  # a malformed entry cannot match; the others still may


@lru_cache(maxsize=64)
def _signing_key(secret: str) -> bytes | None:
    """Decode a ``whsec_<base64>`` or bare base64 secret; None when it is invalid.

    The cache keeps the warning to one per invalid secret and process.
    """
    encoded = secret.removeprefix(SECRET_PREFIX)
    # Some senders strip the base64 padding; restore it before decoding.
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        logger.warning(
            "standard_secret_invalid",
            reason="not whsec_ followed by a non-empty base64 key",
        )
        return None
    return key


def _customer_ref(value: object) -> JsonObject:
    """Read ``data.customer`` ``{"id", "email"}`` and normalise the email."""
    if not isinstance(value, dict):
        raise MappingError(
            "missing or invalid object in data.customer", field="data.customer"
        )
    _raise_first_error(_validator("customer_ref"), value, "data.customer")
    return {"id": value["id"], "email": normalise_email(value["email"])}


def _fill_message_kind(data: JsonObject, suffix: str) -> None:
    kind = data.get("kind")
    if kind is None and suffix in MESSAGE_KINDS:
        data["kind"] = suffix
    elif kind is not None and suffix and kind != suffix:
        raise MappingError(
            f"data.kind {kind!r} contradicts the type suffix {suffix!r}",
            field="data.kind",
        )


def _validate(event_type: str, data: JsonObject) -> None:
    _raise_first_error(_validator(event_type), data, "data")


def _raise_first_error(
    validator: Draft202012Validator, value: object, root: str
) -> None:
    error = best_match(validator.iter_errors(value))
    if error is None:
        return
    field = _error_path(error, root)
    raise MappingError(f"invalid {field}: {error.message}", field=field)


def _error_path(error: ValidationError, root: str) -> str:
    """Render the error's JSON path, naming the missing key of a ``required`` error."""
    path = root
    for key in error.absolute_path:
        path = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"
    if error.validator == "required" and isinstance(error.instance, dict):
        required = error.validator_value
        missing = [key for key in required if key not in error.instance]
        if missing:
            path = f"{path}.{missing[0]}"
    return path


def _normalise(value: Any) -> Any:
    """Rewrite timestamps to UTC ``...Z`` and emails to lower case, recursively."""
    if isinstance(value, list):
        return [_normalise(item) for item in value]
    if not isinstance(value, dict):
        return value
    result: JsonObject = {}
    for key, item in value.items():
        if key in _TIMESTAMP_KEYS and isinstance(item, str):
            result[key] = fields.timestamp(item, key)
        elif key == "email" and isinstance(item, str):
            result[key] = normalise_email(item)
        else:
            result[key] = _normalise(item)
    return result


def _occurred_at(event_type: str, data: JsonObject, payload: JsonObject) -> str:
    """Date snapshots by their ``updated_at``; refunds and messages by their time."""
    updated_at = data.get("updated_at")
    if isinstance(updated_at, str) and event_type != "refund":
        return updated_at
    created_at = data.get("created_at")
    if event_type == "refund" and isinstance(created_at, str):
        return created_at
    return fields.timestamp(payload.get("timestamp"), "timestamp")


def _is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True  # formats apply to strings only
    if _RFC3339.fullmatch(value) is None:
        return False
    try:
        to_utc(value, "date-time")
    except (MappingError, OverflowError):
        return False
    return True


@cache
def _format_checker() -> FormatChecker:
    checker = FormatChecker()
    checker.checks("date-time")(_is_rfc3339)
    return checker


@cache
def _validator(definition: str) -> Draft202012Validator:
    """Return a validator of one ``$defs`` entry of ``schemas/event.json``."""
    text = (resources.files("schemas") / "event.json").read_text()
    schema = orjson.loads(text)
    return Draft202012Validator(
        {"$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"},
        format_checker=_format_checker(),
    )
