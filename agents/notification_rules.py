"""Notification rules (pure): one notification per order, when it becomes terminal.

The template names the terminal status; the channel is email.  The ledger entry per
order id makes a redelivered terminal change send nothing more.
"""

from __future__ import annotations

import hashlib
from typing import Any

from orders_app.records import OrderStatus, StatusChanged

TEMPLATES = {
    OrderStatus.FULFILLED: "order_confirmed",
    OrderStatus.REJECTED: "order_rejected",
    OrderStatus.PAYMENT_FAILED: "payment_failed",
    OrderStatus.CANCELLED: "order_cancelled_refunded",
}


def notification_id(order_id: str, template: str) -> str:
    return "ntf_" + hashlib.sha256(f"{order_id}|{template}".encode()).hexdigest()[:24]


def resend_for(change: StatusChanged, ledger: dict[str, Any] | None) -> dict[str, Any] | None:
    """A terminal change delivered again after its notification was recorded: send the
    same notification again (same id) - a crash may have kept the ledger record and lost
    the notification; delivery deduplicates by ``notification_id``."""
    if not change.terminal or ledger is None or ledger.get("status") != change.status:
        return None
    return ledger


def notification_for(change: StatusChanged, ledger: dict[str, Any] | None) -> dict[str, Any] | None:
    """The notification to send now, or None (not terminal, or already notified)."""
    if not change.terminal or ledger is not None or change.status not in TEMPLATES:
        return None
    return {"channel": "email", "template": TEMPLATES[change.status], "status": change.status}
