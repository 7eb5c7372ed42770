"""Payment rules (pure): the simulated gateway and the charge/refund ledger decisions.

The gateway follows the public payment-gateway test-token convention: ``tok_visa``,
``tok_mastercard`` ... succeed; ``tok_chargeDeclined``,
``tok_chargeDeclinedInsufficientFunds``, ``tok_chargeDeclinedExpiredCard`` fail with
that reason.  Every charge and refund happens at most once per order id: the ledger entry
(order_id -> {result, charge_id, amount, refunded}) decides replays.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

DECLINES: dict[str, str] = {
    "tok_chargeDeclined": "card_declined",
    "tok_chargeDeclinedInsufficientFunds": "insufficient_funds",
    "tok_chargeDeclinedExpiredCard": "expired_card",
    "tok_chargeDeclinedFraudulent": "fraudulent",
    "tok_chargeDeclinedIncorrectCvc": "incorrect_cvc",
    "tok_chargeDeclinedProcessingError": "processing_error",
}


@dataclass(frozen=True)
class ChargeResult:
    ok: bool
    reason: str
    charge_id: str


def charge_id_for(order_id: str) -> str:
    """Deterministic, so a replayed charge carries the same id (gateway idempotency key)."""
    return "ch_" + hashlib.sha256(order_id.encode()).hexdigest()[:24]


def gateway_charge(order_id: str, payment_method: str, amount: Decimal) -> ChargeResult:
    if payment_method in DECLINES:
        return ChargeResult(False, DECLINES[payment_method], "")
    if not payment_method.startswith("tok_"):
        return ChargeResult(False, "invalid_payment_method", "")
    if amount <= 0:
        return ChargeResult(False, "invalid_amount", "")
    return ChargeResult(True, "", charge_id_for(order_id))


def ledger_after_charge(result: ChargeResult, amount: Decimal, currency: str) -> dict[str, Any]:
    return {
        "result": "succeeded" if result.ok else "failed",
        "reason": result.reason,
        "charge_id": result.charge_id,
        "amount": str(amount),
        "currency": currency,
        "refunded": False,
    }


def may_refund(entry: dict[str, Any] | None) -> bool:
    """Refund only a successful charge, and only once."""
    return bool(entry) and entry.get("result") == "succeeded" and not entry.get("refunded")  # type: ignore[union-attr]
