"""Generated event histories through real Kafka and PostgreSQL equal the oracle.

Each example is one store's history: orders with several snapshots, edits,
refunds embedded and standalone, cancellations after payment, test orders,
deletions, checkouts, profiles, consent, message events, and guests whose email
later joins an account. It is published through EventPublisher with duplicates
and in a random order, applied by two ProjectionConsumers of one group, and
every customers row of the store must equal ``expected_customers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cartstream.config import Settings
from consumer.runtime import ProjectionConsumer
from handlers.publisher import EventPublisher
from tests.projections.test_oracle import (
    Event,
    Ref,
    assert_valid_events,
    checkout_event,
    consent_event,
    customer_event,
    expected_customers,
    line,
    message_event,
    order_deleted_event,
    order_event,
    refund_body,
    refund_event,
)

pytestmark = pytest.mark.integration

ATTRIBUTION_WINDOW_DAYS = 3
ANN = "ann@example.com"
GUS = "gus@example.com"
OWNERS: dict[str, Ref] = {
    "a1": {"id": "101", "email": None},
    "a1-ann": {"id": "101", "email": ANN},
    "a2": {"id": "102", "email": None},
    "a2-ann": {"id": "102", "email": ANN},
    "a2-gus": {"id": "102", "email": GUS},
    "guest-ann": {"id": None, "email": ANN},
    "guest-gus": {"id": None, "email": GUS},
    "nobody": {"id": None, "email": None},
}
ACCOUNT_OWNERS = ["a1", "a1-ann", "a2", "a2-ann", "a2-gus"]
UNITS = ["1.00", "4.50", "9.99", "12.25"]
AMOUNTS = ["0.50", "3.00", "10.00", "12.34"]


# Plans: plain data that build_events turns into canonical events.


@dataclass(frozen=True)
class LinePlan:
    product: str
    quantity: int
    unit: str


@dataclass(frozen=True)
class SnapshotPlan:
    """One order snapshot, ``hours_after`` the previous one."""

    owner: str
    hours_after: int
    extra_quantity: int = 0
    is_test: bool = False
    cancelled: bool = False
    accepts_marketing: bool | None = None


@dataclass(frozen=True)
class RefundPlan:
    """A refund; embedded in snapshots from ``embedded_from`` on, and/or standalone."""

    amount: str
    line_index: int | None
    quantity: int
    standalone: bool
    embedded_from: int | None
    hours_after_order: int


@dataclass(frozen=True)
class OrderPlan:
    order_id: str
    created_hour: int
    lines: tuple[LinePlan, ...]
    snapshots: tuple[SnapshotPlan, ...]
    refunds: tuple[RefundPlan, ...] = ()
    checkout_id: str | None = None
    deleted_after: int | None = None


@dataclass(frozen=True)
class CheckoutPlan:
    checkout_id: str
    owner: str
    created_hour: int
    total: str
    completed_after: int | None = None
    accepts_marketing: bool | None = None


@dataclass(frozen=True)
class ProfilePlan:
    owner: str
    hour: int
    consent: str | None = None


@dataclass(frozen=True)
class MessagePlan:
    message_id: str
    workflow_id: str
    owner: str
    steps: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class History:
    """One store's history; ``delivery`` lists event indexes, repeats allowed."""

    orders: tuple[OrderPlan, ...] = ()
    checkouts: tuple[CheckoutPlan, ...] = ()
    profiles: tuple[ProfilePlan, ...] = ()
    messages: tuple[MessagePlan, ...] = ()
    consents: tuple[tuple[str, int, str], ...] = ()
    delivery: tuple[int, ...] | None = None


def _order_events(store_id: str, plan: OrderPlan) -> list[Event]:
    events = []
    hour = plan.created_hour
    for index, snapshot in enumerate(plan.snapshots):
        hour += snapshot.hours_after
        lines = []
        for number, line_plan in enumerate(plan.lines):
            quantity = line_plan.quantity + (
                snapshot.extra_quantity if number == 0 else 0
            )
            lines.append(
                line(
                    f"{plan.order_id}-l{number}",
                    line_plan.product,
                    quantity,
                    line_plan.unit,
                )
            )
        total = sum((Decimal(item["total"]) for item in lines), Decimal("5.00"))
        refunds = [
            _refund_body(plan, number, refund)
            for number, refund in enumerate(plan.refunds)
            if refund.embedded_from is not None and index >= refund.embedded_from
        ]
        events.append(
            order_event(
                store_id,
                f"{plan.order_id}-v{index}",
                order_id=plan.order_id,
                ref=OWNERS[snapshot.owner],
                created_hour=plan.created_hour,
                updated_hour=hour,
                lines=lines,
                total=str(total),
                is_test=snapshot.is_test,
                cancelled_hour=hour if snapshot.cancelled else None,
                status="refunded" if snapshot.cancelled else "paid",
                checkout_id=plan.checkout_id,
                refunds=refunds,
                accepts_marketing=snapshot.accepts_marketing,
            )
        )
    for number, refund in enumerate(plan.refunds):
        if refund.standalone:
            events.append(
                refund_event(
                    store_id,
                    f"{plan.order_id}-refund{number}",
                    order_id=plan.order_id,
                    hour=plan.created_hour + refund.hours_after_order,
                    body=_refund_body(plan, number, refund),
                )
            )
    if plan.deleted_after is not None:
        events.append(
            order_deleted_event(
                store_id,
                f"{plan.order_id}-deleted",
                order_id=plan.order_id,
                hour=plan.created_hour + plan.deleted_after,
            )
        )
    return events


def _refund_body(plan: OrderPlan, number: int, refund: RefundPlan) -> dict[str, Any]:
    lines: list[tuple[str | None, str | None, int]] = []
    if refund.line_index is not None and refund.line_index < len(plan.lines):
        line_id = f"{plan.order_id}-l{refund.line_index}"
        lines.append((line_id, None, refund.quantity))
    elif refund.line_index is not None:
        lines.append((None, "p-unknown", refund.quantity))
    return refund_body(f"{plan.order_id}-r{number}", refund.amount, lines)


def build_events(history: History, store_id: str) -> list[Event]:
    """Return every distinct event of a history, in plan order."""
    events: list[Event] = []
    for order in history.orders:
        events.extend(_order_events(store_id, order))
    for checkout in history.checkouts:
        completed = checkout.completed_after is not None
        versions = (
            [(0, None), (1, checkout.completed_after)] if completed else [(0, None)]
        )
        for version, completed_after in versions:
            hour = checkout.created_hour + (completed_after or 0)
            events.append(
                checkout_event(
                    store_id,
                    f"{checkout.checkout_id}-v{version}",
                    checkout_id=checkout.checkout_id,
                    ref=OWNERS[checkout.owner],
                    created_hour=checkout.created_hour,
                    updated_hour=hour,
                    total=checkout.total,
                    completed_hour=None if completed_after is None else hour,
                    accepts_marketing=checkout.accepts_marketing,
                )
            )
    for number, profile in enumerate(history.profiles):
        events.append(
            customer_event(
                store_id,
                f"profile-{number}",
                ref=OWNERS[profile.owner],
                hour=profile.hour,
                first_name=f"Name{number}",
                consent=profile.consent,
            )
        )
    for message in history.messages:
        for kind, hour in message.steps:
            events.append(
                message_event(
                    store_id,
                    f"{message.message_id}-{kind}-{hour}",
                    ref=OWNERS[message.owner],
                    hour=hour,
                    message_id=message.message_id,
                    workflow_id=message.workflow_id,
                    kind=kind,
                )
            )
    for number, (owner, hour, state) in enumerate(history.consents):
        events.append(
            consent_event(
                store_id, f"consent-{number}", ref=OWNERS[owner], hour=hour, state=state
            )
        )
    return events


def delivered_events(history: History, store_id: str) -> list[Event]:
    """Return the events in delivery order, duplicates included."""
    events = build_events(history, store_id)
    if history.delivery is None:
        return events
    return [events[index] for index in history.delivery]


# Strategies

owners = st.sampled_from(list(OWNERS))


@st.composite
def order_plans(draw: st.DrawFn, order_id: str, checkout_ids: list[str]) -> OrderPlan:
    lines = draw(
        st.lists(
            st.builds(
                LinePlan,
                st.sampled_from(["p1", "p2", "p3"]),
                st.integers(1, 3),
                st.sampled_from(UNITS),
            ),
            min_size=1,
            max_size=2,
        )
    )
    first_owner = draw(owners)
    snapshots = draw(
        st.lists(
            st.builds(
                SnapshotPlan,
                # A later snapshot often keeps the owner, or links the guest.
                st.sampled_from([first_owner, first_owner, "a1", "a1-ann", "a2"]),
                st.integers(0, 30),
                st.integers(0, 2),
                st.sampled_from([False, False, False, True]),
                st.sampled_from([False, False, True]),
                st.none() | st.booleans(),
            ),
            min_size=1,
            max_size=3,
        )
    )
    snapshots[0] = replace(snapshots[0], owner=first_owner, hours_after=0)
    refunds = draw(
        st.lists(
            st.builds(
                RefundPlan,
                st.sampled_from(AMOUNTS),
                st.none() | st.integers(0, 2),
                st.integers(0, 3),
                st.booleans(),
                st.none() | st.integers(0, len(snapshots) - 1),
                st.integers(0, 60),
            ),
            max_size=2,
        )
    )
    return OrderPlan(
        order_id=order_id,
        created_hour=draw(st.integers(0, 150)),
        lines=tuple(lines),
        snapshots=tuple(snapshots),
        refunds=tuple(refunds),
        checkout_id=draw(st.none() | st.sampled_from(checkout_ids)),
        deleted_after=draw(st.sampled_from([None, None, None, 0, 10, 40])),
    )


@st.composite
def message_plans(draw: st.DrawFn, message_id: str) -> MessagePlan:
    start = draw(st.integers(0, 150))
    kinds = ["sent", "opened", "clicked", "unsubscribed"]
    chosen = draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=4, unique=True))
    steps = tuple(
        (kind, start + kinds.index(kind) * draw(st.integers(0, 30))) for kind in chosen
    )
    return MessagePlan(
        message_id, draw(st.sampled_from(["welcome", "winback"])), draw(owners), steps
    )


@st.composite
def histories(draw: st.DrawFn) -> History:
    checkouts = tuple(
        draw(
            st.builds(
                CheckoutPlan,
                st.just(f"k{number}"),
                owners,
                st.integers(0, 200),
                st.sampled_from(AMOUNTS),
                st.none() | st.integers(0, 20),
                st.none() | st.booleans(),
            )
        )
        for number in range(draw(st.integers(0, 2)))
    )
    checkout_ids = [c.checkout_id for c in checkouts] + ["k-other"]
    orders = tuple(
        draw(order_plans(f"70{number}", checkout_ids))
        for number in range(draw(st.integers(1, 4)))
    )
    profiles = tuple(
        draw(
            st.lists(
                st.builds(
                    ProfilePlan,
                    st.sampled_from(ACCOUNT_OWNERS),
                    st.integers(0, 250),
                    st.none() | st.sampled_from(["subscribed", "unsubscribed"]),
                ),
                max_size=2,
            )
        )
    )
    messages = tuple(
        draw(message_plans(f"m{number}")) for number in range(draw(st.integers(0, 4)))
    )
    consents = tuple(
        draw(
            st.lists(
                st.tuples(
                    owners,
                    st.integers(0, 250),
                    st.sampled_from(["subscribed", "unsubscribed"]),
                ),
                max_size=1,
            )
        )
    )
    history = History(orders, checkouts, profiles, messages, consents)
    count = len(build_events(history, "count"))
    duplicates = draw(st.lists(st.integers(0, count - 1), max_size=4))
    delivery = draw(st.permutations(list(range(count)) + duplicates))
    return replace(history, delivery=tuple(delivery))


# Hand-made histories kept as fixed examples


def guest_first_then_account() -> History:
    """A guest's order, then the account that claims its email, and a click."""
    return History(
        orders=(
            OrderPlan(
                "701",
                0,
                (LinePlan("p1", 2, "4.50"),),
                (SnapshotPlan("guest-ann", 0, accepts_marketing=True),),
                refunds=(RefundPlan("3.00", 0, 1, True, None, 5),),
            ),
            OrderPlan(
                "702",
                100,
                (LinePlan("p2", 1, "9.99"),),
                (SnapshotPlan("a1", 0), SnapshotPlan("a1", 2, extra_quantity=1)),
            ),
        ),
        profiles=(ProfilePlan("a1-ann", 50, "subscribed"),),
        messages=(
            MessagePlan("m0", "welcome", "guest-ann", (("sent", 60), ("clicked", 70))),
        ),
    )


def account_first_then_guest() -> History:
    """The same facts delivered newest first, so the account exists before the guest."""
    history = guest_first_then_account()
    count = len(build_events(history, "count"))
    return replace(history, delivery=tuple(reversed(range(count))))


def competing_accounts_for_one_email() -> History:
    """Two accounts seen with one email: the newer alias takes the guest."""
    return History(
        orders=(
            OrderPlan(
                "701",
                10,
                (LinePlan("p1", 1, "1.00"),),
                (SnapshotPlan("guest-ann", 0),),
                checkout_id="k0",
                deleted_after=None,
            ),
        ),
        checkouts=(CheckoutPlan("k0", "guest-ann", 5, "3.00"),),
        profiles=(ProfilePlan("a1-ann", 20), ProfilePlan("a2-ann", 30)),
        delivery=(3, 2, 1, 0, 3),
    )


def cancelled_after_refund_and_deleted() -> History:
    """A paid order refunded in part, cancelled, and another one deleted."""
    return History(
        orders=(
            OrderPlan(
                "701",
                0,
                (LinePlan("p1", 3, "9.99"), LinePlan("p2", 1, "4.50")),
                (
                    SnapshotPlan("a2-gus", 0),
                    SnapshotPlan("a2-gus", 4),
                    SnapshotPlan("a2-gus", 4, cancelled=True),
                ),
                refunds=(RefundPlan("10.00", 0, 1, True, 1, 3),),
            ),
            OrderPlan(
                "702",
                20,
                (LinePlan("p3", 2, "12.25"),),
                (SnapshotPlan("guest-gus", 0),),
                deleted_after=10,
            ),
        ),
    )


# The harness: two consumers of one group, a publisher and an offsets reader.


@dataclass
class Harness:
    settings: Settings
    pool: asyncpg.Pool
    publisher: EventPublisher
    offsets: AIOKafkaConsumer
    stores: itertools.count[int]

    async def deliver(self, events: list[Event]) -> None:
        """Publish events and wait until the consumers applied all of them."""
        await self.publisher.publish_events(events)
        topic = self.settings.topics.events
        partitions = self.offsets.partitions_for_topic(topic) or set()
        ends = await self.offsets.end_offsets(
            [TopicPartition(topic, p) for p in partitions]
        )
        deadline = time.monotonic() + 30
        while True:
            rows = await self.pool.fetch(
                "SELECT partition, next_offset FROM checkpoints WHERE consumer = $1",
                self.settings.consumer_group,
            )
            done = {row["partition"]: row["next_offset"] for row in rows}
            if all(done.get(tp.partition, 0) >= end for tp, end in ends.items()):
                return
            assert time.monotonic() < deadline, f"not applied: {done} < {ends}"
            await asyncio.sleep(0.05)


@pytest.fixture
async def harness(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[Harness]:
    settings = replace(
        settings, batch_max_records=7, attribution_window_days=ATTRIBUTION_WINDOW_DAYS
    )
    stop = asyncio.Event()
    consumers = [
        asyncio.create_task(
            ProjectionConsumer(settings, pool, poll_timeout_ms=100).run(stop)
        )
        for _ in range(2)
    ]
    publisher = EventPublisher(settings)
    await publisher.start()
    offsets = AIOKafkaConsumer(
        settings.topics.events, bootstrap_servers=settings.kafka_bootstrap
    )
    await offsets.start()
    try:
        yield Harness(settings, pool, publisher, offsets, itertools.count())
    finally:
        stop.set()
        await offsets.stop()
        await publisher.stop()
        for task in consumers:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 30)


def _row_values(row: asyncpg.Record, names: list[str]) -> dict[str, Any]:
    values = {}
    for name in names:
        value = row[name]
        if name in ("latest_orders", "top_purchases", "workflow_stats"):
            value = orjson.loads(value)
        values[name] = value
    return values


async def assert_projection_equals_oracle(
    harness: Harness, store_id: str, events: list[Event]
) -> None:
    expected = expected_customers(events, ATTRIBUTION_WINDOW_DAYS)
    rows = await harness.pool.fetch(
        "SELECT * FROM customers WHERE store_id = $1 ORDER BY customer_key", store_id
    )
    actual = {row["customer_key"]: row for row in rows}

    assert sorted(actual) == sorted(expected)
    for key, values in expected.items():
        assert _row_values(actual[key], list(values)) == values, key


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@example(history=guest_first_then_account())
@example(history=account_first_then_guest())
@example(history=competing_accounts_for_one_email())
@example(history=cancelled_after_refund_and_deleted())
@given(history=histories())
async def test_projection_equals_oracle_for_any_delivery(
    harness: Harness, history: History
) -> None:
    store_id = f"store-{next(harness.stores)}"
    events = delivered_events(history, store_id)
    assert_valid_events(events)

    await harness.deliver(events)

    await assert_projection_equals_oracle(harness, store_id, events)
