"""Message events, guest accounts and rejected events on real Kafka and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest

from cartstream.config import Settings
from projections import stores
from projections.store import BatchEffects, apply_events
from tests.conftest import running_services
from tests.helpers import api_get, read_topic, wait_until_applied
from tests.projections.test_oracle import line, order_event

pytestmark = pytest.mark.integration

STORE = "std-1"
ANA = {"id": "cust-7", "email": "Ana@Example.com"}
ANA_GUEST = {"id": None, "email": "ana@example.com"}


def order(
    order_id: str, created_at: str, total: str, customer: dict[str, Any]
) -> dict[str, Any]:
    return {
        "type": "order.created",
        "timestamp": created_at,
        "data": {
            "order_id": order_id,
            "name": f"#{order_id}",
            "created_at": created_at,
            "updated_at": created_at,
            "currency": "EUR",
            "total": total,
            "is_test": False,
            "cancelled_at": None,
            "line_items": [
                {
                    "line_item_id": f"{order_id}-1",
                    "product_id": "scarf",
                    "title": "Scarf",
                    "quantity": 1,
                    "price": total,
                    "total": total,
                }
            ],
            "refunds": [],
            "customer": customer,
        },
    }


def message(kind: str, message_id: str, workflow_id: str, at: str) -> dict[str, Any]:
    return {
        "type": f"message.{kind}",
        "timestamp": at,
        "data": {"message_id": message_id, "workflow_id": workflow_id, "customer": ANA},
    }


def account(at: str) -> dict[str, Any]:
    return {
        "type": "customer.created",
        "timestamp": at,
        "data": {
            "customer_id": ANA["id"],
            "email": ANA["email"],
            "first_name": "Ana",
            "created_at": at,
            "updated_at": at,
            "customer": ANA,
        },
    }


async def add_store(pool: asyncpg.Pool) -> tuple[str, str]:
    async with pool.acquire() as connection:
        token = await stores.create_store(connection, STORE, "standard")
        _, secret = await stores.add_secret(connection, STORE, "standard")
    return token, secret


async def post_standard(
    settings: Settings, secret: str, payload: dict[str, Any]
) -> None:
    """Post one delivery signed the Standard Webhooks way."""
    body = json.dumps(payload).encode()
    message_id = f"msg_{uuid.uuid4().hex}"
    timestamp = str(int(time.time()))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    headers = {
        "Content-Type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": f"v1,{signature.decode()}",
    }
    url = f"http://{settings.http_host}:{settings.http_port}/webhooks/standard/{STORE}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        assert response.status == 200, await response.text()


async def test_message_events_give_workflow_stats_and_conversions(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    token, secret = await add_store(pool)
    deliveries = [
        message("sent", "m1", "welcome", "2025-03-01T09:00:00Z"),
        message("clicked", "m1", "welcome", "2025-03-01T10:00:00Z"),
        message("sent", "m2", "winback", "2025-03-01T11:00:00Z"),
        # Converts for m1: a click beats the later send of m2.
        order("9001", "2025-03-02T09:00:00Z", "59.90", ANA),
        # Six days after every message: past the 5-day window.
        order("9002", "2025-03-07T11:00:01Z", "20.00", ANA),
        message("unsubscribed", "m2", "winback", "2025-03-03T08:00:00Z"),
    ]
    async with running_services(settings):
        for payload in deliveries:
            await post_standard(settings, secret, payload)
        await wait_until_applied(settings, pool)
        status, details = await api_get(
            settings, token, f"/api/stores/{STORE}/customers/c:cust-7"
        )

    assert status == 200
    assert details["lifetime_orders"] == 2
    assert details["lifetime_sales"] == "79.90"
    assert details["messages"] == {"sent": 2, "opened": 0, "clicked": 1}
    assert details["conversion_totals"] == {"orders": 1, "revenue": "59.90"}
    assert details["conversion_rate"] == "0.5000"
    assert details["workflow_stats"] == [
        {
            "workflow_id": "welcome",
            "sent": 1,
            "opened": 0,
            "clicked": 1,
            "unsubscribed": 0,
            "converted_orders": 1,
            "converted_revenue": "59.90",
            "conversion_rate": "1.0000",
        },
        {
            "workflow_id": "winback",
            "sent": 1,
            "opened": 0,
            "clicked": 0,
            "unsubscribed": 1,
            "converted_orders": 0,
            "converted_revenue": "0",
            "conversion_rate": "0.0000",
        },
    ]
    # The unsubscribe is an opt-out signal.
    assert details["email_opt_in"] == "unsubscribed"
    assert details["email_opt_in_at"] == "2025-03-03T08:00:00Z"


async def test_guest_joins_account_and_exits_segments(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    token, secret = await add_store(pool)
    await pool.execute(
        "INSERT INTO segments (store_id, segment_id, version, name, rule, fields) "
        "VALUES ($1, 'buyers', 1, 'Buyers', $2, '[\"lifetime_orders\"]')",
        STORE,
        '{">=": [{"var": "lifetime_orders"}, 1]}',
    )
    guest_path = f"/api/stores/{STORE}/customers/e:ana@example.com"
    async with running_services(settings):
        await post_standard(
            settings, secret, order("9001", "2025-03-02T09:00:00Z", "59.90", ANA_GUEST)
        )
        await wait_until_applied(settings, pool)
        guest_status, guest = await api_get(settings, token, guest_path)

        # The account arrives later with the guest's email.
        await post_standard(settings, secret, account("2025-03-05T09:00:00Z"))
        await wait_until_applied(settings, pool)
        gone_status, _ = await api_get(settings, token, guest_path)
        status, ana = await api_get(
            settings, token, f"/api/stores/{STORE}/customers/c:cust-7"
        )

    assert guest_status == 200
    assert guest["lifetime_orders"] == 1
    assert gone_status == 404
    assert status == 200
    assert ana["lifetime_orders"] == 1
    assert ana["lifetime_sales"] == "59.90"
    assert ana["first_name"] == "Ana"
    assert [s["segment_id"] for s in ana["segments"]] == ["buyers"]
    changes = await read_topic(settings, settings.topics.segment_changes)
    by_customer = sorted(
        (
            c["data"]["customer_key"],
            c["data"]["membership_version"],
            c["data"]["change"],
        )
        for c in changes
    )
    assert by_customer == [
        ("c:cust-7", 1, "entered"),
        ("e:ana@example.com", 1, "entered"),
        ("e:ana@example.com", 2, "exited"),
    ]


async def test_rejected_event_leaves_rest_of_batch(pool: asyncpg.Pool) -> None:
    """One event that PostgreSQL rejects fails alone; the others still apply."""

    def paid(number: int, title: str) -> dict[str, Any]:
        item = {**line("l1", "p1", 1, "1.00"), "title": title}
        return order_event(
            "s1",
            f"o{number}",
            order_id=str(number),
            ref={"id": str(number), "email": None},
            created_hour=0,
            updated_hour=0,
            lines=[item],
            total="1.00",
        )

    # Valid against the schema, but jsonb rejects the NUL character.
    events = [paid(1, "Mug"), paid(2, "Mug\u0000"), paid(3, "Tea")]
    effects = BatchEffects()

    async with pool.acquire() as connection, connection.transaction():
        failures = await apply_events(connection, events, effects)
        rows = await connection.fetch("SELECT order_id FROM orders ORDER BY 1")

    assert [(event["id"], reason.split(":")[-1]) for event, reason in failures] == [
        (events[1]["id"], " UntranslatableCharacterError")
    ]
    assert [row["order_id"] for row in rows] == ["1", "3"]
    assert sorted(effects.causes) == [("s1", "c:1"), ("s1", "c:3")]
