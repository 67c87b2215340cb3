"""Shadow tables for replay: empty copies of the projection tables, and the swap.

A replay fills the copies in a schema of its own, then moves them into public
in one transaction, or copies one store's rows over.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg
import orjson

from cartstream.events import Event
from consumer.batch import InputRecord, decode_event
from projections import store
from projections.schemas import event_validator

SCHEMA_PREFIX = "cartstream_replay_"
RECOMPUTE_BATCH_CUSTOMERS = 500


@dataclass
class ApplyCounts:
    """Records read, events applied and records skipped by a ShadowBuilder."""

    events_read: int = 0
    events_applied: int = 0
    events_skipped: int = 0


async def _projection_indexes(
    connection: asyncpg.Connection, table: str
) -> list[asyncpg.Record]:
    """Return each index of a public projection table, with its constraint if any."""
    rows: list[asyncpg.Record] = await connection.fetch(
        """
        SELECT i.relname AS name, pg_get_indexdef(x.indexrelid) AS definition,
            c.conname, pg_get_constraintdef(c.oid) AS constraint_definition
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid
            AND c.contype IN ('p', 'u')
        WHERE x.indrelid = ('public.' || $1)::regclass
        ORDER BY i.relname
        """,
        table,
    )
    return rows


async def create_shadow_tables(connection: asyncpg.Connection, schema: str) -> None:
    """Create empty copies of the projection tables in ``schema``.

    Columns, defaults and checks come from ``LIKE``. Indexes and key
    constraints are recreated with their public names, so the names stay the
    same once the tables move to public.
    """
    await connection.execute(f"CREATE SCHEMA {schema}")
    for table in store.PROJECTION_TABLES:
        await connection.execute(
            f"CREATE TABLE {schema}.{table} (LIKE public.{table} "
            "INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)"
        )
        for index in await _projection_indexes(connection, table):
            if index["conname"] is not None:
                await connection.execute(
                    f"ALTER TABLE {schema}.{table} ADD CONSTRAINT "
                    f"{index['conname']} {index['constraint_definition']}"
                )
                continue
            definition = re.sub(
                r" ON (ONLY )?\S+ USING ",
                f" ON {schema}.{table} USING ",
                index["definition"],
                count=1,
            )
            await connection.execute(definition)


async def drop_leftover_schemas(connection: asyncpg.Connection) -> list[str]:
    """Drop the shadow schemas of replays that stopped before they finished."""
    names = [
        row["nspname"]
        for row in await connection.fetch(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)",
            SCHEMA_PREFIX,
        )
    ]
    for name in names:
        await connection.execute(f"DROP SCHEMA {name} CASCADE")
    return names


async def swap_all(connection: asyncpg.Connection, schema: str) -> str:
    """Move the public tables out and the shadow tables in; return the old schema."""
    retired = f"{schema}_old"
    await connection.execute(f"CREATE SCHEMA {retired}")
    for table in store.PROJECTION_TABLES:
        await connection.execute(f"ALTER TABLE public.{table} SET SCHEMA {retired}")
        await connection.execute(f"ALTER TABLE {schema}.{table} SET SCHEMA public")
    return retired


async def replace_store_rows(
    connection: asyncpg.Connection, schema: str, store_id: str
) -> None:
    """Replace one store's rows of every projection table with the shadow's rows."""
    for table in store.PROJECTION_TABLES:
        await connection.execute(
            f"DELETE FROM public.{table} WHERE store_id = $1", store_id
        )
        await connection.execute(
            f"INSERT INTO public.{table} SELECT * FROM {schema}.{table}"
        )


@dataclass
class ShadowBuilder:
    """The replay's apply step, on the tables the connection's search_path names first.

    It applies rows as the consumer does, and recomputes the customers they
    touched when asked.
    """

    connection: asyncpg.Connection
    store_id: str | None
    attribution_window_days: int
    counts: ApplyCounts
    effects: store.BatchEffects = field(default_factory=store.BatchEffects)

    def _decode(self, records: Sequence[InputRecord]) -> list[Event]:
        validator = event_validator()
        events = []
        for record in records:
            if self.store_id is not None and not self._is_in_store(record):
                continue
            event, _ = decode_event(record, validator)
            if event is None:
                # The live consumer sent it to the dead-letter topic.
                self.counts.events_skipped += 1
                continue
            events.append(event)
        return events

    def _is_in_store(self, record: InputRecord) -> bool:
        try:
            value = orjson.loads(record.value or b"")
        except orjson.JSONDecodeError:
            return False
        return isinstance(value, dict) and value.get("store_id") == self.store_id

    async def apply(
        self, records: Sequence[InputRecord], *, in_transaction: bool = False
    ) -> None:
        """Apply records, in a transaction of their own unless ``in_transaction``.

        Only rows change; ``recompute`` brings the customers rows up to date.
        """
        self.counts.events_read += len(records)
        events = self._decode(records)
        if in_transaction:
            failures = await store.apply_events(self.connection, events, self.effects)
        else:
            async with self.connection.transaction():
                failures = await store.apply_events(
                    self.connection, events, self.effects
                )
        self.counts.events_applied += len(events) - len(failures)
        self.counts.events_skipped += len(failures)

    async def recompute(self, *, in_transaction: bool = False) -> int:
        """Recompute every customer touched since the last call; return how many."""
        effects, self.effects = self.effects, store.BatchEffects()
        if in_transaction:
            targets = await store.customers_to_recompute(self.connection, effects)
            await self._recompute_keys(sorted(targets))
            return len(targets)

        async with self.connection.transaction():
            targets = await store.customers_to_recompute(self.connection, effects)
        keys = sorted(targets)
        for start in range(0, len(keys), RECOMPUTE_BATCH_CUSTOMERS):
            async with self.connection.transaction():
                await self._recompute_keys(
                    keys[start : start + RECOMPUTE_BATCH_CUSTOMERS]
                )
        return len(keys)

    async def _recompute_keys(self, keys: Sequence[tuple[str, str]]) -> None:
        for store_id, key in keys:
            await store.recompute_customer(
                self.connection,
                store_id,
                key,
                attribution_window_days=self.attribution_window_days,
            )
