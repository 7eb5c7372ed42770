"""Fraud agent: order_created -> order_validated | fraud_alerts.

Input ``orders_app-orders-by-customer`` (key customer_id): ``order_created`` repartitioned
by the order agent (:mod:`agents.order_flow`, as Kafka Streams' ``groupBy``), whose
message timestamp is the order's commit time, so the per-customer 1-minute window is
event-time and deterministic on replay.  Rules: :mod:`agents.fraud_rules`.  Output keyed
by order_id.
The window lists the orders it counted, so a redelivered order is not counted twice and
is decided as the first count saw it (:func:`agents.fraud_rules.window_as_of`): the same
decision again, with no per-order decision table (issue 12).  Once the window is gone
(10 minutes) a re-evaluation could differ; the order agent keeps the first decision and
stops sending an order here once it has one.
"""

from __future__ import annotations

import time
from typing import Any

from agents.fraud_rules import (
    FraudLimits,
    add_to_window,
    evaluate,
    reason,
    score,
    window_as_of,
)
from orders_app.app import app
from orders_app.records import FraudAlert, OrderCreated, OrderValidated
from orders_app.streams import decoded, guarded, send
from orders_app.topics import FRAUD_ALERTS, ORDER_VALIDATED, ORDERS_BY_CUSTOMER
from tables.customer_spend import customer_velocity


def limits() -> FraudLimits:
    s = app.settings
    return FraudLimits(
        max_total=s.fraud_max_total,
        velocity_count=s.fraud_velocity_count,
        velocity_amount=s.fraud_velocity_amount,
        blocked_countries=s.fraud_blocked_countries,
    )


@app.agent(ORDERS_BY_CUSTOMER, name="fraud-check")
async def check(stream: Any) -> None:
    rule_limits = limits()
    async for event, order in decoded(stream, OrderCreated, "fraud"):
        async with guarded(event, "fraud"):
            before = customer_velocity[order.customer_id].current()
            window = add_to_window(before, order)
            # As the first count saw it: a redelivered order is in the window already.
            rules = evaluate(order, window_as_of(window, order.order_id), rule_limits)
            if window != before:
                customer_velocity[order.customer_id] = window
                app.metrics.fraud_checks.labels("rejected" if rules else "passed").inc()
                for rule in rules:
                    app.metrics.fraud_rejections.labels(rule).inc()
            now = time.time()
            if rules:
                alert = FraudAlert(
                    order_id=order.order_id,
                    customer_id=order.customer_id,
                    country=order.country,
                    rules=rules,
                    score=score(rules),
                    reason=reason(rules),
                    at=now,
                )
                await send(FRAUD_ALERTS, order.order_id, alert)
            else:
                await send(
                    ORDER_VALIDATED,
                    order.order_id,
                    OrderValidated(order_id=order.order_id, order=order, validated_at=now),
                )
