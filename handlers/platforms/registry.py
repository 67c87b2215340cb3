"""The platforms the receiver serves, by the name used in the webhook path."""

from __future__ import annotations

from handlers.platforms.base import Platform
from handlers.platforms.bigcommerce import BigCommercePlatform
from handlers.platforms.shopify import ShopifyPlatform
from handlers.platforms.standard import StandardWebhooksPlatform
from handlers.platforms.woocommerce import WooCommercePlatform


def default_platforms(*, timestamp_tolerance_s: int = 300) -> dict[str, Platform]:
    """Return a fresh instance of every supported platform by name."""
    platforms: list[Platform] = [
        ShopifyPlatform(),
        WooCommercePlatform(),
        BigCommercePlatform(),
        StandardWebhooksPlatform(tolerance_s=timestamp_tolerance_s),
    ]
    return {platform.name: platform for platform in platforms}
