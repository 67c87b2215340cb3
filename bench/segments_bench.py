"""Measure the consumer's segment-evaluation step per touched customer.

A store has 100 segments of the shapes merchants write. Each simulated event
changes one customer's row the way the projection would: an order, a
checkout, an opt-in change, a message report or a profile edit. The step then
picks the segments to evaluate and evaluates them on the new record, once
with the dependency index (only segments whose rules read a changed field)
and once without it (every segment). It is pure Python, so the membership
reads and writes in PostgreSQL are not part of it. ``--postgres`` adds one
run of ``apply_batch`` on an embedded PostgreSQL server on 127.0.0.1.

Run from the repository root: .venv/bin/python bench/segments_bench.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cartstream.log import configure_logging  # noqa: E402
from projections.catalogue import changed_fields, customer_record  # noqa: E402
from projections.segments import (  # noqa: E402
    DependencyIndex,
    SegmentCache,
    SegmentVersion,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
COUNTRIES = ["US", "US", "US", "CA", "GB", "DE", "FR", "AU", "NL", "SE"]
TAGS = ["vip", "wholesale", "newsletter", "returning", "sale-hunter", "gift"]
OPT_IN = ["subscribed", "subscribed", "not_subscribed", "unsubscribed", None]
# Share of each event kind in the simulated stream.
EVENT_MIX = [
    ("order", 0.35),
    ("checkout", 0.25),
    ("message", 0.25),
    ("consent", 0.05),
    ("profile", 0.10),
]

# Rounds of one event per customer in the --postgres run.
ROUNDS = 5

Row = dict[str, Any]
Rule = dict[str, Any]


def make_row(rng: random.Random, number: int) -> Row:
    """Build one customers row as ``recompute_customer`` stores it."""
    orders = 0 if rng.random() < 0.3 else rng.randint(1, 30)
    first = NOW - timedelta(days=rng.randint(30, 1500)) if orders else None
    last = None
    if first is not None:
        last = first + (NOW - first) * rng.random()
    sent = rng.randint(0, 40)
    converted = min(orders, rng.randint(0, 3)) if sent else 0
    started = rng.randint(0, 6)
    abandoned = rng.randint(0, started)
    return {
        "store_id": "shop-1",
        "customer_key": f"c:{number}",
        "customer_id": str(number) if rng.random() < 0.8 else None,
        "email": f"customer{number}@example.com",
        "currency": "USD" if orders else None,
        "lifetime_orders": orders,
        "lifetime_sales": Decimal(f"{orders * rng.uniform(15, 180):.2f}"),
        "total_products": orders * rng.randint(1, 4),
        "first_order_at": first,
        "last_order_at": last,
        "average_purchase_frequency_days": (
            Decimal(f"{rng.uniform(7, 200):.2f}") if orders >= 2 else None
        ),
        "email_opt_in": rng.choice(OPT_IN),
        "email_opt_in_at": NOW - timedelta(days=rng.randint(0, 900)),
        "checkouts_started": started,
        "checkouts_completed": started - abandoned,
        "checkouts_abandoned": abandoned,
        "open_cart_value": Decimal(f"{abandoned * rng.uniform(10, 150):.2f}"),
        "messages_sent": sent,
        "messages_opened": rng.randint(0, sent),
        "messages_clicked": rng.randint(0, sent // 2),
        "converted_orders": converted,
        "converted_revenue": Decimal(f"{converted * rng.uniform(15, 180):.2f}"),
        "conversion_rate": (
            (Decimal(converted) / sent).quantize(Decimal("0.0001")) if sent else None
        ),
        "tags": rng.sample(TAGS, rng.randint(0, 3)),
        "country": rng.choice(COUNTRIES),
        "customer_created_at": NOW - timedelta(days=rng.randint(1, 2000)),
        "newest_abandoned_checkout_at": (
            NOW - timedelta(hours=rng.randint(0, 400)) if abandoned else None
        ),
    }


def make_clause(rng: random.Random) -> Rule:
    """Build one condition over catalogue fields, of a shape merchants write."""
    kind = rng.randrange(12)
    days = {"var": "days_since_last_order"}
    clauses: list[Callable[[], Rule]] = [
        lambda: {">=": [{"var": "lifetime_orders"}, rng.randint(1, 10)]},
        lambda: {">": [{"var": "lifetime_sales"}, rng.choice([100, 250, 500])]},
        lambda: {rng.choice(["<=", ">"]): [days, rng.choice([30, 90, 180])]},
        lambda: {"==": [{"var": "email_opt_in"}, "subscribed"]},
        lambda: {"in": [{"var": "country"}, rng.sample(COUNTRIES[3:], 2) + ["US"]]},
        lambda: {"in": [rng.choice(TAGS), {"var": "tags"}]},
        lambda: {"<": [{"var": "hours_since_abandoned_checkout"}, 24]},
        lambda: {">=": [{"var": "open_cart_value"}, rng.choice([25, 50, 100])]},
        lambda: {">": [{"var": "messages_opened"}, rng.choice([0, 2, 5])]},
        lambda: {">=": [{"var": "conversion_rate"}, 0.1]},
        lambda: {"!=": [{"var": "country"}, rng.choice(COUNTRIES)]},
        lambda: {"<": [{"var": "last_order_at"}, f"2025-{rng.randint(1, 12):02d}-01"]},
    ]
    return clauses[kind]()


def make_rule(rng: random.Random) -> Rule:
    """Build a rule of 1 to 4 conditions joined by and, or both."""
    clauses = [make_clause(rng) for _ in range(rng.randint(1, 4))]
    if len(clauses) == 1:
        return clauses[0]
    if rng.random() < 0.7:
        return {"and": clauses}
    return {"or": clauses}


def change_row(rng: random.Random, row: Row) -> tuple[str, Row]:
    """Return the kind of one event drawn from ``EVENT_MIX`` and the row after it."""
    after = dict(row)
    kind = rng.choices([k for k, _ in EVENT_MIX], [w for _, w in EVENT_MIX])[0]
    if kind == "order":
        orders = row["lifetime_orders"] + 1
        after["lifetime_orders"] = orders
        after["lifetime_sales"] = row["lifetime_sales"] + Decimal("42.50")
        after["total_products"] = row["total_products"] + 2
        after["last_order_at"] = NOW - timedelta(minutes=rng.randint(1, 60))
        after["first_order_at"] = row["first_order_at"] or after["last_order_at"]
        after["currency"] = "USD"
        if orders >= 2:
            after["average_purchase_frequency_days"] = Decimal("31.25")
    elif kind == "checkout":
        after["checkouts_started"] = row["checkouts_started"] + 1
        after["checkouts_abandoned"] = row["checkouts_abandoned"] + 1
        after["open_cart_value"] = row["open_cart_value"] + Decimal("55.00")
    elif kind == "message":
        sent = row["messages_sent"] + 1
        after["messages_sent"] = sent
        rate = Decimal(row["converted_orders"]) / sent
        after["conversion_rate"] = rate.quantize(Decimal("0.0001"))
    elif kind == "consent":
        after["email_opt_in"] = rng.choice(["subscribed", "unsubscribed"])
        after["email_opt_in_at"] = NOW
    else:
        # The email is read by no rule; tags change in one edit of five.
        after["email"] = "new-" + row["email"]
        if rng.random() < 0.2:
            after["tags"] = [*row["tags"], "returning"]
    return kind, after


def step_with_index(index: DependencyIndex, before: Row, after: Row) -> tuple[int, int]:
    """Run the consumer's step: compare the rows, select segments, evaluate them."""
    selected = index.select(changed_fields(before, after))
    if not selected:
        return 0, 0
    record = customer_record(after, NOW)
    matched = sum(1 for segment in selected if segment.compiled.matches(record))
    return len(selected), matched


def step_without_index(
    segments: list[SegmentVersion], before: Row, after: Row
) -> tuple[int, int]:
    del before
    record = customer_record(after, NOW)
    matched = sum(1 for segment in segments if segment.compiled.matches(record))
    return len(segments), matched


def measure(
    step: Callable[[Row, Row], tuple[int, int]],
    pairs: list[tuple[Row, Row]],
    repeats: int,
) -> tuple[float, float]:
    """Return the µs per customer of the fastest of ``repeats`` runs, and evaluations.

    The fastest run is the one least disturbed by other work on the machine.
    """
    timings = []
    evaluations = 0
    for _ in range(repeats):
        evaluations = 0
        started = time.perf_counter()
        for before, after in pairs:
            evaluated, _ = step(before, after)
            evaluations += evaluated
        timings.append(time.perf_counter() - started)
    per_customer_us = min(timings) / len(pairs) * 1e6
    return per_customer_us, evaluations / len(pairs)


def run_pure(segment_count: int, events: int, repeats: int, seed: int) -> None:
    rng = random.Random(seed)
    cache = SegmentCache()
    segments = [
        cache.segment("shop-1", f"s{n:04d}", 1, f"Segment {n}", make_rule(rng))
        for n in range(segment_count)
    ]
    index = DependencyIndex(segments)
    rows = [make_row(rng, n) for n in range(2_000)]
    pairs_by_kind: dict[str, list[tuple[Row, Row]]] = {
        kind: [] for kind, _ in EVENT_MIX
    }
    for _ in range(events):
        before = rng.choice(rows)
        kind, after = change_row(rng, before)
        pairs_by_kind[kind].append((before, after))
    pairs_by_kind["all"] = [
        pair for kind, _ in EVENT_MIX for pair in pairs_by_kind[kind]
    ]

    print(f"segments: {segment_count}, events: {events}, repeats: {repeats}")
    print()
    print(
        "| event kind | events | rules evaluated per event, index on "
        "| µs per touched customer, index on | µs, index off |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for kind, pairs in pairs_by_kind.items():
        indexed_us, indexed_evaluations = measure(
            lambda before, after: step_with_index(index, before, after), pairs, repeats
        )
        full_us, _ = measure(
            lambda before, after: step_without_index(segments, before, after),
            pairs,
            repeats,
        )
        print(
            f"| {kind} | {len(pairs)} | {indexed_evaluations:.1f} "
            f"| {indexed_us:.1f} | {full_us:.1f} |"
        )


async def run_postgres(segment_count: int, customers: int, seed: int) -> None:
    """Time ``apply_batch`` with the index on and off on embedded PostgreSQL."""
    import asyncpg

    import projections.segments as segments_module
    from cartstream.stack.postgres import start_postgres, stop_postgres
    from consumer.batch import InputRecord, apply_batch
    from projections.migrate import migrate
    from tests.projections.segment_events import insert_segment, order_event

    rng = random.Random(seed)
    # Under the project's state folder, which the server's own user can reach
    # when the bench runs as root; the tests' stack lives there too.
    state_dir = ROOT / ".cartstream" / f"segments-bench-{os.getpid()}"
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        node = start_postgres(state_dir)
        try:
            connection = await asyncpg.connect(node.database_url)
            try:
                await migrate(connection)
                for n in range(segment_count):
                    await insert_segment(connection, f"s{n:04d}", make_rule(rng))
                offset = 0

                async def apply(events: list[dict[str, Any]]) -> float:
                    nonlocal offset
                    records = []
                    for event in events:
                        records.append(InputRecord("bench", 0, offset, _dumps(event)))
                        offset += 1
                    started = time.perf_counter()
                    await apply_batch(
                        connection,
                        records,
                        consumer="bench",
                        segment_cache=cache,
                        changes_topic="bench-changes",
                        now=NOW,
                    )
                    return time.perf_counter() - started

                cache = SegmentCache()
                start = NOW - timedelta(days=400)
                await apply(
                    [
                        order_event(str(c), f"{c}-0", start + timedelta(hours=c))
                        for c in range(customers)
                    ]
                )
                results = {}
                original = segments_module.changed_fields  # type: ignore[attr-defined]
                seconds = {"on": 0.0, "off": 0.0}
                modes = (("on", original), ("off", _every_field))
                # Rounds alternate the modes, so both see stores of the same size.
                for round_number in range(ROUNDS):
                    for label, fields in modes:
                        setattr(segments_module, "changed_fields", fields)  # noqa: B010
                        moment = start + timedelta(days=10 * (round_number + 1))
                        events = [
                            mixed_event(rng, c, f"{label}-{round_number}", moment)
                            for c in range(customers)
                        ]
                        for first in range(0, customers, 100):
                            seconds[label] += await apply(events[first : first + 100])
                for label, total in seconds.items():
                    results[label] = total / (ROUNDS * customers) * 1e6
                setattr(segments_module, "changed_fields", original)  # noqa: B010
            finally:
                await connection.close()
        finally:
            stop_postgres(state_dir)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    print()
    print(f"apply_batch, {customers} customers, batches of 100 events:")
    print("| dependency index | µs per event (whole batch transaction) |")
    print("| --- | ---: |")
    for label, value in results.items():
        print(f"| {label} | {value:.0f} |")


def mixed_event(
    rng: random.Random, customer: int, tag: str, moment: datetime
) -> dict[str, Any]:
    """Build one event of a stream of orders, checkouts, opt-ins and profiles."""
    from tests.projections.segment_events import (
        checkout_event,
        consent_event,
        customer_event,
        order_event,
    )

    key = str(customer)
    moment += timedelta(minutes=customer)
    kind = rng.random()
    if kind < 0.35:
        return order_event(key, f"{key}-{tag}", moment)
    if kind < 0.60:
        return checkout_event(key, f"k-{key}-{tag}", moment)
    if kind < 0.75:
        state = rng.choice(["subscribed", "unsubscribed"])
        return consent_event(key, state, moment)
    return customer_event(key, moment, country=rng.choice(COUNTRIES))


def _every_field(*_: Any) -> None:
    return None


def _dumps(event: dict[str, Any]) -> bytes:
    import orjson

    return orjson.dumps(event)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--segments", type=int, default=100, help="segments in the store"
    )
    parser.add_argument("--events", type=int, default=20_000, help="simulated events")
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs; the fastest is shown"
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="also time apply_batch on an embedded PostgreSQL on 127.0.0.1",
    )
    parser.add_argument(
        "--customers", type=int, default=500, help="customers in the --postgres run"
    )
    args = parser.parse_args()
    configure_logging(level="warning")

    print(
        f"python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, {platform.platform()}"
    )
    run_pure(args.segments, args.events, args.repeats, args.seed)
    if args.postgres:
        asyncio.run(run_postgres(args.segments, args.customers, args.seed))


if __name__ == "__main__":
    main()
