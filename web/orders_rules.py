"""Order request validation (pure): the ``POST /orders`` body as a pydantic model.

``country`` is ISO 3166-1 alpha-2, ``currency`` ISO 4217 (both upper case, checked against
pycountry's current lists through ``pydantic-extra-types``, so a code ISO withdraws is
refused once pycountry drops it), ``quantity`` >= 1, money a decimal string with at most
two places and non-negative.  Errors name the field.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import pycountry
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    field_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_extra_types.country import CountryAlpha2
from pydantic_extra_types.currency_code import Currency

MAX_LINES = 100


def _iso_code(kind: str, message: str) -> WrapValidator:
    """Run the library's check, but answer with the API's own message (naming the
    standard and an example), and refuse lower case."""

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if not isinstance(value, str):
            return handler(value)  # pydantic's own "Input should be a valid string"
        # The library upper-cases its input ("de" -> "DE"); the API has always refused
        # lower case, and a client sending "de" most likely has a bug worth surfacing.
        if value != value.upper():
            raise PydanticCustomError(kind, message)
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError(kind, message) from None

    return WrapValidator(check)


# The library's own schema is ``^\w{2}$``, looser than what it accepts; an OpenAPI client
# (or a schema-driven fuzzer) is told the exact list instead.
CountryCode = Annotated[
    CountryAlpha2,
    _iso_code("country", "must be an ISO 3166-1 alpha-2 code such as DE"),
    WithJsonSchema({"type": "string", "enum": sorted(c.alpha_2 for c in pycountry.countries)}),
]
# ``Currency``, not ``ISO4217``: the same pycountry list without the codes for precious
# metals, bond units and testing (XAU, XBA.., XTS, XXX), which no order is priced in.
CurrencyCode = Annotated[
    Currency, _iso_code("currency", "must be an ISO 4217 currency code such as EUR")
]


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
    country: CountryCode
    currency: CurrencyCode
    lines: list[LineIn] = Field(min_length=1, max_length=MAX_LINES)
    payment_method: str = Field(min_length=4, max_length=64, pattern=r"^tok_[A-Za-z0-9_]+$")

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
