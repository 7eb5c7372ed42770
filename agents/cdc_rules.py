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

Checks are pydantic strict validation, as in ``orders_app.records``: the envelope is the
``ChangeEvent`` schema (:func:`orders_app.records.from_dict`), an ``orders`` row is
``_OrdersRow`` (money a decimal string or integer, never a float or non-finite; ``lines``
a non-empty list of the ``OrderLine`` schema, also as a ``jsonb`` string; ``created_at``
a timestamp; ``payment_method`` a string or null), a ``products`` row ``_ProductsRow``.
A bad event raises ``DecodeError`` naming the field path (``lines[0].quantity: expected
an integer``); the cdc agent dead-letters it.  The rules pydantic does not express (a
known ``op``, ``after`` present for c/r/u, the key naming the row) are checked here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, NotRequired

import orjson
from annotated_types import MinLen
from pydantic import (
    BeforeValidator,
    ConfigDict,
    PlainValidator,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    with_config,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from orders_app.records import (
    ChangeEvent,
    DecodeError,
    Money,
    OrderCreated,
    OrderLine,
    from_dict,
    schema,
)

CREATE_OPS = {"c", "r"}


def _epoch(value: Any) -> float | None:
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
    return None


def parse_time(value: Any) -> float:
    """Debezium renders timestamptz as ISO-8601 (``ZonedTimestamp``); epoch numbers are
    micro/milliseconds depending on magnitude."""
    out = _epoch(value)
    if out is None:
        raise DecodeError(f"created_at: not a timestamp: {value!r}")
    return out


def _timestamp(value: Any) -> float:
    out = _epoch(value)
    if out is None:
        raise PydanticCustomError("timestamp", "not a timestamp: {value}", {"value": repr(value)})
    return out


def _jsonb(value: Any) -> Any:
    """A ``jsonb`` column as Debezium renders it (a JSON string) -> its value."""
    if not isinstance(value, str):
        return value
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as err:
        raise PydanticCustomError("json_invalid", "{error}", {"error": str(err)}) from err


_Text = Annotated[str, StringConstraints(strip_whitespace=True)]  # char(n) columns are padded


@with_config(ConfigDict(strict=True, allow_inf_nan=False))
class _OrdersRow(TypedDict):
    """The columns of an ``orders`` row the pipeline reads (others are ignored)."""

    id: str
    customer_id: str
    country: _Text
    currency: _Text
    total: Money
    # the records' own OrderLine schema: each line is built as an OrderLine
    lines: Annotated[list[schema(OrderLine)], BeforeValidator(_jsonb), MinLen(1)]  # type: ignore[valid-type]
    payment_method: NotRequired[str | None]
    created_at: Annotated[float, PlainValidator(_timestamp)]


@with_config(ConfigDict(strict=True))
class _ProductsRow(TypedDict):
    sku: str
    stock: int


_ORDERS_ROW = TypeAdapter(_OrdersRow)
_PRODUCTS_ROW = TypeAdapter(_ProductsRow)


def order_from_row(row: dict[str, Any]) -> OrderCreated:
    """The ``after`` image of an ``orders`` row -> OrderCreated (DecodeError if invalid)."""
    try:
        data = _ORDERS_ROW.validate_python(row, strict=True)
    except ValidationError as err:
        raise DecodeError.of(err, "orders row") from err
    return OrderCreated(
        order_id=data["id"],
        customer_id=data["customer_id"],
        country=data["country"],
        currency=data["currency"],
        total=data["total"],
        lines=data["lines"],
        payment_method=data.get("payment_method") or "tok_visa",
        created_at=data["created_at"],
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
    """The ``after`` image of a ``products`` row -> (sku, catalogue stock level)."""
    try:
        data = _PRODUCTS_ROW.validate_python(row, strict=True)
    except ValidationError as err:
        raise DecodeError.of(err, "products row") from err
    return data["sku"], data["stock"]


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
