"""agents.payment_rules: the simulated gateway, deterministic charge ids and the ledger."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from agents.payment_rules import (
    DECLINES,
    ChargeResult,
    charge_id_for,
    gateway_charge,
    ledger_after_charge,
    may_refund,
)

AMOUNT = Decimal("19.99")


@pytest.mark.parametrize("token", ["tok_visa", "tok_mastercard", "tok_amex"])
def test_success_tokens_charge(token: str) -> None:
    result = gateway_charge("ord-1", token, AMOUNT)
    assert result == ChargeResult(True, "", charge_id_for("ord-1"))


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("tok_chargeDeclined", "card_declined"),
        ("tok_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("tok_chargeDeclinedExpiredCard", "expired_card"),
        ("tok_chargeDeclinedFraudulent", "fraudulent"),
        ("tok_chargeDeclinedIncorrectCvc", "incorrect_cvc"),
        ("tok_chargeDeclinedProcessingError", "processing_error"),
    ],
)
def test_decline_tokens_fail_with_their_reason(token: str, why: str) -> None:
    result = gateway_charge("ord-1", token, AMOUNT)
    assert result.ok is False
    assert result.reason == why
    assert result.charge_id == ""


def test_every_decline_token_is_covered() -> None:
    assert len(DECLINES) == 6
    for token in DECLINES:
        assert not gateway_charge("o", token, AMOUNT).ok


def test_decline_wins_over_bad_amount() -> None:
    assert gateway_charge("o", "tok_chargeDeclined", Decimal("0")).reason == "card_declined"


@pytest.mark.parametrize("token", ["visa", "", "TOK_visa", "card_4242"])
def test_non_token_payment_method_is_invalid(token: str) -> None:
    result = gateway_charge("o", token, AMOUNT)
    assert result == ChargeResult(False, "invalid_payment_method", "")


@pytest.mark.parametrize("amount", ["0", "0.00", "-0.01", "-5"])
def test_non_positive_amount_is_invalid(amount: str) -> None:
    result = gateway_charge("o", "tok_visa", Decimal(amount))
    assert result == ChargeResult(False, "invalid_amount", "")


def test_smallest_positive_amount_charges() -> None:
    assert gateway_charge("o", "tok_visa", Decimal("0.01")).ok


def test_charge_id_is_deterministic_and_per_order() -> None:
    first = charge_id_for("ord-1")
    assert first == charge_id_for("ord-1")
    assert first != charge_id_for("ord-2")
    assert re.fullmatch(r"ch_[0-9a-f]{24}", first)
    # the replayed charge carries the same id (gateway idempotency key)
    assert gateway_charge("ord-1", "tok_visa", AMOUNT).charge_id == first
    assert gateway_charge("ord-1", "tok_mastercard", Decimal("1")).charge_id == first


def test_charge_id_known_value() -> None:
    # sha256("ord-1")[:24] -- pins the algorithm so ids stay stable across releases
    import hashlib

    assert charge_id_for("ord-1") == "ch_" + hashlib.sha256(b"ord-1").hexdigest()[:24]


def test_ledger_after_successful_charge() -> None:
    result = gateway_charge("ord-1", "tok_visa", AMOUNT)
    entry = ledger_after_charge(result, AMOUNT, "EUR")
    assert entry == {
        "result": "succeeded",
        "reason": "",
        "charge_id": charge_id_for("ord-1"),
        "amount": "19.99",
        "currency": "EUR",
        "refunded": False,
    }


def test_ledger_after_failed_charge() -> None:
    result = gateway_charge("ord-1", "tok_chargeDeclinedExpiredCard", AMOUNT)
    entry = ledger_after_charge(result, AMOUNT, "USD")
    assert entry["result"] == "failed"
    assert entry["reason"] == "expired_card"
    assert entry["charge_id"] == ""
    assert entry["amount"] == "19.99"
    assert entry["currency"] == "USD"
    assert entry["refunded"] is False


def test_ledger_amount_is_an_exact_decimal_string() -> None:
    amount = Decimal("1234.50")
    entry = ledger_after_charge(ChargeResult(True, "", "ch_x"), amount, "EUR")
    assert entry["amount"] == "1234.50"
    assert Decimal(entry["amount"]) == amount


def test_may_refund_a_succeeded_charge_once() -> None:
    entry = ledger_after_charge(gateway_charge("o", "tok_visa", AMOUNT), AMOUNT, "EUR")
    assert may_refund(entry) is True
    assert may_refund({**entry, "refunded": True}) is False


@pytest.mark.parametrize(
    "entry",
    [
        None,
        {},
        {"result": "failed", "refunded": False},
        {"result": "failed", "refunded": True},
        {"result": "succeeded", "refunded": True},
    ],
)
def test_may_not_refund(entry: dict[str, object] | None) -> None:
    assert may_refund(entry) is False


def test_may_refund_a_failed_charge_never() -> None:
    failed = gateway_charge("o", "tok_chargeDeclined", AMOUNT)
    assert may_refund(ledger_after_charge(failed, AMOUNT, "EUR")) is False
