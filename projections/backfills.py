"""Backfill jobs: evaluate one segment version for every customer of a store.

A job works in batches, one transaction each, that take the same customer locks
as the consumer. Live consumption goes on meanwhile, and each change is recorded
once, by the first process that evaluates it. Progress commits with each batch, so a job
stopped by a restart resumes after its last customer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg
import orjson
import structlog

from projections.rules import compile_segment_rule
from projections.segments import SegmentCache, SegmentVersion, evaluate_customers
from projections.store import lock_customers, share_projection_lock

logger = structlog.get_logger(__name__)

DEFAULT_BATCH_SIZE = 500

JobKind = Literal["evaluate", "archive"]
JobStatus = Literal["busy", "done", "superseded"]


@dataclass(frozen=True)
class BackfillJob:
    """One row of ``segment_backfills``: what to evaluate and how.

    ``kind`` is "evaluate" to bring memberships in line with the version's
    rule, or "archive" to make every member exit. ``emit_events`` is false
    for an initial snapshot, which changes memberships without change events.
    """

    store_id: str
    segment_id: str
    segment_version: int
    kind: JobKind
    emit_events: bool

    @property
    def cause(self) -> str:
        """The cause id that change events of this job carry."""
        prefix = "backfill" if self.kind == "evaluate" else "archive"
        return f"{prefix}:{self.segment_id}:{self.segment_version}"

    @property
    def lock_name(self) -> str:
        parts = ("backfill", self.store_id, self.segment_id, self.kind)
        return "\x1f".join((*parts, str(self.segment_version)))


def _job_from_row(row: asyncpg.Record) -> BackfillJob:
    return BackfillJob(
        row["store_id"],
        row["segment_id"],
        row["segment_version"],
        row["kind"],
        row["emit_events"],
    )


_KEY_SQL = "store_id = $1 AND segment_id = $2 AND segment_version = $3 AND kind = $4"


def _key(job: BackfillJob) -> tuple[str, str, int, str]:
    return (job.store_id, job.segment_id, job.segment_version, job.kind)


async def create_job(
    connection: asyncpg.Connection,
    store_id: str,
    segment_id: str,
    segment_version: int,
    *,
    kind: JobKind,
    emit_events: bool,
) -> BackfillJob:
    """Record a queued job; an existing job for the same version and kind stays."""
    if kind == "evaluate":
        total = await connection.fetchval(
            "SELECT count(*) FROM customers WHERE store_id = $1", store_id
        )
    else:
        total = await connection.fetchval(
            "SELECT count(*) FROM memberships WHERE store_id = $1 AND segment_id = $2 "
            "AND is_member",
            store_id,
            segment_id,
        )
    row = await connection.fetchrow(
        "INSERT INTO segment_backfills (store_id, segment_id, segment_version, kind, "
        "status, emit_events, total) VALUES ($1, $2, $3, $4, 'queued', $5, $6) "
        "ON CONFLICT DO NOTHING RETURNING *",
        store_id,
        segment_id,
        segment_version,
        kind,
        emit_events,
        total,
    )
    if row is None:
        row = await connection.fetchrow(
            f"SELECT * FROM segment_backfills WHERE {_KEY_SQL}",
            store_id,
            segment_id,
            segment_version,
            kind,
        )
    return _job_from_row(row)


async def unfinished_jobs(connection: asyncpg.Connection) -> list[BackfillJob]:
    """Return queued and running jobs, oldest first, to resume at start-up."""
    rows = await connection.fetch(
        "SELECT * FROM segment_backfills WHERE status IN ('queued', 'running') "
        "ORDER BY created_at, store_id, segment_id, segment_version"
    )
    return [_job_from_row(row) for row in rows]


async def latest_progress(
    connection: asyncpg.Connection | asyncpg.Pool, store_id: str, segment_id: str
) -> dict[str, Any] | None:
    """Return the newest job of a segment as ``{status, done, total, ...}``."""
    row = await connection.fetchrow(
        "SELECT * FROM segment_backfills WHERE store_id = $1 AND segment_id = $2 "
        "ORDER BY created_at DESC, segment_version DESC, kind LIMIT 1",
        store_id,
        segment_id,
    )
    return progress_view(row) if row is not None else None


def progress_view(row: asyncpg.Record) -> dict[str, Any]:
    """Shape one ``segment_backfills`` row for the API."""
    return {
        "status": row["status"],
        "done": row["done"],
        "total": row["total"],
        "kind": row["kind"],
        "segment_version": row["segment_version"],
        "initial_snapshot": not row["emit_events"],
        "membership_changes": row["membership_changes"],
        "finished_at": row["finished_at"],
    }


async def mark_failed(
    connection: asyncpg.Connection | asyncpg.Pool, job: BackfillJob, error: str
) -> None:
    """Record that a job stopped on an error it cannot retry."""
    await connection.execute(
        "UPDATE segment_backfills SET status = 'failed', error = $5, "
        f"updated_at = now(), finished_at = now() WHERE {_KEY_SQL}",
        *_key(job),
        error,
    )


async def _target(
    connection: asyncpg.Connection, cache: SegmentCache, job: BackfillJob
) -> SegmentVersion | None:
    """Return the segment to evaluate, or None when the job's version is stale."""
    row = await connection.fetchrow(
        "SELECT store_id, segment_id, version, name, rule, archived_at FROM segments "
        "WHERE store_id = $1 AND segment_id = $2 ORDER BY version DESC LIMIT 1",
        job.store_id,
        job.segment_id,
    )
    if row is None or row["version"] != job.segment_version:
        return None
    is_archived = row["archived_at"] is not None
    if job.kind == "evaluate":
        if is_archived:
            return None
        return cache.segment(
            job.store_id,
            job.segment_id,
            job.segment_version,
            row["name"],
            orjson.loads(row["rule"]),
        )
    if not is_archived:
        return None
    # An archived segment has no members, so the job evaluates the rule false.
    return SegmentVersion(
        job.store_id,
        job.segment_id,
        job.segment_version,
        row["name"],
        False,
        compile_segment_rule(False),
        frozenset(),
    )


async def _next_keys(
    connection: asyncpg.Connection, job: BackfillJob, after: str, limit: int
) -> list[str]:
    if job.kind == "evaluate":
        rows = await connection.fetch(
            "SELECT customer_key FROM customers WHERE store_id = $1 "
            "AND customer_key > $2 ORDER BY customer_key LIMIT $3",
            job.store_id,
            after,
            limit,
        )
    else:
        rows = await connection.fetch(
            "SELECT customer_key FROM memberships WHERE store_id = $1 "
            "AND segment_id = $2 AND is_member AND customer_key > $3 "
            "ORDER BY customer_key LIMIT $4",
            job.store_id,
            job.segment_id,
            after,
            limit,
        )
    return [row["customer_key"] for row in rows]


async def _finish(
    connection: asyncpg.Connection, job: BackfillJob, status: str
) -> None:
    # A finished job's total is what it evaluated, which differs from the
    # count at creation when customers came or went meanwhile.
    total_sql = "total = done, " if status == "done" else ""
    await connection.execute(
        f"UPDATE segment_backfills SET status = $5, {total_sql}"
        f"updated_at = now(), finished_at = now() WHERE {_KEY_SQL}",
        *_key(job),
        status,
    )


async def run_job(
    connection: asyncpg.Connection,
    cache: SegmentCache,
    job: BackfillJob,
    *,
    topic: str,
    clock: Callable[[], datetime],
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> JobStatus:
    """Run a job to its end on one connection, resuming after its stored progress.

    A session advisory lock per job keeps two processes from running it at
    once; the loser returns "busy". Each batch uses ``clock()`` as the time
    that time-based fields count to. Returns "done", "superseded" (a newer
    version or an archive replaced the job's version) or "busy".
    """
    locked = await connection.fetchval(
        "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", job.lock_name
    )
    if not locked:
        return "busy"
    try:
        await connection.execute(
            "UPDATE segment_backfills SET status = 'running', updated_at = now() "
            f"WHERE {_KEY_SQL} AND status = 'queued'",
            *_key(job),
        )
        while True:
            status = await _run_batch(connection, cache, job, topic, clock, batch_size)
            if status is not None:
                return status
    finally:
        await connection.execute(
            "SELECT pg_advisory_unlock(hashtextextended($1, 0))", job.lock_name
        )


async def _run_batch(
    connection: asyncpg.Connection,
    cache: SegmentCache,
    job: BackfillJob,
    topic: str,
    clock: Callable[[], datetime],
    batch_size: int,
) -> JobStatus | None:
    """Evaluate the next batch in one transaction; return a final status at the end."""
    async with connection.transaction():
        # Shared with consumer batches. A replay takes it exclusively while it
        # swaps in rebuilt tables.
        await share_projection_lock(connection)
        state = await connection.fetchrow(
            "SELECT status, last_customer_key FROM segment_backfills "
            f"WHERE {_KEY_SQL} FOR UPDATE",
            *_key(job),
        )
        if state is None:
            return "superseded"
        if state["status"] == "done":
            return "done"
        if state["status"] != "running":
            return "superseded"
        segment = await _target(connection, cache, job)
        if segment is None:
            await _finish(connection, job, "superseded")
            logger.info("backfill_superseded", **_log_ids(job))
            return "superseded"
        keys = await _next_keys(
            connection, job, state["last_customer_key"] or "", batch_size
        )
        if not keys:
            await _finish(connection, job, "done")
            return "done"

        await lock_customers(connection, [(job.store_id, key) for key in keys])
        changes = await evaluate_customers(
            connection,
            cache,
            job.store_id,
            dict.fromkeys(keys, [segment]),
            dict.fromkeys(keys, job.cause),
            now=clock(),
            topic=topic,
            emit_events=job.emit_events,
        )
        if job.kind == "evaluate":
            # Memberships this version confirmed are now decided by it.
            await connection.execute(
                "UPDATE memberships SET segment_version = $3 WHERE store_id = $1 "
                "AND segment_id = $2 AND customer_key = ANY($4::text[]) "
                "AND segment_version < $3",
                job.store_id,
                job.segment_id,
                job.segment_version,
                keys,
            )
        await connection.execute(
            "UPDATE segment_backfills SET done = done + $5, last_customer_key = $6, "
            "membership_changes = membership_changes + $7, updated_at = now() "
            f"WHERE {_KEY_SQL}",
            *_key(job),
            len(keys),
            keys[-1],
            changes,
        )
        if changes and job.emit_events:
            await connection.execute("NOTIFY cartstream_outbox")
    logger.debug(
        "backfill_batch_applied",
        **_log_ids(job),
        customers=len(keys),
        membership_changes=changes,
    )
    return None


def _log_ids(job: BackfillJob) -> dict[str, Any]:
    return {
        "store_id": job.store_id,
        "segment_id": job.segment_id,
        "segment_version": job.segment_version,
        "kind": job.kind,
    }
