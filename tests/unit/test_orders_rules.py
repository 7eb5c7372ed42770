"""web.orders_rules: the POST /orders body (ISO codes, money as decimal strings)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pycountry
import pytest
from pydantic import ValidationError

from web.orders_rules import MAX_LINES, OrderIn, field_errors, parse_money


def body(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "customer_id": "cust-1",
        "country": "DE",
        "currency": "EUR",
        "lines": [
            {"sku": "SKU-0001", "quantity": 2, "unit_price": "9.99"},
            {"sku": "SKU-0002", "quantity": 1, "unit_price": "0.05"},
        ],
        "payment_method": "tok_visa",
    }
    data.update(overrides)
    return data


def errors_for(data: dict[str, Any]) -> list[dict[str, str]]:
    with pytest.raises(ValidationError) as info:
        OrderIn.model_validate(data)
    return field_errors(info.value)


def fields(errors: list[dict[str, str]]) -> list[str]:
    return [e["field"] for e in errors]


def with_line(**line: Any) -> dict[str, Any]:
    data = body()
    data["lines"] = [{"sku": "SKU-0001", "quantity": 1, "unit_price": "1.00", **line}]
    return data


def test_valid_body() -> None:
    order = OrderIn.model_validate(body())
    assert order.customer_id == "cust-1"
    assert order.country == "DE"
    assert order.currency == "EUR"
    assert order.payment_method == "tok_visa"
    assert [ln.sku for ln in order.lines] == ["SKU-0001", "SKU-0002"]
    assert order.lines[0].unit_price == Decimal("9.99")
    assert isinstance(order.lines[0].unit_price, Decimal)


def test_total_is_an_exact_decimal() -> None:
    order = OrderIn.model_validate(body())
    assert order.total == Decimal("20.03")
    assert isinstance(order.total, Decimal)
    assert str(order.total) == "20.03"


def test_total_of_repeated_cents_is_exact() -> None:
    data = body(lines=[{"sku": "A", "quantity": 3, "unit_price": "0.10"}])
    assert str(OrderIn.model_validate(data).total) == "0.30"


def test_total_is_quantized_to_cents() -> None:
    data = body(lines=[{"sku": "A", "quantity": 1, "unit_price": "5"}])
    assert str(OrderIn.model_validate(data).total) == "5.00"


@pytest.mark.parametrize("field", ["customer_id", "country", "currency", "lines", "payment_method"])
def test_missing_field_is_named(field: str) -> None:
    data = body()
    del data[field]
    errors = errors_for(data)
    assert fields(errors) == [field]
    assert errors[0]["message"] == "Field required"


@pytest.mark.parametrize("country", ["XX", "de", "De", "DEU", "", "D", "AN"])
def test_bad_country_is_named(country: str) -> None:
    errors = errors_for(body(country=country))
    assert fields(errors) == ["country"]
    assert "ISO 3166-1" in errors[0]["message"]
    assert not errors[0]["message"].startswith("Value error")


@pytest.mark.parametrize("currency", ["ABC", "eur", "EURO", "€", "ZWL"])
def test_unknown_currency_is_named(currency: str) -> None:
    errors = errors_for(body(currency=currency))
    assert fields(errors) == ["currency"]
    assert "ISO 4217" in errors[0]["message"]


@pytest.mark.parametrize("country", ["DE", "FR", "US", "JP", "BR"])
def test_common_countries_accepted(country: str) -> None:
    assert OrderIn.model_validate(body(country=country)).country == country


@pytest.mark.parametrize("currency", ["EUR", "USD", "GBP", "JPY", "CHF"])
def test_common_currencies_accepted(currency: str) -> None:
    assert OrderIn.model_validate(body(currency=currency)).currency == currency


# The code lists are pycountry's (through pydantic-extra-types), not a hand-kept copy: what
# ISO withdraws is refused and what it adds is accepted once pycountry has it.


def test_zimbabwe_gold_accepted_and_the_withdrawn_zimbabwe_dollar_refused() -> None:
    # ZWG replaced ZWL in 2024; the hand-kept list had it the other way round.
    assert pycountry.currencies.get(alpha_3="ZWG") is not None
    assert pycountry.currencies.get(alpha_3="ZWL") is None
    assert OrderIn.model_validate(body(country="ZW", currency="ZWG")).currency == "ZWG"
    errors = errors_for(body(country="ZW", currency="ZWL"))
    assert fields(errors) == ["currency"] and "ISO 4217" in errors[0]["message"]


def test_every_current_currency_is_accepted() -> None:
    codes = {c.alpha_3 for c in pycountry.currencies} - {"XAU", "XAG", "XPD", "XPT", "XTS", "XXX"}
    codes -= {"XBA", "XBB", "XBC", "XBD", "XDR"}  # bond units and the SDR: no order's price
    refused = [c for c in sorted(codes) if _refused(currency=c)]
    assert refused == []


@pytest.mark.parametrize("currency", ["XAU", "XTS", "XXX"])
def test_metal_testing_and_no_currency_codes_are_refused(currency: str) -> None:
    assert fields(errors_for(body(currency=currency))) == ["currency"]


def test_every_current_country_is_accepted() -> None:
    refused = [c.alpha_2 for c in pycountry.countries if _refused(country=c.alpha_2)]
    assert refused == []


def test_withdrawn_countries_are_refused() -> None:
    current = {c.alpha_2 for c in pycountry.countries}
    withdrawn = sorted({c.alpha_2 for c in pycountry.historic_countries} - current)
    assert "AN" in withdrawn  # the Netherlands Antilles, dissolved in 2010
    assert [c for c in withdrawn if not _refused(country=c)] == []


def test_code_schema_lists_exactly_the_accepted_codes() -> None:
    props = OrderIn.model_json_schema()["properties"]
    assert props["country"]["enum"] == sorted(c.alpha_2 for c in pycountry.countries)
    assert "ZWG" in props["currency"]["enum"] and "ZWL" not in props["currency"]["enum"]


def _refused(**field: str) -> bool:
    try:
        OrderIn.model_validate(body(**field))
    except ValidationError:
        return True
    return False


@pytest.mark.parametrize("country", [5, None])
def test_non_string_code_says_so(country: Any) -> None:
    errors = errors_for(body(country=country))
    assert (
        fields(errors) == ["country"] and errors[0]["message"] == "Input should be a valid string"
    )


@pytest.mark.parametrize("qty", [0, -1])
def test_non_positive_quantity_is_named(qty: int) -> None:
    assert fields(errors_for(with_line(quantity=qty))) == ["lines.0.quantity"]


@pytest.mark.parametrize("qty", ["2", 1.5, True, None])
def test_quantity_must_be_a_real_integer(qty: Any) -> None:
    assert fields(errors_for(with_line(quantity=qty))) == ["lines.0.quantity"]


def test_quantity_upper_bound() -> None:
    assert OrderIn.model_validate(with_line(quantity=10_000)).lines[0].quantity == 10_000
    assert fields(errors_for(with_line(quantity=10_001))) == ["lines.0.quantity"]


@pytest.mark.parametrize(
    ("price", "message"),
    [
        ("-0.01", "non-negative"),
        ("-5", "non-negative"),
        ("abc", "decimal string"),
        ("1,50", "decimal string"),
        ("", "decimal string"),
        ("1.005", "two decimal places"),
        ("0.001", "two decimal places"),
        (1.5, "decimal string"),
        (2, "decimal string"),
        (None, "decimal string"),
        ("NaN", "non-negative"),
        ("Infinity", "non-negative"),
        ("1e10", "too large"),
    ],
)
def test_bad_price_is_named(price: Any, message: str) -> None:
    errors = errors_for(with_line(unit_price=price))
    assert fields(errors) == ["lines.0.unit_price"]
    assert message in errors[0]["message"]


@pytest.mark.parametrize("price", ["0", "0.00", "19.99", "1.5", "9999999999.99"])
def test_good_prices(price: str) -> None:
    order = OrderIn.model_validate(with_line(unit_price=price))
    assert order.lines[0].unit_price == Decimal(price)


def test_error_in_second_line_names_its_index() -> None:
    data = body()
    data["lines"][1]["unit_price"] = "1.001"
    assert fields(errors_for(data)) == ["lines.1.unit_price"]


def test_empty_lines_rejected() -> None:
    assert fields(errors_for(body(lines=[]))) == ["lines"]


def test_too_many_lines_rejected() -> None:
    line = {"sku": "A", "quantity": 1, "unit_price": "1.00"}
    assert len(OrderIn.model_validate(body(lines=[line] * MAX_LINES)).lines) == MAX_LINES
    assert fields(errors_for(body(lines=[line] * (MAX_LINES + 1)))) == ["lines"]


def test_extra_field_rejected_and_named() -> None:
    errors = errors_for(body(discount="5.00"))
    assert fields(errors) == ["discount"]
    assert "Extra inputs" in errors[0]["message"]


def test_extra_line_field_rejected_and_named() -> None:
    assert fields(errors_for(with_line(color="red"))) == ["lines.0.color"]


@pytest.mark.parametrize("sku", ["", "has space", "x" * 65, "sku/1"])
def test_bad_sku_is_named(sku: str) -> None:
    assert fields(errors_for(with_line(sku=sku))) == ["lines.0.sku"]


@pytest.mark.parametrize("pm", ["visa", "tok_", "tok_bad-token", "", 5])
def test_bad_payment_method_is_named(pm: Any) -> None:
    assert fields(errors_for(body(payment_method=pm))) == ["payment_method"]


def test_several_errors_are_all_reported() -> None:
    data = body(country="XX", currency="ABC")
    data["lines"][0]["quantity"] = 0
    assert sorted(fields(errors_for(data))) == ["country", "currency", "lines.0.quantity"]


def test_body_not_an_object_is_reported_as_body() -> None:
    with pytest.raises(ValidationError) as info:
        OrderIn.model_validate([])
    assert fields(field_errors(info.value)) == ["body"]


def test_model_validate_does_not_mutate_input() -> None:
    data = body()
    snapshot = copy.deepcopy(data)
    OrderIn.model_validate(data)
    assert data == snapshot


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda: parse_money("12.30"), Decimal("12.30")),
        (lambda: parse_money("0"), Decimal("0")),
    ],
)
def test_parse_money_accepts(call: Callable[[], Decimal], expected: Decimal) -> None:
    value = call()
    assert value == expected
    assert isinstance(value, Decimal)


@pytest.mark.parametrize("value", [1.5, 1, None, "x", "-1", "0.001", "sNaN", "1e12"])
def test_parse_money_rejects(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_money(value)
