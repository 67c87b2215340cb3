"""The outbox relay: sends pending segment changes to Kafka in outbox order.

Only one relay sends at a time (a session advisory lock), so changes of one
customer reach the topic in the order they were written. A relay that crashes
after Kafka acknowledged a batch but before marking it sent sends that batch
again on restart. Each change keeps its CloudEvents ``id``, so consumers can
drop the repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

logger = structlog.get_logger(__name__)

RELAY_LOCK_ID = 0x72656C61
POSTGRES_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    OSError,
)
BATCH_SIZE = 500


class OutboxRelay:
    """Moves outbox rows to their Kafka topic until stopped."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        bootstrap_servers: str,
        *,
        poll_interval_s: float = 1.0,
    ) -> None:
        self._pool = pool
        self._bootstrap = bootstrap_servers
        self._poll_interval_s = poll_interval_s
        self.sent_total = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap, acks="all", enable_idempotence=True
        )
        await producer.start()
        wake = asyncio.Event()

        def notified(*_: object) -> None:
            wake.set()

        try:
            while not stop.is_set():
                try:
                    await self._relay_until_stopped(producer, wake, notified, stop)
                except POSTGRES_UNAVAILABLE as exc:
                    # PostgreSQL restarted or the connection dropped: the rows
                    # not marked as sent are still pending, so start over.
                    logger.warning("relay_reconnecting", error=type(exc).__name__)
                    await asyncio.sleep(self._poll_interval_s)
        finally:
            await producer.stop()
            logger.info("relay_stopped")

    async def _relay_until_stopped(
        self,
        producer: AIOKafkaProducer,
        wake: asyncio.Event,
        notified: Callable[..., None],
        stop: asyncio.Event,
    ) -> None:
        async with self._pool.acquire() as listener:
            await listener.execute("SELECT pg_advisory_lock($1)", RELAY_LOCK_ID)
            await listener.add_listener("cartstream_outbox", notified)
            logger.info("relay_started")
            try:
                while not stop.is_set():
                    sent = await self._relay_batch(producer)
                    if sent:
                        continue
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            _first(wake, stop), self._poll_interval_s
                        )
            finally:
                if not listener.is_closed():
                    await listener.remove_listener("cartstream_outbox", notified)
                    await listener.execute(
                        "SELECT pg_advisory_unlock($1)", RELAY_LOCK_ID
                    )

    async def _relay_batch(self, producer: AIOKafkaProducer) -> int:
        rows = await self._pool.fetch(
            "SELECT outbox_id, topic, key, payload::text AS payload FROM outbox "
            "WHERE relayed_at IS NULL ORDER BY outbox_id LIMIT $1",
            BATCH_SIZE,
        )
        if not rows:
            return 0
        try:
            futures = [
                await producer.send(
                    row["topic"], row["payload"].encode(), key=row["key"].encode()
                )
                for row in rows
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            logger.warning("relay_send_retried", error=type(exc).__name__)
            await asyncio.sleep(self._poll_interval_s)
            return 0
        await self._pool.execute(
            "UPDATE outbox SET relayed_at = now() WHERE outbox_id = ANY($1)",
            [row["outbox_id"] for row in rows],
        )
        self.sent_total += len(rows)
        logger.debug("outbox_relayed", records=len(rows))
        return len(rows)


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
