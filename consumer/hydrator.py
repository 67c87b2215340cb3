"""The BigCommerce hydrator: turns thin notifications into full canonical events.

BigCommerce webhooks name a resource but do not carry it, so the receiver
publishes a ``notification`` event. This consumer group reads those from the
store-events topic, fetches the order, customer or cart through the store's
API credentials and publishes the canonical events to the same topic. The
hydrated events' ids derive from the notification's id, so hydrating a
notification twice publishes the same events again, which the projections
apply once.

Offsets are committed to Kafka after a batch's events are acknowledged, so a
crash repeats at most that batch.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import aiohttp
import asyncpg
import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from cartstream.config import Settings, load_settings
from cartstream.errors import CartstreamError, MappingError, PublishTimeoutError
from cartstream.events import Event
from consumer.batch import DeadLetter, InputRecord, dead_letter_value
from consumer.runtime import dead_letter_producer, input_records, next_offsets
from handlers.platforms.bigcommerce_api import (
    BigCommerceAPIError,
    BigCommerceClient,
    hydrate,
)
from handlers.publisher import EventPublisher
from projections import stores

logger = structlog.get_logger(__name__)

PLATFORM = "bigcommerce"
MAX_ATTEMPTS = 5
RETRY_DELAY_S = 1.0
MAX_RETRY_DELAY_S = 30.0


# Failures of Kafka or PostgreSQL that a later try can fix. The hydrator
# waits and tries the same notification again.
TRANSIENT_ERRORS = (
    PublishTimeoutError,
    KafkaError,
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
)


class HydrationFailedError(CartstreamError):
    """A notification cannot be hydrated; the reason goes to the dead-letter topic."""


class HydrationStoppedError(CartstreamError):
    """The hydrator was stopped while it waited to retry a notification."""


def hydrator_group(settings: Settings) -> str:
    """Return the hydrator's consumer group, derived from the projections' group."""
    return f"{settings.consumer_group}-hydrator"


def needs_hydration(event: Any) -> bool:
    """Tell whether a decoded event is a BigCommerce notification."""
    return (
        isinstance(event, dict)
        and event.get("type") == "notification"
        and event.get("platform") == PLATFORM
        and isinstance(event.get("data"), dict)
        and isinstance(event.get("store_id"), str)
    )


class Hydrator:
    """Consumes notifications and publishes the hydrated events until stopped.

    Args:
        max_attempts: API requests per notification while the failures are
            retriable (timeouts, 429, 5xx). After the last one the
            notification is dead-lettered.
        retry_delay_s: the first wait between requests, doubled each time up
            to 30 s.
    """

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        retry_delay_s: float = RETRY_DELAY_S,
        poll_timeout_ms: int = 500,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._max_attempts = max_attempts
        self._retry_delay_s = retry_delay_s
        self._poll_timeout_ms = poll_timeout_ms
        self.hydrated_total = 0
        self.dead_lettered_total = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Hydrate notifications until ``stop`` is set."""
        settings = self._settings
        group = hydrator_group(settings)
        consumer = AIOKafkaConsumer(
            settings.topics.events,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=settings.batch_max_records,
        )
        publisher = EventPublisher(settings)
        dead_letters = dead_letter_producer(settings)
        await publisher.start()
        await dead_letters.start()
        await consumer.start()
        logger.info("hydrator_started", group=group, topic=settings.topics.events)
        try:
            async with aiohttp.ClientSession() as session:
                while not stop.is_set():
                    batches = await consumer.getmany(timeout_ms=self._poll_timeout_ms)
                    records = input_records(batches)
                    try:
                        for record in records:
                            await self._handle(
                                record, session, publisher, dead_letters, stop
                            )
                    except HydrationStoppedError:
                        # Not committed, so the batch is read again after a restart.
                        break
                    if records:
                        await _commit(consumer, records)
        finally:
            await consumer.stop()
            await dead_letters.stop()
            await publisher.stop()
            logger.info("hydrator_stopped", group=group)

    async def _handle(
        self,
        record: InputRecord,
        session: aiohttp.ClientSession,
        publisher: EventPublisher,
        dead_letters: AIOKafkaProducer,
        stop: asyncio.Event,
    ) -> None:
        """Hydrate one record if it is a BigCommerce notification.

        Raises:
            HydrationStoppedError: ``stop`` was set while a retry waited.
        """
        try:
            event = orjson.loads(record.value or b"")
        except orjson.JSONDecodeError:
            return  # the projection consumer dead-letters what is not JSON
        if not needs_hydration(event):
            return
        log = logger.bind(
            event_id=event.get("id"),
            store_id=event["store_id"],
            partition=record.partition,
            offset=record.offset,
        )
        delay_s = self._retry_delay_s
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._hydrate_and_publish(
                    record, event, session, publisher, dead_letters, stop, log
                )
                return
            except TRANSIENT_ERRORS as exc:
                log.warning("hydration_retried", attempt=attempt, error=repr(exc))
                if await _is_stopped_within(stop, delay_s):
                    raise HydrationStoppedError("stopped while retrying") from exc
                delay_s = min(delay_s * 2, MAX_RETRY_DELAY_S)

    async def _hydrate_and_publish(
        self,
        record: InputRecord,
        event: Event,
        session: aiohttp.ClientSession,
        publisher: EventPublisher,
        dead_letters: AIOKafkaProducer,
        stop: asyncio.Event,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        try:
            events = await self.hydrate_event(event, session, stop)
        except HydrationFailedError as exc:
            await dead_letters.send_and_wait(
                self._settings.topics.dead_letter,
                dead_letter_value(DeadLetter(record, str(exc))),
            )
            self.dead_lettered_total += 1
            log.error("notification_dead_lettered", reason=str(exc))
            return
        if events:
            await publisher.publish_events(events)
            self.hydrated_total += 1
            log.info("notification_hydrated", events=len(events))

    async def hydrate_event(
        self,
        notification: Event,
        session: aiohttp.ClientSession,
        stop: asyncio.Event | None = None,
    ) -> list[Event]:
        """Fetch and map the resource a notification names.

        Returns no events when the store has no BigCommerce credentials.

        Raises:
            HydrationFailedError: the API refused, the resource cannot be
                mapped, or retriable failures lasted through every attempt.
            HydrationStoppedError: ``stop`` was set while a retry waited.
        """
        stop = stop or asyncio.Event()
        store_id = notification["store_id"]
        credentials = await stores.bigcommerce_credentials(self._pool, store_id)
        if credentials is None:
            logger.debug(
                "hydration_skipped", store_id=store_id, reason="no_credentials"
            )
            return []
        named_hash = notification["data"].get("store_hash")
        if named_hash is not None and named_hash != credentials.store_hash:
            raise HydrationFailedError(
                f"notification names store hash {named_hash!r} but store "
                f"{store_id!r} has credentials for {credentials.store_hash!r}"
            )
        client = BigCommerceClient(
            self._settings.bigcommerce_api_url,
            credentials.store_hash,
            credentials.access_token,
            session,
        )

        delay_s = self._retry_delay_s
        for attempt in range(1, self._max_attempts + 1):
            try:
                return await hydrate(client, notification)
            except MappingError as exc:
                raise HydrationFailedError(
                    f"fetched resource cannot be mapped: {exc}"
                ) from exc
            except BigCommerceAPIError as exc:
                if not exc.retriable:
                    raise HydrationFailedError(str(exc)) from exc
                if attempt == self._max_attempts:
                    raise HydrationFailedError(
                        f"{exc} (gave up after {attempt} attempts)"
                    ) from exc
                logger.warning(
                    "hydration_retried",
                    store_id=store_id,
                    attempt=attempt,
                    error=str(exc),
                )
                if await _is_stopped_within(stop, delay_s):
                    raise HydrationStoppedError("stopped while retrying") from exc
                delay_s = min(delay_s * 2, MAX_RETRY_DELAY_S)
        raise AssertionError("unreachable: the loop returns or raises")


async def _is_stopped_within(stop: asyncio.Event, delay_s: float) -> bool:
    """Wait up to ``delay_s``, and return True as soon as ``stop`` is set."""
    try:
        await asyncio.wait_for(stop.wait(), delay_s)
    except TimeoutError:
        return False
    return True


async def _commit(consumer: AIOKafkaConsumer, records: list[InputRecord]) -> None:
    try:
        await consumer.commit(next_offsets(records))
    except KafkaError as exc:
        # The batch is hydrated again after a restart, with the same event ids.
        logger.warning("hydrator_commit_failed", error=type(exc).__name__)


async def run_hydrator(
    settings: Settings, pool: asyncpg.Pool, stop: asyncio.Event
) -> None:
    """Run the BigCommerce hydrator until ``stop`` is set."""
    await Hydrator(settings, pool).run(stop)


# The command line: ``cartstream bigcommerce ...``


async def _set_credentials(args: argparse.Namespace) -> int:
    token = args.token
    if token is None:
        # Read from standard input so the token stays out of the shell history.
        token = sys.stdin.readline().strip()
    settings = load_settings()
    connection = await asyncpg.connect(settings.database_url)
    try:
        await stores.set_bigcommerce_credentials(
            connection, args.store_id, args.store_hash, token
        )
    finally:
        await connection.close()
    print(f"BigCommerce API credentials of store {args.store_id} saved")
    return 0


async def _remove_credentials(args: argparse.Namespace) -> int:
    settings = load_settings()
    connection = await asyncpg.connect(settings.database_url)
    try:
        await stores.remove_bigcommerce_credentials(connection, args.store_id)
    finally:
        await connection.close()
    print(f"BigCommerce API credentials of store {args.store_id} removed")
    return 0


def _bigcommerce(args: argparse.Namespace) -> int:
    if args.action == "set-credentials":
        return asyncio.run(_set_credentials(args))
    return asyncio.run(_remove_credentials(args))


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``cartstream bigcommerce set-credentials|remove-credentials``."""
    group = commands.add_parser(
        "bigcommerce", help="manage the BigCommerce API credentials used for hydration"
    )
    actions = group.add_subparsers(dest="action", required=True)
    set_credentials = actions.add_parser(
        "set-credentials",
        help="store the API account that fetches the resources webhooks name",
    )
    set_credentials.add_argument("store_id")
    set_credentials.add_argument(
        "--store-hash",
        required=True,
        help="the store hash, as in https://api.bigcommerce.com/stores/<hash>/",
    )
    set_credentials.add_argument(
        "--token",
        help="the API account's access token; read from standard input when omitted",
    )
    remove = actions.add_parser(
        "remove-credentials", help="delete a store's credentials; hydration stops"
    )
    remove.add_argument("store_id")
    group.set_defaults(handler=_bigcommerce)
