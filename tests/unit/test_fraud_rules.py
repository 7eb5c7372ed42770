"""agents.fraud_rules: the per-customer window and each rejecting rule, at its boundary."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agents.fraud_rules import (
    RULE_REASONS,
    FraudLimits,
    add_to_window,
    evaluate,
    reason,
    score,
    window_as_of,
)

DEFAULT = FraudLimits()


def window(count: int, amount: str) -> dict[str, object]:
    return {"count": count, "amount": amount}


# --- add_to_window -------------------------------------------------------------------


def test_add_to_window_starts_an_empty_window(mk) -> None:
    one = {"count": 1, "amount": "12.34", "orders": [["ord-1", "12.34"]]}
    assert add_to_window(None, mk.order(total="12.34")) == one
    assert add_to_window({}, mk.order(total="12.34")) == one


def test_add_to_window_accumulates_count_and_exact_decimal_amount(mk) -> None:
    w = add_to_window(None, mk.order("a", total="0.10"))
    w = add_to_window(w, mk.order("b", total="0.20"))
    w = add_to_window(w, mk.order("c", total="1999.70"))
    assert (w["count"], w["amount"]) == (3, "2000.00")
    # money travels as a string and stays exact (0.1 + 0.2 is not 0.30000000000000004)
    assert isinstance(w["amount"], str)
    assert Decimal(w["amount"]) == Decimal("2000.00")


def test_add_to_window_returns_a_new_dict(mk) -> None:
    before = window(2, "5.00")
    after = add_to_window(before, mk.order(total="1.00"))
    assert before == window(2, "5.00")
    assert after == {"count": 3, "amount": "6.00", "orders": [["ord-1", "1.00"]]}
    assert after is not before


def test_add_to_window_counts_an_order_once(mk) -> None:
    order = mk.order("a", total="7.00")
    once = add_to_window(None, order)
    assert add_to_window(once, order) == once


def test_window_as_of_is_what_the_first_count_saw(mk) -> None:
    # Replay after a crash that kept the window (a, b, c counted) but lost b's decision.
    w = window(2, "3.00")  # counted before orders were listed
    for oid, total in (("a", "10.00"), ("b", "20.00"), ("c", "40.00")):
        w = add_to_window(w, mk.order(oid, total=total))
    assert window_as_of(w, "b") == {"count": 4, "amount": "33.00"}
    assert window_as_of(w, "c") == {"count": 5, "amount": "73.00"}
    assert window_as_of(w, "zzz") == {"count": 5, "amount": "73.00"}


def test_replayed_order_gets_the_same_decision(mk) -> None:
    limits = FraudLimits(velocity_count=2)
    orders = [mk.order(f"o{i}", total="1.00") for i in range(3)]
    w = None
    first = []
    for order in orders:
        w = add_to_window(w, order)
        first.append(evaluate(order, window_as_of(w, order.order_id), limits))
    assert first == [[], [], ["velocity_count"]]
    # every decision lost, the window kept: the replay decides the same and counts nothing
    replayed = []
    for order in orders:
        again = add_to_window(w, order)
        assert again == w
        replayed.append(evaluate(order, window_as_of(again, order.order_id), limits))
    assert replayed == first


# --- evaluate: passing -----------------------------------------------------------------


def test_ordinary_order_passes(mk) -> None:
    order = mk.order(total="100.00")
    assert evaluate(order, add_to_window(None, order), DEFAULT) == []


# --- max_total -------------------------------------------------------------------------


def test_max_total_exactly_at_limit_passes(mk) -> None:
    order = mk.order(total="5000")
    assert "max_total" not in evaluate(order, window(1, "0"), DEFAULT)


def test_max_total_one_cent_above_limit_rejects(mk) -> None:
    order = mk.order(total="5000.01")
    assert evaluate(order, window(1, "0"), DEFAULT) == ["max_total"]


def test_max_total_uses_configured_limit(mk) -> None:
    limits = FraudLimits(max_total=Decimal("100"), velocity_amount=Decimal("1e9"))
    assert evaluate(mk.order(total="100.00"), window(1, "100.00"), limits) == []
    assert evaluate(mk.order(total="100.01"), window(1, "100.01"), limits) == ["max_total"]


# --- velocity_count --------------------------------------------------------------------


def test_velocity_count_fifth_order_in_window_passes(mk) -> None:
    w = None
    for i in range(5):
        order = mk.order(f"o{i}", total="1.00")
        w = add_to_window(w, order)
    assert w["count"] == 5
    assert evaluate(order, w, DEFAULT) == []


def test_velocity_count_sixth_order_in_window_rejects(mk) -> None:
    w = None
    for i in range(6):
        order = mk.order(f"o{i}", total="1.00")
        w = add_to_window(w, order)
    assert evaluate(order, w, DEFAULT) == ["velocity_count"]


def test_velocity_count_uses_configured_limit(mk) -> None:
    limits = FraudLimits(velocity_count=1)
    order = mk.order(total="1.00")
    assert evaluate(order, window(1, "1.00"), limits) == []
    assert evaluate(order, window(2, "2.00"), limits) == ["velocity_count"]


# --- velocity_amount -------------------------------------------------------------------


def test_velocity_amount_exactly_at_limit_passes(mk) -> None:
    order = mk.order(total="500.00")
    assert evaluate(order, window(2, "2000.00"), DEFAULT) == []


def test_velocity_amount_above_limit_rejects(mk) -> None:
    order = mk.order(total="500.00")
    assert evaluate(order, window(2, "2000.01"), DEFAULT) == ["velocity_amount"]


def test_velocity_amount_counts_this_order_via_window(mk) -> None:
    first = mk.order("a", total="1500.00")
    second = mk.order("b", total="500.01")
    w = add_to_window(None, first)
    assert evaluate(first, w, DEFAULT) == []
    w = add_to_window(w, second)
    assert evaluate(second, w, DEFAULT) == ["velocity_amount"]


def test_missing_window_keys_count_as_empty(mk) -> None:
    assert evaluate(mk.order(total="1.00"), {}, DEFAULT) == []


# --- blocked_country -------------------------------------------------------------------


def test_no_country_is_blocked_by_default(mk) -> None:
    assert evaluate(mk.order(country="KP"), window(1, "10"), DEFAULT) == []


def test_blocked_country_rejects(mk) -> None:
    limits = FraudLimits(blocked_countries=frozenset({"DE", "FR"}))
    assert evaluate(mk.order(country="FR"), window(1, "10"), limits) == ["blocked_country"]
    assert evaluate(mk.order(country="IT"), window(1, "10"), limits) == []


def test_blocked_country_matches_case_insensitively(mk) -> None:
    limits = FraudLimits(blocked_countries=frozenset({"FR"}))
    assert evaluate(mk.order(country="fr"), window(1, "10"), limits) == ["blocked_country"]


# --- several rules, score and reason ---------------------------------------------------


def test_all_rules_fire_in_a_fixed_order(mk) -> None:
    limits = FraudLimits(blocked_countries=frozenset({"DE"}))
    order = mk.order(total="6000.00", country="DE")
    rules = evaluate(order, window(6, "6000.00"), limits)
    assert rules == ["max_total", "velocity_count", "velocity_amount", "blocked_country"]


def test_max_total_above_limit_also_exceeds_velocity_amount(mk) -> None:
    order = mk.order(total="5000.01")
    assert evaluate(order, add_to_window(None, order), DEFAULT) == [
        "max_total",
        "velocity_amount",
    ]


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([], 0.0),
        (["max_total"], 0.5),
        (["max_total", "velocity_count"], 0.5),
        (["max_total", "velocity_count", "velocity_amount"], 0.75),
        (["max_total", "velocity_count", "velocity_amount", "blocked_country"], 1.0),
    ],
)
def test_score(rules: list[str], expected: float) -> None:
    assert score(rules) == pytest.approx(expected)
    assert 0.0 <= score(rules) <= 1.0


def test_reason_joins_human_reasons_in_rule_order() -> None:
    assert reason([]) == ""
    assert reason(["blocked_country"]) == "country is blocked"
    assert reason(["max_total", "velocity_count"]) == (
        "order total above the limit; too many orders by this customer within one minute"
    )


def test_reason_falls_back_to_unknown_rule_id() -> None:
    assert reason(["some_new_rule"]) == "some_new_rule"


def test_every_rule_has_a_reason() -> None:
    assert set(RULE_REASONS) == {
        "max_total",
        "velocity_count",
        "velocity_amount",
        "blocked_country",
    }
