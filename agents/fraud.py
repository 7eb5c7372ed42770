"""Fraud agent: order_created -> order_validated | fraud_alerts.

Input ``order_created`` (key order_id) is repartitioned by customer_id to
``orders_app-orders-by-customer`` (as Kafka Streams' ``groupBy``), whose message timestamp
is the order's commit time, so the per-customer 1-minute window is event-time and
deterministic on replay.  Rules: :mod:`agents.fraud_rules`.  Output keyed by order_id.
A decision is stored per order, so a redelivered order gets the same decision again;
the window lists the orders it counted, so a replay after a crash that kept the window
update and lost the decision neither counts the order twice nor decides differently.
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
from orders_app.records import FraudAlert, OrderCreated, OrderValidated, encode
from orders_app.streams import decoded, guarded, send
from orders_app.topics import FRAUD_ALERTS, ORDER_CREATED, ORDER_VALIDATED, ORDERS_BY_CUSTOMER
from tables.customer_spend import customer_velocity, fraud_decisions


def limits() -> FraudLimits:
    s = app.settings
    return FraudLimits(
        max_total=s.fraud_max_total,
        velocity_count=s.fraud_velocity_count,
        velocity_amount=s.fraud_velocity_amount,
        blocked_countries=s.fraud_blocked_countries,
    )


@app.agent(ORDER_CREATED, name="fraud-repartition")
async def repartition_by_customer(stream: Any) -> None:
    async for event, order in decoded(stream, OrderCreated, "fraud"):
        async with guarded(event, "fraud"):
            await ORDERS_BY_CUSTOMER.send(
                key=order.customer_id.encode(), value=encode(order), timestamp=order.created_at
            )


@app.agent(ORDERS_BY_CUSTOMER, name="fraud-check")
async def check(stream: Any) -> None:
    rule_limits = limits()
    async for event, order in decoded(stream, OrderCreated, "fraud"):
        async with guarded(event, "fraud"):
            rules = fraud_decisions.get(order.order_id)
            if rules is None:
                before = customer_velocity[order.customer_id].current()
                window = add_to_window(before, order)
                if window != before:
                    customer_velocity[order.customer_id] = window
                # As the first count saw it, also when a crash lost only the decision.
                rules = evaluate(order, window_as_of(window, order.order_id), rule_limits)
                fraud_decisions[order.order_id] = rules
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
