"""Shared record builders for the unit tests of the pure rule modules.

Tests take the session-scoped ``mk`` fixture and call e.g. ``mk.order(total="12.50")``.
Money may be given as a string; it is turned into ``Decimal`` here (never float).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from orders_app.records import (
    FraudAlert,
    InventoryUpdated,
    OrderCreated,
    OrderLine,
    OrderValidated,
    PaymentFailed,
    PaymentRefunded,
    PaymentSucceeded,
    StatusChanged,
)


def _money(value: Decimal | str | int) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


class Builders:
    """Factories for valid records with overridable fields."""

    @staticmethod
    def line(
        sku: str = "SKU-0001", quantity: int = 1, unit_price: Decimal | str = "10.00"
    ) -> OrderLine:
        return OrderLine(sku=sku, quantity=quantity, unit_price=_money(unit_price))

    @classmethod
    def order(
        cls,
        order_id: str = "ord-1",
        *,
        customer_id: str = "cust-1",
        country: str = "DE",
        currency: str = "EUR",
        total: Decimal | str | None = None,
        lines: list[OrderLine] | None = None,
        payment_method: str = "tok_visa",
        created_at: float = 1.0,
    ) -> OrderCreated:
        lines = lines if lines is not None else [cls.line()]
        if total is None:
            total = sum((ln.unit_price * ln.quantity for ln in lines), Decimal("0"))
        return OrderCreated(
            order_id=order_id,
            customer_id=customer_id,
            country=country,
            currency=currency,
            total=_money(total),
            lines=lines,
            payment_method=payment_method,
            created_at=created_at,
        )

    @classmethod
    def validated(cls, order: OrderCreated | None = None, at: float = 2.0) -> OrderValidated:
        order = order or cls.order()
        return OrderValidated(order_id=order.order_id, order=order, validated_at=at)

    @staticmethod
    def fraud_alert(
        order_id: str = "ord-1", rules: list[str] | None = None, at: float = 2.0
    ) -> FraudAlert:
        rules = rules if rules is not None else ["max_total"]
        return FraudAlert(
            order_id=order_id,
            customer_id="cust-1",
            country="DE",
            rules=rules,
            score=0.5,
            reason="order total above the limit",
            at=at,
        )

    @classmethod
    def paid(cls, order: OrderCreated | None = None, at: float = 3.0) -> PaymentSucceeded:
        order = order or cls.order()
        return PaymentSucceeded(
            order_id=order.order_id,
            charge_id="ch_test",
            amount=order.total,
            currency=order.currency,
            order=order,
            at=at,
        )

    @staticmethod
    def payment_failed(
        order_id: str = "ord-1", reason: str = "card_declined", at: float = 3.0
    ) -> PaymentFailed:
        return PaymentFailed(
            order_id=order_id,
            reason=reason,
            amount=Decimal("10.00"),
            currency="EUR",
            at=at,
        )

    @classmethod
    def inventory(
        cls,
        order_id: str = "ord-1",
        status: str = "reserved",
        missing: list[str] | None = None,
        at: float = 4.0,
    ) -> InventoryUpdated:
        return InventoryUpdated(
            order_id=order_id,
            status=status,
            lines=[cls.line()],
            missing=missing or [],
            at=at,
        )

    @staticmethod
    def refunded(
        order_id: str = "ord-1", reason: str = "out_of_stock", at: float = 5.0
    ) -> PaymentRefunded:
        return PaymentRefunded(
            order_id=order_id,
            charge_id="ch_test",
            amount=Decimal("10.00"),
            currency="EUR",
            reason=reason,
            at=at,
        )

    @staticmethod
    def status_changed(
        status: str, *, terminal: bool, order_id: str = "ord-1", **overrides: Any
    ) -> StatusChanged:
        fields: dict[str, Any] = {
            "order_id": order_id,
            "status": status,
            "previous": None,
            "terminal": terminal,
            "customer_id": "cust-1",
            "country": "DE",
            "currency": "EUR",
            "total": Decimal("10.00"),
            "reasons": [],
            "created_at": 1.0,
            "at": 2.0,
        }
        fields.update(overrides)
        return StatusChanged(**fields)


@pytest.fixture(scope="session")
def mk() -> type[Builders]:
    return Builders
