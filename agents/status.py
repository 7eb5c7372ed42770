"""Status agent: the single writer of the ``order_status`` table.

Input: every order topic (order_created, order_validated, fraud_alerts,
payment_successful, payment_failed, inventory_updated, payment_refunded), all keyed by
order_id and co-partitioned with the table.  Output: ``orders_app-order-status``
(StatusChanged, key order_id), every transition once details are known, and a terminal
change again when a duplicate of its cause arrives; the changes that move the analytics
(an order's first and terminal ones) also to ``orders_app-status-by-country`` (key
country), and a terminal one to the notification step (:mod:`agents.notification`).
Rules: :mod:`agents.status_rules`, :func:`agents.analytics_rules.counts`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust

from agents.analytics_rules import counts
from agents.notification import notify
from agents.status_rules import apply
from orders_app import records
from orders_app.app import app
from orders_app.records import TERMINAL_STATUSES, DecodeError
from orders_app.streams import dead_letter, guarded, key_str
from orders_app.topics import (
    FRAUD_ALERTS,
    INVENTORY_UPDATED,
    ORDER_CREATED,
    ORDER_STATUS,
    ORDER_VALIDATED,
    PAYMENT_FAILED,
    PAYMENT_REFUNDED,
    PAYMENT_SUCCESSFUL,
    STATUS_BY_COUNTRY,
)
from tables.order_status import order_status

log = logging.getLogger(__name__)

RECORD_BY_TOPIC: dict[str, type[faust.Record]] = {
    "order_created": records.OrderCreated,
    "order_validated": records.OrderValidated,
    "fraud_alerts": records.FraudAlert,
    "payment_successful": records.PaymentSucceeded,
    "payment_failed": records.PaymentFailed,
    "inventory_updated": records.InventoryUpdated,
    "payment_refunded": records.PaymentRefunded,
}

STATUS_INPUT = app.topic(
    *(
        t.get_topic_name()
        for t in (
            ORDER_CREATED,
            ORDER_VALIDATED,
            FRAUD_ALERTS,
            PAYMENT_SUCCESSFUL,
            PAYMENT_FAILED,
            INVENTORY_UPDATED,
            PAYMENT_REFUNDED,
        )
    ),
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
)


@app.agent(STATUS_INPUT, name="status")
async def track(stream: Any) -> None:
    async for event in stream.events():
        async with guarded(event, "status"):
            topic = event.message.topic
            try:
                record = records.decode(RECORD_BY_TOPIC[topic], event.value)
            except (DecodeError, TypeError, ValueError, ArithmeticError) as err:
                # The owning step dead-letters its own input; order_created is the status
                # agent's to report only when no other step reads it (fraud does).
                if topic not in {
                    "order_created",
                    "order_validated",
                    "payment_successful",
                    "inventory_updated",
                }:
                    await dead_letter(event, str(err), "status")
                continue
            order_id = getattr(record, "order_id", None) or key_str(event)
            if not order_id:
                await dead_letter(event, "no order id", "status")
                continue
            before = order_status.get(order_id)
            now = time.time()
            doc, changes = apply(before, order_id, record, now)
            order_status[order_id] = doc
            if (
                doc["published"] in TERMINAL_STATUSES
                and (before or {}).get("published") != doc["published"]
            ):
                app.metrics.orders_terminal.labels(doc["status"], doc["country"]).inc()
                app.metrics.end_to_end.observe(max(0.0, now - float(doc["created_at"])))
                if doc["status"] == "FULFILLED":
                    app.metrics.revenue.labels(doc["country"]).inc(float(doc["total"]))
            for change in changes:
                log.debug(
                    "order %s -> %s",
                    order_id,
                    change.status,
                    extra={
                        "order_id": order_id,
                        "topic": topic,
                        "partition": event.message.partition,
                    },
                )
                value = records.encode(change)
                await ORDER_STATUS.send(key=order_id.encode(), value=value)
                if counts(change):
                    # The analytics group_by, here rather than by an agent reading every
                    # change back (the order-status topic stays the status log).
                    await STATUS_BY_COUNTRY.send(
                        key=change.country.encode(), value=value, timestamp=change.created_at
                    )
                if change.terminal:
                    await notify(change)
