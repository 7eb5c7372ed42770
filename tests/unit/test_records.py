"""orders_app.records: the one JSON codec (Decimal as string, strict decode)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from orders_app.records import (
    CountryStats,
    DeadLetter,
    DecodeError,
    OrderCreated,
    OrderLine,
    OrderValidated,
    PaymentSucceeded,
    StatusChanged,
    decode,
    encode,
    from_dict,
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
        (b"[]", "^expected a JSON object for OrderCreated$"),
        (b"null", "^expected a JSON object for OrderCreated$"),
        (b'"a string"', "^expected a JSON object for OrderCreated$"),
        (b"42", "^expected a JSON object for OrderCreated$"),
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
    with pytest.raises(DecodeError) as caught:
        decode(OrderCreated, orjson.dumps(data))
    assert str(caught.value) == f"OrderCreated: missing field(s) {field}"


def test_decode_names_every_missing_field_together(order: OrderCreated) -> None:
    data = as_json(order)
    del data["currency"], data["total"], data["lines"][0]["sku"]
    with pytest.raises(DecodeError) as caught:
        decode(OrderCreated, orjson.dumps(data))
    assert str(caught.value) == "OrderCreated: missing field(s) currency, total, lines[0].sku"


def test_decode_names_every_problem(order: OrderCreated) -> None:
    data = as_json(order)
    del data["currency"]
    data["total"] = 30.1
    data["lines"][1]["quantity"] = "1"
    with pytest.raises(DecodeError) as caught:
        decode(OrderCreated, orjson.dumps(data))
    assert str(caught.value) == (
        "OrderCreated: missing field(s) currency; total: expected a decimal string; "
        "lines[1].quantity: expected an integer"
    )


def test_decode_cuts_a_long_list_of_problems_short(order: OrderCreated) -> None:
    data = as_json(order)
    data["lines"] = [{"sku": i, "quantity": 1, "unit_price": "1"} for i in range(40)]
    with pytest.raises(DecodeError) as caught:
        decode(OrderCreated, orjson.dumps(data))
    assert str(caught.value).startswith("lines[0].sku: expected a string; lines[1].sku")
    assert str(caught.value).endswith("(and 35 more)")


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
        (("total",), "NaN", "total: expected a decimal string"),
        (("total",), "Infinity", "total: expected a decimal string"),
        (("total",), "-Infinity", "total: expected a decimal string"),
        (("total",), "sNaN", "total: expected a decimal string"),
        (("total",), "abc", "total: expected a decimal string"),
        (("total",), True, "total: expected a decimal string"),
        (("total",), None, "total: expected a decimal string"),
        (("lines",), {}, "lines: expected a list"),
        (("lines",), "[]", "lines: expected a list"),
        (("lines", 0), "SKU-0001", "lines[0]: expected an object"),
        (("lines", 0, "quantity"), "2", "lines[0].quantity: expected an integer"),
        (("lines", 0, "quantity"), 1.5, "lines[0].quantity: expected an integer"),
        (("lines", 0, "quantity"), True, "lines[0].quantity: expected an integer"),
        (("lines", 1, "unit_price"), 10.0, "lines[1].unit_price: expected a decimal string"),
        (("lines", 1, "unit_price"), "NaN", "lines[1].unit_price: expected a decimal string"),
        (("lines", 0, "sku"), 1, "lines[0].sku: expected a string"),
    ],
)
def test_decode_rejects_wrong_types(
    order: OrderCreated, path: tuple[Any, ...], value: Any, message: str
) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(OrderCreated, _mutated(order, path, value))
    assert str(caught.value) == message


@pytest.mark.parametrize("field", ["sku", "quantity", "unit_price"])
def test_decode_rejects_missing_line_field_with_its_path(order: OrderCreated, field: str) -> None:
    data = as_json(order)
    del data["lines"][1][field]
    with pytest.raises(DecodeError) as caught:
        decode(OrderCreated, orjson.dumps(data))
    assert str(caught.value) == f"OrderCreated: missing field(s) lines[1].{field}"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["order"].pop("currency"),
            "OrderValidated: missing field(s) order.currency",
        ),
        # the path runs from the outermost record ("order.lines[0].sku")
        (
            lambda d: d["order"]["lines"][0].pop("sku"),
            "OrderValidated: missing field(s) order.lines[0].sku",
        ),
        (
            lambda d: d["order"]["lines"][0].__setitem__("quantity", "2"),
            "order.lines[0].quantity: expected an integer",
        ),
        (
            lambda d: d["order"]["lines"][0].__setitem__("unit_price", 1.5),
            "order.lines[0].unit_price: expected a decimal string",
        ),
        (lambda d: d["order"].__setitem__("total", 30.1), "order.total: expected a decimal string"),
        (
            lambda d: d["order"].__setitem__("total", "NaN"),
            "order.total: expected a decimal string",
        ),
        (lambda d: d["order"].__setitem__("order_id", 1), "order.order_id: expected a string"),
        (lambda d: d.__setitem__("order", "ord-7"), "order: expected an object"),
        (lambda d: d.__setitem__("order", None), "order: expected an object"),
        (lambda d: d.pop("order"), "OrderValidated: missing field(s) order"),
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
    with pytest.raises(DecodeError) as caught:
        decode(OrderValidated, orjson.dumps(data))
    assert str(caught.value) == message


@pytest.mark.parametrize("value", ["abc", None, [1], True, "1.5"])
def test_decode_rejects_non_numbers_in_float_field(order: OrderCreated, value: Any) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(OrderCreated, _mutated(order, ("created_at",), value))
    assert str(caught.value) == "created_at: expected a number"


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_decode_rejects_non_finite_number_literals(order: OrderCreated, literal: bytes) -> None:
    raw = _mutated(order, ("created_at",), 0).replace(b'"created_at":0', b'"created_at":' + literal)
    assert literal in raw
    with pytest.raises(DecodeError, match="created_at"):
        decode(OrderCreated, raw)


def test_decode_accepts_an_integer_in_a_float_field(order: OrderCreated) -> None:
    back = decode(OrderCreated, _mutated(order, ("created_at",), 1714566615))
    assert back.created_at == 1714566615.0
    assert isinstance(back.created_at, float)


# --- from_dict: the same rules on already-parsed JSON --------------------------------------


def test_from_dict_builds_the_same_record(order: OrderCreated) -> None:
    back = from_dict(OrderCreated, as_json(order))
    assert back == order
    assert isinstance(back.lines[0], OrderLine)
    assert isinstance(back.total, Decimal)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("total",), 30.1, "total: expected a decimal string"),
        (("lines", 0, "quantity"), "2", "lines[0].quantity: expected an integer"),
        (("lines", 0, "quantity"), True, "lines[0].quantity: expected an integer"),
        (("created_at",), True, "created_at: expected a number"),
        (("created_at",), float("nan"), "created_at: expected a finite number"),
        (("customer_id",), 42, "customer_id: expected a string"),
    ],
)
def test_from_dict_rejects_what_decode_rejects(
    order: OrderCreated, path: tuple[Any, ...], value: Any, message: str
) -> None:
    data = as_json(order)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(DecodeError) as caught:
        from_dict(OrderCreated, data)
    assert str(caught.value) == message


@pytest.mark.parametrize("data", [None, [], "x", 42])
def test_from_dict_rejects_non_objects(data: Any) -> None:
    with pytest.raises(DecodeError, match="expected a JSON object for OrderCreated"):
        from_dict(OrderCreated, data)


# --- every record decodes what encode wrote ------------------------------------------------


def test_records_with_optional_fields_round_trip() -> None:
    stats = CountryStats(
        country="DE",
        orders=3,
        revenue=Decimal("12.50"),
        by_status={"PAID": 2, "CANCELLED": 1},
        average_order_value=Decimal("4.17"),
    )
    back = decode(CountryStats, encode(stats))
    assert back == stats
    assert back.window_revenue is None
    data = as_json(stats)
    del data["window_start"], data["at"]
    assert decode(CountryStats, orjson.dumps(data)) == stats
    with pytest.raises(DecodeError) as caught:
        decode(CountryStats, orjson.dumps({**data, "by_status": {"PAID": "2"}}))
    assert str(caught.value) == "by_status.PAID: expected an integer"


def test_dead_letter_round_trips() -> None:
    letter = DeadLetter.of(
        topic="order_created",
        partition=1,
        offset=7,
        key=b"ord-1",
        payload=b"\xff junk",
        error="total: expected a decimal string",
        agent="fraud",
    )
    back = decode(DeadLetter, encode(letter))
    assert back == letter
    assert back.payload == b"\xff junk"


def test_encode_rejects_unknown_types(mk) -> None:
    change = mk.status_changed("PAID", terminal=False, reasons=[object()])
    with pytest.raises(TypeError):
        encode(change)
