"""agents.cdc_rules: Debezium rows and envelopes -> domain values (strings for decimals)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agents.cdc_rules import (
    envelope,
    is_tombstone,
    order_change,
    order_from_row,
    parse_json,
    parse_time,
    product_change,
    product_level,
    row_key,
    unwrap,
)
from orders_app.records import ChangeEvent, DecodeError, OrderCreated, OrderLine

T0 = datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=UTC).timestamp()


# --- parse_time ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "2024-05-01T12:30:15.25Z",
        "2024-05-01T12:30:15.250000Z",
        "2024-05-01T12:30:15.25+00:00",
        "2024-05-01T14:30:15.25+02:00",
        "2024-05-01T07:00:15.25-05:30",
    ],
)
def test_parse_time_iso_with_z_and_offsets(value: str) -> None:
    assert parse_time(value) == pytest.approx(T0, abs=1e-6)


def test_parse_time_epoch_seconds_millis_and_micros() -> None:
    assert parse_time(1714566615) == 1714566615.0
    assert parse_time(1714566615.25) == pytest.approx(1714566615.25)
    assert parse_time(1714566615250) == pytest.approx(1714566615.25)
    assert parse_time(1714566615250000) == pytest.approx(1714566615.25)
    assert isinstance(parse_time(1714566615250), float)


def test_parse_time_small_epoch_is_seconds() -> None:
    assert parse_time(0) == 0.0
    assert parse_time(1) == 1.0


@pytest.mark.parametrize("bad", [True, False, None, "yesterday", "", [1], {"t": 1}])
def test_parse_time_rejects_non_timestamps(bad: Any) -> None:
    with pytest.raises(DecodeError, match="created_at"):
        parse_time(bad)


# --- order_from_row --------------------------------------------------------------------


def row(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "ord-1",
        "customer_id": "cust-1",
        "country": "DE",
        "currency": "EUR",
        "total": "25.50",
        "lines": json.dumps(
            [
                {"sku": "SKU-0001", "quantity": 2, "unit_price": "10.00"},
                {"sku": "SKU-0002", "quantity": 1, "unit_price": "5.50"},
            ]
        ),
        "payment_method": "tok_mastercard",
        "created_at": "2024-05-01T12:30:15.25Z",
    }
    base.update(overrides)
    return base


def test_order_from_row_with_jsonb_string_lines() -> None:
    order = order_from_row(row())
    assert isinstance(order, OrderCreated)
    assert order.order_id == "ord-1"
    assert order.customer_id == "cust-1"
    assert order.country == "DE"
    assert order.currency == "EUR"
    assert order.total == Decimal("25.50")
    assert isinstance(order.total, Decimal)
    assert order.payment_method == "tok_mastercard"
    assert order.created_at == pytest.approx(T0)
    assert [(ln.sku, ln.quantity, ln.unit_price) for ln in order.lines] == [
        ("SKU-0001", 2, Decimal("10.00")),
        ("SKU-0002", 1, Decimal("5.50")),
    ]
    assert all(isinstance(ln, OrderLine) for ln in order.lines)
    assert all(isinstance(ln.unit_price, Decimal) for ln in order.lines)


def test_order_from_row_with_list_lines() -> None:
    lines = [{"sku": "A", "quantity": 3, "unit_price": "0.10"}]
    order = order_from_row(row(lines=lines, total="0.30"))
    assert order.lines[0].sku == "A"
    assert order.lines[0].quantity == 3
    assert order.lines[0].unit_price == Decimal("0.10")
    assert order.total == Decimal("0.30")


def test_order_from_row_keeps_decimal_string_exactly() -> None:
    order = order_from_row(row(total="1234567890.12"))
    assert str(order.total) == "1234567890.12"


def test_order_from_row_accepts_integer_money_and_epoch_millis() -> None:
    order = order_from_row(row(total=25, created_at=1714566615250))
    assert order.total == Decimal("25")
    assert order.created_at == pytest.approx(1714566615.25)


def test_order_from_row_strips_padded_char_columns() -> None:
    order = order_from_row(row(country="DE ", currency=" EUR"))
    assert order.country == "DE"
    assert order.currency == "EUR"


@pytest.mark.parametrize("pm", [None, ""])
def test_order_from_row_defaults_payment_method(pm: Any) -> None:
    assert order_from_row(row(payment_method=pm)).payment_method == "tok_visa"


def test_order_from_row_without_payment_method_column() -> None:
    data = row()
    del data["payment_method"]
    assert order_from_row(data).payment_method == "tok_visa"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lines": "[not json"}, "lines: invalid JSON: "),
        ({"lines": "[]"}, "lines: expected a non-empty list"),
        ({"lines": []}, "lines: expected a non-empty list"),
        ({"lines": None}, "lines: expected a list"),
        ({"lines": '{"sku": "A"}'}, "lines: expected a list"),
        ({"lines": ["A"]}, "lines[0]: expected an object"),
        (
            {"lines": [{"sku": "A", "quantity": "2", "unit_price": "1"}]},
            "lines[0].quantity: expected an integer",
        ),
        (
            {"lines": [{"sku": "A", "quantity": True, "unit_price": "1"}]},
            "lines[0].quantity: expected an integer",
        ),
        (
            {"lines": [{"sku": "A", "quantity": 1.5, "unit_price": "1"}]},
            "lines[0].quantity: expected an integer",
        ),
        (
            {"lines": [{"sku": 5, "quantity": 1, "unit_price": "1"}]},
            "lines[0].sku: expected a string",
        ),
        (
            {"lines": [{"sku": "A", "quantity": 1, "unit_price": "x"}]},
            "lines[0].unit_price: expected a decimal string",
        ),
        (
            {"lines": [{"sku": "A", "quantity": 1, "unit_price": 1.5}]},
            "lines[0].unit_price: expected a decimal string",
        ),
        (
            {"lines": [{"sku": "A", "quantity": 1}]},
            "orders row: missing field(s) lines[0].unit_price",
        ),
        (
            {
                "lines": [
                    {"sku": "A", "quantity": 1, "unit_price": "1"},
                    {"sku": "B", "quantity": 1, "unit_price": "NaN"},
                ]
            },
            "lines[1].unit_price: expected a decimal string",
        ),
        ({"total": "abc"}, "total: expected a decimal string"),
        ({"total": "NaN"}, "total: expected a decimal string"),
        ({"total": "Infinity"}, "total: expected a decimal string"),
        ({"total": 25.5}, "total: expected a decimal string"),
        ({"total": None}, "total: expected a decimal string"),
        ({"total": True}, "total: expected a decimal string"),
        ({"id": None}, "id: expected a string"),
        ({"id": 7}, "id: expected a string"),
        ({"customer_id": 1}, "customer_id: expected a string"),
        ({"country": None}, "country: expected a string"),
        ({"currency": 978}, "currency: expected a string"),
        ({"payment_method": 5}, "payment_method: expected a string"),
        ({"created_at": "not a time"}, "created_at: not a timestamp: 'not a time'"),
        ({"created_at": None}, "created_at: not a timestamp: None"),
        ({"created_at": True}, "created_at: not a timestamp: True"),
    ],
)
def test_order_from_row_rejects_bad_rows(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(DecodeError) as caught:
        order_from_row(row(**overrides))
    if message.endswith(": "):  # the parser's own words follow
        assert str(caught.value).startswith(message)
    else:
        assert str(caught.value) == message


def test_order_from_row_names_every_problem() -> None:
    bad = row(total=1.5, currency=None, lines=[{"sku": "A", "quantity": "1", "unit_price": "1"}])
    with pytest.raises(DecodeError) as caught:
        order_from_row(bad)
    assert str(caught.value) == (
        "currency: expected a string; total: expected a decimal string; "
        "lines[0].quantity: expected an integer"
    )


def test_order_from_row_missing_column() -> None:
    data = row()
    del data["customer_id"]
    with pytest.raises(DecodeError) as caught:
        order_from_row(data)
    assert str(caught.value) == "orders row: missing field(s) customer_id"


# --- envelope --------------------------------------------------------------------------


def source(table: str = "orders") -> dict[str, Any]:
    return {
        "version": "2.7.0.Final",
        "connector": "postgresql",
        "name": "orders",
        "ts_ms": 1714566615250,
        "snapshot": "false",
        "db": "orders",
        "sequence": '["1","2"]',
        "schema": "public",
        "table": table,
        "txId": 771,
        "lsn": 24023128,
        "xmin": None,
    }


def change(op: str = "c", after: Any = "default", before: Any = None) -> dict[str, Any]:
    return {
        "before": before,
        "after": row() if after == "default" else after,
        "source": source(),
        "op": op,
        "ts_ms": 1714566615300,
    }


@pytest.mark.parametrize("op", ["c", "r", "u"])
def test_envelope_accepts_create_read_update(op: str) -> None:
    event = envelope(change(op))
    assert isinstance(event, ChangeEvent)
    assert event.op == op
    assert event.after is not None
    assert event.after["id"] == "ord-1"
    assert event.source.table == "orders"
    assert event.ts_ms == 1714566615300


def test_envelope_delete_needs_no_after() -> None:
    event = envelope(change("d", after=None, before={"id": "ord-1"}))
    assert event.op == "d"
    assert event.after is None
    assert event.before == {"id": "ord-1"}


@pytest.mark.parametrize("op", ["t", "m"])
def test_envelope_truncate_and_message_ops_are_known(op: str) -> None:
    assert envelope(change(op, after=None)).op == op


@pytest.mark.parametrize("op", ["x", "", "C", "insert"])
def test_envelope_rejects_unknown_op(op: str) -> None:
    with pytest.raises(DecodeError, match="op"):
        envelope(change(op))


@pytest.mark.parametrize("op", ["c", "r", "u"])
def test_envelope_rejects_missing_after(op: str) -> None:
    with pytest.raises(DecodeError, match="after"):
        envelope(change(op, after=None))


def test_envelope_rejects_non_object_and_missing_source() -> None:
    with pytest.raises(DecodeError, match=r"^expected a JSON object for ChangeEvent$"):
        envelope([1, 2])
    with pytest.raises(DecodeError, match=r"^expected a JSON object for ChangeEvent$"):
        envelope("x")
    data = change()
    del data["source"]
    with pytest.raises(DecodeError, match=r"^ChangeEvent: missing field\(s\) source$"):
        envelope(data)


def test_envelope_rejects_bad_source_field_type() -> None:
    data = change()
    data["source"]["table"] = 5
    with pytest.raises(DecodeError, match=r"^source\.table: expected a string$"):
        envelope(data)


# --- product_level ---------------------------------------------------------------------


def test_product_level() -> None:
    assert product_level({"sku": "SKU-0001", "stock": 40, "name": "x"}) == ("SKU-0001", 40)
    assert product_level({"sku": "S", "stock": 0}) == ("S", 0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"stock": 1}, "products row: missing field(s) sku"),
        ({"sku": 1, "stock": 1}, "sku: expected a string"),
        ({"sku": "S"}, "products row: missing field(s) stock"),
        ({"sku": "S", "stock": "4"}, "stock: expected an integer"),
        ({"sku": "S", "stock": 4.0}, "stock: expected an integer"),
        ({"sku": "S", "stock": True}, "stock: expected an integer"),
    ],
)
def test_product_level_rejects_bad_rows(data: dict[str, Any], message: str) -> None:
    with pytest.raises(DecodeError) as caught:
        product_level(data)
    assert str(caught.value) == message


# --- both JsonConverter shapes (schemas.enable=false / true), keys and values ------------

SAMPLES = json.loads((Path(__file__).parent.parent / "data/debezium/samples.json").read_text())
SHAPES = ["schemas_disabled", "schemas_enabled"]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sample", ["orders_create", "orders_snapshot"])
def test_order_change_in_both_converter_shapes(shape: str, sample: str) -> None:
    msg = SAMPLES[sample][shape]
    key, value = parse_json(json.dumps(msg["key"]).encode()), msg["value"]
    change, order = order_change(key, value)
    assert change.op == SAMPLES[sample]["schemas_disabled"]["value"]["op"]
    assert change.source.table == "orders"
    assert order is not None
    assert (order.order_id, order.customer_id, order.total) == (
        "dbz-ord-1",
        "c-42",
        Decimal("39.98"),
    )
    assert [(ln.sku, ln.quantity, ln.unit_price) for ln in order.lines] == [
        ("SKU-0001", 2, Decimal("19.99"))
    ]


def test_both_shapes_give_the_same_order() -> None:
    plain = order_change(*SAMPLES["orders_create"]["schemas_disabled"].values())
    wrapped = order_change(*SAMPLES["orders_create"]["schemas_enabled"].values())
    assert plain[1] == wrapped[1]
    assert plain[0].asdict() == wrapped[0].asdict()


@pytest.mark.parametrize("shape", SHAPES)
def test_order_delete_makes_no_order(shape: str) -> None:
    change, order = order_change(*SAMPLES["orders_delete"][shape].values())
    assert change.op == "d" and order is None


@pytest.mark.parametrize("shape", SHAPES)
def test_product_change_in_both_converter_shapes(shape: str) -> None:
    change, level = product_change(*SAMPLES["products_update"][shape].values())
    assert change.op == "u"
    assert level == ("SKU-0001", 150)


@pytest.mark.parametrize("shape", SHAPES)
def test_keys_in_both_shapes(shape: str) -> None:
    assert row_key(SAMPLES["orders_create"][shape]["key"], "id") == "dbz-ord-1"
    assert row_key(SAMPLES["products_update"][shape]["key"], "sku") == "SKU-0001"


def test_tombstones_in_both_shapes() -> None:
    assert is_tombstone(None)
    assert is_tombstone({"schema": None, "payload": None})
    assert not is_tombstone(SAMPLES["orders_create"]["schemas_enabled"]["value"])


def test_key_naming_another_row_is_rejected() -> None:
    msg = SAMPLES["orders_create"]["schemas_enabled"]
    wrong = {"schema": msg["key"]["schema"], "payload": {"id": "other"}}
    with pytest.raises(DecodeError, match="key: id 'other' does not match"):
        order_change(wrong, msg["value"])
    with pytest.raises(DecodeError, match="key: expected an object"):
        order_change({"schema": {}, "payload": "dbz-ord-1"}, msg["value"])


def test_unwrap_leaves_plain_envelopes_alone() -> None:
    value = SAMPLES["orders_create"]["schemas_disabled"]["value"]
    assert unwrap(value) is value
    # an envelope-looking object with extra fields is not a schema wrapper
    odd = {"schema": {}, "payload": {}, "op": "c"}
    assert unwrap(odd) is odd


def test_order_change_rejects_a_products_event_on_the_orders_topic() -> None:
    with pytest.raises(DecodeError, match=r"source\.table"):
        order_change(None, SAMPLES["products_update"]["schemas_enabled"]["value"])
