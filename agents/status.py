"""Order agent: the single writer of the ``order_status`` table, one document per order.

Input (all keyed by order_id and co-partitioned with the table): ``order_created``,
``order_validated``, ``fraud_alerts``, ``orders_app-stock-replies`` and
``orders_app-order-restores``.  Each event is
decoded, applied by :func:`agents.order_flow.advance` (the status machine with the
payment, stock-saga and notification steps fused in; see that module for what each input
emits), the document written once, then the outputs sent: ``orders_app-orders-by-customer``
(fraud's repartition, unless the ``order_created`` message says its writer sent it:
header ``FRAUD_REQUESTED``), ``payment_successful`` | ``payment_failed``,
``orders_app-stock-commands`` (key sku), ``inventory_updated``, ``payment_refunded``,
``notification_sent`` and ``orders_app-status-by-country`` (key country: each order's
terminal change, the analytics input and the outcome log).  An order left waiting for
another step is noted for the re-drive of stalled orders (:mod:`agents.order_redrive`).
The agent keeps the name ``status``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust

from agents.order_flow import advance
from agents.order_redrive import emit, open_orders
from orders_app import records
from orders_app.app import app
from orders_app.records import DecodeError
from orders_app.streams import dead_letter, guarded, has_header, key_str
from orders_app.topics import (
    FRAUD_ALERTS,
    FRAUD_REQUESTED,
    ORDER_CREATED,
    ORDER_RESTORES,
    ORDER_VALIDATED,
    STOCK_REPLIES,
)
from tables.order_status import order_status

log = logging.getLogger(__name__)

RECORD_BY_TOPIC: dict[str, type[faust.Record]] = {
    "order_created": records.OrderCreated,
    "order_validated": records.OrderValidated,
    "fraud_alerts": records.FraudAlert,
    "orders_app-stock-replies": records.StockReply,
    "orders_app-order-restores": records.OrderRestored,
}

STATUS_INPUT = app.topic(
    *(
        t.get_topic_name()
        for t in (ORDER_CREATED, ORDER_VALIDATED, FRAUD_ALERTS, STOCK_REPLIES, ORDER_RESTORES)
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
                await dead_letter(event, str(err), "status")
                continue
            order_id = getattr(record, "order_id", None) or key_str(event)
            if not order_id:
                await dead_letter(event, "no order id", "status")
                continue
            before = order_status.get(order_id)
            now = time.time()
            step = advance(
                before, order_id, record, now, fraud_requested=has_header(event, FRAUD_REQUESTED)
            )
            if step.doc is not None and step.doc != before:
                order_status[order_id] = step.doc
                open_orders.moved(order_id, step.doc, now)
            for metric, label in step.firsts:
                getattr(app.metrics, metric).labels(label).inc()
            for change in step.changes:
                log.debug(
                    "order %s -> %s",
                    order_id,
                    change.status,
                    extra={"order_id": order_id, "topic": topic},
                )
                if change.terminal and (before or {}).get("published") != change.status:
                    app.metrics.orders_terminal.labels(change.status, change.country).inc()
                    app.metrics.end_to_end.observe(max(0.0, now - change.created_at))
                    if change.status == "FULFILLED":
                        app.metrics.revenue.labels(change.country).inc(float(change.total))
            for out in step.sends:
                await emit(out)
