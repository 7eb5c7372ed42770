"""CDC rules (pure): Debezium change events -> domain events.

``orders`` create/read (snapshot) events become ``OrderCreated``; updates and deletes of
orders change nothing downstream (an order is immutable once placed).  ``products``
create/read/update events become a ``restock`` stock command carrying the catalogue
level (absolute, so replays are idempotent).  Column formats are Debezium's with
``decimal.handling.mode=string``: numerics are strings, ``jsonb`` is a JSON string,
``timestamptz`` an ISO-8601 string.

Both JSON converter shapes are read, keys and values alike: ``schemas.enable=false``
(the bare envelope / key object) and Kafka Connect's default ``schemas.enable=true``
(``{"schema": {...}, "payload": <the same object>}``); :func:`unwrap` takes the payload.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from orders_app.records import ChangeEvent, DecodeError, OrderCreated, OrderLine, from_dict

CREATE_OPS = {"c", "r"}


def parse_time(value: Any) -> float:
    """Debezium renders timestamptz as ISO-8601 (``ZonedTimestamp``); epoch numbers are
    micro/milliseconds depending on magnitude."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value > 1e14:
            return float(value) / 1e6
        if value > 1e11:
            return float(value) / 1e3
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    raise DecodeError(f"created_at: not a timestamp: {value!r}")


def _decimal(value: Any, field: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DecodeError(f"{field}: expected a decimal string")
    try:
        out = Decimal(str(value))
    except InvalidOperation:
        raise DecodeError(f"{field}: expected a decimal string") from None
    if not out.is_finite():
        raise DecodeError(f"{field}: expected a finite decimal")
    return out


def order_from_row(row: dict[str, Any]) -> OrderCreated:
    """The ``after`` image of an ``orders`` row -> OrderCreated (DecodeError if invalid)."""
    lines_raw = row.get("lines")
    if isinstance(lines_raw, str):
        try:
            lines_raw = json.loads(lines_raw)
        except ValueError as err:
            raise DecodeError(f"lines: invalid JSON: {err}") from err
    if not isinstance(lines_raw, list) or not lines_raw:
        raise DecodeError("lines: expected a non-empty list")
    lines = []
    for i, ln in enumerate(lines_raw):
        if not isinstance(ln, dict):
            raise DecodeError(f"lines[{i}]: expected an object")
        qty = ln.get("quantity")
        if isinstance(qty, bool) or not isinstance(qty, int):
            raise DecodeError(f"lines[{i}].quantity: expected an integer")
        sku = ln.get("sku")
        if not isinstance(sku, str):
            raise DecodeError(f"lines[{i}].sku: expected a string")
        lines.append(
            OrderLine(
                sku=sku,
                quantity=qty,
                unit_price=_decimal(ln.get("unit_price"), f"lines[{i}].unit_price"),
            )
        )
    for field in ("id", "customer_id", "country", "currency"):
        if not isinstance(row.get(field), str):
            raise DecodeError(f"{field}: expected a string")
    return OrderCreated(
        order_id=row["id"],
        customer_id=row["customer_id"],
        country=row["country"].strip(),
        currency=row["currency"].strip(),
        total=_decimal(row.get("total"), "total"),
        lines=lines,
        payment_method=str(row.get("payment_method") or "tok_visa"),
        created_at=parse_time(row.get("created_at")),
    )


def unwrap(data: Any) -> Any:
    """The payload of a JsonConverter message written with ``schemas.enable=true``
    (exactly two fields, ``schema`` and ``payload``); anything else as it is.  An envelope
    never has these two fields only, so the shapes cannot be confused."""
    if isinstance(data, dict) and len(data) == 2 and "schema" in data and "payload" in data:
        return data["payload"]
    return data


def is_tombstone(data: Any) -> bool:
    """A null value, or a schema-wrapped null payload: the record after a delete."""
    return unwrap(data) is None


def row_key(data: Any, field: str) -> str:
    """The primary key column of a change event's key (``{"id": ...}`` or
    ``{"sku": ...}``), in either converter shape."""
    key = unwrap(data)
    if not isinstance(key, dict) or not isinstance(key.get(field), str):
        raise DecodeError(f"key: expected an object with a string {field!r}")
    return str(key[field])


def envelope(data: Any) -> ChangeEvent:
    event = from_dict(ChangeEvent, unwrap(data))
    if event.op not in {"c", "r", "u", "d", "t", "m"}:
        raise DecodeError(f"op: unknown operation {event.op!r}")
    if event.op in {"c", "r", "u"} and event.after is None:
        raise DecodeError(f"after: missing for op {event.op!r}")
    return event


def product_level(row: dict[str, Any]) -> tuple[str, int]:
    sku, level = row.get("sku"), row.get("stock")
    if not isinstance(sku, str):
        raise DecodeError("sku: expected a string")
    if isinstance(level, bool) or not isinstance(level, int):
        raise DecodeError("stock: expected an integer")
    return sku, level


def parse_json(raw: bytes | None) -> Any:
    """JSON bytes (a key or a value) -> Python; ``None`` stays ``None`` (tombstone)."""
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise DecodeError(f"invalid JSON: {err}") from err


def _check_key(key: Any, change: ChangeEvent, field: str) -> None:
    """The key names the same row as the envelope (when there is a key)."""
    if key is None:
        return
    key_value = row_key(key, field)
    row = change.after if change.after is not None else change.before
    if row is not None and row.get(field) != key_value:
        raise DecodeError(f"key: {field} {key_value!r} does not match the row's {row.get(field)!r}")


def order_change(
    key: Any, value: Any, table: str = "orders"
) -> tuple[ChangeEvent, OrderCreated | None]:
    """An ``orders`` change event (parsed key and value, either converter shape) ->
    (the envelope, the order it creates or None for updates and deletes)."""
    change = envelope(value)
    if change.source.table != table:
        raise DecodeError(f"source.table: {change.source.table!r} on the {table} topic")
    _check_key(key, change, "id")
    if change.op not in CREATE_OPS:
        return change, None
    assert change.after is not None
    return change, order_from_row(change.after)


def product_change(key: Any, value: Any) -> tuple[ChangeEvent, tuple[str, int] | None]:
    """A ``products`` change event -> (the envelope, (sku, catalogue level) or None)."""
    change = envelope(value)
    if change.source.table != "products":
        raise DecodeError(f"source.table: {change.source.table!r} on the products topic")
    _check_key(key, change, "sku")
    if change.op not in {"c", "r", "u"}:
        return change, None
    assert change.after is not None
    return change, product_level(change.after)
