"""Payment agent: order_validated -> payment_successful | payment_failed;
inventory_updated(out_of_stock) -> payment_refunded.

Key: order_id on every topic (co-partitioned with the ``payments`` ledger table).
Rules: :mod:`agents.payment_rules`.  A charge or refund happens at most once per order
id; a redelivered input re-emits the recorded outcome instead of charging again.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from agents.payment_rules import gateway_charge, ledger_after_charge, may_refund
from orders_app.app import app
from orders_app.records import (
    InventoryUpdated,
    OrderValidated,
    PaymentFailed,
    PaymentRefunded,
    PaymentSucceeded,
)
from orders_app.streams import decoded, guarded, send
from orders_app.topics import (
    INVENTORY_UPDATED,
    ORDER_VALIDATED,
    PAYMENT_FAILED,
    PAYMENT_REFUNDED,
    PAYMENT_SUCCESSFUL,
)
from tables.order_status import payments


@app.agent(ORDER_VALIDATED, name="payment-charge")
async def charge(stream: Any) -> None:
    async for event, validated in decoded(stream, OrderValidated, "payment"):
        async with guarded(event, "payment"):
            order = validated.order
            entry = payments.get(order.order_id)
            if entry is None:
                result = gateway_charge(order.order_id, order.payment_method, order.total)
                entry = ledger_after_charge(result, order.total, order.currency)
                payments[order.order_id] = entry
                app.metrics.payments.labels(entry["result"]).inc()
            now = time.time()
            if entry["result"] == "succeeded":
                await send(
                    PAYMENT_SUCCESSFUL,
                    order.order_id,
                    PaymentSucceeded(
                        order_id=order.order_id,
                        charge_id=entry["charge_id"],
                        amount=Decimal(entry["amount"]),
                        currency=entry["currency"],
                        order=order,
                        at=now,
                    ),
                )
            else:
                await send(
                    PAYMENT_FAILED,
                    order.order_id,
                    PaymentFailed(
                        order_id=order.order_id,
                        reason=entry["reason"],
                        amount=Decimal(entry["amount"]),
                        currency=entry["currency"],
                        at=now,
                    ),
                )


@app.agent(INVENTORY_UPDATED, name="payment-refund")
async def refund(stream: Any) -> None:
    async for event, update in decoded(stream, InventoryUpdated, "payment"):
        async with guarded(event, "payment"):
            if update.status != "out_of_stock":
                continue
            entry = payments.get(update.order_id)
            if may_refund(entry):
                entry = {**entry, "refunded": True}
                payments[update.order_id] = entry
                app.metrics.payments.labels("refunded").inc()
            elif not (entry and entry.get("refunded")):
                continue  # never charged: nothing to give back
            await send(
                PAYMENT_REFUNDED,
                update.order_id,
                PaymentRefunded(
                    order_id=update.order_id,
                    charge_id=entry["charge_id"],
                    amount=Decimal(entry["amount"]),
                    currency=entry["currency"],
                    reason="out_of_stock",
                    at=time.time(),
                ),
            )
