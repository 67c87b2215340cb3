"""Segment memberships: evaluate rules for customers and record the changes.

Each change of membership bumps the membership's version and writes a
CloudEvents record to the outbox in the caller's transaction, so the change
event exists exactly when the membership row does. Callers hold the customer
locks (``projections.store.lock_customers``) of the customers they evaluate, so
the consumer, backfills and the time scheduler never write the same change
twice.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import structlog

from projections.catalogue import (
    ABANDONED_CHECKOUT_COLUMN,
    changed_fields,
    customer_record,
    fields_read,
    reads_abandoned_checkout,
)
from projections.rules import CompiledRule, RuleError, compile_segment_rule
from projections.store import CustomerChange

logger = structlog.get_logger(__name__)

CHANGE_NAMESPACE = uuid.UUID("0b8f3c55-1e2d-4a7b-8c9e-5d4f3a2b1c0d")
EVENT_TYPE_PREFIX = "dev.cartstream.segment."

# The newest checkout of a customer that has not become an order, computed the
# way the customer metrics count abandoned checkouts.
ABANDONED_CHECKOUT_SQL = """(
    SELECT max(k.created_at) FROM checkouts k
    WHERE k.store_id = c.store_id AND k.customer_key = c.customer_key
        AND k.completed_at IS NULL
        AND NOT EXISTS (
            SELECT 1 FROM orders o
            WHERE o.store_id = k.store_id AND o.checkout_id = k.checkout_id
        )
)"""


def customer_columns(with_abandoned_checkout: bool) -> str:
    """Return the select list of customers rows for rule evaluation (alias ``c``).

    The abandoned-checkout subquery runs only when a rule reads its fields.
    """
    expression = (
        ABANDONED_CHECKOUT_SQL if with_abandoned_checkout else "NULL::timestamptz"
    )
    return f"c.*, {expression} AS {ABANDONED_CHECKOUT_COLUMN}"


@dataclass(frozen=True)
class SegmentVersion:
    """One version of a segment with its rule compiled.

    ``reads`` contains the catalogue fields the rule reads, or None when it may
    read any field.
    """

    store_id: str
    segment_id: str
    version: int
    name: str
    rule: Any
    compiled: CompiledRule
    reads: frozenset[str] | None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.store_id, self.segment_id, self.version)


class DependencyIndex:
    """The segments of one store by the fields their rules read.

    ``select`` returns the segments a change of some fields can affect, so an
    event that changes no field a rule reads evaluates no rule.
    """

    def __init__(self, segments: Sequence[SegmentVersion]) -> None:
        self.segments = list(segments)
        self._always: set[int] = set()
        self._by_field: dict[str, set[int]] = defaultdict(set)
        for position, segment in enumerate(self.segments):
            if segment.reads is None:
                self._always.add(position)
            else:
                for name in segment.reads:
                    self._by_field[name].add(position)

    def select(self, changed: frozenset[str] | None) -> list[SegmentVersion]:
        """Return the segments to evaluate; ``changed`` None means every field."""
        if changed is None:
            return self.segments
        positions = set(self._always)
        for name in changed:
            found = self._by_field.get(name)
            if found:
                positions |= found
        return [self.segments[position] for position in sorted(positions)]


class SegmentCache:
    """Compiled rules by segment version, so a rule is compiled once per version.

    ``evaluation_count`` counts rule evaluations (one segment on one customer),
    for tests and measurements.
    """

    def __init__(self) -> None:
        self._versions: dict[tuple[str, str, int], SegmentVersion] = {}
        self._indexes: dict[str, tuple[tuple[tuple[str, int], ...], DependencyIndex]]
        self._indexes = {}
        self.evaluation_count = 0

    def segment(
        self, store_id: str, segment_id: str, version: int, name: str, rule: Any
    ) -> SegmentVersion:
        """Return one segment version, compiling its rule on first use."""
        key = (store_id, segment_id, version)
        found = self._versions.get(key)
        if found is None:
            compiled = compile_segment_rule(rule)
            found = SegmentVersion(
                store_id,
                segment_id,
                version,
                name,
                rule,
                compiled,
                fields_read(compiled.fields),
            )
            self._versions[key] = found
        return found

    def _from_rows(self, rows: Iterable[asyncpg.Record]) -> list[SegmentVersion]:
        return [
            self.segment(
                row["store_id"],
                row["segment_id"],
                row["version"],
                row["name"],
                orjson.loads(row["rule"]),
            )
            for row in rows
        ]

    async def latest(
        self, connection: asyncpg.Connection, store_id: str
    ) -> list[SegmentVersion]:
        """Return the newest version of each segment of a store, not archived."""
        rows = await connection.fetch(
            "SELECT DISTINCT ON (segment_id) store_id, segment_id, version, name, rule "
            "FROM segments WHERE store_id = $1 AND archived_at IS NULL "
            "ORDER BY segment_id, version DESC",
            store_id,
        )
        return self._from_rows(rows)

    async def latest_everywhere(
        self, connection: asyncpg.Connection
    ) -> list[SegmentVersion]:
        """Return the newest version of every segment of every store, not archived."""
        rows = await connection.fetch(
            "SELECT DISTINCT ON (store_id, segment_id) store_id, segment_id, version, "
            "name, rule FROM segments WHERE archived_at IS NULL "
            "ORDER BY store_id, segment_id, version DESC"
        )
        return self._from_rows(rows)

    async def index(
        self, connection: asyncpg.Connection, store_id: str
    ) -> DependencyIndex:
        """Return the dependency index of a store's current segments."""
        segments = await self.latest(connection, store_id)
        versions = tuple((s.segment_id, s.version) for s in segments)
        cached = self._indexes.get(store_id)
        if cached is not None and cached[0] == versions:
            return cached[1]
        index = DependencyIndex(segments)
        self._indexes[store_id] = (versions, index)
        return index


def change_event(
    *,
    store_id: str,
    segment: SegmentVersion,
    customer: Mapping[str, Any],
    entered: bool,
    membership_version: int,
    cause_event_id: str | None,
    at: datetime,
) -> dict[str, Any]:
    """Build the CloudEvents (structured mode, JSON) record of one change."""
    change = "entered" if entered else "exited"
    key = customer["customer_key"]
    change_id = uuid.uuid5(
        CHANGE_NAMESPACE,
        f"{store_id}\x1f{segment.segment_id}\x1f{key}\x1f{membership_version}",
    )
    return {
        "specversion": "1.0",
        "id": str(change_id),
        "source": f"/cartstream/stores/{store_id}/segments/{segment.segment_id}",
        "type": EVENT_TYPE_PREFIX + change,
        "subject": key,
        "time": at.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": {
            "change": change,
            "store_id": store_id,
            "segment_id": segment.segment_id,
            "segment_version": segment.version,
            "segment_name": segment.name,
            "customer_key": key,
            "customer_id": customer.get("customer_id"),
            "email": customer.get("email"),
            "membership_version": membership_version,
            "cause_event_id": cause_event_id,
        },
    }


@dataclass(frozen=True)
class _Change:
    segment: SegmentVersion
    customer: Mapping[str, Any]
    entered: bool
    version: int
    cause: str | None


async def load_customer_rows(
    connection: asyncpg.Connection,
    store_id: str,
    keys: Sequence[str],
    *,
    with_abandoned_checkout: bool,
) -> dict[str, asyncpg.Record]:
    """Load customers rows for rule evaluation, by customer key."""
    rows = await connection.fetch(
        f"SELECT {customer_columns(with_abandoned_checkout)} FROM customers c "
        "WHERE c.store_id = $1 AND c.customer_key = ANY($2::text[])",
        store_id,
        list(keys),
    )
    return {row["customer_key"]: row for row in rows}


async def evaluate_customers(
    connection: asyncpg.Connection,
    cache: SegmentCache,
    store_id: str,
    plan: Mapping[str, Sequence[SegmentVersion]],
    causes: Mapping[str, str | None],
    *,
    now: datetime,
    topic: str,
    emit_events: bool = True,
) -> int:
    """Evaluate the planned segments (customer key -> segments) and record changes.

    ``causes`` maps each customer key to the id of the event (or the tick or
    backfill) that caused the evaluation. A customer without a customers row
    is in no segment. With ``emit_events`` false, memberships change without
    outbox records, for an initial snapshot. The caller must hold the customer
    locks. Returns the number of membership changes.
    """
    keys = [key for key, segments in plan.items() if segments]
    if not keys:
        return 0

    needs_checkouts = any(
        reads_abandoned_checkout(segment.reads) for key in keys for segment in plan[key]
    )
    customers = await load_customer_rows(
        connection, store_id, keys, with_abandoned_checkout=needs_checkouts
    )
    memberships = {
        (row["segment_id"], row["customer_key"]): row
        for row in await connection.fetch(
            "SELECT segment_id, customer_key, is_member, version FROM memberships "
            "WHERE store_id = $1 AND customer_key = ANY($2::text[])",
            store_id,
            keys,
        )
    }

    changes: list[_Change] = []
    for key in sorted(keys):
        row = customers.get(key)
        record = customer_record(row, now) if row is not None else None
        identity: Mapping[str, Any] = row if row is not None else {"customer_key": key}
        for segment in plan[key]:
            cache.evaluation_count += 1
            try:
                is_member = record is not None and segment.compiled.matches(record)
            except RuleError as exc:
                # Validated rules do not fail on catalogue records; should one
                # fail, the membership stays as it is rather than flip.
                logger.error(
                    "segment_evaluation_failed",
                    store_id=store_id,
                    segment_id=segment.segment_id,
                    segment_version=segment.version,
                    customer_key=key,
                    error=str(exc),
                )
                continue
            current = memberships.get((segment.segment_id, key))
            was_member = current is not None and current["is_member"]
            if is_member == was_member:
                continue
            version = (current["version"] if current is not None else 0) + 1
            changes.append(_Change(segment, identity, is_member, version, causes[key]))

    await _write_changes(
        connection, store_id, changes, now=now, topic=topic, emit_events=emit_events
    )
    return len(changes)


async def evaluate_changes(
    connection: asyncpg.Connection,
    cache: SegmentCache,
    changes: Sequence[CustomerChange],
    causes: Mapping[tuple[str, str], str | None],
    *,
    now: datetime,
    topic: str,
) -> int:
    """Evaluate the segments that recomputed customers rows can affect.

    Only segments whose rules read a changed field are evaluated; new and
    deleted customers are evaluated for every segment. ``causes`` maps
    (store id, customer key) to the causing event id. The caller must hold the
    customer locks. Returns the number of membership changes.
    """
    by_store: dict[str, list[CustomerChange]] = defaultdict(list)
    for change in changes:
        by_store[change.store_id].append(change)

    total = 0
    for store_id, store_changes in sorted(by_store.items()):
        index = await cache.index(connection, store_id)
        if not index.segments:
            continue
        plan = {
            change.customer_key: index.select(
                changed_fields(change.before, change.after)
            )
            for change in store_changes
        }
        total += await evaluate_customers(
            connection,
            cache,
            store_id,
            plan,
            {key: causes.get((store_id, key)) for key in plan},
            now=now,
            topic=topic,
        )
    return total


async def _write_changes(
    connection: asyncpg.Connection,
    store_id: str,
    changes: Sequence[_Change],
    *,
    now: datetime,
    topic: str,
    emit_events: bool,
) -> None:
    if not changes:
        return
    await connection.executemany(
        """
        INSERT INTO memberships (store_id, segment_id, customer_key, is_member,
            version, segment_version, changed_at, cause_event_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (store_id, segment_id, customer_key) DO UPDATE SET
            is_member = EXCLUDED.is_member, version = EXCLUDED.version,
            segment_version = EXCLUDED.segment_version,
            changed_at = EXCLUDED.changed_at,
            cause_event_id = EXCLUDED.cause_event_id
        """,
        [
            (
                store_id,
                change.segment.segment_id,
                change.customer["customer_key"],
                change.entered,
                change.version,
                change.segment.version,
                now,
                change.cause,
            )
            for change in changes
        ],
    )
    if emit_events:
        records = []
        for change in changes:
            event = change_event(
                store_id=store_id,
                segment=change.segment,
                customer=change.customer,
                entered=change.entered,
                membership_version=change.version,
                cause_event_id=change.cause,
                at=now,
            )
            key = change.customer["customer_key"]
            records.append((topic, f"{store_id}:{key}", orjson.dumps(event).decode()))
        await connection.executemany(
            "INSERT INTO outbox (topic, key, payload) VALUES ($1, $2, $3)", records
        )
    for change in changes:
        logger.debug(
            "membership_changed",
            store_id=store_id,
            segment_id=change.segment.segment_id,
            customer_key=change.customer["customer_key"],
            change="entered" if change.entered else "exited",
            membership_version=change.version,
            has_event=emit_events,
        )
