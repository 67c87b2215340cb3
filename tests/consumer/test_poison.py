"""A record that fails after the apply step is dead-lettered alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

import projections.recompute
from cartstream.config import Settings
from consumer.dead_letters import read_dead_letters
from consumer.runtime import ProjectionConsumer
from handlers.publisher import EventPublisher
from projections.metrics import Metrics, Order, compute_metrics
from tests.consumer.test_restart import order_event
from tests.helpers import read_topic, wait_until_applied

pytestmark = pytest.mark.integration


async def test_failing_recompute_dead_letters_only_that_record(
    settings: Settings, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison = order_event(2, 0)

    def failing_for_poison(
        orders: Sequence[Order], *args: Any, **kwargs: Any
    ) -> Metrics:
        if any(order.order_id == poison["data"]["order_id"] for order in orders):
            raise ArithmeticError("metrics overflow")
        return compute_metrics(orders, *args, **kwargs)

    monkeypatch.setattr(projections.recompute, "compute_metrics", failing_for_poison)

    publisher = EventPublisher(settings)
    await publisher.start()
    await publisher.publish_events([order_event(1, 0), poison, order_event(3, 0)])
    await publisher.stop()

    stop = asyncio.Event()
    task = asyncio.create_task(ProjectionConsumer(settings, pool).run(stop))
    await wait_until_applied(settings, pool)
    stop.set()
    await task

    keys = {
        row["customer_key"]
        for row in await pool.fetch("SELECT customer_key FROM customers")
    }
    assert keys == {"c:1", "c:3"}
    letters = await read_topic(settings, settings.topics.dead_letter)
    assert len(letters) == 1
    assert letters[0]["reason"] == "record failed to apply: ArithmeticError"
    assert '"order_id":"1200"' in letters[0]["value"]

    listed = await read_dead_letters(settings)
    assert len(listed) == 1
    assert listed[0].reason == "record failed to apply: ArithmeticError"
    assert (
        listed[0].source
        == f"{settings.topics.events}/{letters[0]['partition']}/{letters[0]['offset']}"
    )
