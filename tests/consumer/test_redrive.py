"""Quarantine list and redrive against the real receiver, Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
from collections.abc import AsyncIterator

import asyncpg
import pytest
from multidict import CIMultiDict

from cartstream.config import Settings
from cartstream.events import Event, event_id
from consumer.redrive import list_quarantine, redrive
from handlers.platforms.base import Delivery, ParsedDelivery, Platform
from handlers.platforms.registry import default_platforms
from handlers.platforms.standard import StandardWebhooksPlatform
from handlers.platforms.woocommerce import WooCommercePlatform
from handlers.publisher import EventPublisher
from tests.conftest import running_services
from tests.handlers.receiver_support import (
    STANDARD_ORDER,
    STANDARD_SECRET,
    add_store,
    post_raw,
    printed_lines,
    run_command,
    standard_headers,
    woo_headers,
)
from tests.helpers import WEBHOOKS_DIR, read_topic

pytestmark = pytest.mark.integration

# WooCommerce Subscriptions sends subscription.* topics with an order-shaped
# body; the receiver does not map them, so they are quarantined.
SUBSCRIPTION_TOPIC = "subscription.created"


class SubscriptionWooCommerce(WooCommercePlatform):
    """WooCommerce that maps subscriptions as orders, as a later release might."""

    def parse(self, delivery: Delivery) -> ParsedDelivery:
        topic = delivery.headers.get("X-WC-Webhook-Topic")
        if topic != SUBSCRIPTION_TOPIC:
            return super().parse(delivery)
        headers = CIMultiDict(delivery.headers)
        headers["X-WC-Webhook-Topic"] = "order.created"
        renamed = Delivery(
            store_id=delivery.store_id,
            body=delivery.body,
            headers=headers,
            received_at=delivery.received_at,
        )
        parsed = super().parse(renamed)
        key = f"{SUBSCRIPTION_TOPIC}:sha256:{hashlib.sha256(delivery.body).hexdigest()}"
        return ParsedDelivery(
            topic="order.created", delivery_id=key, payload=parsed.payload
        )


class LenientStandard(StandardWebhooksPlatform):
    """Standard Webhooks that takes an order without ``is_test`` as a real order."""

    def map(self, delivery: Delivery, parsed: ParsedDelivery) -> list[Event]:
        data = parsed.payload.get("data")
        if parsed.topic.startswith("order") and isinstance(data, dict):
            data.setdefault("is_test", False)
        return super().map(delivery, parsed)


@pytest.fixture
async def publisher(settings: Settings) -> AsyncIterator[EventPublisher]:
    publisher = EventPublisher(settings)
    await publisher.start()
    yield publisher
    await publisher.stop()


async def quarantine_two_stores(settings: Settings, pool: asyncpg.Pool) -> bytes:
    """Post one subscription delivery to each of two stores; return the body."""
    _, _, secret_a = await add_store(pool, "woo-a", "woocommerce")
    _, _, secret_b = await add_store(pool, "woo-b", "woocommerce")
    body = (WEBHOOKS_DIR / "woocommerce-order-created-docs-v3.json").read_bytes()
    async with running_services(settings, consume=False):
        for store_id, secret in [("woo-a", secret_a), ("woo-b", secret_b)]:
            status, answer = await post_raw(
                settings,
                f"/webhooks/woocommerce/{store_id}",
                body,
                woo_headers(body, secret, SUBSCRIPTION_TOPIC),
            )
            assert status == 422
            assert answer["error"]["field"] == "X-WC-Webhook-Topic"
    return body


async def test_list_shows_reasons_per_store(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    body = await quarantine_two_stores(settings, pool)

    everything = await list_quarantine(settings, pool)
    only_b = await list_quarantine(settings, pool, store_id="woo-b")

    assert [entry.record.store_id for entry in everything] == ["woo-a", "woo-b"]
    assert [entry.record.store_id for entry in only_b] == ["woo-b"]
    entry = only_b[0]
    assert entry.record.platform == "woocommerce"
    assert entry.record.reason.startswith(
        "unsupported WooCommerce topic 'subscription.created'"
    )
    assert entry.record.field == "X-WC-Webhook-Topic"
    assert entry.record.body == body
    assert entry.record.headers["x-wc-webhook-topic"] == SUBSCRIPTION_TOPIC
    assert "x-wc-webhook-signature" not in entry.record.headers
    assert entry.redriven_at is None


async def test_redrive_publishes_once_with_original_ids(
    settings: Settings, pool: asyncpg.Pool, publisher: EventPublisher
) -> None:
    body = await quarantine_two_stores(settings, pool)
    platforms: dict[str, Platform] = {
        **default_platforms(),
        "woocommerce": SubscriptionWooCommerce(),
    }

    unchanged = await redrive(settings, pool, publisher, default_platforms())
    first = await redrive(settings, pool, publisher, platforms, store_id="woo-a")
    second = await redrive(settings, pool, publisher, platforms)
    third = await redrive(settings, pool, publisher, platforms)
    events = await read_topic(settings, settings.topics.events)
    listed = await list_quarantine(settings, pool)

    # The current code still cannot map them: nothing published or marked.
    assert len(unchanged.failed) == 2
    assert unchanged.redriven == {}
    key = f"{SUBSCRIPTION_TOPIC}:sha256:{hashlib.sha256(body).hexdigest()}"
    expected_a = event_id("woocommerce", "woo-a", key)
    expected_b = event_id("woocommerce", "woo-b", key)
    assert list(first.redriven.values()) == [[expected_a]]
    assert list(second.redriven.values()) == [[expected_b]]
    assert len(second.already_redriven) == 1
    assert third.redriven == {}
    assert len(third.already_redriven) == 2
    assert sorted(event["id"] for event in events) == sorted([expected_a, expected_b])
    assert {event["data"]["order_id"] for event in events} == {"727"}
    assert all(entry.redriven_at is not None for entry in listed)


async def test_retry_after_redrive_is_a_duplicate(
    settings: Settings, pool: asyncpg.Pool, publisher: EventPublisher
) -> None:
    """A missing field is quarantined; once redriven, a retry publishes nothing."""
    await add_store(pool, "std-q", "standard", STANDARD_SECRET)
    order = copy.deepcopy(STANDARD_ORDER)
    del order["data"]["is_test"]
    body = json.dumps(order).encode()
    path = "/webhooks/standard/std-q"
    async with running_services(settings, consume=False):
        first = await post_raw(
            settings, path, body, standard_headers(body, STANDARD_SECRET, "msg_q")
        )
        entries = await list_quarantine(settings, pool)
        quarantine_id = entries[0].record.quarantine_id
        result = await redrive(
            settings,
            pool,
            publisher,
            {"standard": LenientStandard()},
            quarantine_ids=[quarantine_id, "no-such-id"],
        )
        # The receiver still runs the code that rejects the order, but it
        # finds the delivery id that the redrive published.
        retry = await post_raw(
            settings, path, body, standard_headers(body, STANDARD_SECRET, "msg_q")
        )
    events = await read_topic(settings, settings.topics.events)

    assert first[0] == 422
    assert first[1]["error"]["field"] == "data.is_test"
    assert len(entries) == 1
    assert entries[0].record.delivery_id == "msg_q"
    assert entries[0].record.topic == "order.created"
    expected_id = event_id("standard", "std-q", "msg_q")
    assert result.redriven == {quarantine_id: [expected_id]}
    assert result.not_found == ["no-such-id"]
    assert retry == (200, {"status": "duplicate", "event_ids": [expected_id]})
    assert [event["id"] for event in events] == [expected_id]
    assert events[0]["data"]["is_test"] is False
    assert events[0]["data"]["order_id"] == "5001"
    assert len(await list_quarantine(settings, pool)) == 1


async def test_cli_lists_and_reports_unmappable(
    settings: Settings,
    pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await quarantine_two_stores(settings, pool)
    monkeypatch.setenv("CARTSTREAM_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CARTSTREAM_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    monkeypatch.setenv("CARTSTREAM_TOPIC_PREFIX", settings.topics.prefix)

    capsys.readouterr()
    listed = await asyncio.to_thread(
        run_command, ["quarantine", "list", "--store", "woo-a"]
    )
    listing = printed_lines(capsys.readouterr().out)
    redriven = await asyncio.to_thread(run_command, ["quarantine", "redrive"])
    report = printed_lines(capsys.readouterr().out)

    assert listed == 0
    assert len(listing) == 2
    assert "\twoo-a\twoocommerce\t" in listing[0]
    assert "\tpending\ttopic -\tunsupported WooCommerce topic" in listing[0]
    assert listing[0].endswith("(field X-WC-Webhook-Topic)")
    assert listing[1] == "1 quarantined deliveries, 1 not redriven"
    # The shipped WooCommerce code still cannot map them, so the command fails.
    assert redriven == 1
    assert sum(line.startswith("still unmappable ") for line in report) == 2
    assert report[-1] == "0 redriven, 2 still unmappable, 0 redriven before"
