"""Order request validation (pure): the ``POST /orders`` body as a pydantic model.

``country`` is ISO 3166-1 alpha-2, ``currency`` ISO 4217, ``quantity`` >= 1, money a
decimal string with at most two places and non-negative.  Errors name the field.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from web.iso import COUNTRIES, CURRENCIES

MAX_LINES = 100


class LineIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)

    sku: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    quantity: int = Field(ge=1, le=10_000, strict=True)
    unit_price: Decimal

    @field_validator("unit_price", mode="before")
    @classmethod
    def _money(cls, value: Any) -> Decimal:
        return parse_money(value)


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: str = Field(min_length=1, max_length=64)
    country: str
    currency: str
    lines: list[LineIn] = Field(min_length=1, max_length=MAX_LINES)
    payment_method: str = Field(min_length=4, max_length=64, pattern=r"^tok_[A-Za-z0-9_]+$")

    @field_validator("country")
    @classmethod
    def _country(cls, value: str) -> str:
        if value not in COUNTRIES:
            raise ValueError("must be an ISO 3166-1 alpha-2 code such as DE")
        return value

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if value not in CURRENCIES:
            raise ValueError("must be an ISO 4217 currency code such as EUR")
        return value

    @property
    def total(self) -> Decimal:
        return sum((ln.unit_price * ln.quantity for ln in self.lines), Decimal("0")).quantize(
            Decimal("0.01")
        )


def parse_money(value: Any) -> Decimal:
    if not isinstance(value, str):
        raise ValueError('must be a decimal string such as "19.99"')
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ValueError('must be a decimal string such as "19.99"') from None
    if not amount.is_finite() or amount < 0:
        raise ValueError("must be a non-negative decimal")
    if amount.as_tuple().exponent < -2:  # type: ignore[operator]
        raise ValueError("at most two decimal places")
    if amount >= Decimal("1e10"):
        raise ValueError("too large")
    return amount


def field_errors(err: ValidationError) -> list[dict[str, str]]:
    """``[{"field": "lines.0.quantity", "message": ...}]`` for a 422 body."""
    out = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "body"
        message = e["msg"].removeprefix("Value error, ")
        out.append({"field": field, "message": message})
    return out
