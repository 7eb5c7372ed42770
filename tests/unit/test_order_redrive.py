"""The re-drive of stalled orders, pure parts: which orders wait for another step
(``agents.order_flow.waiting``), what they are owed (``awaited``), and when one is due
(``agents.order_redrive.OpenOrders``: still for long enough *and* overtaken)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from agents.inventory_rules import saga_released, saga_reply, saga_start
from agents.order_flow import awaited, waiting
from agents.order_redrive import OpenOrders
from agents.status_rules import apply
from orders_app.records import OrderCreated, OrderLine

NOW = 1_000_000.0


def created(order_id: str = "o-1") -> OrderCreated:
    lines = [
        OrderLine(sku="A", quantity=2, unit_price=Decimal("1.50")),
        OrderLine(sku="B", quantity=1, unit_price=Decimal("4.00")),
    ]
    return OrderCreated(
        order_id=order_id,
        customer_id="c-1",
        country="DE",
        currency="EUR",
        total=Decimal("7.00"),
        lines=lines,
        payment_method="tok_visa",
        created_at=NOW - 5,
    )


def doc_created() -> dict[str, Any]:
    doc, _ = apply(None, "o-1", created(), NOW)
    return doc


def with_saga(**saga: Any) -> dict[str, Any]:
    base = saga_start("o-1", created().lines)
    return {**doc_created(), "status": "PAID", "fraud": "passed", "saga": {**base, **saga}}


def test_a_created_order_without_a_fraud_decision_is_owed_its_fraud_check() -> None:
    doc = doc_created()
    assert waiting(doc)
    [out] = awaited(doc, NOW)
    assert (out.topic, out.key, out.timestamp) == ("orders_app-orders-by-customer", "c-1", NOW - 5)
    assert out.record == created()  # the same order, payment method included


def test_a_document_without_the_payment_method_waits_but_cannot_be_rebuilt() -> None:
    doc = {k: v for k, v in doc_created().items() if k != "payment_method"}
    assert waiting(doc)
    assert awaited(doc, NOW) == []


def test_a_pending_saga_is_owed_the_reserves_of_silent_skus_only() -> None:
    saga, _, _ = saga_reply(saga_start("o-1", created().lines), "A", True)
    doc = with_saga(**saga)
    [out] = awaited(doc, NOW)
    assert (out.topic, out.key, out.record.op, out.record.quantity) == (
        "orders_app-stock-commands",
        "B",
        "reserve",
        1,
    )


def test_out_of_stock_is_owed_its_unacknowledged_releases_then_nothing() -> None:
    saga = saga_start("o-1", created().lines)
    saga, _, _ = saga_reply(saga, "A", True)
    saga, decision, _ = saga_reply(saga, "B", False)
    assert decision == "out_of_stock"
    doc = {**with_saga(**saga), "status": "CANCELLED"}
    [out] = awaited(doc, NOW)
    assert (out.key, out.record.op, out.record.quantity) == ("A", "release", 2)
    saga, done = saga_released(saga, "A")
    assert done
    assert not waiting({**doc, "saga": saga})
    # every sku refused: nothing was reserved, nothing to release, nothing to wait for
    refused = saga_start("o-1", created().lines)
    refused, _, _ = saga_reply(refused, "A", False)
    refused, _, _ = saga_reply(refused, "B", False)
    assert not waiting({**doc, "saga": refused})


def test_decided_and_terminal_orders_wait_for_nothing() -> None:
    assert not waiting(None)
    assert not waiting({**doc_created(), "fraud": "rejected", "status": "REJECTED"})
    assert not waiting({**doc_created(), "status": "PAYMENT_FAILED", "fraud": "passed"})
    assert not waiting(with_saga(state="reserved"))
    assert awaited(with_saga(state="reserved"), NOW) == []


def test_an_order_is_due_only_when_still_long_enough_and_overtaken() -> None:
    index = OpenOrders()
    waiting_doc, done_doc = doc_created(), with_saga(state="reserved")
    index.moved("slow", waiting_doc, 100.0)
    index.moved("queued", waiting_doc, 105.0)
    assert index.due(200.0, 20.0) == []  # nobody finished: a backlog, not a loss
    index.moved("fast", waiting_doc, 101.0)
    index.moved("fast", done_doc, 102.0)  # moved after "slow" did, and finished
    assert index.due(110.0, 20.0) == []  # not still for long enough
    assert index.due(200.0, 20.0) == ["slow"]  # "queued" moved after "fast" last did
    index.moved("slow", done_doc, 201.0)
    assert index.since == {"queued": 105.0}
    index.reset(["x"], 300.0)
    assert (index.since, index.finished) == ({"x": 300.0}, 0.0)
