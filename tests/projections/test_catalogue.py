"""The field catalogue and the records segment rules read; pure, no servers."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.catalogue import (
    ABANDONED_CHECKOUT_COLUMN,
    changed_fields,
    customer_record,
    elapsed_units,
    field_specs,
    fields_read,
    load_catalogue,
    reads_abandoned_checkout,
    source_columns,
    time_fields,
)
from projections.rules import compile_segment_rule
from projections.time_windows import supported_bases

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


def customer_row(**overrides: Any) -> dict[str, Any]:
    """A customers row as ``recompute_customer`` writes it."""
    row: dict[str, Any] = {
        "store_id": "shop-1",
        "customer_key": "c:1",
        "customer_id": "1",
        "email": "ada@example.com",
        "currency": "USD",
        "lifetime_orders": 2,
        "lifetime_sales": Decimal("120.50"),
        "total_products": 3,
        "first_order_at": datetime(2025, 1, 1, 9, 30, tzinfo=UTC),
        "last_order_at": datetime(2025, 2, 8, 12, 0, tzinfo=UTC),
        "average_purchase_frequency_days": Decimal("38.10"),
        "email_opt_in": "subscribed",
        "email_opt_in_at": datetime(2025, 1, 1, 9, 30, tzinfo=UTC),
        "checkouts_started": 3,
        "checkouts_completed": 2,
        "checkouts_abandoned": 1,
        "open_cart_value": Decimal("25.00"),
        "messages_sent": 4,
        "messages_opened": 2,
        "messages_clicked": 1,
        "converted_orders": 1,
        "converted_revenue": Decimal("60.00"),
        "conversion_rate": Decimal("0.2500"),
        "tags": '["vip"]',
        "country": "DE",
        "customer_created_at": datetime(2024, 12, 31, 23, 0, tzinfo=UTC),
    }
    row.update(overrides)
    return row


def test_record_has_every_catalogue_field() -> None:
    record = customer_record(customer_row(), NOW)

    assert set(record) == set(load_catalogue())


def test_record_values_for_a_customer_with_orders() -> None:
    abandoned_at = datetime(2025, 3, 9, 13, 0, tzinfo=UTC)
    row = customer_row(**{ABANDONED_CHECKOUT_COLUMN: abandoned_at})

    record = customer_record(row, NOW)

    # 2025-02-08 12:00 to 2025-03-10 12:00 is exactly 30 days.
    assert record["days_since_last_order"] == 30
    # 2025-01-01 09:30 to 2025-03-10 12:00 is 68 days and 2.5 hours.
    assert record["days_since_first_order"] == 68
    # 2024-12-31 23:00 to 2025-03-10 12:00 is 68 days and 13 hours.
    assert record["days_since_created"] == 68
    # 2025-03-09 13:00 to 2025-03-10 12:00 is 23 hours.
    assert record["hours_since_abandoned_checkout"] == 23
    assert record["last_abandoned_checkout_at"] == "2025-03-09T13:00:00Z"
    assert record["last_order_at"] == "2025-02-08T12:00:00Z"
    assert record["lifetime_sales"] == Decimal("120.50")
    assert record["tags"] == ["vip"]
    assert record["is_subscribed"] is True
    assert record["has_account"] is True
    assert record["conversion_rate"] == Decimal("0.2500")


def test_record_of_customer_without_orders_has_null_dates() -> None:
    row = customer_row(
        lifetime_orders=0,
        first_order_at=None,
        last_order_at=None,
        email_opt_in=None,
        customer_id=None,
        customer_created_at=None,
    )

    record = customer_record(row, NOW)

    assert record["last_order_at"] is None
    assert record["days_since_last_order"] is None
    assert record["days_since_first_order"] is None
    assert record["days_since_created"] is None
    assert record["hours_since_abandoned_checkout"] is None
    assert record["is_subscribed"] is False
    assert record["has_account"] is False


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2025, 3, 9, 12, 0, tzinfo=UTC), 1),
        (datetime(2025, 3, 9, 12, 0, 0, 1, tzinfo=UTC), 0),
        (datetime(2025, 3, 10, 12, 0, tzinfo=UTC), 0),
        # A date after now (clock skew) counts down, rounded towards minus infinity.
        (datetime(2025, 3, 10, 13, 0, tzinfo=UTC), -1),
    ],
)
def test_elapsed_days_round_down(moment: datetime, expected: int) -> None:
    assert elapsed_units(moment, NOW, 86_400) == expected


def test_specs_accept_every_catalogue_type() -> None:
    specs = field_specs()

    assert specs["tags"].type == "array"
    assert specs["last_order_at"].type == "date"
    assert set(specs) == set(load_catalogue())


def test_time_fields_have_a_supported_base() -> None:
    fields = time_fields()

    assert set(fields) == {
        "days_since_last_order",
        "days_since_first_order",
        "days_since_created",
        "hours_since_abandoned_checkout",
    }
    for field in fields.values():
        assert field.time_base in supported_bases(), field.name


def test_unrelated_change_changes_no_rule_field() -> None:
    before = customer_row()
    after = customer_row(email="new@example.com", first_name="Grace")

    assert changed_fields(before, after) == frozenset()


def test_order_changes_derived_fields() -> None:
    before = customer_row()
    after = customer_row(
        lifetime_orders=3,
        lifetime_sales=Decimal("150.50"),
        last_order_at=datetime(2025, 3, 10, 11, 0, tzinfo=UTC),
    )

    assert changed_fields(before, after) == frozenset(
        {
            "lifetime_orders",
            "lifetime_sales",
            "last_order_at",
            "days_since_last_order",
        }
    )


def test_base_move_marks_derived_changed() -> None:
    """The derived value stays 30 days, but its base moved, so rules re-run."""
    before = customer_row(last_order_at=datetime(2025, 2, 8, 11, 0, tzinfo=UTC))
    after = customer_row(last_order_at=datetime(2025, 2, 8, 11, 30, tzinfo=UTC))

    assert changed_fields(before, after) == frozenset(
        {
            "last_order_at",
            "days_since_last_order",
        }
    )


def test_checkout_counts_mark_abandoned_checkout_fields_changed() -> None:
    before = customer_row()
    after = customer_row(checkouts_started=4, checkouts_abandoned=2)

    assert changed_fields(before, after) == frozenset(
        {
            "checkouts_started",
            "checkouts_abandoned",
            "last_abandoned_checkout_at",
            "hours_since_abandoned_checkout",
        }
    )


def test_opt_in_change_marks_is_subscribed_changed() -> None:
    before = customer_row(email_opt_in="subscribed")
    after = customer_row(email_opt_in="unsubscribed")

    assert changed_fields(before, after) == frozenset({"email_opt_in", "is_subscribed"})


@pytest.mark.parametrize(
    ("before", "after"),
    [(None, customer_row()), (customer_row(), None)],
    ids=["new", "deleted"],
)
def test_new_or_deleted_customer_changes_every_field(
    before: dict[str, Any] | None, after: dict[str, Any] | None
) -> None:
    assert changed_fields(before, after) is None


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({">=": [{"var": "lifetime_orders"}, 2]}, {"lifetime_orders"}),
        ({"in": ["vip", {"var": "tags"}]}, {"tags"}),
        ({"==": [{"var": "tags.0"}, "vip"]}, {"tags"}),
        ({">": [{"var": "tags.length"}, 1]}, {"tags"}),
        ({"missing": ["country"]}, {"country"}),
        (
            {"some": [{"var": "tags"}, {"==": [{"var": ""}, "vip"]}]},
            {"tags"},
        ),
        ({"var": [{"cat": ["coun", "try"]}]}, None),
        ({"==": [{"var": "no_such_field"}, 1]}, None),
    ],
)
def test_fields_read_maps_paths_to_catalogue_fields(
    rule: Any, expected: set[str] | None
) -> None:
    read = fields_read(compile_segment_rule(rule).fields)

    assert read == (frozenset(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (frozenset({"hours_since_abandoned_checkout"}), True),
        (frozenset({"last_abandoned_checkout_at"}), True),
        (frozenset({"checkouts_abandoned", "country"}), False),
        (None, True),
    ],
)
def test_reads_abandoned_checkout(
    fields: frozenset[str] | None, expected: bool
) -> None:
    assert reads_abandoned_checkout(fields) is expected


def test_every_field_names_its_source_columns() -> None:
    assert set(source_columns()) == set(load_catalogue())


# Another value of every column that customer_record reads.
OTHER_VALUES: dict[str, Any] = {
    "customer_id": None,
    "currency": "EUR",
    "lifetime_orders": 3,
    "lifetime_sales": Decimal("99.99"),
    "total_products": 9,
    "first_order_at": None,
    "last_order_at": datetime(2025, 3, 1, tzinfo=UTC),
    "average_purchase_frequency_days": None,
    "email_opt_in": "unsubscribed",
    "email_opt_in_at": datetime(2025, 3, 2, tzinfo=UTC),
    "checkouts_started": 5,
    "checkouts_completed": 1,
    "checkouts_abandoned": 4,
    "open_cart_value": Decimal("80.00"),
    "messages_sent": 9,
    "messages_opened": 7,
    "messages_clicked": 5,
    "converted_orders": 2,
    "converted_revenue": Decimal("1.00"),
    "conversion_rate": None,
    "tags": '["vip", "gift"]',
    "country": None,
    "customer_created_at": datetime(2020, 1, 1, tzinfo=UTC),
    ABANDONED_CHECKOUT_COLUMN: datetime(2025, 3, 10, 1, 0, tzinfo=UTC),
}


@settings(max_examples=200, deadline=None)
@given(columns=st.sets(st.sampled_from(sorted(OTHER_VALUES))))
def test_changed_fields_cover_differences(
    columns: set[str],
) -> None:
    before = customer_row(**{ABANDONED_CHECKOUT_COLUMN: None})
    after = customer_row(**{column: OTHER_VALUES[column] for column in columns})
    after.setdefault(ABANDONED_CHECKOUT_COLUMN, None)

    old = customer_record(before, NOW)
    new = customer_record(after, NOW)
    differing = {name for name in new if old[name] != new[name]}

    changed = changed_fields(before, after)
    assert changed is not None
    assert differing <= changed
