"""Fraud rules (pure): which rule ids reject an order, given the customer's last minute.

Rules (defaults from settings): ``max_total`` (total above the limit), ``velocity_count``
(more than N orders by the customer in the window, this one included),
``velocity_amount`` (more than the limit spent in the window, this one included),
``blocked_country``.  No Faust here; unit-tested directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from orders_app.records import OrderCreated


@dataclass(frozen=True)
class FraudLimits:
    max_total: Decimal = Decimal("5000")
    velocity_count: int = 5
    velocity_amount: Decimal = Decimal("2000")
    blocked_countries: frozenset[str] = frozenset()


def add_to_window(window: dict[str, Any] | None, order: OrderCreated) -> dict[str, Any]:
    """The customer's window after counting ``order`` (a new dict; money as string).

    The window lists the orders it counted, in the order they were counted, so counting
    is idempotent: an order already in it (a replay after a crash that kept the window
    update and lost the decision) is not counted again, and :func:`window_as_of` gives
    the window exactly as the first count saw it."""
    window = window or {}
    counted = [list(entry) for entry in window.get("orders", [])]
    if any(entry[0] == order.order_id for entry in counted):
        return {**window, "orders": counted}
    count = int(window.get("count", 0)) + 1
    amount = Decimal(window.get("amount", "0")) + order.total
    counted.append([order.order_id, str(order.total)])
    return {"count": count, "amount": str(amount), "orders": counted}


def window_as_of(window: dict[str, Any], order_id: str) -> dict[str, Any]:
    """The window as it was right after ``order_id`` was counted (what the rules saw the
    first time): what was counted before the listed orders, the listed orders before
    it, and itself.  The whole window when ``order_id`` is not listed."""
    counted = window.get("orders", [])
    count, amount = int(window.get("count", 0)), Decimal(window.get("amount", "0"))
    for i, entry in enumerate(counted):
        if entry[0] == order_id:
            later = counted[i + 1 :]
            return {
                "count": count - len(later),
                "amount": str(amount - sum((Decimal(e[1]) for e in later), Decimal("0"))),
            }
    return {"count": count, "amount": str(amount)}


def evaluate(order: OrderCreated, window_after: dict[str, Any], limits: FraudLimits) -> list[str]:
    """Rule ids that reject ``order``; ``window_after`` already counts it. Empty = pass."""
    rules: list[str] = []
    if order.total > limits.max_total:
        rules.append("max_total")
    if int(window_after.get("count", 0)) > limits.velocity_count:
        rules.append("velocity_count")
    if Decimal(window_after.get("amount", "0")) > limits.velocity_amount:
        rules.append("velocity_amount")
    if order.country.upper() in limits.blocked_countries:
        rules.append("blocked_country")
    return rules


RULE_REASONS = {
    "max_total": "order total above the limit",
    "velocity_count": "too many orders by this customer within one minute",
    "velocity_amount": "too much spent by this customer within one minute",
    "blocked_country": "country is blocked",
}


def score(rules: list[str]) -> float:
    """A simple risk score in [0, 1]: the share of rules that fired, at least 0.5 if any."""
    if not rules:
        return 0.0
    return max(0.5, len(rules) / len(RULE_REASONS))


def reason(rules: list[str]) -> str:
    return "; ".join(RULE_REASONS.get(r, r) for r in rules)
