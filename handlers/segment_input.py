"""Request bodies of the segment endpoints: JSON parsing and validation.

Rules are validated against the field catalogue before they are stored or
previewed, so every mistake gets a 400 response with a message naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from handlers.responses import json_error
from projections.catalogue import field_specs
from projections.rules import InvalidRuleError, compile_segment_rule
from projections.rules.validate import validate_rule

SEGMENT_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Path words under /segments/ that are endpoints, not segment ids.
RESERVED_SEGMENT_IDS = frozenset({"preview"})


async def read_json(request: web.Request) -> Any:
    """Return the JSON body, or raise a 415 or 400 JSON error."""
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(
            text=orjson.dumps(
                {
                    "error": {
                        "code": "unsupported_media_type",
                        "message": "send the body as application/json",
                    }
                }
            ).decode(),
            content_type="application/json",
        )
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise web.HTTPBadRequest(
            text=orjson.dumps(
                {"error": {"code": "invalid_json", "message": "body is not valid JSON"}}
            ).decode(),
            content_type="application/json",
        ) from None


def check_rule(rule: Any) -> list[str] | web.Response:
    """Validate and compile a rule; return the fields it reads or a 400 response."""
    try:
        validate_rule(rule, field_specs())
        compiled = compile_segment_rule(rule)
    except InvalidRuleError as exc:
        return json_error(400, "invalid_rule", exc.problem, field="rule")
    return sorted(compiled.fields)


@dataclass(frozen=True)
class SegmentInput:
    """A checked create or edit body; ``name`` None keeps the previous name."""

    name: str | None
    rule: Any
    has_rule: bool
    fields: list[str]
    initial_snapshot: bool


def check_segment_input(body: Any, *, is_create: bool) -> SegmentInput | web.Response:
    """Check a create (name and rule needed) or edit body; return it or a 400."""
    if not isinstance(body, dict):
        return json_error(400, "invalid_segment", "body must be a JSON object")
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        return json_error(
            400, "invalid_segment", "name must be a non-empty string", field="name"
        )
    if is_create and name is None:
        return json_error(400, "invalid_segment", "name is missing", field="name")
    has_rule = "rule" in body
    if is_create and not has_rule:
        return json_error(400, "invalid_segment", "rule is missing", field="rule")
    if not is_create and name is None and not has_rule:
        return json_error(400, "invalid_segment", "send a new name, a new rule or both")
    initial_snapshot = body.get("initial_snapshot", False)
    if not isinstance(initial_snapshot, bool):
        return json_error(
            400,
            "invalid_segment",
            "initial_snapshot must be true or false",
            field="initial_snapshot",
        )

    fields: list[str] = []
    if has_rule:
        checked = check_rule(body["rule"])
        if isinstance(checked, web.Response):
            return checked
        fields = checked
    return SegmentInput(
        name.strip() if name is not None else None,
        body.get("rule"),
        has_rule,
        fields,
        initial_snapshot,
    )


def check_segment_id(body: dict[str, Any], name: str) -> str | web.Response:
    """Return the requested segment id, or one made from the name, or a 400."""
    segment_id = body.get("segment_id")
    if segment_id is None:
        generated = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63]
        generated = generated or "segment"
        if generated in RESERVED_SEGMENT_IDS:
            generated += "-segment"
        return generated
    if not isinstance(segment_id, str) or not SEGMENT_ID_PATTERN.match(segment_id):
        return json_error(
            400,
            "invalid_segment",
            "segment_id must be 1-63 lower-case letters, digits, dashes or underscores",
            field="segment_id",
        )
    if segment_id in RESERVED_SEGMENT_IDS:
        return json_error(
            400,
            "invalid_segment",
            f"segment_id {segment_id!r} is reserved; choose another",
            field="segment_id",
        )
    return segment_id
