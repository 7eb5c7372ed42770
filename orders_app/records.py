"""Records: every message value of the pipeline, as ``faust.Record`` with explicit namespaces.

Rule: money is ``Decimal`` end to end and travels as a decimal *string* in JSON (the same
form Debezium uses with ``decimal.handling.mode=string``), never as a float.  Values carry
no Faust metadata (``include_metadata=False``) so any producer (Debezium, the load
generator, another language) can write them.

:func:`encode` / :func:`decode` are the one codec of the app.  ``decode`` is pydantic's
strict validation (``TypeAdapter(...).validate_json(raw, strict=True)``) against a schema
generated from the record (:func:`schema`), which then builds the same ``faust.Record``
(nested records included).  A missing field, a wrong JSON type (``"2"`` or ``true`` for
an integer, a number for a string, ``true`` for a timestamp), a float or a non-finite
value for money raises :class:`DecodeError` naming the field path
(``lines[0].quantity: expected an integer``), which agents turn into a ``DeadLetter``.
Money may be a decimal string or a JSON integer; unknown extra fields are ignored.
Fields drawn from a fixed set (a CDC ``op``, a status) are plain strings here; the rule
that reads them refuses an unknown one (``agents/cdc_rules.py`` raises ``DecodeError``
for an unknown ``op``).
"""

from __future__ import annotations

import base64
import time
import types
import typing
from decimal import Decimal
from typing import Annotated, Any, NotRequired, TypeVar, Union

import faust
import orjson
from faust.serializers import codecs
from pydantic import (
    AfterValidator,
    ConfigDict,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    with_config,
)
from pydantic_core import ErrorDetails, PydanticCustomError
from typing_extensions import TypedDict

__all__ = [
    "TERMINAL_STATUSES",
    "ChangeEvent",
    "ChangeSource",
    "CountryStats",
    "DeadLetter",
    "DecodeError",
    "FraudAlert",
    "InventoryUpdated",
    "Money",
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
    "from_dict",
    "schema",
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

    @classmethod
    def of(cls, err: ValidationError, what: str) -> DecodeError:
        """The error for pydantic's ``err`` on a ``what`` (a record or row name): every
        problem by its field path (``lines[0].quantity: expected an integer``), missing
        fields together (``OrderCreated: missing field(s) lines[1].sku``)."""
        missing: list[str] = []
        wrong: list[str] = []
        for error in err.errors(include_url=False, include_input=False):
            path, kind = _path(error["loc"]), error["type"]
            if kind == "missing":
                missing.append(path)
            elif kind == "json_invalid":  # the message, or a JSON string field (jsonb)
                reason = f"invalid JSON: {(error.get('ctx') or {}).get('error', '')}"
                wrong.append(f"{path}: {reason}" if path else reason)
            elif not path and kind == "dict_type":
                wrong.append(f"expected a JSON object for {what}")
            else:
                wrong.append(f"{path or what}: {_explain(error)}")
        parts = ([f"{what}: missing field(s) {', '.join(missing)}"] if missing else []) + wrong
        more = len(parts) - _MAX_PROBLEMS
        return cls("; ".join(parts[:_MAX_PROBLEMS]) + (f" (and {more} more)" if more > 0 else ""))


_MAX_PROBLEMS = 5
_EXPECTED = {
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected a boolean",
    "list_type": "expected a list",
    "dict_type": "expected an object",
}


def _path(loc: tuple[int | str, ...]) -> str:
    """``("lines", 0, "sku")`` -> ``lines[0].sku``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else part
    return out


def _explain(error: ErrorDetails) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _EXPECTED:
        return _EXPECTED[kind]
    if kind == "too_short" and ctx.get("min_length") == 1:
        return "expected a non-empty list"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    return error["msg"]  # our own PydanticCustomError messages, pydantic's otherwise


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


# --- decode: pydantic strict validation, then the same faust.Record -----------------------


def _money(value: Any) -> Decimal:
    """Money: a decimal string or a JSON integer, finite; never a float (pydantic's own
    strict JSON mode would take ``1.1`` for a ``Decimal``)."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        try:
            out = Decimal(value)
        except ArithmeticError:
            pass
        else:
            if out.is_finite():
                return out
    raise PydanticCustomError("decimal_string", "expected a decimal string")


Money = Annotated[Decimal, PlainValidator(_money)]
"""The pydantic type of every ``Decimal`` field (also used for Debezium rows)."""

# strict: no "2" for an int, no true for a number, no 5 for a string; NaN/Infinity
# literals (which pydantic's JSON parser takes, orjson not) refused for float fields.
_CONFIG = ConfigDict(strict=True, allow_inf_nan=False)
_SCHEMAS: dict[type[faust.Record], Any] = {}
_ADAPTERS: dict[type[faust.Record], TypeAdapter[Any]] = {}


def _schema_of(hint: Any) -> Any:
    if hint is Decimal:
        return Money
    if isinstance(hint, type) and issubclass(hint, faust.Record):
        return schema(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return list[_schema_of(args[0])]  # type: ignore[misc]
    if origin is dict:
        return dict[args[0], _schema_of(args[1])]  # type: ignore[misc,valid-type]
    if origin in (Union, types.UnionType):
        return Union[tuple(_schema_of(arg) for arg in args)]  # noqa: UP007
    return hint  # str, int, float, bool, Any


def schema(cls: type[faust.Record]) -> Any:
    """The pydantic type that validates a JSON object into a ``cls`` record: a TypedDict
    generated from ``cls``'s fields (so it cannot drift from the record; required where
    Faust requires the field; extra keys ignored), money as :data:`Money`, nested records
    as their own schema, then ``cls(**fields)``."""
    shape = _SCHEMAS.get(cls)
    if shape is None:
        hints = typing.get_type_hints(cls)
        fields: dict[str, Any] = {}
        for name, field in cls._options.descriptors.items():
            hint = _schema_of(hints[name])
            fields[name] = hint if field.required else NotRequired[hint]
        typed = with_config(_CONFIG)(TypedDict(cls.__name__, fields))  # type: ignore[operator]
        shape = _SCHEMAS[cls] = Annotated[typed, AfterValidator(lambda data: cls(**data))]
    return shape


def _adapter(cls: type[R]) -> TypeAdapter[R]:
    adapter = _ADAPTERS.get(cls)
    if adapter is None:
        adapter = _ADAPTERS[cls] = TypeAdapter(schema(cls))
    return adapter


def from_dict(cls: type[R], data: Any) -> R:
    """Build and validate a record from already-parsed JSON; raises :class:`DecodeError`."""
    try:
        return _adapter(cls).validate_python(data, strict=True)
    except ValidationError as err:
        raise DecodeError.of(err, cls.__name__) from err


def decode(cls: type[R], raw: bytes | None) -> R:
    """Parse JSON bytes into a validated ``cls``; raises :class:`DecodeError`."""
    if raw is None:
        raise DecodeError("empty message (tombstone)")
    try:
        return _adapter(cls).validate_json(raw, strict=True)
    except ValidationError as err:
        raise DecodeError.of(err, cls.__name__) from err
