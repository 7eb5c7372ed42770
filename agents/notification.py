"""Notification step: an order's terminal status change -> notification_sent (key order_id).

Not an agent of its own: the order agent (:mod:`agents.status`) calls it for each terminal
change it publishes, so the notification ledger is the ``notified`` field of the order's
document (no agent reads every status change back, no ``notifications`` changelog write).
Exactly one notification per order, with the template of its terminal status; a
redelivered terminal change is sent again with the same ``notification_id`` (a crash may
have lost the first send; delivery deduplicates by id).
Rules: :mod:`agents.notification_rules`.  Pure.
"""

from __future__ import annotations

from typing import Any

from agents.notification_rules import notification_for, notification_id, resend_for
from orders_app.records import NotificationSent, StatusChanged


def notify(
    doc: dict[str, Any], change: StatusChanged, now: float
) -> tuple[dict[str, Any], NotificationSent | None, bool]:
    """-> (document, notification to send or None, recorded now?)."""
    ledger = doc.get("notified")
    note = notification_for(change, ledger)
    recorded = note is not None
    if note is not None:
        doc = {**doc, "notified": note}
    else:
        note = resend_for(change, ledger)
        if note is None:
            return doc, None, False
    return (
        doc,
        NotificationSent(
            notification_id=notification_id(change.order_id, note["template"]),
            order_id=change.order_id,
            customer_id=change.customer_id,
            status=change.status,
            channel=note["channel"],
            template=note["template"],
            at=now,
        ),
        recorded,
    )
