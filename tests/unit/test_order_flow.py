"""agents.order_flow: the fused order steps (status, payment, stock saga, notification).

What each input emits, that the effects happen once (charge, reservation, refund,
notification) and that a redelivered input emits again what it emitted the first time.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from agents.order_flow import Advance, Out, advance
from orders_app.records import (
    InventoryUpdated,
    NotificationSent,
    PaymentFailed,
    PaymentRefunded,
    PaymentSucceeded,
    StatusChanged,
    StockCommand,
    StockReply,
)

OID = "ord-1"


def reply(sku: str, ok: bool, op: str = "reserve", qty: int = 1, total: int = 1) -> StockReply:
    return StockReply(op=op, order_id=OID, sku=sku, quantity=qty, ok=ok, lines_total=total, at=9.0)


def topics(step: Advance) -> list[str]:
    return [o.topic for o in step.sends]


def of(step: Advance, topic: str) -> list[Any]:
    return [o.record for o in step.sends if o.topic == topic]


def run(doc: dict[str, Any] | None, *records: Any) -> tuple[dict[str, Any] | None, list[Advance]]:
    steps = []
    for i, record in enumerate(records):
        step = advance(doc, OID, record, 100.0 + i)
        steps.append(step)
        doc = step.doc if step.doc is not None else doc
    return doc, steps


def test_happy_path_emits_each_seed_topic_once(mk) -> None:
    order = mk.order(OID, lines=[mk.line("SKU-1", 2, "10.00")])
    doc, (created, validated, replied) = run(
        None, order, mk.validated(order), reply("SKU-1", True, qty=2)
    )
    # CREATED is not repartitioned to analytics: the terminal change counts the order
    assert topics(created) == ["orders_app-orders-by-customer"]
    by_customer = created.sends[0]
    assert by_customer == Out("orders_app-orders-by-customer", "cust-1", order, order.created_at)
    assert [c.status for c in created.changes] == ["CREATED"]

    assert topics(validated) == ["payment_successful", "orders_app-stock-commands"]
    (paid,) = of(validated, "payment_successful")
    assert isinstance(paid, PaymentSucceeded) and paid.amount == Decimal("20.00")
    (command,) = of(validated, "orders_app-stock-commands")
    assert validated.sends[1].key == "SKU-1"
    assert command == StockCommand(
        op="reserve", sku="SKU-1", quantity=2, order_id=OID, lines_total=1, at=101.0
    )
    assert [c.status for c in validated.changes] == ["VALIDATED", "PAID"]
    assert validated.firsts == [("payments", "succeeded")]

    assert topics(replied) == [
        "inventory_updated",
        "orders_app-status-by-country",
        "notification_sent",
    ]
    (updated,) = of(replied, "inventory_updated")
    assert updated.status == "reserved" and updated.missing == []
    (change,) = replied.changes
    assert (change.status, change.previous, change.terminal) == ("FULFILLED", "PAID", True)
    (note,) = of(replied, "notification_sent")
    assert note.template == "order_confirmed"
    assert replied.firsts == [("reservations", "reserved"), ("notifications", "order_confirmed")]
    assert doc is not None and doc["status"] == "FULFILLED"
    assert [h["status"] for h in doc["history"]] == ["CREATED", "VALIDATED", "PAID", "FULFILLED"]


def test_a_declined_card_fails_the_payment_and_starts_no_reservation(mk) -> None:
    order = mk.order(OID, payment_method="tok_chargeDeclinedInsufficientFunds")
    doc, (_, validated) = run(None, order, mk.validated(order))
    assert topics(validated) == [
        "payment_failed",
        "orders_app-status-by-country",
        "notification_sent",
    ]
    (failed,) = of(validated, "payment_failed")
    assert isinstance(failed, PaymentFailed) and failed.reason == "insufficient_funds"
    assert [c.status for c in validated.changes] == ["VALIDATED", "PAYMENT_FAILED"]
    assert of(validated, "notification_sent")[0].template == "payment_failed"
    assert doc is not None and doc.get("saga") is None
    assert doc["reasons"] == ["payment:insufficient_funds"]


def test_a_fraud_alert_rejects_and_notifies(mk) -> None:
    order = mk.order(OID)
    doc, (_, alert) = run(None, order, mk.fraud_alert(OID, ["blocked_country"]))
    assert topics(alert) == ["orders_app-status-by-country", "notification_sent"]
    assert alert.changes[0].status == "REJECTED"
    assert of(alert, "notification_sent")[0].template == "order_rejected"
    assert doc is not None and doc.get("payment") is None


def test_out_of_stock_releases_refunds_and_cancels(mk) -> None:
    order = mk.order(OID, lines=[mk.line("SKU-1", 1), mk.line("SKU-2", 3)])
    doc, steps = run(None, order, mk.validated(order))
    assert [c.sku for c in of(steps[1], "orders_app-stock-commands")] == ["SKU-1", "SKU-2"]
    doc, (first, second) = run(doc, reply("SKU-1", True, total=2), reply("SKU-2", False, qty=3))
    assert first.sends == [] and first.changes == []
    assert first.doc is not None and first.doc["saga"]["replies"] == {"SKU-1": True}
    assert topics(second) == [
        "inventory_updated",
        "orders_app-stock-commands",
        "payment_refunded",
        "orders_app-status-by-country",
        "notification_sent",
    ]
    (updated,) = of(second, "inventory_updated")
    assert (updated.status, updated.missing) == ("out_of_stock", ["SKU-2"])
    (release,) = of(second, "orders_app-stock-commands")
    assert (release.op, release.sku, release.quantity) == ("release", "SKU-1", 1)
    (refund,) = of(second, "payment_refunded")
    assert isinstance(refund, PaymentRefunded) and refund.amount == order.total
    assert second.changes[0].status == "CANCELLED"
    assert of(second, "notification_sent")[0].template == "order_cancelled_refunded"
    assert second.firsts == [
        ("reservations", "out_of_stock"),
        ("payments", "refunded"),
        ("notifications", "order_cancelled_refunded"),
    ]
    assert doc is not None and doc["reasons"] == ["out_of_stock:SKU-2", "refunded:out_of_stock"]

    doc, (ack, again) = run(
        doc, reply("SKU-1", True, op="release"), reply("SKU-1", True, "release")
    )
    assert [u.status for u in of(ack, "inventory_updated")] == ["released"]
    assert ack.firsts == [("reservations", "released")]
    # a repeated ack emits ``released`` again (the first may be lost), counts nothing
    assert [u.status for u in of(again, "inventory_updated")] == ["released"]
    assert again.firsts == [] and again.doc == doc


def test_every_redelivery_re_emits_and_changes_nothing(mk) -> None:
    order = mk.order(OID, lines=[mk.line("SKU-1"), mk.line("SKU-2")])
    validated = mk.validated(order)
    doc, (_, first_pay) = run(None, order, validated)
    # redelivered order_validated before any reply: same charge, both reserves again
    again = advance(doc, OID, validated, 200.0)
    assert again.firsts == [] and again.changes == [] and again.doc == doc
    assert of(again, "payment_successful")[0].charge_id == (
        of(first_pay, "payment_successful")[0].charge_id
    )
    assert [c.sku for c in of(again, "orders_app-stock-commands")] == ["SKU-1", "SKU-2"]
    # after one reply only the other sku is asked again
    doc, _ = run(doc, reply("SKU-1", True, total=2))
    again = advance(doc, OID, validated, 201.0)
    assert [c.sku for c in of(again, "orders_app-stock-commands")] == ["SKU-2"]
    # the deciding reply, then that reply redelivered: same decision, same notification
    doc, (decided,) = run(doc, reply("SKU-2", True, total=2))
    repeat = advance(doc, OID, reply("SKU-2", True, total=2), 300.0)
    assert topics(repeat) == topics(decided)
    assert of(repeat, "notification_sent")[0].notification_id == (
        of(decided, "notification_sent")[0].notification_id
    )
    assert repeat.firsts == [] and repeat.doc == doc
    (terminal,) = repeat.changes
    assert terminal.status == "FULFILLED" and terminal.terminal
    # an order_validated redelivered after the decision re-sends the charge only
    late = advance(doc, OID, validated, 301.0)
    assert topics(late) == ["payment_successful"] and late.doc == doc
    # order_created redelivered after the fraud decision: nothing to send
    assert advance(doc, OID, order, 302.0).sends == []


def test_order_created_goes_to_fraud_until_a_decision_is_recorded(mk) -> None:
    order = mk.order(OID)
    doc, (first, again) = run(None, order, order)
    assert topics(first) == topics(again) == ["orders_app-orders-by-customer"]
    doc, _ = run(doc, mk.fraud_alert(OID))
    assert doc is not None and doc["fraud"] == "rejected"
    assert advance(doc, OID, order, 9.0).sends == []


@pytest.mark.parametrize("first", ["validated", "alert"])
def test_the_first_fraud_decision_stands(mk, first: str) -> None:
    order = mk.order(OID)
    passed, rejected = mk.validated(order), mk.fraud_alert(OID)
    one, other = (passed, rejected) if first == "validated" else (rejected, passed)
    doc, _ = run(None, order, one)
    late = advance(doc, OID, other, 50.0)
    assert late.doc is None and late.sends == [] and late.changes == []
    # the same decision again is a redelivery: handled as such
    assert advance(doc, OID, one, 51.0).doc == doc


def test_a_redelivered_decline_re_notifies_with_the_same_id(mk) -> None:
    order = mk.order(OID, payment_method="tok_chargeDeclined")
    doc, (_, first) = run(None, order, mk.validated(order))
    again = advance(doc, OID, mk.validated(order), 500.0)
    assert topics(again) == topics(first)
    assert of(again, "notification_sent") == [
        NotificationSent(**{**of(first, "notification_sent")[0].asdict(), "at": 500.0})
    ]
    assert again.firsts == [] and again.doc == doc


def test_validated_before_created_still_pays_with_details(mk) -> None:
    order = mk.order(OID)
    doc, (validated, created) = run(None, mk.validated(order), order)
    # The fraud check runs beside the order's first step: its answer can come first.
    assert [c.status for c in validated.changes] == ["CREATED", "VALIDATED", "PAID"]
    assert validated.changes[0].country == "DE"
    assert [h["status"] for h in (doc or {})["history"]] == ["CREATED", "VALIDATED", "PAID"]
    assert created.changes == []  # CREATED is behind the order already
    assert doc is not None and doc["status"] == "PAID"


def test_a_stock_reply_for_an_unknown_order_writes_and_sends_nothing(mk) -> None:
    step = advance(None, OID, reply("SKU-1", True), 1.0)
    assert step.doc is None and step.sends == []
    created = advance(None, OID, mk.order(OID), 1.0).doc
    assert advance(created, OID, reply("SKU-1", True), 2.0).sends == []


@pytest.mark.parametrize(
    "record",
    [
        InventoryUpdated(order_id=OID, status="reserved", lines=[], missing=[], at=1.0),
        StatusChanged(
            order_id=OID,
            status="PAID",
            previous=None,
            terminal=False,
            customer_id="c",
            country="DE",
            currency="EUR",
            total=Decimal("1"),
            reasons=[],
            created_at=1.0,
            at=1.0,
        ),
    ],
)
def test_outputs_are_not_inputs(record: Any) -> None:
    with pytest.raises(TypeError):
        advance(None, OID, record, 1.0)


# --- restore (issue 16): a recorded order read again by a snapshot ----------------------


def recorded(mk, *records: Any) -> dict[str, Any]:
    """The document the order had after ``records`` (what the outcome sink recorded)."""
    doc, _ = run(None, *records)
    assert doc is not None
    return doc


def restored(document: dict[str, Any]) -> Any:
    from orders_app.records import OrderRestored

    return OrderRestored(order_id=OID, document=document, at=1.0)


SEED_EFFECTS = {
    "payment_successful",
    "payment_failed",
    "payment_refunded",
    "inventory_updated",
    "notification_sent",
    "orders_app-orders-by-customer",
}


def test_a_restored_fulfilled_order_holds_its_stock_and_counts_once_with_no_effects(mk) -> None:
    order = mk.order(OID, lines=[mk.line("SKU-1", 2), mk.line("SKU-2", 1)])
    document = recorded(
        mk, order, mk.validated(order), reply("SKU-1", True, qty=2), reply("SKU-2", True)
    )
    step = advance(None, OID, restored(document), 500.0)
    assert not SEED_EFFECTS & set(topics(step))
    commands = of(step, "orders_app-stock-commands")
    assert [(c.op, c.sku, c.quantity) for c in commands] == [
        ("restore", "SKU-1", 2),
        ("restore", "SKU-2", 1),
    ]
    (change,) = of(step, "orders_app-status-by-country")
    assert (change.status, change.terminal) == ("FULFILLED", True)
    assert step.firsts == [] and step.changes == []
    assert step.doc == {**document, "restored_at": 500.0}
    # then a duplicate of any input changes nothing and charges nothing
    again = advance(step.doc, OID, mk.validated(order), 501.0)
    assert again.firsts == [] and again.doc == step.doc


def test_a_restored_order_the_table_has_keeps_the_table_state(mk) -> None:
    order = mk.order(OID)
    document = recorded(mk, order, mk.validated(order))
    current = recorded(mk, order, mk.validated(order), reply("SKU-0001", True))
    step = advance(current, OID, restored(document), 9.0)
    assert step.doc is None and step.sends == []


def test_a_restored_order_waiting_for_stock_goes_on_from_there(mk) -> None:
    order = mk.order(OID, lines=[mk.line("SKU-1"), mk.line("SKU-2")])
    document = recorded(mk, order, mk.validated(order), reply("SKU-1", True, total=2))
    step = advance(None, OID, restored(document), 9.0)
    assert [(c.op, c.sku) for c in of(step, "orders_app-stock-commands")] == [
        ("restore", "SKU-1"),
        ("reserve", "SKU-2"),
    ]
    assert of(step, "orders_app-status-by-country") == []  # not terminal: nothing to count
    _doc, (done,) = run(step.doc, reply("SKU-2", True, total=2))
    assert [c.status for c in done.changes] == ["FULFILLED"]
    assert [n.template for n in of(done, "notification_sent")] == ["order_confirmed"]
    assert ("payments", "succeeded") not in done.firsts


@pytest.mark.parametrize("kind", ["cancelled", "rejected", "declined"])
def test_restored_orders_that_hold_nothing_send_only_their_terminal_change(mk, kind) -> None:
    if kind == "cancelled":
        order = mk.order(OID, lines=[mk.line("SKU-1"), mk.line("SKU-2")])
        document = recorded(
            mk, order, mk.validated(order), reply("SKU-1", True, total=2), reply("SKU-2", False)
        )
    elif kind == "rejected":
        order = mk.order(OID)
        document = recorded(mk, order, mk.fraud_alert(OID))
    else:
        order = mk.order(OID, payment_method="tok_chargeDeclined")
        document = recorded(mk, order, mk.validated(order))
    step = advance(None, OID, restored(document), 9.0)
    assert topics(step) == ["orders_app-status-by-country"]
    assert step.doc is not None and step.doc["status"] == document["status"]
    if kind == "cancelled":
        assert step.doc["saga"]["state"] == "released"
        # a late release ack of the old run changes nothing and sends nothing
        late = advance(step.doc, OID, reply("SKU-1", True, op="release"), 10.0)
        assert late.firsts == []
