"""The order's steps fused in one place (pure): what each input does to the order's
document and which messages it emits.

Inputs (all keyed by order_id, so one document per order on one partition):
``order_created``, ``order_validated``, ``fraud_alerts``, the stock replies
(``orders_app-stock-replies``) and restores (``orders_app-order-restores``).  Outputs,
as :class:`Out` values the order agent (:mod:`agents.status`) sends after writing the
document:

- ``order_created`` -> ``orders_app-orders-by-customer`` (key customer_id, timestamp the
  commit time): the fraud step's repartition, until the order has a fraud decision, unless
  the cdc agent has sent it already (the message's ``FRAUD_REQUESTED`` header; a lost
  send is re-driven as any other, :func:`awaited`); the first decision
  (``order_validated`` | ``fraud_alerts``) is recorded as ``fraud`` and a
  different later one is ignored;
- ``order_validated`` -> the payment step (:mod:`agents.payment`) charges once and emits
  ``payment_successful`` | ``payment_failed``; a successful charge starts the stock saga
  (``reserve`` per distinct sku on ``orders_app-stock-commands``, key sku);
- a stock reply that decides the saga -> ``inventory_updated`` (``reserved``, or
  ``out_of_stock`` with ``release`` commands and ``payment_refunded``), and ``released``
  once every release is acknowledged;
- ``orders_app-order-restores`` (an order Postgres records, on a snapshot after a
  restart: issue 16) -> the recorded document becomes the order's state, none of its
  effects run again (:func:`_restore`);
- every status change (:mod:`agents.status_rules`) that can move a figure ->
  ``orders_app-status-by-country`` (key country), and a terminal one -> the notification
  step (:mod:`agents.notification`) -> ``notification_sent``.

The seed topics are emitted, never consumed back: the payment outcome, the stock decision
and the refund are applied to the document in the same step.  At-least-once: a redelivered
input emits again what it emitted the first time (same charge id, same notification id,
commands for skus that have not answered), never a second charge, reservation or
notification; the first call does the effect, later ones re-send the recorded outcome.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import faust

from agents import notification, payment
from agents.analytics_rules import counts
from agents.inventory_rules import missing_skus, saga_released, saga_reply, saga_start
from agents.status_rules import apply, replay_terminal
from orders_app.records import (
    FraudAlert,
    InventoryUpdated,
    OrderCreated,
    OrderLine,
    OrderRestored,
    OrderValidated,
    PaymentSucceeded,
    StatusChanged,
    StockCommand,
    StockReply,
)

log = logging.getLogger(__name__)

ORDERS_BY_CUSTOMER = "orders_app-orders-by-customer"
STOCK_COMMANDS = "orders_app-stock-commands"
STATUS_BY_COUNTRY = "orders_app-status-by-country"


@dataclass(frozen=True)
class Out:
    """One message to send: topic name, key, record, optional message timestamp."""

    topic: str
    key: str
    record: faust.Record
    timestamp: float | None = None


@dataclass
class Advance:
    """The result of one input: the new document (None: nothing to write), the messages
    to send in order, the status changes published, and what happened for the first time
    (``(metric, label)`` pairs, e.g. ``("payments", "succeeded")``)."""

    doc: dict[str, Any] | None
    sends: list[Out] = field(default_factory=list)
    changes: list[StatusChanged] = field(default_factory=list)
    firsts: list[tuple[str, str]] = field(default_factory=list)


def advance(
    doc: dict[str, Any] | None,
    order_id: str,
    record: faust.Record,
    now: float,
    *,
    fraud_requested: bool = False,
) -> Advance:
    """Apply one input to the order's document.  Pure and idempotent per input.
    ``fraud_requested``: the ``order_created`` message's writer (the cdc agent) has sent
    the order to the fraud repartition itself."""
    if isinstance(record, StockReply):
        return _on_reply(doc, record, now)
    if isinstance(record, OrderRestored):
        return _restore(doc, record, now)
    if not isinstance(record, OrderCreated | OrderValidated | FraudAlert):
        raise TypeError(f"the order flow takes no {type(record).__name__}")
    step = Advance(doc=None)
    decided = (doc or {}).get("fraud")
    if not isinstance(record, OrderCreated):
        verdict = "passed" if isinstance(record, OrderValidated) else "rejected"
        if decided not in (None, verdict):
            # The first fraud decision stands (a re-evaluation after the customer's window
            # expired, or with other limits, could differ): nothing moves, nothing is sent.
            log.warning("order %s: fraud %s after %s ignored", order_id, verdict, decided)
            return step
        decided = verdict
    new = _status(step, doc, order_id, record, now)
    if isinstance(record, OrderCreated):
        if decided is None and not fraud_requested:  # (again on redelivery: may be lost)
            step.sends.append(
                Out(ORDERS_BY_CUSTOMER, record.customer_id, record, timestamp=record.created_at)
            )
    else:
        new = {**new, "fraud": decided}
        if isinstance(record, OrderValidated):
            new = _pay(step, new, record.order, now)
    step.doc = new
    return step


def _status(
    step: Advance, doc: dict[str, Any] | None, order_id: str, record: faust.Record, now: float
) -> dict[str, Any]:
    """Move the status machine with ``record``; publish its changes (analytics input, and
    the notification of a terminal one)."""
    new, changes = apply(doc, order_id, record, now)
    for change in changes:
        step.changes.append(change)
        if counts(change):
            step.sends.append(
                Out(STATUS_BY_COUNTRY, change.country, change, timestamp=change.created_at)
            )
        if change.terminal:
            new, note, first = notification.notify(new, change, now)
            if note is not None:
                step.sends.append(Out("notification_sent", change.order_id, note))
                if first:
                    step.firsts.append(("notifications", note.template))
    return new


def _pay(step: Advance, doc: dict[str, Any], order: OrderCreated, now: float) -> dict[str, Any]:
    doc, outcome, charged = payment.charge(doc, order, now)
    paid = isinstance(outcome, PaymentSucceeded)
    step.sends.append(
        Out("payment_successful" if paid else "payment_failed", order.order_id, outcome)
    )
    if charged:
        step.firsts.append(("payments", "succeeded" if paid else "failed"))
    doc = _status(step, doc, order.order_id, outcome, now)
    if not paid:
        return doc
    saga = doc.get("saga")
    if saga is None:
        saga = saga_start(order.order_id, order.lines)
        doc = {**doc, "saga": saga}
    if saga["state"] == "pending":
        # Also on redelivery: the stock side answers a repeated command the same way.
        step.sends.extend(_reserves_owed(saga, now))
    return doc


def _on_reply(doc: dict[str, Any] | None, reply: StockReply, now: float) -> Advance:
    step = Advance(doc=None)
    saga = (doc or {}).get("saga")
    if doc is None or saga is None:
        log.warning("stock reply for unknown order %s", reply.order_id)
        return step
    if reply.op == "release":
        saga, done = saga_released(saga, reply.sku)
        if done or (saga["state"] == "released" and reply.sku in saga["released"]):
            # (again on a repeated ack: a crash may have lost the first ``released``)
            step.sends.append(_updated(saga, "released", [], now))
            if done:
                step.firsts.append(("reservations", "released"))
        step.doc = {**doc, "saga": saga}
        return step
    if saga["state"] == "pending" or reply.sku not in saga["replies"]:
        saga, decision, _ = saga_reply(saga, reply.sku, reply.ok)
        if decision is None:
            step.doc = {**doc, "saga": saga}
            return step
        step.firsts.append(("reservations", decision))
    # Decided now, or a repeated reply after the decision: emit the decision (again: a
    # crash may have kept the document and lost what it sent).
    doc = {**doc, "saga": saga}
    if saga["state"] == "reserved":
        updated = _updated(saga, "reserved", [], now)
        step.sends.append(updated)
        doc = _status(step, doc, reply.order_id, updated.record, now)
    else:
        updated = _updated(saga, "out_of_stock", missing_skus(saga), now)
        step.sends.append(updated)
        doc = _status(step, doc, reply.order_id, updated.record, now)
        step.sends.extend(_releases_owed(saga, now))
        doc, refund, refunded = payment.refund(doc, "out_of_stock", now)
        if refund is not None:
            step.sends.append(Out("payment_refunded", reply.order_id, refund))
            if refunded:
                step.firsts.append(("payments", "refunded"))
            doc = _status(step, doc, reply.order_id, refund, now)
    step.doc = doc
    return step


def _restore(doc: dict[str, Any] | None, restored: OrderRestored, now: float) -> Advance:
    """An order whose outcome Postgres records, read again by a snapshot (a restart on a
    fresh broker): take the recorded document as the order's state and re-run none of
    its effects - no charge, notification, ``inventory_updated`` or fraud check.  What
    is sent: the terminal change to analytics (the totals count it again on a fresh
    broker; the analytics ledger ignores it otherwise), ``restore`` commands holding
    the stock its reservation holds, and, for an order still waiting for stock, the
    ``reserve`` commands of the skus that had not answered (it goes on from there).
    An order the table already has keeps its state: the table is authoritative."""
    step = Advance(doc=None)
    if doc is not None:
        return step
    new = {**restored.document, "restored_at": now}
    saga = new.get("saga")
    if saga is not None:
        if saga["state"] in ("out_of_stock", "released"):
            # decided out of stock: what was reserved is (being) given back - hold nothing
            new["saga"] = {**saga, "state": "released", "released": sorted(saga["replies"])}
        else:
            for sku, ok in saga["replies"].items():
                if ok:  # a saga not out of stock has released nothing
                    step.sends.append(_command("restore", sku, saga["wanted"][sku], saga, now))
            if saga["state"] == "pending":
                step.sends.extend(_reserves_owed(saga, now))
    change = replay_terminal(new)
    if change is not None and counts(change):
        step.sends.append(
            Out(STATUS_BY_COUNTRY, change.country, change, timestamp=change.created_at)
        )
    step.doc = new
    return step


def waiting(doc: dict[str, Any] | None) -> bool:
    """Does the order wait for another step's answer (the fraud decision, stock replies,
    release acks)?  Cheap: the order agent asks after every step."""
    if doc is None:
        return False
    saga = doc.get("saga")
    if saga is not None:
        if saga["state"] == "out_of_stock":
            return bool(_unreleased(saga))
        return bool(saga["state"] == "pending")
    return doc.get("fraud") is None and doc.get("status") == "CREATED"


def awaited(doc: dict[str, Any] | None, now: float) -> list[Out]:
    """What a waiting order is owed, sent again: its fraud repartition (the fraud step
    answers a repeated order as it first did), the ``reserve`` commands of skus that have
    not replied, the ``release`` commands not acknowledged.  Every receiver is idempotent
    per order, so sending again what was not lost costs a duplicate answer, never a
    second effect.  Pure; ``[]`` for an order that waits for nothing."""
    if not waiting(doc):
        return []
    assert doc is not None
    saga = doc.get("saga")
    if saga is None:
        if not doc.get("has_details") or "payment_method" not in doc:
            return []  # (a document from before payment_method was kept: cannot rebuild)
        order = OrderCreated(
            order_id=doc["order_id"],
            customer_id=doc["customer_id"],
            country=doc["country"],
            currency=doc["currency"],
            total=Decimal(doc["total"]),
            lines=_lines(doc["lines"]),
            payment_method=doc["payment_method"],
            created_at=doc["created_at"],
        )
        return [Out(ORDERS_BY_CUSTOMER, order.customer_id, order, timestamp=order.created_at)]
    if saga["state"] == "pending":
        return _reserves_owed(saga, now)
    return _releases_owed(saga, now)


def _unreleased(saga: dict[str, Any]) -> list[str]:
    """Skus reserved for the saga whose release is not acknowledged yet."""
    return [sku for sku, ok in saga["replies"].items() if ok and sku not in saga["released"]]


def _reserves_owed(saga: dict[str, Any], now: float) -> list[Out]:
    """``reserve`` commands of the skus that have not replied."""
    return [
        _command("reserve", sku, qty, saga, now)
        for sku, qty in saga["wanted"].items()
        if sku not in saga["replies"]
    ]


def _releases_owed(saga: dict[str, Any], now: float) -> list[Out]:
    """``release`` commands of the reserved skus not yet acknowledged."""
    return [_command("release", sku, saga["wanted"][sku], saga, now) for sku in _unreleased(saga)]


def _command(op: str, sku: str, quantity: int, saga: dict[str, Any], now: float) -> Out:
    return Out(
        STOCK_COMMANDS,
        sku,
        StockCommand(
            op=op,
            sku=sku,
            quantity=quantity,
            order_id=saga["order_id"],
            lines_total=len(saga["wanted"]),
            at=now,
        ),
    )


def _updated(saga: dict[str, Any], status: str, missing: list[str], now: float) -> Out:
    lines = _lines(saga["lines"])
    return Out(
        "inventory_updated",
        saga["order_id"],
        InventoryUpdated(
            order_id=saga["order_id"], status=status, lines=lines, missing=missing, at=now
        ),
    )


def _lines(stored: list[dict[str, Any]]) -> list[OrderLine]:
    """Order lines as a document stores them (strings for money) -> records."""
    return [
        OrderLine(sku=ln["sku"], quantity=int(ln["quantity"]), unit_price=Decimal(ln["unit_price"]))
        for ln in stored
    ]
