"""Notification step: terminal status changes -> notification_sent.

Called by the status agent (agents/status.py) for each change it publishes, in its
stream: the key is the order_id, the same partition as the ``notifications`` ledger, so
no agent has to read every status change back from ``orders_app-order-status`` (that
cost four deliveries per order for the one that matters).  Exactly one notification per
order, with the template of its terminal status; a redelivered terminal change is sent
again with the same ``notification_id`` (a crash may have lost the first send; delivery
deduplicates by id).  Rules: :mod:`agents.notification_rules`.
"""

from __future__ import annotations

import time

from agents.notification_rules import notification_for, notification_id, resend_for
from orders_app.app import app
from orders_app.records import NotificationSent, StatusChanged
from orders_app.streams import send
from orders_app.topics import NOTIFICATION_SENT
from tables.order_status import notifications


async def notify(change: StatusChanged) -> None:
    """Record and send the order's notification when ``change`` is terminal."""
    ledger = notifications.get(change.order_id)
    note = notification_for(change, ledger)
    if note is not None:
        notifications[change.order_id] = note
        app.metrics.notifications.labels(note["template"]).inc()
    else:
        note = resend_for(change, ledger)
        if note is None:
            return
    await send(
        NOTIFICATION_SENT,
        change.order_id,
        NotificationSent(
            notification_id=notification_id(change.order_id, note["template"]),
            order_id=change.order_id,
            customer_id=change.customer_id,
            status=change.status,
            channel=note["channel"],
            template=note["template"],
            at=time.time(),
        ),
    )
