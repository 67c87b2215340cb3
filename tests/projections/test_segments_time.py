"""Which customers a time-based rule can move between two ticks; pure, no servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.catalogue import customer_record, load_catalogue
from projections.rules import compile_segment_rule
from projections.segments import SegmentCache
from projections.time_windows import (
    SqlParameters,
    TimeDependency,
    candidate_condition,
    crossing_steps,
    time_dependencies,
)
from tests.projections.test_catalogue import customer_row

DAYS = {"var": "days_since_last_order"}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({">": [DAYS, 30]}, {31}),
        ({">=": [DAYS, 30]}, {30}),
        ({"<": [DAYS, 7]}, {7}),
        ({"<=": [DAYS, 7]}, {8}),
        ({"==": [DAYS, 14]}, {14, 15}),
        ({"!=": [14, DAYS]}, {14, 15}),
        ({">": [DAYS, 30.5]}, {31}),
        ({"<": [30, DAYS, 60]}, {31, 60}),
        ({">=": [7, DAYS]}, {8}),
        ({"==": [DAYS, 14.5]}, {15}),
        ({"!": {">": [DAYS, 30]}}, {31}),
        (
            {"and": [{">": [DAYS, 30]}, {"<=": [DAYS, 90]}]},
            {31, 91},
        ),
        ({">": [{"var": ["days_since_last_order", 0]}, 30]}, {31}),
        ({"==": [{"var": "country"}, "DE"]}, set()),
    ],
)
def test_comparisons_with_numbers_give_their_steps(
    rule: Any, expected: set[int]
) -> None:
    assert crossing_steps(rule, "days_since_last_order") == frozenset(expected)


@pytest.mark.parametrize(
    "rule",
    [
        {"==": [{"%": [DAYS, 7]}, 0]},
        {">": [DAYS, {"var": "days_since_first_order"}]},
        {">": [DAYS, "30"]},
        {"in": [DAYS, [1, 2, 3]]},
        {"missing": ["days_since_last_order"]},
        {">": [{"var": "days_since_last_order.x"}, 3]},
        {"var": "days_since_last_order"},
    ],
)
def test_other_uses_make_every_step_matter(rule: Any) -> None:
    assert crossing_steps(rule, "days_since_last_order") is None


def test_dependencies_list_time_fields_read() -> None:
    segment = SegmentCache().segment(
        "shop-1",
        "lapsed-vip",
        1,
        "Lapsed VIP",
        {"and": [{">": [DAYS, 30]}, {"in": ["vip", {"var": "tags"}]}]},
    )

    dependencies = time_dependencies(segment)

    assert dependencies == [
        TimeDependency(load_catalogue()["days_since_last_order"], frozenset({31}))
    ]


def test_first_window_selects_every_customer() -> None:
    dependency = TimeDependency(load_catalogue()["days_since_last_order"], None)
    until = datetime(2025, 3, 10, tzinfo=UTC)

    condition = candidate_condition([dependency], None, until, SqlParameters())

    assert condition == "TRUE"


def test_step_ranges_shift_the_window() -> None:
    dependency = TimeDependency(
        load_catalogue()["days_since_last_order"], frozenset({31})
    )
    since = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
    until = since + timedelta(minutes=1)
    parameters = SqlParameters(first=4)

    condition = candidate_condition([dependency], since, until, parameters)

    assert condition == "(((c.last_order_at > $4 AND c.last_order_at <= $5)))"
    assert parameters.values == [since - timedelta(days=31), until - timedelta(days=31)]


def _is_selected(
    steps: frozenset[int] | None, base: datetime, since: datetime, until: datetime
) -> bool:
    """The step condition of ``candidate_condition``, evaluated in Python."""
    day = timedelta(days=1)
    if steps is None:
        return (until - base) // day != (since - base) // day
    return any(since - k * day < base <= until - k * day for k in steps)


NUMBERS = st.one_of(
    st.integers(min_value=-3, max_value=40),
    st.floats(min_value=-3, max_value=40, allow_nan=False),
)
COMPARISONS = st.one_of(
    st.tuples(
        st.sampled_from(["<", "<=", ">", ">=", "==", "!=", "===", "!=="]),
        NUMBERS,
        st.booleans(),
    ).map(lambda case: {case[0]: [DAYS, case[1]] if case[2] else [case[1], DAYS]}),
    st.tuples(st.sampled_from(["<", "<="]), NUMBERS, NUMBERS).map(
        lambda case: {case[0]: [case[1], DAYS, case[2]]}
    ),
    st.integers(min_value=2, max_value=9).map(
        lambda divisor: {"==": [{"%": [DAYS, divisor]}, 0]}
    ),
)


@settings(max_examples=400, deadline=None)
@given(
    rule=COMPARISONS,
    whole_days=st.integers(min_value=-3, max_value=42),
    jitter_s=st.integers(min_value=-7_200, max_value=7_200),
    window_s=st.one_of(
        st.integers(min_value=1, max_value=7_200),
        st.integers(min_value=1, max_value=3 * 86_400),
    ),
)
def test_changed_results_are_selected(
    rule: Any, whole_days: int, jitter_s: int, window_s: int
) -> None:
    """A customer whose membership differs at the window's two ends is selected.

    The last order lies near a whole number of days before the window, where
    the day count steps inside a short window.
    """
    compiled = compile_segment_rule(rule)
    since = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
    until = since + timedelta(seconds=window_s)
    base = since - timedelta(days=whole_days, seconds=jitter_s)
    row = customer_row(last_order_at=base)

    before = compiled.matches(customer_record(row, since))
    after = compiled.matches(customer_record(row, until))

    if before != after:
        steps = crossing_steps(rule, "days_since_last_order")
        assert _is_selected(steps, base, since, until)
