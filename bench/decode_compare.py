"""Micro-benchmark (issue 15): ``orders_app.records.decode`` - pydantic
``TypeAdapter(...).validate_json(raw, strict=True)`` into the same ``faust.Record`` - on the
three payloads the hot path decodes (an ``OrderCreated``, a ``StatusChanged``, a Debezium
``orders`` envelope), one message per call as the agents decode them, against the floor and
msgspec; then the cdc agent's path (``parse_json`` + ``cdc_rules.order_change``).

``.venv/bin/python -m bench.decode_compare`` (msgspec is optional: ``pip install
msgspec`` into the venv to include it; it is not a dependency of the project).

What is compared, per payload (microseconds per message, the best of ``REPEAT`` runs):

- ``records.decode``: what the agents run;
- ``orjson + Record``: the floor of any decoder that hands the agents a ``faust.Record``
  (parse and construct, no checks at all);
- ``pydantic``: the same strict validation into TypedDicts (:func:`mirror`, money as
  ``records.Money``) without building any Record - the library alone;
- ``msgspec`` / ``msgspec + Record``: ``msgspec.json.Decoder`` on Structs (msgspec takes
  JSON floats and ``"NaN"`` for a ``Decimal``: money is decoded as a ``str`` with a
  pattern here, then ``Decimal``-converted by the Record - a lower bound).

Every decoder that returns a ``faust.Record`` is timed with each of its fields read once:
Faust builds nested records (``lines``, ``source``) lazily on first read, which the agents
always do, so a decoder that leaves them as dicts would look cheaper than it is.

Before (the ~190-line hand-kept checker this replaced, commit fc3991b, same box):
``records.decode`` 31.3 / 13.3 / 38.5 us and ``order_change`` 57.9 us.

A strictness table follows: which decoders refuse each of a set of bad messages (each
one a rule ``records.decode`` enforces and its tests check), and accept the good ones.
"""

from __future__ import annotations

import os
import platform
import sys
import timeit
import types
import typing
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, NotRequired

import faust
import orjson
from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

from agents.cdc_rules import order_change, parse_json
from orders_app import records
from orders_app.records import (
    ChangeEvent,
    DecodeError,
    Money,
    OrderCreated,
    OrderLine,
    StatusChanged,
)

try:
    import msgspec
except ImportError:  # optional: only for this measurement
    msgspec = None  # type: ignore[assignment]

REPEAT = int(os.environ.get("BENCH_REPEAT", "7"))
TARGET_S = float(os.environ.get("BENCH_TARGET_S", "0.2"))  # per timing run

# -- payloads: what the pipeline's topics carry -------------------------------------------------

ORDER = OrderCreated(
    order_id="6f1c2a9e-3b7d-4c55-9f1e-2d8a7b6c5e4f",
    customer_id="cust-0042",
    country="DE",
    currency="EUR",
    total=Decimal("87.45"),
    lines=[
        OrderLine(sku="SKU-0001", quantity=2, unit_price=Decimal("19.99")),
        OrderLine(sku="SKU-0017", quantity=1, unit_price=Decimal("35.50")),
        OrderLine(sku="SKU-0042", quantity=3, unit_price=Decimal("3.99")),
    ],
    payment_method="tok_visa",
    created_at=1764028800.123456,
)
STATUS = StatusChanged(
    order_id=ORDER.order_id,
    status="FULFILLED",
    previous="PAID",
    terminal=True,
    customer_id=ORDER.customer_id,
    country="DE",
    currency="EUR",
    total=Decimal("87.45"),
    reasons=[],
    created_at=1764028800.123456,
    at=1764028800.412,
)
ROW = {
    "id": ORDER.order_id,
    "customer_id": "cust-0042",
    "country": "DE",
    "currency": "EUR",
    "total": "87.45",
    "lines": orjson.dumps([ln.asdict() for ln in ORDER.lines], default=str).decode(),
    "payment_method": "tok_visa",
    "created_at": "2025-11-25T00:00:00.123456Z",
    "idempotency_key": None,
}
ENVELOPE = {
    "before": None,
    "after": ROW,
    "source": {
        "version": "3.6.3.Final",
        "connector": "postgresql",
        "name": "orders_db",
        "ts_ms": 1764028800123,
        "snapshot": "false",
        "db": "orders",
        "sequence": '["24023928","24024200"]',
        "schema": "public",
        "table": "orders",
        "txId": 771,
        "lsn": 24024200,
        "xmin": None,
        "ts_us": 1764028800123456,
        "ts_ns": 1764028800123456000,
    },
    "transaction": None,
    "op": "c",
    "ts_ms": 1764028800200,
    "ts_us": 1764028800200123,
    "ts_ns": 1764028800200123000,
}

PAYLOADS: dict[str, tuple[type[Any], bytes]] = {
    "OrderCreated": (OrderCreated, records.encode(ORDER)),
    "StatusChanged": (StatusChanged, records.encode(STATUS)),
    "Debezium envelope": (ChangeEvent, orjson.dumps(ENVELOPE)),
}

# -- pydantic: TypedDicts generated from the records ----------------------------------------------


_MIRRORS: dict[type[Any], Any] = {}
STRICT = ConfigDict(strict=True, allow_inf_nan=False)  # as records.schema


def _mirror_hint(hint: Any) -> Any:
    if hint is Decimal:
        return Money
    if isinstance(hint, type) and issubclass(hint, faust.Record):
        return mirror(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return list[_mirror_hint(args[0])]  # type: ignore[misc]
    if origin is dict:
        return dict[args[0], _mirror_hint(args[1])]  # type: ignore[misc,valid-type]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_mirror_hint(a) for a in args)]  # noqa: UP007
    return hint


def mirror(cls: type[Any]) -> Any:
    """A TypedDict with ``cls``'s fields (the same hints, money as ``Money``, nested
    records mirrored), required where Faust requires the field: ``records.schema`` without
    the Records it builds, to time the library alone."""
    td = _MIRRORS.get(cls)
    if td is None:
        fields: dict[str, Any] = {}
        for name, hint in typing.get_type_hints(cls).items():
            if name.startswith("_"):
                continue
            required = cls._options.descriptors[name].required
            fields[name] = _mirror_hint(hint) if required else NotRequired[_mirror_hint(hint)]
        typed = TypedDict(cls.__name__, fields)  # type: ignore[misc,operator]
        td = _MIRRORS[cls] = with_config(STRICT)(typed)
    return td


PYDANTIC: dict[type[Any], TypeAdapter[Any]] = {
    cls: TypeAdapter(mirror(cls)) for cls in (OrderCreated, StatusChanged, ChangeEvent)
}


# -- msgspec: Structs mirroring the records ------------------------------------------------------


MSGSPEC: dict[type[Any], Callable[[bytes], Any]] = {}
if msgspec is not None:
    # Module level: msgspec resolves the (string) annotations in the module's namespace.
    Money_ = Annotated[str, msgspec.Meta(pattern=r"^-?[0-9]+(\.[0-9]+)?$")]

    class LineS(msgspec.Struct):
        sku: str
        quantity: int
        unit_price: Money_

    class OrderS(msgspec.Struct):
        order_id: str
        customer_id: str
        country: str
        currency: str
        total: Money_
        lines: list[LineS]
        payment_method: str
        created_at: float

    class StatusS(msgspec.Struct, kw_only=True):
        order_id: str
        status: str
        previous: str | None = None
        terminal: bool
        customer_id: str
        country: str
        currency: str
        total: Money_
        reasons: list[str]
        created_at: float
        at: float

    class SourceS(msgspec.Struct, kw_only=True):
        version: str
        connector: str
        name: str
        ts_ms: int
        snapshot: str
        db: str
        sequence: str | None = None
        schema: str
        table: str
        txId: int | None = None
        lsn: int | None = None
        xmin: int | None = None
        ts_us: int | None = None
        ts_ns: int | None = None

    class EnvelopeS(msgspec.Struct, kw_only=True):
        before: dict[str, Any] | None = None
        after: dict[str, Any] | None = None
        source: SourceS
        op: str
        ts_ms: int
        transaction: dict[str, Any] | None = None
        ts_us: int | None = None
        ts_ns: int | None = None

    MSGSPEC = {
        OrderCreated: msgspec.json.Decoder(OrderS).decode,
        StatusChanged: msgspec.json.Decoder(StatusS).decode,
        ChangeEvent: msgspec.json.Decoder(EnvelopeS).decode,
    }


# -- the decoders under test -------------------------------------------------------------------

Decoder = Callable[[type[Any], bytes], Any]


def read_fields(record: Any) -> Any:
    """Read every field once, as an agent does (Faust builds nested records on first read)."""
    for name in record._options.descriptors:
        getattr(record, name)
    return record


def current(cls: type[Any], raw: bytes) -> Any:
    return read_fields(records.decode(cls, raw))


def floor(cls: type[Any], raw: bytes) -> Any:
    return read_fields(cls(**orjson.loads(raw)))


def pydantic_only(cls: type[Any], raw: bytes) -> Any:
    return PYDANTIC[cls].validate_json(raw, strict=True)


def msgspec_only(cls: type[Any], raw: bytes) -> Any:
    return MSGSPEC[cls](raw)


def msgspec_record(cls: type[Any], raw: bytes) -> Any:
    return read_fields(cls(**msgspec.to_builtins(MSGSPEC[cls](raw))))


DECODERS: dict[str, Decoder] = {
    "records.decode": current,
    "orjson + Record": floor,
    "pydantic": pydantic_only,
}
if MSGSPEC:
    DECODERS |= {"msgspec": msgspec_only, "msgspec + Record": msgspec_record}

CDC_KEY = orjson.dumps({"id": ENVELOPE["after"]["id"]})  # type: ignore[index]


def cdc_path(_cls: type[Any], raw: bytes) -> Any:
    """What the cdc agent runs per ``orders`` message: parse key and value, check the
    envelope, the key and the row, build the ``OrderCreated``."""
    return order_change(parse_json(CDC_KEY), parse_json(raw))


def per_call_us(fn: Decoder, cls: type[Any], raw: bytes) -> float:
    timer = timeit.Timer(lambda: fn(cls, raw))
    number, took = timer.autorange()
    number = max(1, int(number * TARGET_S / max(took, 1e-9)))
    return min(timer.repeat(repeat=REPEAT, number=number)) / number * 1e6


# -- strictness --------------------------------------------------------------------------------


def _order_with(**changes: Any) -> bytes:
    data = orjson.loads(records.encode(ORDER))
    for key, value in changes.items():
        if value is _DROP:
            del data[key]
        else:
            data[key] = value
    return orjson.dumps(data)


_DROP = object()
BAD: dict[str, bytes] = {
    "total as a JSON float": _order_with(total=87.45),
    "total NaN": _order_with(total="NaN"),
    "created_at missing": _order_with(created_at=_DROP),
    "quantity as a string": _order_with(
        lines=[{"sku": "SKU-0001", "quantity": "2", "unit_price": "19.99"}]
    ),
    "customer_id as a number": _order_with(customer_id=42),
    "lines not a list": _order_with(lines={"sku": "SKU-0001"}),
    "created_at true": _order_with(created_at=True),
    "quantity true": _order_with(
        lines=[{"sku": "SKU-0001", "quantity": True, "unit_price": "19.99"}]
    ),
    "unit_price as a JSON float": _order_with(
        lines=[{"sku": "SKU-0001", "quantity": 1, "unit_price": 19.99}]
    ),
    "created_at NaN literal": _order_with(created_at=0).replace(
        b'"created_at":0', b'"created_at":NaN'
    ),
}
# ... and what records.decode accepts, which a replacement must accept too
GOOD: dict[str, bytes] = {
    "total as a JSON integer": _order_with(total=87),
    "an unknown extra field": _order_with(coupon="X"),
    "created_at as an integer": _order_with(created_at=1764028800),
}


def refuses(fn: Decoder, raw: bytes) -> bool:
    try:
        result = fn(OrderCreated, raw)
    except (DecodeError, ValidationError, ValueError, TypeError, ArithmeticError):
        return True
    if isinstance(result, OrderCreated):
        # the Record without checks: does what it holds still fit the types?
        return not (
            isinstance(result.total, Decimal)
            and result.total.is_finite()
            and isinstance(result.created_at, float | int)
            and not isinstance(result.created_at, bool)
        )
    return False


def main() -> None:
    print(
        f"python {platform.python_version()} on {platform.machine()}, "
        f"{os.cpu_count()} cpu, load {os.getloadavg()[0]:.2f}; best of {REPEAT}; "
        f"msgspec {msgspec.__version__ if msgspec is not None else 'not installed'}"
    )
    for cls, raw in PAYLOADS.values():  # the same answer from every decoder
        for name, fn in DECODERS.items():
            out = fn(cls, raw)
            if "Record" in name or name == "records.decode":
                assert out == records.decode(cls, raw), name
    width = max(len(n) for n in DECODERS)
    names = list(PAYLOADS)
    print(f"\n{'us per message':<{width}}  " + "  ".join(f"{n:>18}" for n in names))
    base: dict[str, float] = {}
    for name, fn in DECODERS.items():
        cells = []
        for payload, (cls, raw) in PAYLOADS.items():
            us = per_call_us(fn, cls, raw)
            base.setdefault(payload, us)
            cells.append(f"{us:8.2f} ({us / base[payload]:4.2f}x)")
        print(f"{name:<{width}}  " + "  ".join(f"{c:>18}" for c in cells))
    raw = PAYLOADS["Debezium envelope"][1]
    print(
        "\ncdc agent path (parse_json + cdc_rules.order_change), per orders message: "
        f"{per_call_us(cdc_path, ChangeEvent, raw):.2f} us"
    )
    print("\nrefused (OrderCreated)      " + "  ".join(f"{n[:12]:>12}" for n in DECODERS))
    for case, raw in BAD.items():
        marks = ["yes" if refuses(fn, raw) else "NO" for fn in DECODERS.values()]
        print(f"{case:<28}" + "  ".join(f"{m:>12}" for m in marks))
    print("accepted")
    for case, raw in GOOD.items():
        marks = ["NO" if refuses(fn, raw) else "yes" for fn in DECODERS.values()]
        print(f"{case:<28}" + "  ".join(f"{m:>12}" for m in marks))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
