"""Measure segment rule evaluations per second for three JSON-logic engines.

Engines: our compiler (projections.rules), datalogic-py (Rust, compiled Rule
objects) and panzi-json-logic (pure Python interpreter), all in one run on
the same seeded customer records and segment rules. Results go to stdout as
a Markdown table; bench/RULES.md records them.

Run from the repository root: .venv/bin/python bench/rules_bench.py
"""

from __future__ import annotations

import argparse
import operator
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import datalogic_py  # noqa: E402
from json_logic import jsonLogic  # noqa: E402

from projections.rules import compile_rule, compile_segment_rule  # noqa: E402
from projections.rules.codegen import CodeGenerator  # noqa: E402
from projections.rules.coercion import truthy  # noqa: E402
from projections.rules.operators import BOOL_OPERATORS, VALUE_OPERATORS  # noqa: E402
from projections.rules.segment_mode import SEGMENT_FUNCTIONS  # noqa: E402

COUNTRIES = ["US", "US", "US", "CA", "GB", "DE", "FR", "AU", "NL", "SE"]
TAGS = ["vip", "wholesale", "newsletter", "returning", "sale-hunter", "gift"]
SEGMENT_COUNTS = (10, 100, 1000)

Record = dict[str, Any]
Rule = dict[str, Any]


def make_record(rng: random.Random, *, decimal_sales: bool) -> Record:
    """Build one customer record as the metric projection would store it."""
    orders = 0 if rng.random() < 0.2 else rng.randint(1, 40)
    sales = round(orders * rng.uniform(15, 180), 2)
    days_since = rng.randint(0, 900) if orders else None
    last_order = None
    if days_since is not None:
        last_order = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    return {
        "customer_id": rng.randint(1, 10**9),
        "lifetime_orders": orders,
        "lifetime_sales": Decimal(f"{sales:.2f}") if decimal_sales else sales,
        "total_products": orders * rng.randint(1, 4),
        "days_since_last_order": days_since,
        "last_order_date": last_order,
        "email_opt_in": rng.random() < 0.6,
        "country": rng.choice(COUNTRIES),
        "tags": rng.sample(TAGS, rng.randint(0, 3)),
        "checkouts_abandoned": rng.choice([0, 0, 0, 1, 2, 5]),
        "open_cart_value": rng.choice([0.0, 0.0, round(rng.uniform(5, 400), 2)]),
        "average_purchase_frequency_days": (
            round(rng.uniform(7, 200), 1) if orders >= 2 else None
        ),
    }


def make_clause(rng: random.Random) -> Rule:
    """Build one segment condition of a shape merchants write."""
    kind = rng.randrange(12)
    if kind == 0:
        return {">=": [{"var": "lifetime_orders"}, rng.randint(1, 10)]}

    if kind == 1:
        return {">": [{"var": "lifetime_sales"}, rng.choice([100, 250, 500, 1000])]}

    if kind == 2:
        operator = rng.choice(["<=", ">"])
        return {operator: [{"var": "days_since_last_order"}, rng.choice([30, 90, 180])]}

    if kind == 3:
        return rng.choice(
            [
                {"var": "email_opt_in"},
                {"==": [{"var": "email_opt_in"}, True]},
                {"!": {"var": "email_opt_in"}},
            ]
        )

    if kind == 4:
        return {"in": [{"var": "country"}, rng.sample(COUNTRIES[3:], 2) + ["US"]]}

    if kind == 5:
        return {"in": [rng.choice(TAGS), {"var": "tags"}]}

    if kind == 6:
        return {">": [{"var": "checkouts_abandoned"}, 0]}

    if kind == 7:
        return {">=": [{"var": "open_cart_value"}, rng.choice([25, 50, 100])]}

    if kind == 8:
        low = rng.choice([7, 14, 30])
        return {"<=": [low, {"var": "average_purchase_frequency_days"}, low * 4]}

    if kind == 9:
        return {"!": {"missing": ["last_order_date"]}}

    if kind == 10:
        return {"!=": [{"var": "country"}, rng.choice(COUNTRIES)]}

    return {"<": [{"var": "last_order_date"}, f"2025-{rng.randint(1, 12):02d}-01"]}


def make_rule(rng: random.Random) -> Rule:
    """Build a segment rule of 2 to 6 clauses joined by and/or."""
    clauses = [make_clause(rng) for _ in range(rng.randint(2, 6))]
    shape = rng.random()
    if shape < 0.6 or len(clauses) < 4:
        return {"and": clauses}
    if shape < 0.8:
        return {"or": clauses}
    middle = len(clauses) // 2
    return {"and": [*clauses[:middle], {"or": clauses[middle:]}]}


# A closure-tree compiler for the operators these rules use, in segment mode,
# kept here only to compare the two designs on the same workload.

Closure = Callable[[Record], Any]
_SYMBOLS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_SLOW = {
    "<": SEGMENT_FUNCTIONS["less_than"],
    "<=": SEGMENT_FUNCTIONS["less_or_equal"],
    ">": SEGMENT_FUNCTIONS["greater_than"],
    ">=": SEGMENT_FUNCTIONS["greater_or_equal"],
}
_NUMBERS = (int, float)


def closure_compile(node: Any) -> Closure:
    """Compile the benchmark's rule shapes into nested closures."""
    if not isinstance(node, dict):
        return lambda data: node
    ((name, arguments),) = node.items()
    if not isinstance(arguments, list):
        arguments = [arguments]
    if name == "var":
        key = arguments[0]
        return lambda data: data.get(key)
    if name in ("and", "or"):
        return _closure_logic(name, [closure_compile(item) for item in arguments])
    if name == "!":
        child = closure_compile(arguments[0])
        return lambda data: not truthy(child(data))
    if name in _SYMBOLS:
        return _closure_comparison(name, arguments)
    if name in ("==", "!="):
        return _closure_equality(name, arguments)
    if name == "in":
        return _closure_in(arguments)
    if name == "missing":
        keys = tuple(arguments)
        return lambda data: [key for key in keys if data.get(key) in (None, "")]
    raise ValueError(f"operator {name!r} is not in the closure prototype")


def _closure_logic(name: str, children: list[Closure]) -> Closure:
    # Plain loops, because all() and any() over a generator cost more per call.
    if name == "and":

        def all_true(data: Record) -> bool:
            for child in children:  # noqa: SIM110
                if not truthy(child(data)):
                    return False
            return True

        return all_true

    def any_true(data: Record) -> bool:
        for child in children:  # noqa: SIM110
            if truthy(child(data)):
                return True
        return False

    return any_true


def _closure_comparison(name: str, arguments: list[Any]) -> Closure:
    fast, slow = _SYMBOLS[name], _SLOW[name]
    if len(arguments) == 3:
        low, middle, high = arguments[0], closure_compile(arguments[1]), arguments[2]

        def between(data: Record) -> bool:
            value = middle(data)
            if type(value) in _NUMBERS:
                return bool(fast(low, value) and fast(value, high))
            return bool(slow(low, value) and slow(value, high))

        return between
    left, right = closure_compile(arguments[0]), arguments[1]
    if isinstance(right, int | float | str):

        def against_literal(data: Record) -> bool:
            value = left(data)
            if type(value) is type(right):
                return bool(fast(value, right))
            return bool(slow(value, right))

        return against_literal
    right_closure = closure_compile(right)
    return lambda data: bool(slow(left(data), right_closure(data)))


def _closure_equality(name: str, arguments: list[Any]) -> Closure:
    left, right = closure_compile(arguments[0]), arguments[1]
    loose_equals = SEGMENT_FUNCTIONS["loose_equals"]
    negate = name == "!="

    def equals(data: Record) -> bool:
        value = left(data)
        same = (
            value == right if type(value) is type(right) else loose_equals(value, right)
        )
        return bool(same) is not negate

    return equals


def _closure_in(arguments: list[Any]) -> Closure:
    needle, haystack = arguments
    if isinstance(haystack, list):
        members = frozenset(haystack)
        needle_closure = closure_compile(needle)

        def in_literal(data: Record) -> bool:
            value = needle_closure(data)
            return type(value) is str and value in members

        return in_literal
    haystack_closure = closure_compile(haystack)

    def in_field(data: Record) -> bool:
        items = haystack_closure(data)
        return type(items) is list and needle in items

    return in_field


def closures(rules: Sequence[Rule], records: Sequence[Record]) -> Callable[[], int]:
    compiled = [closure_compile(rule) for rule in rules]

    def run() -> int:
        matched = 0
        for record in records:
            for closure in compiled:
                if truthy(closure(record)):
                    matched += 1
        return matched

    return run


def measure(
    run: Callable[[], int], evaluations: int, repeat: int
) -> tuple[float, float, int]:
    """Run a workload ``repeat`` times.

    Returns the median and maximum evaluations per second, and the matches
    counted in the last run.
    """
    rates = []
    matches = 0
    for _ in range(repeat):
        start = time.perf_counter()
        matches = run()
        elapsed = time.perf_counter() - start
        rates.append(evaluations / elapsed)
    return statistics.median(rates), max(rates), matches


def ours(
    rules: Sequence[Rule], records: Sequence[Record], *, segment: bool
) -> Callable[[], int]:
    compiled = [
        compile_segment_rule(rule) if segment else compile_rule(rule) for rule in rules
    ]

    def run() -> int:
        matched = 0
        for record in records:
            for rule in compiled:
                if rule.matches(record):
                    matched += 1
        return matched

    return run


def ours_one_function(
    rules: Sequence[Rule], records: Sequence[Record]
) -> Callable[[], int]:
    """Prototype: every segment's condition in one generated function.

    It saves a call per segment. It is not a public API, and it assumes dict
    records.
    """
    namespace: dict[str, Any] = dict(SEGMENT_FUNCTIONS)
    generator = CodeGenerator(
        strict_nulls=True,
        namespace=namespace,
        value_operators=VALUE_OPERATORS,
        bool_operators=BOOL_OPERATORS,
    )
    conditions = [
        generator.generate(rule, data_is_dict=True, as_bool=True) for rule in rules
    ]
    body = "".join(f"        {condition},\n" for condition in conditions)
    source = f"def evaluate_all(data):\n    return [\n{body}    ]\n"
    exec(compile(source, "<segments>", "exec"), namespace)
    evaluate_all = namespace["evaluate_all"]

    def run() -> int:
        matched = 0
        for record in records:
            matched += sum(evaluate_all(record))
        return matched

    return run


def datalogic_rule(
    rules: Sequence[Rule], records: Sequence[Record]
) -> Callable[[], int]:
    engine = datalogic_py.Engine()
    compiled = [engine.compile(rule) for rule in rules]

    def run() -> int:
        matched = 0
        for record in records:
            for rule in compiled:
                if rule.evaluate(record):
                    matched += 1
        return matched

    return run


def datalogic_handle(
    rules: Sequence[Rule], records: Sequence[Record]
) -> Callable[[], int]:
    engine = datalogic_py.Engine()
    compiled = [engine.compile(rule) for rule in rules]
    session = engine.session()

    def run() -> int:
        matched = 0
        for record in records:
            handle = datalogic_py.DataHandle(record)
            for rule in compiled:
                if session.evaluate_truthy(rule, handle):
                    matched += 1
        return matched

    return run


def datalogic_many(
    rules: Sequence[Rule], records: Sequence[Record]
) -> Callable[[], int]:
    engine = datalogic_py.Engine()
    compiled = [engine.compile(rule) for rule in rules]
    session = engine.session()

    def run() -> int:
        matched = 0
        for record in records:
            handle = datalogic_py.DataHandle(record)
            results = session.evaluate_many(compiled, handle)
            matched += sum(1 for result in results if result == "true")
        return matched

    return run


def panzi(rules: Sequence[Rule], records: Sequence[Record]) -> Callable[[], int]:
    def run() -> int:
        matched = 0
        for record in records:
            for rule in rules:
                if jsonLogic(rule, record):
                    matched += 1
        return matched

    return run


def count_disagreements(
    rules: Sequence[Rule], records: Sequence[Record]
) -> dict[str, int]:
    """Count the (rule, record) pairs where two engines disagree on a match."""
    engine = datalogic_py.Engine()
    pairs = {
        "ours standard mode vs panzi-json-logic": 0,
        "ours standard mode vs datalogic-py": 0,
        "ours segment mode vs ours standard mode": 0,
    }
    for rule in rules:
        standard = compile_rule(rule)
        segment = compile_segment_rule(rule)
        datalogic = engine.compile(rule)
        for record in records:
            expected = standard.matches(record)
            if truthy(jsonLogic(rule, record)) != expected:
                pairs["ours standard mode vs panzi-json-logic"] += 1
            if bool(datalogic.evaluate(record)) != expected:
                pairs["ours standard mode vs datalogic-py"] += 1
            if segment.matches(record) != expected:
                pairs["ours segment mode vs ours standard mode"] += 1
    return pairs


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--evaluations",
        type=int,
        default=600_000,
        help="evaluations per measurement for the fast engines (default 600000)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per measurement (default 3)"
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    options = parser.parse_args()

    rng = random.Random(options.seed)
    all_rules = [make_rule(rng) for _ in range(max(SEGMENT_COUNTS))]
    print(f"python {platform.python_version()}, {cpu_model()}, {os.cpu_count()} cores")
    print(f"seed {options.seed}, {options.repeat} runs per figure, median (max)\n")

    start = time.perf_counter()
    for rule in all_rules:
        compile_segment_rule(rule)
    compile_ms = (time.perf_counter() - start) * 1000 / len(all_rules)
    print(f"compile_segment_rule: {compile_ms:.2f} ms per rule\n")

    sample = [make_record(rng, decimal_sales=False) for _ in range(100)]
    print(f"Disagreements on {len(all_rules)} rules x {len(sample)} records:")
    for pair, count in count_disagreements(all_rules, sample).items():
        print(f"- {pair}: {count}")
    print()

    print("| engine | segments | records | evals/s median | evals/s max | matches |")
    print("|---|---|---|---|---|---|")
    for segment_count in SEGMENT_COUNTS:
        rules = all_rules[:segment_count]
        record_count = max(options.evaluations // segment_count, 1)
        float_records = [
            make_record(rng, decimal_sales=False) for _ in range(record_count)
        ]
        decimal_records = [
            {**record, "lifetime_sales": Decimal(f"{record['lifetime_sales']:.2f}")}
            for record in float_records
        ]
        slow_records = float_records[: max(record_count // 6, 1)]
        workloads: list[tuple[str, Callable[[], int], int]] = [
            (
                "ours, segment mode",
                ours(rules, float_records, segment=True),
                record_count,
            ),
            (
                "ours, standard mode",
                ours(rules, float_records, segment=False),
                record_count,
            ),
            (
                "ours, all segments in one function (prototype)",
                ours_one_function(rules, float_records),
                record_count,
            ),
            (
                "closure tree prototype, segment mode",
                closures(rules, float_records),
                record_count,
            ),
            (
                "ours, segment mode, Decimal sales",
                ours(rules, decimal_records, segment=True),
                record_count,
            ),
            (
                "datalogic-py Rule.evaluate",
                datalogic_rule(rules, slow_records),
                len(slow_records),
            ),
            (
                "datalogic-py DataHandle + evaluate_truthy",
                datalogic_handle(rules, float_records),
                record_count,
            ),
            (
                "datalogic-py DataHandle + evaluate_many",
                datalogic_many(rules, float_records),
                record_count,
            ),
            (
                "panzi-json-logic (interpreted)",
                panzi(rules, slow_records),
                len(slow_records),
            ),
        ]
        for label, run, records in workloads:
            median, best, matches = measure(
                run, records * segment_count, options.repeat
            )
            print(
                f"| {label} | {segment_count} | {records} | {median:,.0f} | {best:,.0f}"
                f" | {matches} |"
            )


if __name__ == "__main__":
    main()
