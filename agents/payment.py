"""Payment step: order_validated -> payment_successful | payment_failed; an out-of-stock
decision -> payment_refunded.

Not an agent of its own: the order agent (:mod:`agents.status`, key order_id) calls it in
its stream, so the charge ledger is the ``payment`` field of the order's document and the
charge, the status change it causes and the document are one table write (a separate
agent cost a delivery of order_validated, a ``payments`` changelog write, and a delivery
of payment_successful back to the status agent).  A charge or refund happens at most once
per order id; a redelivered input re-emits the recorded outcome instead of charging again.
Rules: :mod:`agents.payment_rules`.  Pure: returns the new document and the record to send.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from agents.payment_rules import gateway_charge, ledger_after_charge, may_refund
from orders_app.records import OrderCreated, PaymentFailed, PaymentRefunded, PaymentSucceeded


def charge(
    doc: dict[str, Any], order: OrderCreated, now: float
) -> tuple[dict[str, Any], PaymentSucceeded | PaymentFailed, bool]:
    """-> (document, outcome to send, charged now?).  The first call charges; later ones
    return the recorded outcome."""
    entry = doc.get("payment")
    charged = entry is None
    if entry is None:
        result = gateway_charge(order.order_id, order.payment_method, order.total)
        entry = ledger_after_charge(result, order.total, order.currency)
        doc = {**doc, "payment": entry}
    if entry["result"] == "succeeded":
        return (
            doc,
            PaymentSucceeded(
                order_id=order.order_id,
                charge_id=entry["charge_id"],
                amount=Decimal(entry["amount"]),
                currency=entry["currency"],
                order=order,
                at=now,
            ),
            charged,
        )
    return (
        doc,
        PaymentFailed(
            order_id=order.order_id,
            reason=entry["reason"],
            amount=Decimal(entry["amount"]),
            currency=entry["currency"],
            at=now,
        ),
        charged,
    )


def refund(
    doc: dict[str, Any], reason: str, now: float
) -> tuple[dict[str, Any], PaymentRefunded | None, bool]:
    """-> (document, refund to send or None when never charged, refunded now?)."""
    entry = doc.get("payment")
    refunded = may_refund(entry)
    if refunded:
        entry = {**entry, "refunded": True}  # type: ignore[dict-item]
        doc = {**doc, "payment": entry}
    elif not (entry and entry.get("refunded")):
        return doc, None, False
    assert entry is not None
    return (
        doc,
        PaymentRefunded(
            order_id=doc["order_id"],
            charge_id=entry["charge_id"],
            amount=Decimal(entry["amount"]),
            currency=entry["currency"],
            reason=reason,
            at=now,
        ),
        refunded,
    )
