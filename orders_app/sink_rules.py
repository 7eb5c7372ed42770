"""Outcome sink rows (pure): what the Postgres projections hold, from what is on Kafka.

Input: ``<app id>-order_status-changelog`` (key order_id; every write of the order's
document, stamped: see :mod:`tables`) and ``order_analytics`` (key country;
``CountryStats``).  Output: one row per order for ``order_status_view`` and one per
country for ``country_stats_view`` plus one per (country, minute) for
``country_window_view``.  Within a batch only the newest value of each key is kept (one
row per key per statement); across batches and redeliveries each row carries a version
(the order document's number of transitions and write time; a country update's time)
and the upsert keeps the newer one, so applying a batch twice, or an older value after a
newer one, changes nothing.  Tombstones (the retention sweeper's deletes) are skipped:
Postgres keeps every outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from orders_app.records import TERMINAL_STATUSES

ORDER_ANALYTICS = "order_analytics"


def order_status_changelog(app_id: str) -> str:
    """Faust names a table's changelog ``<app id>-<table>-changelog``."""
    return f"{app_id}-order_status-changelog"


def _time(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(float(epoch), UTC)


@dataclass(frozen=True)
class OrderRow:
    order_id: str
    status: str
    customer_id: str | None
    country: str | None
    currency: str | None
    total: Decimal | None
    reasons: str  # JSON
    history: str  # JSON
    terminal_at: datetime | None
    version: int
    written_at: datetime
    document: str  # JSON: the whole document (payment, saga, notification)


@dataclass(frozen=True)
class CountryRow:
    country: str
    orders: int
    revenue: Decimal
    by_status: str  # JSON
    average_order_value: Decimal
    at: datetime


@dataclass(frozen=True)
class WindowRow:
    country: str
    window_start: datetime
    window_end: datetime
    orders: int
    revenue: Decimal
    at: datetime


def order_row(raw: bytes | None) -> OrderRow | None:
    """The row for one changelog value; None for a tombstone or a document that has no
    status yet."""
    if not raw:
        return None
    stored = orjson.loads(raw)
    if isinstance(stored, dict) and "~v" in stored:
        doc, at = stored["~v"], float(stored.get("~at") or 0.0)
    else:
        doc, at = stored, 0.0
    if not isinstance(doc, dict) or not doc.get("status") or not doc.get("order_id"):
        return None
    history = doc.get("history") or []
    status = doc["status"]
    terminal_at = history[-1]["at"] if status in TERMINAL_STATUSES and history else None
    return OrderRow(
        order_id=doc["order_id"],
        status=status,
        customer_id=doc.get("customer_id"),
        country=doc.get("country"),
        currency=doc.get("currency"),
        total=Decimal(doc["total"]) if doc.get("total") is not None else None,
        reasons=orjson.dumps(doc.get("reasons") or []).decode(),
        history=orjson.dumps(history).decode(),
        terminal_at=_time(terminal_at),
        version=len(history),
        written_at=_time(at) or datetime.fromtimestamp(0, UTC),
        document=orjson.dumps(doc).decode(),
    )


def country_rows(raw: bytes | None) -> tuple[CountryRow, WindowRow] | None:
    """The totals and the window one ``CountryStats`` reports; None for junk."""
    if not raw:
        return None
    stats = orjson.loads(raw)
    if not isinstance(stats, dict) or not isinstance(stats.get("country"), str):
        return None
    at = _time(stats["at"])
    assert at is not None
    totals = CountryRow(
        country=stats["country"],
        orders=int(stats["orders"]),
        revenue=Decimal(str(stats["revenue"])),
        by_status=orjson.dumps(stats.get("by_status") or {}).decode(),
        average_order_value=Decimal(str(stats.get("average_order_value") or "0")),
        at=at,
    )
    start, end = _time(stats["window_start"]), _time(stats["window_end"])
    assert start is not None and end is not None
    window = WindowRow(
        country=stats["country"],
        window_start=start,
        window_end=end,
        orders=int(stats["window_orders"]),
        revenue=Decimal(str(stats["window_revenue"])),
        at=at,
    )
    return totals, window


@dataclass(frozen=True)
class Source:
    """Where a value came from (what a dead letter names)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Batch:
    """The rows of one batch: newest per key, and the message each row came from."""

    orders: dict[str, OrderRow]
    countries: dict[str, CountryRow]
    windows: dict[tuple[str, datetime], WindowRow]
    sources: dict[Any, Source]

    @property
    def rows(self) -> int:
        return len(self.orders) + len(self.countries) + len(self.windows)


def _newer_order(a: OrderRow | None, b: OrderRow) -> bool:
    return a is None or (b.version, b.written_at) >= (a.version, a.written_at)


def batch_rows(messages: list[Source]) -> tuple[Batch, list[tuple[Source, str]]]:
    """Messages in log order -> (rows, the values that could not be read, with why)."""
    out = Batch({}, {}, {}, {})
    bad: list[tuple[Source, str]] = []
    for msg in messages:
        try:
            if msg.topic.endswith("-order_status-changelog"):
                row = order_row(msg.value)
                if row is not None and _newer_order(out.orders.get(row.order_id), row):
                    out.orders[row.order_id] = row
                    out.sources[("order", row.order_id)] = msg
            elif msg.topic == ORDER_ANALYTICS:
                pair = country_rows(msg.value)
                if pair is not None:
                    totals, window = pair
                    seen = out.countries.get(totals.country)
                    if seen is None or totals.at >= seen.at:
                        out.countries[totals.country] = totals
                        out.sources[("country", totals.country)] = msg
                    key = (window.country, window.window_start)
                    seen_w = out.windows.get(key)
                    if seen_w is None or window.at >= seen_w.at:
                        out.windows[key] = window
                        out.sources[("window", key)] = msg
        except (ValueError, KeyError, TypeError, ArithmeticError, AssertionError) as err:
            bad.append((msg, f"outcome sink cannot read it: {type(err).__name__}: {err}"))
    return out, bad


def latest_documents(messages: list[Source]) -> list[Source]:
    """Only the last changelog message of each order (a key lives on one partition, so
    the last in the batch is the newest write): the others need not even be decoded.
    ``order_analytics`` messages all stay (each may report a different window)."""
    last: dict[tuple[str, bytes | None], int] = {}
    for i, msg in enumerate(messages):
        if msg.topic != ORDER_ANALYTICS:
            last[(msg.topic, msg.key)] = i
    keep = set(last.values())
    return [m for i, m in enumerate(messages) if m.topic == ORDER_ANALYTICS or i in keep]


def split(batch: Batch) -> list[tuple[Batch, Source]]:
    """One batch per row (to find the row Postgres refuses), with its source message."""
    out: list[tuple[Batch, Source]] = []
    for oid, row in batch.orders.items():
        out.append((Batch({oid: row}, {}, {}, {}), batch.sources[("order", oid)]))
    for country, totals in batch.countries.items():
        out.append((Batch({}, {country: totals}, {}, {}), batch.sources[("country", country)]))
    for key, window in batch.windows.items():
        out.append((Batch({}, {}, {key: window}, {}), batch.sources[("window", key)]))
    return out


def columns(rows: list[Any]) -> list[list[Any]]:
    """Rows of a dataclass -> one list per field (for ``unnest``)."""
    if not rows:
        return []
    names = list(rows[0].__dataclass_fields__)
    return [[getattr(r, n) for r in rows] for n in names]
