"""Customer identity: which customer an event belongs to.

A customer is keyed by the platform's customer id when the event carries one
(``c:<id>``), otherwise by the normalised email (``e:<email>``). A guest order
without either belongs to nobody and is kept without a customer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def customer_key(ref: Mapping[str, Any] | None) -> str | None:
    """Return the customer key for an event's ``customer`` reference."""
    if not ref:
        return None
    customer_id = ref.get("id")
    if customer_id:
        return f"c:{customer_id}"
    email = ref.get("email")
    if email:
        return f"e:{email}"
    return None
