"""The canonical event validator used by the consumer."""

from __future__ import annotations

import copy

from projections.schemas import event_validator
from tests.consumer.test_restart import order_event


def test_valid_order_event_has_no_error() -> None:
    assert event_validator().first_error(order_event(1, 1)) is None


def test_invalid_timestamp_is_reported_by_path() -> None:
    event = order_event(1, 1)
    event["occurred_at"] = "yesterday"
    assert event_validator().first_error(event) == "occurred_at"


def test_float_money_is_reported_by_path() -> None:
    event = copy.deepcopy(order_event(1, 1))
    event["data"]["total"] = 1.5
    assert event_validator().first_error(event) == "data/total"


def test_unknown_event_type_is_reported() -> None:
    event = order_event(1, 1)
    event["type"] = "shipment"
    assert event_validator().first_error(event) == "type"


def test_oversized_integer_is_invalid() -> None:
    event = order_event(1, 1)
    event["id"] = 2**70
    assert event_validator().first_error(event) is not None
