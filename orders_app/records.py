"""Records: every message value of the pipeline, as ``faust.Record`` with explicit namespaces.

Rule: money is ``Decimal`` end to end and travels as a decimal *string* in JSON (the same
form Debezium uses with ``decimal.handling.mode=string``), never as a float.  Values carry
no Faust metadata (``include_metadata=False``) so any producer (Debezium, the load
generator, another language) can write them.

:func:`encode` / :func:`decode` are the one codec of the app.  ``decode`` is strict: a
missing field, a wrong type or a non-finite decimal raises :class:`DecodeError`, which
agents turn into a ``DeadLetter``.  Fields drawn from a fixed set (a CDC ``op``, a status)
are plain strings here; the rule that reads them refuses an unknown one
(``agents/cdc_rules.py`` raises ``DecodeError`` for an unknown ``op``).
"""

from __future__ import annotations

import base64
import time
import types
import typing
from decimal import Decimal
from typing import Any, TypeVar, Union

import faust
import orjson
from faust.serializers import codecs

__all__ = [
    "TERMINAL_STATUSES",
    "ChangeEvent",
    "ChangeSource",
    "CountryStats",
    "DeadLetter",
    "DecodeError",
    "FraudAlert",
    "InventoryUpdated",
    "NotificationSent",
    "OrderCreated",
    "OrderLine",
    "OrderStatus",
    "OrderValidated",
    "PaymentFailed",
    "PaymentRefunded",
    "PaymentSucceeded",
    "StatusChanged",
    "StockCommand",
    "StockReply",
    "decode",
    "encode",
]

_OPTS: dict[str, Any] = {"coerce": True, "include_metadata": False, "serializer": "json"}


class OrderStatus:
    """Order status values (plain strings on the wire)."""

    CREATED = "CREATED"
    VALIDATED = "VALIDATED"
    REJECTED = "REJECTED"
    PAID = "PAID"
    PAYMENT_FAILED = "PAYMENT_FAILED"
    FULFILLED = "FULFILLED"
    CANCELLED = "CANCELLED"


TERMINAL_STATUSES = frozenset(
    {OrderStatus.REJECTED, OrderStatus.PAYMENT_FAILED, OrderStatus.FULFILLED, OrderStatus.CANCELLED}
)


class OrderLine(faust.Record, namespace="orders.OrderLine", **_OPTS):
    sku: str
    quantity: int
    unit_price: Decimal


class OrderCreated(faust.Record, namespace="orders.OrderCreated", **_OPTS):
    """An order as committed in Postgres (from CDC) or made by the load generator."""

    order_id: str
    customer_id: str
    country: str
    currency: str
    total: Decimal
    lines: list[OrderLine]
    payment_method: str
    created_at: float  # epoch seconds of the Postgres commit (row created_at)


class OrderValidated(faust.Record, namespace="orders.OrderValidated", **_OPTS):
    order_id: str
    order: OrderCreated
    validated_at: float


class FraudAlert(faust.Record, namespace="orders.FraudAlert", **_OPTS):
    order_id: str
    customer_id: str
    country: str
    rules: list[str]
    score: float
    reason: str
    at: float


class PaymentSucceeded(faust.Record, namespace="orders.PaymentSucceeded", **_OPTS):
    order_id: str
    charge_id: str
    amount: Decimal
    currency: str
    order: OrderCreated
    at: float


class PaymentFailed(faust.Record, namespace="orders.PaymentFailed", **_OPTS):
    order_id: str
    reason: str
    amount: Decimal
    currency: str
    at: float


class PaymentRefunded(faust.Record, namespace="orders.PaymentRefunded", **_OPTS):
    order_id: str
    charge_id: str
    amount: Decimal
    currency: str
    reason: str
    at: float


class InventoryUpdated(faust.Record, namespace="orders.InventoryUpdated", **_OPTS):
    """``status`` is ``reserved`` (every line), ``out_of_stock`` (``missing`` skus) or
    ``released`` (a reservation given back after an out-of-stock decision)."""

    order_id: str
    status: str
    lines: list[OrderLine]
    missing: list[str]
    at: float


class NotificationSent(faust.Record, namespace="orders.NotificationSent", **_OPTS):
    """``notification_id`` is deterministic per order and template, so a delivery
    service deduplicates a notification repeated after a crash."""

    notification_id: str
    order_id: str
    customer_id: str
    status: str
    channel: str
    template: str
    at: float


class StatusChanged(faust.Record, namespace="orders.StatusChanged", **_OPTS):
    """Internal changelog-style stream of status transitions (what the status agent decided)."""

    order_id: str
    status: str
    previous: str | None
    terminal: bool
    customer_id: str
    country: str
    currency: str
    total: Decimal
    reasons: list[str]
    created_at: float
    at: float


class StockCommand(faust.Record, namespace="orders.StockCommand", **_OPTS):
    """Internal, keyed by sku: ``reserve`` / ``release`` one order line, or ``restock``."""

    op: str
    sku: str
    quantity: int
    order_id: str
    lines_total: int
    at: float


class StockReply(faust.Record, namespace="orders.StockReply", **_OPTS):
    """Internal, keyed by order id: the outcome of one ``reserve``/``release`` command."""

    op: str
    order_id: str
    sku: str
    quantity: int
    ok: bool
    lines_total: int
    at: float


class OrderRestored(faust.Record, namespace="orders.OrderRestored", **_OPTS):
    """Internal, keyed by order id: an order whose outcome Postgres already records
    (``order_status_view.document``), found by the cdc agent on a snapshot read; the
    order agent restores the document instead of running the order again."""

    order_id: str
    document: dict[str, Any]
    at: float


class CountryStats(faust.Record, namespace="orders.CountryStats", **_OPTS):
    country: str
    orders: int
    revenue: Decimal
    by_status: dict[str, int]
    average_order_value: Decimal
    window_start: float | None = None
    window_end: float | None = None
    window_orders: int | None = None
    window_revenue: Decimal | None = None
    at: float | None = None


class DeadLetter(faust.Record, namespace="orders.DeadLetter", **_OPTS):
    topic: str
    partition: int
    offset: int
    key: str | None
    error: str
    payload_b64: str
    agent: str
    at: float

    @property
    def payload(self) -> bytes:
        return base64.b64decode(self.payload_b64)

    @classmethod
    def of(
        cls,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | str | None,
        payload: bytes | None,
        error: str,
        agent: str,
    ) -> DeadLetter:
        """The letter for one message (raw bytes kept as base64, the error cut short)."""
        if isinstance(key, bytes):
            key = key.decode("utf-8", errors="replace")
        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            error=error[:2000],
            payload_b64=base64.b64encode(payload or b"").decode(),
            agent=agent,
            at=time.time(),
        )


class ChangeSource(faust.Record, namespace="debezium.Source", **_OPTS):
    """Debezium PostgreSQL ``source`` block."""

    version: str
    connector: str
    name: str
    ts_ms: int
    snapshot: str
    db: str
    sequence: str | None
    schema: str
    table: str
    txId: int | None
    lsn: int | None
    xmin: int | None
    ts_us: int | None = None
    ts_ns: int | None = None


class ChangeEvent(faust.Record, namespace="debezium.Envelope", **_OPTS):
    """Debezium change event value (JSON converter, ``schemas.enable=false``)."""

    before: dict[str, Any] | None
    after: dict[str, Any] | None
    source: ChangeSource
    op: str
    ts_ms: int
    transaction: dict[str, Any] | None = None
    ts_us: int | None = None
    ts_ns: int | None = None


class _Utf8Codec(codecs.Codec):
    """Table keys as plain UTF-8: the same bytes the input topics are keyed with, so a
    table's changelog is co-partitioned with them and ``table_route`` finds the owner."""

    def _dumps(self, obj: Any) -> bytes:
        return obj.encode() if isinstance(obj, str) else bytes(obj)

    def _loads(self, s: bytes) -> Any:
        return s.decode()


codecs.register("utf8", _Utf8Codec())


class DecodeError(ValueError):
    """The bytes are not a valid instance of the expected record."""


R = TypeVar("R", bound=faust.Record)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, faust.Record):
        return obj.asdict()
    raise TypeError(f"cannot encode {type(obj).__name__}")


def encode(record: faust.Record) -> bytes:
    """Serialize a record as compact JSON without Faust metadata."""
    return orjson.dumps(record.asdict(), default=_json_default)


_SHAPES: dict[Any, tuple[Any, tuple[Any, ...]]] = {}


def _shape(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    """``(get_origin(hint), get_args(hint))``, computed once per hint (hot path)."""
    shape = _SHAPES.get(hint)
    if shape is None:
        shape = _SHAPES[hint] = (typing.get_origin(hint), typing.get_args(hint))
    return shape


_FIELDS: dict[type, list[tuple[str, Any]]] = {}


def _fields(cls: type) -> list[tuple[str, Any]]:
    """``cls``'s public fields and their type hints, resolved once per class."""
    fields = _FIELDS.get(cls)
    if fields is None:
        hints = typing.get_type_hints(cls)
        fields = _FIELDS[cls] = [(n, h) for n, h in hints.items() if not n.startswith("_")]
    return fields


def _check(value: Any, hint: Any, path: str) -> None:
    """Raise DecodeError unless ``value`` (already coerced by Faust) fits ``hint``."""
    # the scalar cases first: they are most fields of every message
    if hint is str:
        if not isinstance(value, str):
            raise DecodeError(f"{path}: expected a string")
        return
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DecodeError(f"{path}: expected a number")
        return
    if hint is Decimal:
        if not isinstance(value, Decimal) or not value.is_finite():
            raise DecodeError(f"{path}: expected a decimal string")
        return
    origin, args = _shape(hint)
    if origin in (Union, types.UnionType):
        options = args
        if value is None and type(None) in options:
            return
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                _check(value, option, path)
                return
            except DecodeError as err:
                errors.append(str(err))
        raise DecodeError(errors[0] if errors else f"{path}: must not be null")
    if hint is Any:
        return
    if origin is list:
        if not isinstance(value, list):
            raise DecodeError(f"{path}: expected a list")
        (item,) = args
        for i, v in enumerate(value):
            _check(v, item, f"{path}[{i}]")
        return
    if origin is dict:
        if not isinstance(value, dict):
            raise DecodeError(f"{path}: expected an object")
        _, item = args
        for k, v in value.items():
            _check(v, item, f"{path}.{k}")
        return
    if isinstance(hint, type) and issubclass(hint, faust.Record):
        if not isinstance(value, hint):
            raise DecodeError(f"{path}: expected an object")
        _check_record(value, path)
        return
    if hint is Decimal:
        if not isinstance(value, Decimal) or not value.is_finite():
            raise DecodeError(f"{path}: expected a decimal string")
        return
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DecodeError(f"{path}: expected a number")
        return
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DecodeError(f"{path}: expected an integer")
        return
    if hint is str:
        if not isinstance(value, str):
            raise DecodeError(f"{path}: expected a string")
        return
    if hint is bool and not isinstance(value, bool):
        raise DecodeError(f"{path}: expected a boolean")


def _check_record(record: faust.Record, path: str) -> None:
    for name, hint in _fields(type(record)):
        _check(getattr(record, name, None), hint, f"{path}.{name}" if path else name)


_PLANS: dict[type, list[tuple[str, str, Any]]] = {}


def _raw_plan(cls: type) -> list[tuple[str, str, Any]]:
    """Per field of ``cls``: what its raw JSON value must be (computed once per class)."""
    plan = _PLANS.get(cls)
    if plan is None:
        plan = []
        for name, hint in _fields(cls):
            origin, args = _shape(hint)
            if hint in (str, int, float, Decimal):
                plan.append((name, hint.__name__, None))
            elif origin is list and args and isinstance(args[0], type):
                record = issubclass(args[0], faust.Record)
                plan.append((name, "records" if record else "list", args[0]))
            elif isinstance(hint, type) and issubclass(hint, faust.Record):
                plan.append((name, "record", hint))
        _PLANS[cls] = plan
    return plan


def _raw_types_ok(data: dict[str, Any], cls: type) -> None:
    """Faust's coercion turns ints into strings and accepts dicts for records; reject the
    raw JSON types that coercion would silently paper over."""
    for name, kind, arg in _raw_plan(cls):
        if name not in data:
            continue
        value = data[name]
        if kind == "str":
            if not isinstance(value, str):
                raise DecodeError(f"{name}: expected a string")
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise DecodeError(f"{name}: expected a number")
        elif kind == "Decimal":
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise DecodeError(f"{name}: expected a decimal string")
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise DecodeError(f"{name}: expected an integer")
        elif kind in ("list", "records"):
            if not isinstance(value, list):
                raise DecodeError(f"{name}: expected a list")
            if kind == "records":
                for i, item in enumerate(value):
                    if not isinstance(item, dict):
                        raise DecodeError(f"{name}[{i}]: expected an object")
                    _require(item, arg, f"{name}[{i}].")
                    _raw_types_ok(item, arg)
        elif kind == "record":
            if not isinstance(value, dict):
                raise DecodeError(f"{name}: expected an object")
            _require(value, arg, f"{name}.")
            _raw_types_ok(value, arg)


def _require(data: dict[str, Any], cls: Any, prefix: str = "") -> None:
    missing = [
        prefix + name
        for name, field in cls._options.descriptors.items()
        if field.required and name not in data
    ]
    if missing:
        raise DecodeError(f"{cls.__name__}: missing field(s) {', '.join(sorted(missing))}")


def from_dict(cls: type[R], data: Any) -> R:
    """Build and validate a record from already-parsed JSON."""
    if not isinstance(data, dict):
        raise DecodeError(f"expected a JSON object for {cls.__name__}")
    _require(data, cls)
    _raw_types_ok(data, cls)
    known = {k: v for k, v in data.items() if k in cls._options.descriptors}
    try:
        record = cls(**known)
    except (TypeError, ValueError, ArithmeticError) as err:
        raise DecodeError(f"{cls.__name__}: {err}") from err
    _check_record(record, "")
    return record


def decode(cls: type[R], raw: bytes | None) -> R:
    """Parse JSON bytes into a validated ``cls``; raises :class:`DecodeError`."""
    if raw is None:
        raise DecodeError("empty message (tombstone)")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise DecodeError(f"invalid JSON: {err}") from err
    return from_dict(cls, data)
