"""Reading a topic's partitions up to given offsets, without a consumer group."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from cartstream.config import Settings
from cartstream.errors import CartstreamError
from consumer.batch import InputRecord

READ_BATCH_RECORDS = 2000
FETCH_TIMEOUT_MS = 1000


class TopicNotFoundError(CartstreamError):
    """The topic to read does not exist."""


class TopicReader:
    """Reads each partition of a topic up to an offset, with no consumer group."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self._topic = topic
        self._bootstrap = settings.kafka_bootstrap
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            max_poll_records=READ_BATCH_RECORDS,
        )
        self.partitions: list[TopicPartition] = []
        self.positions: dict[int, int] = {}

    async def start(self) -> dict[int, int]:
        """Assign every partition from its first offset; return the end offsets."""
        numbers = await self._partition_numbers()
        await self._consumer.start()
        self.partitions = [TopicPartition(self._topic, n) for n in numbers]
        self._consumer.assign(self.partitions)
        starts = await self._consumer.beginning_offsets(self.partitions)
        ends = await self._consumer.end_offsets(self.partitions)
        self.positions = {tp.partition: starts[tp] for tp in self.partitions}
        for tp in self.partitions:
            self._consumer.seek(tp, starts[tp])
        return {tp.partition: ends[tp] for tp in self.partitions}

    async def stop(self) -> None:
        await self._consumer.stop()

    async def _partition_numbers(self) -> list[int]:
        # A consumer that subscribes, without a group, loads the topic's
        # metadata when it starts; one that assigns partitions needs them first.
        probe = AIOKafkaConsumer(self._topic, bootstrap_servers=self._bootstrap)
        await probe.start()
        try:
            numbers = probe.partitions_for_topic(self._topic)
        finally:
            await probe.stop()
        if not numbers:
            raise TopicNotFoundError(
                f"topic {self._topic} not found: run `cartstream init`"
            )
        return sorted(numbers)

    def records_until(
        self, targets: dict[int, int]
    ) -> Callable[[], Awaitable[list[InputRecord]]]:
        """Return a function that returns the next records below ``targets``.

        Partitions missing from ``targets`` are not read. The function returns
        an empty list once every partition reached its target.
        """
        pending = {
            n: target
            for n, target in targets.items()
            if n in self.positions and self.positions[n] < target
        }
        for tp in self.partitions:
            if tp.partition in pending:
                self._consumer.seek(tp, self.positions[tp.partition])
                self._consumer.resume(tp)
            else:
                self._consumer.pause(tp)

        async def next_records() -> list[InputRecord]:
            while pending:
                batches = await self._consumer.getmany(
                    timeout_ms=FETCH_TIMEOUT_MS, max_records=READ_BATCH_RECORDS
                )
                records: list[InputRecord] = []
                for tp, messages in batches.items():
                    target = pending.get(tp.partition)
                    if target is None:
                        continue
                    records.extend(
                        InputRecord(tp.topic, tp.partition, m.offset, m.value)
                        for m in messages
                        if m.offset < target
                    )
                    # The fetch position also moves past offsets that hold no
                    # record, such as transaction markers. Records fetched
                    # beyond the target are read again by a later call.
                    fetched = await self._consumer.position(tp)
                    self.positions[tp.partition] = min(fetched, target)
                    if fetched >= target:
                        del pending[tp.partition]
                        self._consumer.pause(tp)
                if records:
                    return records
            return []

        return next_records
