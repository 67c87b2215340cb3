"""The delivery log in PostgreSQL: outcomes, replacement rules and pruning."""

from __future__ import annotations

import asyncpg
import pytest

from handlers.deliveries import (
    delivery_key,
    find_delivery,
    prune_deliveries,
    record_delivery,
)
from tests.handlers.receiver_support import add_store

pytestmark = pytest.mark.integration


async def test_published_replaces_quarantined_but_not_back(pool: asyncpg.Pool) -> None:
    await add_store(pool, "shop-1", "shopify")
    await record_delivery(pool, "shop-1", "shopify", "wh-1", "quarantined")
    quarantined = await find_delivery(pool, "shop-1", "shopify", "wh-1")
    await record_delivery(pool, "shop-1", "shopify", "wh-1", "published", ["e-1"])
    published = await find_delivery(pool, "shop-1", "shopify", "wh-1")
    await record_delivery(pool, "shop-1", "shopify", "wh-1", "quarantined")
    still_published = await find_delivery(pool, "shop-1", "shopify", "wh-1")

    assert quarantined is not None
    assert (quarantined.outcome, quarantined.event_ids) == ("quarantined", [])
    assert published is not None
    assert (published.outcome, published.event_ids) == ("published", ["e-1"])
    assert still_published == published


async def test_ids_are_scoped_by_store_and_platform(pool: asyncpg.Pool) -> None:
    await add_store(pool, "shop-1", "shopify")
    await add_store(pool, "shop-2", "shopify")
    await record_delivery(pool, "shop-1", "shopify", "wh-1", "published", ["e-1"])

    assert await find_delivery(pool, "shop-2", "shopify", "wh-1") is None
    assert await find_delivery(pool, "shop-1", "standard", "wh-1") is None
    assert await find_delivery(pool, "shop-1", "shopify", "wh-2") is None


async def test_any_id_is_stored_by_digest(pool: asyncpg.Pool) -> None:
    """Ids of any length, with NUL or lone surrogates, are stored and found."""
    await add_store(pool, "shop-1", "shopify")
    for delivery_id in ["x" * 20_000, "a\x00b", "\udcff"]:
        await record_delivery(pool, "shop-1", "shopify", delivery_id, "published")
        found = await find_delivery(pool, "shop-1", "shopify", delivery_id)
        assert found is not None
    assert len(delivery_key("x" * 20_000)) == 32


async def test_prune_deletes_only_ids_older_than_window(pool: asyncpg.Pool) -> None:
    await add_store(pool, "shop-1", "shopify")
    await record_delivery(pool, "shop-1", "shopify", "old", "published")
    await record_delivery(pool, "shop-1", "shopify", "new", "published")
    await pool.execute(
        "UPDATE deliveries SET recorded_at = now() - interval '73 hours' "
        "WHERE delivery_key = $1",
        delivery_key("old"),
    )

    deleted = await prune_deliveries(pool, 72)

    assert deleted == 1
    assert await find_delivery(pool, "shop-1", "shopify", "old") is None
    assert await find_delivery(pool, "shop-1", "shopify", "new") is not None
