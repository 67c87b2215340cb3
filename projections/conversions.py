"""Workflow stats and order conversions from a customer's message events; pure.

An order converts for the latest message the customer clicked within the
attribution window before the order was placed, or, without such a click, for
the latest message sent to them within that window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

RATE_QUANTUM = Decimal("0.0001")
MESSAGE_KINDS = ("sent", "opened", "clicked", "unsubscribed")


@dataclass(frozen=True)
class MessageEvent:
    """One message event: ``kind`` is sent, opened, clicked or unsubscribed."""

    event_id: str
    message_id: str
    workflow_id: str
    kind: str
    at: datetime


@dataclass(frozen=True)
class ConvertibleOrder:
    """A counted order to attribute; ``revenue`` is its total less refunds."""

    order_id: str
    created_at: datetime
    revenue: Decimal


@dataclass
class WorkflowStats:
    """Message counts and conversions of one workflow for one customer."""

    workflow_id: str
    sent: int = 0
    opened: int = 0
    clicked: int = 0
    unsubscribed: int = 0
    converted_orders: int = 0
    converted_revenue: Decimal = Decimal(0)

    def as_json(self) -> dict[str, Any]:
        """Return the stats as JSON values, with money and rates as strings."""
        rate = conversion_rate(self.converted_orders, self.sent)
        return {
            "workflow_id": self.workflow_id,
            "sent": self.sent,
            "opened": self.opened,
            "clicked": self.clicked,
            "unsubscribed": self.unsubscribed,
            "converted_orders": self.converted_orders,
            "converted_revenue": str(self.converted_revenue),
            "conversion_rate": None if rate is None else str(rate),
        }


@dataclass
class MessageSummary:
    """A customer's message totals, conversions and per-workflow stats."""

    sent: int = 0
    opened: int = 0
    clicked: int = 0
    converted_orders: int = 0
    converted_revenue: Decimal = Decimal(0)
    conversion_rate: Decimal | None = None
    workflows: list[WorkflowStats] = field(default_factory=list)
    # Order id -> message id of the message that converted it.
    attributions: dict[str, str] = field(default_factory=dict)


@dataclass
class _Message:
    message_id: str
    workflow_id: str
    kinds: set[str]
    sent_at: datetime


def conversion_rate(converted: int, received: int) -> Decimal | None:
    """Return converted orders per message received, to 4 decimals, or None."""
    if received == 0:
        return None
    return (Decimal(converted) / Decimal(received)).quantize(
        RATE_QUANTUM, rounding=ROUND_HALF_EVEN
    )


def _group_messages(events: Sequence[MessageEvent]) -> dict[str, _Message]:
    """Group events by message id.

    Every event implies that its message was sent, even when the ``sent`` event
    itself is missing. The message's workflow is the one named by its earliest
    event, and it was sent at its earliest ``sent`` event, else at its earliest
    event of any kind.
    """
    ordered = sorted(events, key=lambda e: (e.at, e.event_id))
    messages: dict[str, _Message] = {}
    for event in ordered:
        message = messages.get(event.message_id)
        if message is None:
            message = _Message(event.message_id, event.workflow_id, set(), event.at)
            messages[event.message_id] = message
        if event.kind == "sent" and "sent" not in message.kinds:
            message.sent_at = event.at
        message.kinds.add(event.kind)
    return messages


def _attribute(
    order: ConvertibleOrder,
    clicks: Sequence[MessageEvent],
    messages: dict[str, _Message],
    window: timedelta,
) -> str | None:
    """Return the id of the message an order converts for, or None."""
    start = order.created_at - window
    clicked = [c for c in clicks if start <= c.at <= order.created_at]
    if clicked:
        return max(clicked, key=lambda c: (c.at, c.event_id)).message_id
    sent = [m for m in messages.values() if start <= m.sent_at <= order.created_at]
    if sent:
        return max(sent, key=lambda m: (m.sent_at, m.message_id)).message_id
    return None


def summarise_messages(
    events: Sequence[MessageEvent],
    orders: Sequence[ConvertibleOrder],
    window: timedelta,
) -> MessageSummary:
    """Count a customer's messages per workflow and attribute their counted orders.

    Both ends of the window are inclusive: a click at the order's own time, or
    exactly ``window`` before it, converts the order.
    """
    messages = _group_messages(events)
    clicks = [e for e in events if e.kind == "clicked"]
    stats: dict[str, WorkflowStats] = {}
    for message in messages.values():
        workflow = stats.setdefault(
            message.workflow_id, WorkflowStats(message.workflow_id)
        )
        workflow.sent += 1
        workflow.opened += "opened" in message.kinds
        workflow.clicked += "clicked" in message.kinds
        workflow.unsubscribed += "unsubscribed" in message.kinds

    summary = MessageSummary()
    for order in orders:
        message_id = _attribute(order, clicks, messages, window)
        if message_id is None:
            continue
        summary.attributions[order.order_id] = message_id
        workflow = stats[messages[message_id].workflow_id]
        workflow.converted_orders += 1
        workflow.converted_revenue += order.revenue
        summary.converted_orders += 1
        summary.converted_revenue += order.revenue

    summary.workflows = [stats[key] for key in sorted(stats)]
    summary.sent = len(messages)
    summary.opened = sum(w.opened for w in summary.workflows)
    summary.clicked = sum(w.clicked for w in summary.workflows)
    summary.conversion_rate = conversion_rate(summary.converted_orders, summary.sent)
    return summary
