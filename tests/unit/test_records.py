"""orders_app.records: the one JSON codec (Decimal as string, strict decode)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from orders_app.records import (
    DecodeError,
    OrderCreated,
    OrderLine,
    OrderValidated,
    PaymentSucceeded,
    StatusChanged,
    decode,
    encode,
)


@pytest.fixture
def order(mk) -> OrderCreated:
    return mk.order(
        "ord-7",
        total="30.10",
        lines=[mk.line("SKU-0001", 2, "10.05"), mk.line("SKU-0002", 1, "10.00")],
        created_at=1714566615.25,
    )


def as_json(record: Any) -> dict[str, Any]:
    return orjson.loads(encode(record))


# --- encode / round trip ---------------------------------------------------------------


def test_encode_writes_decimals_as_strings_without_metadata(order: OrderCreated) -> None:
    data = as_json(order)
    assert data == {
        "order_id": "ord-7",
        "customer_id": "cust-1",
        "country": "DE",
        "currency": "EUR",
        "total": "30.10",
        "lines": [
            {"sku": "SKU-0001", "quantity": 2, "unit_price": "10.05"},
            {"sku": "SKU-0002", "quantity": 1, "unit_price": "10.00"},
        ],
        "payment_method": "tok_visa",
        "created_at": 1714566615.25,
    }
    assert b"__faust" not in encode(order)


def test_round_trip_order_created_keeps_decimal(order: OrderCreated) -> None:
    back = decode(OrderCreated, encode(order))
    assert back == order
    assert isinstance(back.total, Decimal)
    assert str(back.total) == "30.10", "trailing zero (scale) survives"
    assert all(isinstance(ln, OrderLine) for ln in back.lines)
    assert [str(ln.unit_price) for ln in back.lines] == ["10.05", "10.00"]
    assert all(isinstance(ln.unit_price, Decimal) for ln in back.lines)
    assert encode(back) == encode(order)


def test_round_trip_nested_order_validated_keeps_decimal(mk, order: OrderCreated) -> None:
    validated = mk.validated(order, at=5.5)
    raw = encode(validated)
    assert orjson.loads(raw)["order"]["total"] == "30.10"
    back = decode(OrderValidated, raw)
    assert back == validated
    assert isinstance(back.order, OrderCreated)
    assert isinstance(back.order.total, Decimal)
    assert str(back.order.total) == "30.10"
    assert isinstance(back.order.lines[0], OrderLine)
    assert isinstance(back.order.lines[0].unit_price, Decimal)
    assert back.validated_at == 5.5


def test_round_trip_payment_succeeded(mk, order: OrderCreated) -> None:
    paid = mk.paid(order)
    back = decode(PaymentSucceeded, encode(paid))
    assert back == paid
    assert isinstance(back.amount, Decimal)


def test_round_trip_status_changed_with_optional_previous(mk) -> None:
    change = mk.status_changed("CREATED", terminal=False, previous=None)
    back = decode(StatusChanged, encode(change))
    assert back.previous is None
    assert back == change
    later = mk.status_changed("PAID", terminal=False, previous="VALIDATED")
    assert decode(StatusChanged, encode(later)).previous == "VALIDATED"


def test_decode_accepts_integer_money_and_ignores_unknown_fields(order: OrderCreated) -> None:
    data = as_json(order)
    data["total"] = 30
    data["unexpected"] = "ignored"
    back = decode(OrderCreated, orjson.dumps(data))
    assert back.total == Decimal("30")
    assert isinstance(back.total, Decimal)


# --- decode rejects --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (None, "tombstone"),
        (b"", "invalid JSON"),
        (b"{", "invalid JSON"),
        (b"not json", "invalid JSON"),
        (b"[]", "expected a JSON object"),
        (b"null", "expected a JSON object"),
        (b'"a string"', "expected a JSON object"),
        (b"42", "expected a JSON object"),
    ],
)
def test_decode_rejects_non_objects(raw: bytes | None, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode(OrderCreated, raw)


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(DecodeError, ValueError)


@pytest.mark.parametrize(
    "field",
    [
        "order_id",
        "customer_id",
        "country",
        "currency",
        "total",
        "lines",
        "payment_method",
        "created_at",
    ],
)
def test_decode_rejects_missing_field(order: OrderCreated, field: str) -> None:
    data = as_json(order)
    del data[field]
    with pytest.raises(DecodeError, match=f"missing field.*{field}"):
        decode(OrderCreated, orjson.dumps(data))


def _mutated(order: OrderCreated, path: tuple[Any, ...], value: Any) -> bytes:
    data = as_json(order)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return orjson.dumps(data)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("order_id",), 5, "order_id: expected a string"),
        (("customer_id",), 12345, "customer_id: expected a string"),
        (("country",), None, "country: expected a string"),
        (("currency",), True, "currency: expected a string"),
        (("total",), 30.1, "total: expected a decimal string"),
        (("total",), "NaN", "total"),
        (("total",), "Infinity", "total"),
        (("total",), "-Infinity", "total"),
        (("total",), "abc", "OrderCreated"),
        (("total",), True, "total"),
        (("total",), None, "total"),
        (("lines",), {}, "lines: expected a list"),
        (("lines",), "[]", "lines: expected a list"),
        (("lines", 0), "SKU-0001", r"lines\[0\]: expected an object"),
        (("lines", 0, "quantity"), "2", "quantity: expected an integer"),
        (("lines", 0, "quantity"), 1.5, "quantity: expected an integer"),
        (("lines", 0, "quantity"), True, "quantity: expected an integer"),
        (("lines", 1, "unit_price"), 10.0, "unit_price: expected a decimal string"),
        (("lines", 1, "unit_price"), "NaN", "unit_price"),
        (("lines", 0, "sku"), 1, "sku: expected a string"),
    ],
)
def test_decode_rejects_wrong_types(
    order: OrderCreated, path: tuple[Any, ...], value: Any, message: str
) -> None:
    with pytest.raises(DecodeError, match=message):
        decode(OrderCreated, _mutated(order, path, value))


@pytest.mark.parametrize("field", ["sku", "quantity", "unit_price"])
def test_decode_rejects_missing_line_field_with_its_path(order: OrderCreated, field: str) -> None:
    data = as_json(order)
    del data["lines"][1][field]
    with pytest.raises(DecodeError, match=rf"lines\[1\]\.{field}"):
        decode(OrderCreated, orjson.dumps(data))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["order"].pop("currency"), r"order\.currency"),
        # the path is relative to the innermost record ("lines[0].sku", no "order." prefix)
        (lambda d: d["order"]["lines"][0].pop("sku"), r"lines\[0\]\.sku"),
        (lambda d: d["order"]["lines"][0].__setitem__("quantity", "2"), "quantity"),
        (lambda d: d["order"]["lines"][0].__setitem__("unit_price", 1.5), "unit_price"),
        (lambda d: d["order"].__setitem__("total", 30.1), "total"),
        (lambda d: d["order"].__setitem__("total", "NaN"), r"order\.total"),
        (lambda d: d["order"].__setitem__("order_id", 1), "order_id"),
        (lambda d: d.__setitem__("order", "ord-7"), "order: expected an object"),
        (lambda d: d.__setitem__("order", None), "order"),
        (lambda d: d.pop("order"), "missing field.*order"),
    ],
    ids=[
        "missing-order-field",
        "missing-line-field",
        "quantity-string",
        "unit-price-float",
        "total-float",
        "total-nan",
        "order-id-int",
        "order-string",
        "order-null",
        "order-missing",
    ],
)
def test_decode_rejects_nested_errors_in_order_validated(mk, order, mutate, message) -> None:
    data = as_json(mk.validated(order))
    mutate(data)
    with pytest.raises(DecodeError, match=message):
        decode(OrderValidated, orjson.dumps(data))


@pytest.mark.parametrize("value", ["abc", None, [1]])
def test_decode_rejects_non_numeric_float_field(order: OrderCreated, value: Any) -> None:
    with pytest.raises(DecodeError, match=r"created_at|OrderCreated"):
        decode(OrderCreated, _mutated(order, ("created_at",), value))


@pytest.mark.parametrize("value", [True, "1.5"])
def test_decode_rejects_bool_or_string_in_float_field(order: OrderCreated, value: Any) -> None:
    with pytest.raises(DecodeError, match="created_at"):
        decode(OrderCreated, _mutated(order, ("created_at",), value))


def test_encode_rejects_unknown_types(mk) -> None:
    change = mk.status_changed("PAID", terminal=False, reasons=[object()])
    with pytest.raises(TypeError):
        encode(change)
