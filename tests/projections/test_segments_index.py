"""The dependency index picks the segments a change of fields can affect; pure."""

from __future__ import annotations

from typing import Any

from projections.segments import DependencyIndex, SegmentCache, SegmentVersion


def segment(segment_id: str, rule: Any) -> SegmentVersion:
    return SegmentCache().segment("shop-1", segment_id, 1, segment_id, rule)


ORDERS = segment("buyers", {">=": [{"var": "lifetime_orders"}, 1]})
GERMANY = segment("germany", {"==": [{"var": "country"}, "DE"]})
LAPSED = segment("lapsed", {">": [{"var": "days_since_last_order"}, 30]})
VIP = segment("vip", {"in": ["vip", {"var": "tags.0"}]})
COMPUTED = segment("computed", {"==": [{"var": [{"cat": ["coun", "try"]}]}, "DE"]})


def ids(segments: list[SegmentVersion]) -> list[str]:
    return [s.segment_id for s in segments]


def test_segment_records_catalogue_fields_it_reads() -> None:
    assert ORDERS.reads == frozenset({"lifetime_orders"})
    assert VIP.reads == frozenset({"tags"})
    assert COMPUTED.reads is None


def test_unrelated_change_selects_no_segment() -> None:
    index = DependencyIndex([ORDERS, GERMANY, LAPSED, VIP])

    assert index.select(frozenset({"email_opt_in", "is_subscribed"})) == []
    assert index.select(frozenset()) == []


def test_change_selects_segments_reading_the_field() -> None:
    index = DependencyIndex([ORDERS, GERMANY, LAPSED, VIP])

    assert ids(index.select(frozenset({"country"}))) == ["germany"]
    assert ids(index.select(frozenset({"tags", "lifetime_orders"}))) == [
        "buyers",
        "vip",
    ]
    assert ids(index.select(frozenset({"days_since_last_order"}))) == ["lapsed"]


def test_rule_with_computed_path_is_always_selected() -> None:
    index = DependencyIndex([ORDERS, COMPUTED, GERMANY])

    assert ids(index.select(frozenset())) == ["computed"]
    assert ids(index.select(frozenset({"country"}))) == ["computed", "germany"]


def test_new_customer_selects_every_segment() -> None:
    index = DependencyIndex([ORDERS, GERMANY, LAPSED])

    assert ids(index.select(None)) == ["buyers", "germany", "lapsed"]


def test_cache_compiles_each_version_once() -> None:
    cache = SegmentCache()
    rule = {"==": [{"var": "country"}, "DE"]}

    first = cache.segment("shop-1", "germany", 1, "Germany", rule)
    again = cache.segment("shop-1", "germany", 1, "Germany", rule)
    edited = cache.segment("shop-1", "germany", 2, "Germany", {"var": "country"})

    assert again is first
    assert edited is not first
    assert edited.compiled.rule == {"var": "country"}
