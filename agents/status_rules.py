"""Order status machine (pure): how each outcome event moves an order's status document.

CREATED -> VALIDATED | REJECTED -> PAID | PAYMENT_FAILED -> FULFILLED | CANCELLED.
Status only moves forward (events of one order arrive on several topics, so their
relative order is not guaranteed); a terminal order never moves again, and a duplicate
event changes nothing.  Each transition is appended to ``history`` with its time; the
history always starts with CREATED (recorded with the first event, whichever it is).
A transition is published (``StatusChanged``) only once the order's details (from
``order_created``) are known, so downstream consumers always see country and total.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import faust

from orders_app.records import (
    TERMINAL_STATUSES,
    FraudAlert,
    InventoryUpdated,
    OrderCreated,
    OrderStatus,
    OrderValidated,
    PaymentFailed,
    PaymentRefunded,
    PaymentSucceeded,
    StatusChanged,
)

RANK = {
    OrderStatus.CREATED: 0,
    OrderStatus.VALIDATED: 1,
    OrderStatus.PAID: 2,
    OrderStatus.REJECTED: 9,
    OrderStatus.PAYMENT_FAILED: 9,
    OrderStatus.FULFILLED: 9,
    OrderStatus.CANCELLED: 9,
}


@dataclass(frozen=True)
class Outcome:
    """What an input event means for the order's status."""

    status: str | None  # target status, or None for details-only events
    reasons: tuple[str, ...] = ()
    details: OrderCreated | None = None


def outcome_of(record: faust.Record) -> Outcome:
    if isinstance(record, OrderCreated):
        return Outcome(OrderStatus.CREATED, details=record)
    if isinstance(record, OrderValidated):
        return Outcome(OrderStatus.VALIDATED, details=record.order)
    if isinstance(record, FraudAlert):
        return Outcome(OrderStatus.REJECTED, tuple(f"fraud:{r}" for r in record.rules))
    if isinstance(record, PaymentSucceeded):
        return Outcome(OrderStatus.PAID, details=record.order)
    if isinstance(record, PaymentFailed):
        return Outcome(OrderStatus.PAYMENT_FAILED, (f"payment:{record.reason}",))
    if isinstance(record, InventoryUpdated):
        if record.status == "reserved":
            return Outcome(OrderStatus.FULFILLED)
        if record.status == "out_of_stock":
            return Outcome(None, tuple(f"out_of_stock:{s}" for s in record.missing))
        return Outcome(None)
    if isinstance(record, PaymentRefunded):
        return Outcome(OrderStatus.CANCELLED, (f"refunded:{record.reason}",))
    raise TypeError(f"no status outcome for {type(record).__name__}")


def _with_details(doc: dict[str, Any], order: OrderCreated) -> dict[str, Any]:
    return {
        **doc,
        "customer_id": order.customer_id,
        "country": order.country,
        "currency": order.currency,
        "total": str(order.total),
        "lines": [
            {"sku": ln.sku, "quantity": ln.quantity, "unit_price": str(ln.unit_price)}
            for ln in order.lines
        ],
        "created_at": order.created_at,
        # kept so a stalled order's fraud check can be asked again (agents.order_redrive)
        "payment_method": order.payment_method,
        "has_details": True,
    }


def new_doc(order_id: str) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "status": None,
        "customer_id": None,
        "country": None,
        "currency": None,
        "total": None,
        "lines": [],
        "created_at": None,
        "has_details": False,
        "history": [],
        "reasons": [],
        "published": None,
    }


def apply(
    doc: dict[str, Any] | None, order_id: str, record: faust.Record, now: float
) -> tuple[dict[str, Any], list[StatusChanged]]:
    """-> (new document, status changes to publish).  Pure and idempotent."""
    out = outcome_of(record)
    doc = dict(doc) if doc is not None else new_doc(order_id)
    if out.details is not None and not doc["has_details"]:
        doc = _with_details(doc, out.details)
    for reason in out.reasons:
        if reason not in doc["reasons"]:
            doc["reasons"] = [*doc["reasons"], reason]
    current = doc["status"]
    moves = out.status is not None and current not in TERMINAL_STATUSES
    if moves and (current is None or RANK[out.status] > RANK[current]):  # type: ignore[index]
        if current is None and out.status != OrderStatus.CREATED:
            # A later step's event came first (the fraud check runs beside the order's
            # first step): the order was created all the same, and its history says so.
            doc["history"] = [{"status": OrderStatus.CREATED, "at": now}]
        doc["status"] = out.status
        doc["history"] = [*doc["history"], {"status": out.status, "at": now}]
    doc, changes = _publish(doc, now)
    if not changes and out.status is not None and out.status == doc["status"]:
        again = replay_terminal(doc)
        if again is not None:
            changes = [again]
    return doc, changes


def _publish(doc: dict[str, Any], now: float) -> tuple[dict[str, Any], list[StatusChanged]]:
    """Publish every status not yet published, once details are known."""
    if not doc["has_details"] or doc["status"] is None:
        return doc, []
    if doc["published"] == doc["status"]:
        return doc, []
    changes = []
    published = doc["published"]
    # History holds every status reached; publish those after the last published one.
    statuses = [h["status"] for h in doc["history"]]
    start = statuses.index(published) + 1 if published in statuses else 0
    for entry in doc["history"][start:]:
        changes.append(_change(doc, entry["status"], published, entry["at"]))
        published = entry["status"]
    doc = {**doc, "published": published}
    return doc, changes


def replay_terminal(doc: dict[str, Any]) -> StatusChanged | None:
    """The terminal change to publish again when a duplicate reaches a terminal order:
    its first publication may not have been acknowledged before a crash; consumers
    deduplicate by order id."""
    if doc["status"] not in TERMINAL_STATUSES or doc["published"] != doc["status"]:
        return None
    return _change(doc, doc["status"], None, doc["history"][-1]["at"])


def _change(doc: dict[str, Any], status: str, previous: str | None, at: float) -> StatusChanged:
    return StatusChanged(
        order_id=doc["order_id"],
        status=status,
        previous=previous,
        terminal=status in TERMINAL_STATUSES,
        customer_id=doc["customer_id"],
        country=doc["country"],
        currency=doc["currency"],
        total=Decimal(doc["total"]),
        reasons=list(doc["reasons"]),
        created_at=doc["created_at"],
        at=at,
    )
