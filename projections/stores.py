"""Store records: platform, webhook secrets, API tokens and BigCommerce credentials."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from cartstream.config import Secret
from cartstream.errors import CartstreamError

PLATFORMS = ("shopify", "woocommerce", "bigcommerce", "standard")
STORE_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class StoreError(CartstreamError):
    """A store command was given an invalid or unknown store, platform or secret."""


@dataclass(frozen=True)
class StoreSecret:
    secret_id: int
    store_id: str
    platform: str
    created_at: datetime
    retired_at: datetime | None


def token_digest(token: str) -> bytes:
    """Return the SHA-256 digest under which an API token is stored."""
    return hashlib.sha256(token.encode()).digest()


def _check_platform(platform: str) -> None:
    if platform not in PLATFORMS:
        raise StoreError(
            f"unknown platform {platform!r}: expected one of {', '.join(PLATFORMS)}"
        )


async def create_store(
    connection: asyncpg.Connection,
    store_id: str,
    platform: str,
    *,
    name: str | None = None,
    currency: str | None = None,
) -> str:
    """Create a store and return its API token, which is shown only once.

    Raises:
        StoreError: the id is invalid or taken, or the platform is unknown.
    """
    if not STORE_ID_PATTERN.match(store_id):
        raise StoreError(
            f"invalid store id {store_id!r}: use 1-63 lower-case letters, digits, "
            "dots, dashes or underscores"
        )
    _check_platform(platform)
    token = "cs_" + secrets.token_urlsafe(32)
    try:
        await connection.execute(
            "INSERT INTO stores (store_id, platform, name, currency, api_token_sha256) "
            "VALUES ($1, $2, $3, $4, $5)",
            store_id,
            platform,
            name or store_id,
            currency,
            token_digest(token),
        )
    except asyncpg.UniqueViolationError as exc:
        raise StoreError(f"store {store_id!r} already exists") from exc
    return token


async def rotate_token(connection: asyncpg.Connection, store_id: str) -> str:
    """Replace a store's API token and return the new one."""
    token = "cs_" + secrets.token_urlsafe(32)
    status = await connection.execute(
        "UPDATE stores SET api_token_sha256 = $2 WHERE store_id = $1",
        store_id,
        token_digest(token),
    )
    if status.endswith(" 0"):
        raise StoreError(f"store {store_id!r} not found")
    return token


async def add_secret(
    connection: asyncpg.Connection,
    store_id: str,
    platform: str,
    secret: str | None = None,
) -> tuple[int, str]:
    """Add an active webhook secret; generate one when none is given.

    Returns the secret's id and the secret itself.
    """
    _check_platform(platform)
    if secret is None:
        secret = secrets.token_hex(32)
        if platform == "standard":
            import base64

            secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    if not secret:
        raise StoreError("the secret is empty")
    try:
        secret_id = await connection.fetchval(
            "INSERT INTO store_secrets (store_id, platform, secret) "
            "VALUES ($1, $2, $3) RETURNING secret_id",
            store_id,
            platform,
            secret,
        )
    except asyncpg.ForeignKeyViolationError as exc:
        raise StoreError(f"store {store_id!r} not found") from exc
    return int(secret_id), secret


async def retire_secret(
    connection: asyncpg.Connection, store_id: str, secret_id: int
) -> None:
    """Retire a secret: deliveries signed with it are rejected from now on."""
    status = await connection.execute(
        "UPDATE store_secrets SET retired_at = now() "
        "WHERE store_id = $1 AND secret_id = $2 AND retired_at IS NULL",
        store_id,
        secret_id,
    )
    if status.endswith(" 0"):
        raise StoreError(f"no active secret {secret_id} for store {store_id!r}")


async def list_secrets(
    connection: asyncpg.Connection, store_id: str
) -> list[StoreSecret]:
    """List a store's secrets without their values."""
    rows = await connection.fetch(
        "SELECT secret_id, store_id, platform, created_at, retired_at "
        "FROM store_secrets WHERE store_id = $1 ORDER BY secret_id",
        store_id,
    )
    return [StoreSecret(**dict(row)) for row in rows]


async def active_secrets(
    connection: asyncpg.Connection | asyncpg.Pool, store_id: str, platform: str
) -> list[str] | None:
    """Return the active secrets of a store for a platform.

    Returns None when the store does not exist.
    """
    rows = await connection.fetch(
        "SELECT st.store_id, sc.secret FROM stores st "
        "LEFT JOIN store_secrets sc ON sc.store_id = st.store_id "
        "AND sc.platform = $2 AND sc.retired_at IS NULL "
        "WHERE st.store_id = $1",
        store_id,
        platform,
    )
    if not rows:
        return None
    return [row["secret"] for row in rows if row["secret"] is not None]


async def store_for_token(
    connection: asyncpg.Connection | asyncpg.Pool, token: str
) -> str | None:
    """Return the id of the store an API token belongs to, or None."""
    found = await connection.fetchval(
        "SELECT store_id FROM stores WHERE api_token_sha256 = $1", token_digest(token)
    )
    return str(found) if found is not None else None


async def list_stores(connection: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(
        await connection.fetch(
            "SELECT store_id, platform, name, currency, created_at FROM stores "
            "ORDER BY store_id"
        )
    )


@dataclass(frozen=True)
class BigCommerceCredentials:
    """A store's BigCommerce API account: the store hash and its access token."""

    store_id: str
    store_hash: str
    access_token: Secret


BIGCOMMERCE_STORE_HASH_PATTERN = re.compile(r"^[A-Za-z0-9]{1,64}$")


async def set_bigcommerce_credentials(
    connection: asyncpg.Connection, store_id: str, store_hash: str, access_token: str
) -> None:
    """Store or replace the BigCommerce API credentials of a BigCommerce store.

    Raises:
        StoreError: the store is unknown or not a BigCommerce store, the store
            hash is not 1-64 letters and digits, or the token is empty.
    """
    if not BIGCOMMERCE_STORE_HASH_PATTERN.match(store_hash):
        raise StoreError(
            f"invalid store hash {store_hash!r}: use the 1-64 letters and digits "
            "after stores/ in the store's API path"
        )
    if not access_token.strip():
        raise StoreError("the access token is empty")
    platform = await connection.fetchval(
        "SELECT platform FROM stores WHERE store_id = $1", store_id
    )
    if platform is None:
        raise StoreError(f"store {store_id!r} not found")
    if platform != "bigcommerce":
        raise StoreError(
            f"store {store_id!r} is a {platform} store; API credentials apply to "
            "bigcommerce stores only"
        )
    await connection.execute(
        "INSERT INTO bigcommerce_credentials (store_id, store_hash, access_token) "
        "VALUES ($1, $2, $3) ON CONFLICT (store_id) DO UPDATE SET "
        "store_hash = EXCLUDED.store_hash, access_token = EXCLUDED.access_token, "
        "updated_at = now()",
        store_id,
        store_hash,
        access_token.strip(),
    )


async def remove_bigcommerce_credentials(
    connection: asyncpg.Connection, store_id: str
) -> None:
    """Delete a store's BigCommerce API credentials; hydration stops for it."""
    status = await connection.execute(
        "DELETE FROM bigcommerce_credentials WHERE store_id = $1", store_id
    )
    if status.endswith(" 0"):
        raise StoreError(f"store {store_id!r} has no BigCommerce credentials")


async def bigcommerce_credentials(
    connection: asyncpg.Connection | asyncpg.Pool, store_id: str
) -> BigCommerceCredentials | None:
    """Return a store's BigCommerce API credentials, or None when it has none."""
    row = await connection.fetchrow(
        "SELECT store_hash, access_token FROM bigcommerce_credentials "
        "WHERE store_id = $1",
        store_id,
    )
    if row is None:
        return None
    return BigCommerceCredentials(
        store_id=store_id,
        store_hash=row["store_hash"],
        access_token=Secret(row["access_token"]),
    )
