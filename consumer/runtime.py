"""The projection consumer: a Kafka consumer group that applies batches.

Offsets live in PostgreSQL next to the projections. On assignment the consumer
seeks to the stored checkpoint, so a restart or a rebalance resumes exactly
after the last applied batch. The offsets committed to Kafka only show lag to
monitoring tools and are never read back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition

from cartstream.config import Settings
from consumer.batch import (
    DeadLetter,
    InputRecord,
    apply_batch,
    dead_letter_value,
    skip_records,
)
from projections.segments import SegmentCache

logger = structlog.get_logger(__name__)

RETRY_DELAY_S = 1.0

# Errors after which the same batch may succeed: the server restarted, the
# connection dropped, or a concurrent transaction won.
TRANSIENT_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    OSError,
    KafkaError,
)
# Errors that the same records raise every time.
DATA_ERRORS = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    ValueError,
    TypeError,
    OverflowError,
    ArithmeticError,
)


def dead_letter_producer(settings: Settings) -> AIOKafkaProducer:
    """Create the dead-letter producer, which the caller starts and stops.

    ``acks="all"`` keeps an acknowledged dead letter from being lost, and
    idempotence keeps the producer's own retries from writing it twice.
    """
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
    )


def input_records(
    batches: Mapping[TopicPartition, Iterable[ConsumerRecord[Any, bytes | None]]],
) -> list[InputRecord]:
    """Flatten the result of ``AIOKafkaConsumer.getmany`` into input records."""
    return [
        InputRecord(tp.topic, tp.partition, message.offset, message.value)
        for tp, messages in batches.items()
        for message in messages
    ]


def next_offsets(
    records: Iterable[InputRecord],
) -> dict[TopicPartition, OffsetAndMetadata]:
    """Return the offset to commit per partition: one past its last record.

    Records must be in offset order within a partition, as ``getmany`` returns them.
    """
    offsets: dict[TopicPartition, OffsetAndMetadata] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        offsets[tp] = OffsetAndMetadata(record.offset + 1, "")
    return offsets


class CheckpointSeeker(ConsumerRebalanceListener):  # type: ignore[misc]
    """Seeks newly assigned partitions to the checkpoints stored in PostgreSQL."""

    def __init__(
        self, consumer: AIOKafkaConsumer, pool: asyncpg.Pool, group: str
    ) -> None:
        self._consumer = consumer
        self._pool = pool
        self._group = group

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # Each batch commits before the next poll, so nothing is in flight here.
        logger.info("partitions_revoked", partitions=len(list(revoked)))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        partitions = list(assigned)
        rows = await self._pool.fetch(
            "SELECT topic, partition, next_offset FROM checkpoints WHERE consumer = $1",
            self._group,
        )
        stored = {(row["topic"], row["partition"]): row["next_offset"] for row in rows}
        for tp in partitions:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, offset)
        logger.info("partitions_assigned", partitions=len(partitions))


class ProjectionConsumer:
    """Consumes the store-events topic into the projections until stopped."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        *,
        group: str | None = None,
        topic: str | None = None,
        poll_timeout_ms: int = 500,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._group = group or settings.consumer_group
        self._topic = topic or settings.topics.events
        self._poll_timeout_ms = poll_timeout_ms
        self._cache = SegmentCache()
        self.applied_total = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; each batch is one transaction."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            group_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=self._settings.batch_max_records,
        )
        producer = dead_letter_producer(self._settings)
        consumer.subscribe(
            [self._topic], listener=CheckpointSeeker(consumer, self._pool, self._group)
        )
        await producer.start()
        await consumer.start()
        logger.info("consumer_started", group=self._group, topic=self._topic)
        try:
            while not stop.is_set():
                batches = await consumer.getmany(
                    timeout_ms=self._poll_timeout_ms,
                    max_records=self._settings.batch_max_records,
                )
                records = input_records(batches)
                if records:
                    await self._apply_with_retry(records, producer, stop)
                    await self._commit_to_kafka(consumer, records)
        finally:
            await consumer.stop()
            await producer.stop()
            logger.info("consumer_stopped", group=self._group)

    async def _apply_with_retry(
        self,
        records: list[InputRecord],
        producer: AIOKafkaProducer,
        stop: asyncio.Event,
    ) -> None:
        async def send_dead_letters(letters: list[DeadLetter]) -> None:
            for letter in letters:
                await producer.send_and_wait(
                    self._settings.topics.dead_letter, dead_letter_value(letter)
                )
                logger.error(
                    "event_dead_lettered",
                    topic=letter.record.topic,
                    partition=letter.record.partition,
                    offset=letter.record.offset,
                    reason=letter.reason,
                )

        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._pool.acquire() as connection:
                    result = await apply_batch(
                        connection,
                        records,
                        consumer=self._group,
                        segment_cache=self._cache,
                        changes_topic=self._settings.topics.segment_changes,
                        on_dead_letters=send_dead_letters,
                        attribution_window_days=(
                            self._settings.attribution_window_days
                        ),
                    )
            except TRANSIENT_ERRORS as exc:
                # The transaction rolled back, so the whole batch is retried.
                # The checkpoint makes any earlier partial work harmless.
                logger.warning(
                    "batch_retried", attempt=attempt, error=type(exc).__name__
                )
                if stop.is_set():
                    raise
                await asyncio.sleep(min(RETRY_DELAY_S * attempt, 30.0))
                continue
            except DATA_ERRORS as exc:
                # A record that fails after its own savepoint, for example in
                # the customer recompute, would stop the partition for good.
                # Halving the batch finds it, and it alone is dead-lettered.
                await self._isolate_failure(records, producer, stop, exc)
                return
            break

        self.applied_total += result.applied
        logger.debug(
            "projection_applied",
            records=len(records),
            applied=result.applied,
            skipped=result.skipped,
            membership_changes=result.membership_changes,
        )

    async def _isolate_failure(
        self,
        records: list[InputRecord],
        producer: AIOKafkaProducer,
        stop: asyncio.Event,
        error: Exception,
    ) -> None:
        if len(records) > 1:
            middle = len(records) // 2
            await self._apply_with_retry(records[:middle], producer, stop)
            await self._apply_with_retry(records[middle:], producer, stop)
            return

        record = records[0]
        letter = DeadLetter(record, f"record failed to apply: {type(error).__name__}")
        await producer.send_and_wait(
            self._settings.topics.dead_letter, dead_letter_value(letter)
        )
        async with self._pool.acquire() as connection:
            await skip_records(connection, records, consumer=self._group)
        logger.error(
            "event_dead_lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=letter.reason,
        )

    async def _commit_to_kafka(
        self, consumer: AIOKafkaConsumer, records: list[InputRecord]
    ) -> None:
        try:
            await consumer.commit(next_offsets(records))
        except KafkaError as exc:
            # Only lag reporting reads these offsets, because the checkpoints
            # in PostgreSQL decide where consumption resumes.
            logger.warning("kafka_commit_failed", error=type(exc).__name__)
