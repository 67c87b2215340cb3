"""Publishing canonical events and quarantined deliveries to Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from cartstream.config import Settings
from cartstream.errors import PublishTimeoutError
from cartstream.events import Event
from handlers.quarantine import QuarantineRecord
from projections.identity import customer_key

logger = structlog.get_logger(__name__)


def partition_key(event: Event) -> bytes:
    """Key an event by store and customer, so a customer's events stay in order.

    Events that name no customer (refunds, guest checkouts) are keyed by the
    resource they change, so all versions of that resource stay in order.
    """
    key = customer_key(event["customer"])
    if key is None:
        data = event["data"]
        resource = (
            data.get("order_id")
            or data.get("checkout_id")
            or data.get("resource_id")
            or event["id"]
        )
        key = f"{event['type']}:{resource}"
    return f"{event['store_id']}:{key}".encode()


class EventPublisher:
    """An idempotent producer that waits for every write to be acknowledged."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=settings.publish_timeout_ms,
            linger_ms=2,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def _send_all(self, messages: Sequence[tuple[str, bytes, bytes]]) -> None:
        futures = [
            await self._producer.send(topic, value, key=key)
            for topic, key, value in messages
        ]
        await asyncio.gather(*futures)

    async def _send_within_timeout(
        self, messages: Sequence[tuple[str, bytes, bytes]]
    ) -> None:
        timeout_s = self._settings.publish_timeout_ms / 1000
        try:
            await asyncio.wait_for(self._send_all(messages), timeout_s)
        except (TimeoutError, KafkaError) as exc:
            raise PublishTimeoutError(
                f"Kafka did not acknowledge {len(messages)} records "
                f"within {timeout_s:g} s"
            ) from exc

    async def publish_events(self, events: Sequence[Event]) -> None:
        """Send events and return once Kafka acknowledged all of them.

        Raises:
            PublishTimeoutError: an acknowledgement did not arrive in time; some
                events may have been written, and a retried delivery produces
                the same event ids.
        """
        topic = self._settings.topics.events
        await self._send_within_timeout(
            [(topic, partition_key(event), orjson.dumps(event)) for event in events]
        )

    async def quarantine(self, record: QuarantineRecord) -> None:
        """Keep a verified but unmappable delivery whole, with the reason.

        Records are keyed by store and platform, so one store's quarantined
        deliveries keep their order.
        """
        await self._send_within_timeout(
            [
                (
                    self._settings.topics.quarantine,
                    f"{record.store_id}:{record.platform}".encode(),
                    record.to_json(),
                )
            ]
        )
