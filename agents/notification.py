"""Notification agent: orders_app-order-status (terminal changes) -> notification_sent.

Key: order_id (co-partitioned with the ``notifications`` ledger).  Exactly one
notification per order, with the template of its terminal status; a redelivered change
is sent again with the same ``notification_id`` (a crash may have lost the first send;
delivery deduplicates by id).  Rules: :mod:`agents.notification_rules`.
"""

from __future__ import annotations

import time
from typing import Any

from agents.notification_rules import notification_for, notification_id, resend_for
from orders_app.app import app
from orders_app.records import NotificationSent, StatusChanged
from orders_app.streams import decoded, guarded, send
from orders_app.topics import NOTIFICATION_SENT, ORDER_STATUS
from tables.order_status import notifications


@app.agent(ORDER_STATUS, name="notification")
async def notify(stream: Any) -> None:
    async for event, change in decoded(stream, StatusChanged, "notification"):
        async with guarded(event, "notification"):
            ledger = notifications.get(change.order_id)
            note = notification_for(change, ledger)
            if note is not None:
                notifications[change.order_id] = note
                app.metrics.notifications.labels(note["template"]).inc()
            else:
                note = resend_for(change, ledger)
                if note is None:
                    continue
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
