"""Segment endpoints over HTTP on real PostgreSQL (and Kafka for the full pipeline)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from cartstream.config import Settings
from projections.backfills import create_job
from tests.conftest import running_services
from tests.helpers import (
    api_get,
    api_post,
    create_store,
    load_fixture,
    post_shopify,
    wait_until_applied,
)
from tests.projections.segment_events import (
    STORE,
    EventFeed,
    consent_event,
    customer_event,
    insert_segment,
    order_event,
    outbox_changes,
)

pytestmark = pytest.mark.integration

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
SEGMENTS = f"/api/stores/{STORE}/segments"
GERMANY = {"==": [{"var": "country"}, "DE"]}


async def api_request(
    settings: Settings, token: str, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    url = f"http://{settings.http_host}:{settings.http_port}{path}"
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, url, json=body, headers={"Authorization": f"Bearer {token}"}
        ) as response,
    ):
        return response.status, await response.json()


async def wait_for_backfill(
    settings: Settings, token: str, segment_id: str, version: int
) -> dict[str, Any]:
    """Poll the segment until its newest backfill for ``version`` has ended."""
    for _ in range(300):
        status, body = await api_get(settings, token, f"{SEGMENTS}/{segment_id}")
        assert status == 200, body
        backfill = body["backfill"]
        if (
            backfill is not None
            and backfill["segment_version"] == version
            and backfill["status"] not in ("queued", "running")
        ):
            return dict(body)
        await asyncio.sleep(0.05)
    raise TimeoutError(f"backfill of {segment_id} v{version} did not end")


async def add_customers(pool: asyncpg.Pool) -> None:
    """Create c:1 (DE, subscribed, one order), c:2 (FR), c:3 (DE, subscribed)
    and c:4 (DE, unsubscribed)."""
    events = [
        customer_event("1", T0, country="DE"),
        customer_event("2", T0, country="FR"),
        customer_event("3", T0, country="DE"),
        customer_event("4", T0, country="DE"),
        consent_event("1", "subscribed", T0 + timedelta(hours=1)),
        consent_event("3", "subscribed", T0 + timedelta(hours=1)),
        consent_event("4", "unsubscribed", T0 + timedelta(hours=1)),
        order_event("1", "1001", T0 + timedelta(days=1)),
    ]
    async with pool.acquire() as connection:
        await EventFeed().apply(connection, events)


async def membership_rows(pool: asyncpg.Pool, segment_id: str) -> list[tuple[Any, ...]]:
    rows = await pool.fetch(
        "SELECT customer_key, is_member, version, segment_version FROM memberships "
        "WHERE segment_id = $1 ORDER BY customer_key",
        segment_id,
    )
    return [tuple(row) for row in rows]


async def test_invalid_rules_are_rejected_with_the_problem(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    token, _ = await create_store(pool)
    too_many_nodes = {"or": [{"==": [{"var": "country"}, f"C{n}"]} for n in range(200)]}
    too_deep: Any = {"==": [{"var": "country"}, "DE"]}
    for _ in range(40):
        too_deep = {"!": too_deep}
    cases = [
        (
            {"==": [{"var": "lifetime_order"}, 1]},
            "unknown field 'lifetime_order' at /==/0/var; did you mean "
            "'lifetime_orders'",
        ),
        (
            {">": [{"var": "lifetime_orders"}]},
            "operator '>' at / takes 2 arguments, got 1",
        ),
        (too_many_nodes, "rule has more than 500 nodes"),
        (too_deep, "rule is nested deeper than 32 levels"),
        ({"log": {"var": "country"}}, "operator 'log' at / is not allowed"),
    ]
    await insert_segment(pool, "germany", GERMANY)

    async with running_services(settings, consume=False):
        for rule, problem in cases:
            body = {"segment_id": "bad", "name": "Bad", "rule": rule}
            status, created = await api_post(settings, token, SEGMENTS, body)
            assert status == 400, rule
            assert created["error"]["code"] == "invalid_rule"
            assert created["error"]["field"] == "rule"
            assert problem in created["error"]["message"]

            status, edited = await api_request(
                settings, token, "PUT", f"{SEGMENTS}/germany", {"rule": rule}
            )
            assert status == 400, rule
            assert problem in edited["error"]["message"]

            status, previewed = await api_post(
                settings, token, f"{SEGMENTS}/preview", {"rule": rule}
            )
            assert status == 400, rule
            assert problem in previewed["error"]["message"]

        status, missing = await api_post(settings, token, SEGMENTS, {"rule": GERMANY})
        assert status == 400
        assert missing["error"]["field"] == "name"
        status, reserved = await api_post(
            settings,
            token,
            SEGMENTS,
            {"segment_id": "preview", "name": "Preview", "rule": GERMANY},
        )
        assert status == 400
        assert reserved["error"]["field"] == "segment_id"
        status, fields = await api_get(settings, token, "/api/fields")
        assert status == 200

    names = {field["name"] for field in fields["fields"]}
    assert {"days_since_last_order", "hours_since_abandoned_checkout"} <= names
    stored = await pool.fetchval("SELECT count(*) FROM segments")
    assert stored == 1


async def test_edit_adds_version_and_reevaluates_every_customer(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    token, _ = await create_store(pool)
    await add_customers(pool)

    async with running_services(settings, consume=False):
        status, created = await api_post(
            settings,
            token,
            SEGMENTS,
            {"segment_id": "europe", "name": "Germany", "rule": GERMANY},
        )
        assert status == 201
        assert created["version"] == 1
        assert created["backfill"]["status"] in ("queued", "running", "done")
        await wait_for_backfill(settings, token, "europe", 1)

        status, edited = await api_request(
            settings,
            token,
            "PUT",
            f"{SEGMENTS}/europe",
            {"rule": {"==": [{"var": "country"}, "FR"]}},
        )
        assert status == 200
        assert edited["version"] == 2
        assert edited["name"] == "Germany"
        after_edit = await wait_for_backfill(settings, token, "europe", 2)

        status, renamed = await api_request(
            settings, token, "PUT", f"{SEGMENTS}/europe", {"name": "France"}
        )
        assert status == 200
        await wait_for_backfill(settings, token, "europe", 3)
        status, versions = await api_get(settings, token, f"{SEGMENTS}/europe/versions")
        assert status == 200
        status, missing = await api_request(
            settings, token, "PUT", f"{SEGMENTS}/nowhere", {"name": "X"}
        )
        assert status == 404

    assert after_edit["version"] == 2
    assert after_edit["member_count"] == 1
    backfill = after_edit["backfill"]
    assert (backfill["status"], backfill["done"], backfill["total"]) == ("done", 4, 4)
    assert renamed["version"] == 3
    assert renamed["rule"] == {"==": [{"var": "country"}, "FR"]}
    assert [v["version"] for v in versions["versions"]] == [3, 2, 1]
    assert [v["name"] for v in versions["versions"]] == ["France", "Germany", "Germany"]

    assert await membership_rows(pool, "europe") == [
        ("c:1", False, 2, 3),
        ("c:2", True, 1, 3),
        ("c:3", False, 2, 3),
        ("c:4", False, 2, 3),
    ]
    changes = await outbox_changes(pool)
    assert sorted(
        (c["customer_key"], c["change"], c["segment_version"], c["cause_event_id"])
        for c in changes
    ) == [
        ("c:1", "entered", 1, "backfill:europe:1"),
        ("c:1", "exited", 2, "backfill:europe:2"),
        ("c:2", "entered", 2, "backfill:europe:2"),
        ("c:3", "entered", 1, "backfill:europe:1"),
        ("c:3", "exited", 2, "backfill:europe:2"),
        ("c:4", "entered", 1, "backfill:europe:1"),
        ("c:4", "exited", 2, "backfill:europe:2"),
    ]


async def test_archive_makes_members_exit_and_stops_edits(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    token, _ = await create_store(pool)
    await add_customers(pool)

    async with running_services(settings, consume=False):
        body = {"segment_id": "germany", "name": "Germany", "rule": GERMANY}
        status, _ = await api_post(settings, token, SEGMENTS, body)
        assert status == 201
        await wait_for_backfill(settings, token, "germany", 1)

        status, archived = await api_request(
            settings, token, "DELETE", f"{SEGMENTS}/germany"
        )
        assert status == 200
        assert archived["archived_at"] is not None
        assert archived["backfill"]["kind"] == "archive"
        read = await wait_for_backfill(settings, token, "germany", 1)

        status, again = await api_request(
            settings, token, "DELETE", f"{SEGMENTS}/germany"
        )
        assert status == 200
        status, edit = await api_request(
            settings, token, "PUT", f"{SEGMENTS}/germany", {"name": "Deutschland"}
        )
        assert status == 409
        status, listing = await api_get(settings, token, SEGMENTS)
        assert status == 200
        status, recreated = await api_post(settings, token, SEGMENTS, body)
        assert status == 409

    assert edit["error"]["code"] == "segment_archived"
    assert listing["segments"] == []
    assert read["member_count"] == 0
    assert (read["backfill"]["status"], read["backfill"]["done"]) == ("done", 3)
    assert again["archived_at"] == archived["archived_at"]
    changes = await outbox_changes(pool)
    exits = [c for c in changes if c["change"] == "exited"]
    assert sorted((c["customer_key"], c["membership_version"]) for c in exits) == [
        ("c:1", 2),
        ("c:3", 2),
        ("c:4", 2),
    ]
    assert {c["cause_event_id"] for c in exits} == {"archive:germany:1"}


async def test_preview_and_members_for_on_demand_sends(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    token, _ = await create_store(pool)
    await add_customers(pool)

    async with running_services(settings, consume=False):
        status, preview = await api_post(
            settings, token, f"{SEGMENTS}/preview", {"rule": GERMANY}
        )
        assert status == 200
        status, created = await api_post(
            settings,
            token,
            SEGMENTS,
            {"name": "Germany", "rule": GERMANY, "initial_snapshot": True},
        )
        assert status == 201
        assert created["segment_id"] == "germany"
        await wait_for_backfill(settings, token, "germany", 1)

        members_path = f"{SEGMENTS}/germany/members"
        status, first = await api_get(settings, token, f"{members_path}?limit=2")
        assert status == 200
        status, second = await api_get(
            settings, token, f"{members_path}?limit=2&cursor={first['next_cursor']}"
        )
        assert status == 200
        status, opted_in = await api_get(
            settings, token, f"{members_path}?opted_in=true"
        )
        assert status == 200
        status, bad_limit = await api_get(settings, token, f"{members_path}?limit=0")
        assert status == 400
        status, bad_cursor = await api_get(settings, token, f"{members_path}?cursor=x")
        assert status == 400
        status, bad_flag = await api_get(settings, token, f"{members_path}?opted_in=1")
        assert status == 400
        status, _ = await api_get(settings, token, f"{SEGMENTS}/nowhere/members")
        assert status == 404

    assert (preview["matched"], preview["total"]) == (3, 4)
    assert [c["customer_key"] for c in preview["sample"]] == ["c:1", "c:3", "c:4"]
    assert preview["fields"] == ["country"]
    assert [m["customer_key"] for m in first["members"]] == ["c:1", "c:3"]
    assert [m["customer_key"] for m in second["members"]] == ["c:4"]
    assert second["next_cursor"] is None
    assert first["members"][0]["email"] == "1@example.com"
    assert first["members"][0]["customer_id"] == "1"
    assert first["members"][0]["membership_version"] == 1
    assert [m["customer_key"] for m in opted_in["members"]] == ["c:1", "c:3"]
    assert bad_limit["error"]["field"] == "limit"
    assert bad_cursor["error"]["field"] == "cursor"
    assert bad_flag["error"]["field"] == "opted_in"
    # An initial snapshot fills memberships without change events.
    assert await outbox_changes(pool) == []


async def test_unfinished_backfill_resumes_at_start(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    token, _ = await create_store(pool)
    await add_customers(pool)
    await insert_segment(pool, "germany", GERMANY)
    async with pool.acquire() as connection:
        await create_job(
            connection, STORE, "germany", 1, kind="evaluate", emit_events=True
        )
        # A job stopped after its first batch, which held c:1 only.
        await connection.execute(
            "UPDATE segment_backfills SET status = 'running', done = 1, "
            "last_customer_key = 'c:1'"
        )

    async with running_services(settings, consume=False):
        read = await wait_for_backfill(settings, token, "germany", 1)

    assert (read["backfill"]["status"], read["backfill"]["done"]) == ("done", 4)
    changes = await outbox_changes(pool)
    assert [c["customer_key"] for c in changes] == ["c:3", "c:4"]


async def test_null_dates_end_to_end(settings: Settings, pool: asyncpg.Pool) -> None:
    """Webhooks to segment members: null dates make every comparison false."""
    token, secret = await create_store(pool)
    segments = [
        {
            "segment_id": "before-2024",
            "name": "Last order before 2024",
            "rule": {"<": [{"var": "last_order_at"}, "2024-01-01"]},
        },
        {
            "segment_id": "lapsed",
            "name": "Lapsed",
            "rule": {">": [{"var": "days_since_last_order"}, 30]},
        },
    ]
    fixtures = [
        ("customers/create", "shopify-customers-create-accepts-marketing-inr.json"),
        ("orders/updated", "shopify-orders-updated-null-billing-address-inr.json"),
    ]

    async with running_services(settings):
        for segment in segments:
            status, _ = await api_post(settings, token, SEGMENTS, segment)
            assert status == 201
        for topic, name in fixtures:
            status, _ = await post_shopify(
                settings, STORE, secret, topic, load_fixture(name), webhook_id=name
            )
            assert status == 200
        await wait_until_applied(settings, pool)
        found = {}
        for segment in segments:
            path = f"{SEGMENTS}/{segment['segment_id']}/members"
            status, body = await api_get(settings, token, path)
            assert status == 200
            found[segment["segment_id"]] = [m["customer_key"] for m in body["members"]]

    without_orders = await pool.fetchrow(
        "SELECT lifetime_orders, last_order_at FROM customers WHERE customer_key = $1",
        "c:5747017285820",
    )
    assert tuple(without_orders) == (0, None)
    assert found == {
        "before-2024": ["c:6001363091712"],
        "lapsed": ["c:6001363091712"],
    }
