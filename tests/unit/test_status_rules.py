"""agents.status_rules: the order status machine (forward only, terminal sticks, each status
published once after details are known, terminal re-published on a duplicate cause)."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from agents.status_rules import RANK, apply, new_doc, outcome_of, replay_terminal
from orders_app.records import TERMINAL_STATUSES, OrderStatus, StatusChanged
from web.views import order_view as view

OID = "ord-1"


def run(
    events: list[Any], doc: dict[str, Any] | None = None, start: float = 100.0
) -> tuple[dict[str, Any], list[list[StatusChanged]]]:
    """Apply ``events`` in order with increasing clock; -> (doc, changes per event)."""
    out = []
    for i, event in enumerate(events):
        doc, changes = apply(doc, OID, event, start + i)
        out.append(changes)
    assert doc is not None
    return doc, out


def statuses(changes: list[StatusChanged]) -> list[str]:
    return [c.status for c in changes]


def flat(per_event: list[list[StatusChanged]]) -> list[StatusChanged]:
    return [c for changes in per_event for c in changes]


# --- happy path ------------------------------------------------------------------------


def test_happy_path_created_validated_paid_fulfilled(mk) -> None:
    order = mk.order(OID, total="20.00", lines=[mk.line("SKU-1", 2, "10.00")])
    doc, per_event = run([order, mk.validated(order), mk.paid(order), mk.inventory(OID)])
    assert [statuses(c) for c in per_event] == [
        ["CREATED"],
        ["VALIDATED"],
        ["PAID"],
        ["FULFILLED"],
    ]
    changes = flat(per_event)
    assert [c.previous for c in changes] == [None, "CREATED", "VALIDATED", "PAID"]
    assert [c.terminal for c in changes] == [False, False, False, True]
    assert [c.at for c in changes] == [100.0, 101.0, 102.0, 103.0]
    for c in changes:
        assert c.order_id == OID
        assert c.customer_id == "cust-1"
        assert c.country == "DE"
        assert c.currency == "EUR"
        assert c.total == Decimal("20.00")
        assert isinstance(c.total, Decimal)
        assert c.created_at == 1.0
    assert doc["status"] == "FULFILLED"
    assert doc["history"] == [
        {"status": "CREATED", "at": 100.0},
        {"status": "VALIDATED", "at": 101.0},
        {"status": "PAID", "at": 102.0},
        {"status": "FULFILLED", "at": 103.0},
    ]
    assert doc["reasons"] == []
    assert doc["published"] == "FULFILLED"


def test_details_are_stored_from_order_created(mk) -> None:
    order = mk.order(
        OID,
        customer_id="c-42",
        country="FR",
        currency="USD",
        lines=[mk.line("A", 2, "1.25"), mk.line("B", 1, "0.50")],
        created_at=7.5,
    )
    doc, _ = apply(None, OID, order, 1.0)
    assert doc["customer_id"] == "c-42"
    assert doc["country"] == "FR"
    assert doc["currency"] == "USD"
    assert doc["total"] == "3.00"
    assert doc["lines"] == [
        {"sku": "A", "quantity": 2, "unit_price": "1.25"},
        {"sku": "B", "quantity": 1, "unit_price": "0.50"},
    ]
    assert doc["created_at"] == 7.5
    assert doc["has_details"] is True


# --- other terminal outcomes -----------------------------------------------------------


def test_rejected_by_fraud(mk) -> None:
    order = mk.order(OID)
    alert = mk.fraud_alert(OID, rules=["max_total", "velocity_count"])
    doc, per_event = run([order, alert])
    assert statuses(per_event[1]) == ["REJECTED"]
    change = per_event[1][0]
    assert change.terminal is True
    assert change.previous == "CREATED"
    assert change.reasons == ["fraud:max_total", "fraud:velocity_count"]
    assert doc["status"] == "REJECTED"
    assert doc["reasons"] == ["fraud:max_total", "fraud:velocity_count"]


def test_payment_failed(mk) -> None:
    order = mk.order(OID)
    doc, per_event = run([order, mk.validated(order), mk.payment_failed(OID, "expired_card")])
    assert statuses(per_event[2]) == ["PAYMENT_FAILED"]
    assert per_event[2][0].previous == "VALIDATED"
    assert per_event[2][0].terminal is True
    assert doc["reasons"] == ["payment:expired_card"]
    assert [h["status"] for h in doc["history"]] == ["CREATED", "VALIDATED", "PAYMENT_FAILED"]


def test_cancelled_via_out_of_stock_then_refund(mk) -> None:
    order = mk.order(OID)
    oos = mk.inventory(OID, status="out_of_stock", missing=["SKU-1", "SKU-2"])
    doc, per_event = run([order, mk.validated(order), mk.paid(order), oos])
    assert per_event[3] == [], "out_of_stock alone is not a status change"
    assert doc["status"] == "PAID"
    assert doc["reasons"] == ["out_of_stock:SKU-1", "out_of_stock:SKU-2"]

    doc, changes = apply(doc, OID, mk.refunded(OID, "out_of_stock"), 200.0)
    assert statuses(changes) == ["CANCELLED"]
    assert changes[0].previous == "PAID"
    assert changes[0].terminal is True
    assert changes[0].reasons == [
        "out_of_stock:SKU-1",
        "out_of_stock:SKU-2",
        "refunded:out_of_stock",
    ]
    assert doc["status"] == "CANCELLED"
    assert doc["history"][-1] == {"status": "CANCELLED", "at": 200.0}


def test_released_inventory_update_changes_nothing(mk) -> None:
    order = mk.order(OID)
    doc, _ = run([order, mk.validated(order), mk.paid(order)])
    before = copy.deepcopy(doc)
    after, changes = apply(doc, OID, mk.inventory(OID, status="released"), 300.0)
    assert changes == []
    assert after == before


# --- duplicates ------------------------------------------------------------------------


@pytest.mark.parametrize("step", [0, 1, 2])
def test_duplicate_non_terminal_event_changes_nothing(mk, step: int) -> None:
    order = mk.order(OID)
    events = [order, mk.validated(order), mk.paid(order)][: step + 1]
    doc, _ = run(events)
    before = copy.deepcopy(doc)
    after, changes = apply(doc, OID, events[step], 999.0)
    assert changes == []
    assert after == before


def test_duplicate_reasons_are_not_repeated(mk) -> None:
    order = mk.order(OID)
    oos = mk.inventory(OID, status="out_of_stock", missing=["SKU-1"])
    doc, _ = run([order, mk.paid(order), oos, oos])
    assert doc["reasons"] == ["out_of_stock:SKU-1"]


@pytest.mark.parametrize(
    ("cause_name", "status"),
    [
        ("fraud", "REJECTED"),
        ("payment_failed", "PAYMENT_FAILED"),
        ("fulfilled", "FULFILLED"),
        ("refunded", "CANCELLED"),
    ],
)
def test_duplicate_terminal_cause_republishes_terminal_change(
    mk, cause_name: str, status: str
) -> None:
    causes = {
        "fraud": mk.fraud_alert(OID),
        "payment_failed": mk.payment_failed(OID),
        "fulfilled": mk.inventory(OID),
        "refunded": mk.refunded(OID),
    }
    cause = causes[cause_name]
    doc, per_event = run([mk.order(OID), cause])
    first = per_event[1]
    assert statuses(first) == [status]
    before = copy.deepcopy(doc)

    after, again = apply(doc, OID, cause, 500.0)
    assert after == before, "the document itself does not change"
    assert len(again) == 1
    replay = again[0]
    assert replay.status == status
    assert replay.terminal is True
    assert replay.at == first[0].at, "the replay carries the original transition time"
    assert replay.reasons == first[0].reasons
    assert replay.total == first[0].total
    assert replay == replay_terminal(doc)


def test_duplicate_order_created_after_terminal_does_not_republish(mk) -> None:
    order = mk.order(OID)
    doc, _ = run([order, mk.fraud_alert(OID)])
    _, changes = apply(doc, OID, order, 600.0)
    assert changes == []


def test_other_terminal_cause_after_terminal_is_ignored(mk) -> None:
    order = mk.order(OID)
    doc, _ = run([order, mk.validated(order), mk.paid(order), mk.inventory(OID)])
    before = copy.deepcopy(doc)
    doc, changes = apply(doc, OID, mk.refunded(OID), 700.0)
    assert changes == []
    assert doc["status"] == "FULFILLED"
    assert doc["history"] == before["history"]


# --- out of order ----------------------------------------------------------------------


def test_payment_succeeded_before_validated_never_moves_back(mk) -> None:
    order = mk.order(OID)
    doc, per_event = run([order, mk.paid(order), mk.validated(order)])
    assert statuses(per_event[1]) == ["PAID"]
    assert per_event[1][0].previous == "CREATED"
    assert per_event[2] == []
    assert doc["status"] == "PAID"
    assert [h["status"] for h in doc["history"]] == ["CREATED", "PAID"]


def test_payment_succeeded_first_carries_details_and_publishes(mk) -> None:
    order = mk.order(OID, total="42.00", lines=[mk.line("X", 1, "42.00")])
    doc, changes = apply(None, OID, mk.paid(order), 10.0)
    # The order was created all the same: its history (and what is published) says so.
    assert statuses(changes) == ["CREATED", "PAID"]
    assert changes[0].previous is None and changes[1].previous == "CREATED"
    assert changes[1].total == Decimal("42.00")
    assert doc["history"] == [{"status": "CREATED", "at": 10.0}, {"status": "PAID", "at": 10.0}]
    # the late order_created neither moves status back nor republishes
    doc, changes = apply(doc, OID, order, 11.0)
    assert changes == []
    assert doc["status"] == "PAID"


@pytest.mark.parametrize("cause_name", ["fraud", "payment_failed", "fulfilled", "refunded"])
def test_terminal_before_order_created_is_published_once_details_arrive(
    mk, cause_name: str
) -> None:
    causes = {
        "fraud": (mk.fraud_alert(OID), "REJECTED"),
        "payment_failed": (mk.payment_failed(OID), "PAYMENT_FAILED"),
        "fulfilled": (mk.inventory(OID), "FULFILLED"),
        "refunded": (mk.refunded(OID), "CANCELLED"),
    }
    cause, status = causes[cause_name]
    doc, changes = apply(None, OID, cause, 10.0)
    assert changes == [], "nothing is published before country and total are known"
    assert doc["status"] == status
    assert doc["has_details"] is False
    assert doc["history"] == [{"status": "CREATED", "at": 10.0}, {"status": status, "at": 10.0}]

    # a duplicate of the cause before details also publishes nothing
    doc, changes = apply(doc, OID, cause, 11.0)
    assert changes == []

    doc, changes = apply(doc, OID, mk.order(OID), 20.0)
    assert doc["status"] == status, "order_created must not move a terminal order back"
    assert statuses(changes) == ["CREATED", status]
    assert changes[1].terminal is True
    assert changes[1].previous == "CREATED"
    assert changes[1].at == 10.0
    assert changes[1].country == "DE"
    assert [h["status"] for h in doc["history"]] == ["CREATED", status]

    # later events publish nothing more (no duplicate of the terminal status)
    doc, changes = apply(doc, OID, mk.validated(mk.order(OID)), 30.0)
    assert changes == []
    doc, changes = apply(doc, OID, mk.order(OID), 31.0)
    assert changes == []


def test_statuses_reached_before_details_are_all_published_in_order(mk) -> None:
    order = mk.order(OID)
    # out_of_stock and refund arrive (no details), then order_created
    doc, _ = apply(None, OID, mk.inventory(OID, status="out_of_stock", missing=["A"]), 1.0)
    doc, _ = apply(doc, OID, mk.refunded(OID), 2.0)
    doc, changes = apply(doc, OID, order, 3.0)
    assert statuses(changes) == ["CREATED", "CANCELLED"]
    assert changes[1].reasons == ["out_of_stock:A", "refunded:out_of_stock"]


def test_terminal_never_changes(mk) -> None:
    order = mk.order(OID)
    doc, _ = run([order, mk.payment_failed(OID)])
    history = list(doc["history"])
    for event in [
        mk.validated(order),
        mk.paid(order),
        mk.inventory(OID),
        mk.fraud_alert(OID),
        mk.refunded(OID),
        mk.inventory(OID, status="out_of_stock", missing=["B"]),
    ]:
        doc, changes = apply(doc, OID, event, 900.0)
        assert doc["status"] == "PAYMENT_FAILED"
        assert all(c.status == "PAYMENT_FAILED" for c in changes)
    assert doc["history"] == history


def test_each_status_published_at_most_once_over_any_event_order(mk) -> None:
    import itertools

    order = mk.order(OID)
    events = [order, mk.validated(order), mk.paid(order), mk.inventory(OID)]
    for perm in itertools.permutations(events):
        doc, per_event = run([*perm, *perm])
        published = statuses(flat(per_event))
        assert doc["status"] == "FULFILLED"
        # FULFILLED may be replayed on a duplicate cause; every other status at most once
        non_terminal = [s for s in published if s != "FULFILLED"]
        assert len(non_terminal) == len(set(non_terminal)), perm
        assert published.count("FULFILLED") >= 1
        ranks = [RANK[s] for s in statuses([c for c in flat(per_event)])]
        assert ranks == sorted(ranks), f"published statuses went backward for {perm}"
        hist = [h["status"] for h in doc["history"]]
        assert [RANK[s] for s in hist] == sorted(RANK[s] for s in hist)
        # whichever event came first, the order's history starts with CREATED, once
        assert hist[0] == "CREATED" and hist.count("CREATED") == 1, perm
        assert published[0] == "CREATED", perm


def test_apply_does_not_mutate_its_input(mk) -> None:
    order = mk.order(OID)
    doc, _ = run([order])
    snapshot = copy.deepcopy(doc)
    apply(doc, OID, mk.fraud_alert(OID), 50.0)
    apply(doc, OID, mk.inventory(OID, status="out_of_stock", missing=["Q"]), 51.0)
    assert doc == snapshot


# --- outcome_of, replay_terminal, new_doc, view ----------------------------------------


def test_outcome_of_unknown_record_raises(mk) -> None:
    with pytest.raises(TypeError):
        outcome_of(mk.line())


def test_outcome_of_maps_each_event(mk) -> None:
    order = mk.order(OID)
    assert outcome_of(order).status == OrderStatus.CREATED
    assert outcome_of(order).details is order
    assert outcome_of(mk.validated(order)).status == OrderStatus.VALIDATED
    assert outcome_of(mk.paid(order)).status == OrderStatus.PAID
    assert outcome_of(mk.fraud_alert(OID, ["blocked_country"])).reasons == (
        "fraud:blocked_country",
    )
    assert outcome_of(mk.payment_failed(OID, "fraudulent")).reasons == ("payment:fraudulent",)
    assert outcome_of(mk.inventory(OID)).status == OrderStatus.FULFILLED
    oos = outcome_of(mk.inventory(OID, status="out_of_stock", missing=["A"]))
    assert oos.status is None
    assert oos.reasons == ("out_of_stock:A",)
    assert outcome_of(mk.refunded(OID, "x")).status == OrderStatus.CANCELLED


def test_replay_terminal_none_for_non_terminal_or_unpublished(mk) -> None:
    doc, _ = run([mk.order(OID)])
    assert replay_terminal(doc) is None
    unpublished, _ = apply(None, OID, mk.fraud_alert(OID), 1.0)
    assert replay_terminal(unpublished) is None


def test_terminal_statuses_rank_above_every_non_terminal() -> None:
    for terminal in TERMINAL_STATUSES:
        for status in (OrderStatus.CREATED, OrderStatus.VALIDATED, OrderStatus.PAID):
            assert RANK[terminal] > RANK[status]


def test_new_doc_is_empty() -> None:
    doc = new_doc("x")
    assert doc["order_id"] == "x"
    assert doc["status"] is None
    assert doc["history"] == []
    assert doc["reasons"] == []
    assert doc["has_details"] is False
    assert doc["published"] is None


def test_view_shape(mk) -> None:
    order = mk.order(OID, total="10.00")
    doc, _ = run([order, mk.fraud_alert(OID)])
    body = view(doc)
    assert set(body) == {
        "order_id",
        "status",
        "customer_id",
        "country",
        "currency",
        "total",
        "lines",
        "history",
        "reasons",
    }
    assert body["order_id"] == OID
    assert body["status"] == "REJECTED"
    assert body["total"] == "10.00"
    assert body["lines"] == [{"sku": "SKU-0001", "quantity": 1, "unit_price": "10.00"}]
    assert [h["status"] for h in body["history"]] == ["CREATED", "REJECTED"]
    assert all(isinstance(h["at"], float) for h in body["history"])
    assert body["reasons"] == ["fraud:max_total"]
    # internal bookkeeping stays out of the API body
    assert "published" not in body
    assert "has_details" not in body


def test_country_stats_rebuilt_from_ledger_equal_incremental(mk) -> None:
    from agents.analytics_rules import apply_change
    from orders_app.ledgers import stats_from_ledger

    stats: dict = {}
    ledgers: dict = {}
    changes = [
        mk.status_changed("CREATED", terminal=False, order_id="a", country="DE"),
        mk.status_changed("FULFILLED", terminal=True, order_id="a", country="DE"),
        mk.status_changed("REJECTED", terminal=True, order_id="b", country="DE"),
        mk.status_changed("FULFILLED", terminal=True, order_id="c", country="FR"),
        mk.status_changed("FULFILLED", terminal=True, order_id="c", country="FR"),  # duplicate
    ]
    for ch in changes:
        new, ledger, _changed = apply_change(stats.get(ch.country), ledgers.get(ch.order_id), ch)
        stats[ch.country] = new
        ledgers[ch.order_id] = ledger
    assert stats_from_ledger(list(ledgers.values())) == stats
    assert stats["DE"]["orders"] == 2 and stats["FR"]["by_status"] == {"FULFILLED": 1}
