"""Counters rebuilt from per-order ledgers (pure): the arithmetic the inventory,
analytics and retention rules share with the recovery rebuild (tables/rebuild.py).

A ledger entry per order (``stock_ledger``: "sku|order_id" -> reserved quantity and
state; ``analytics_ledger``: order_id -> country, total, window, terminal status) is one
record, exact after a crash; a counter (``stock`` reserved, ``country_stats``) is another
record that may lag or lead it.  These functions compute what the counters should be
from the ledgers, with the retention archive: expired entries live on in their counter's
``archived`` part, stamped entries before its ``archived_before`` watermark are in it
(agents/retention_rules.py folds them).  Input: ledger rows ``(key, write time,
entry)``.  Output: counters.  No Faust.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from orders_app.records import OrderStatus

#: How long the per-country 1-minute windows are kept (by the newest window).
WINDOW_RETENTION_S = 3600


def watermark(record: dict[str, Any] | None) -> float:
    return float((record or {}).get("archived_before", 0.0))


def live_entries(
    entries: Iterable[tuple[str, float | None, dict[str, Any]]], record: dict[str, Any] | None
) -> list[tuple[str, dict[str, Any]]]:
    """The ledger entries not yet in the record's ``archived`` (stamped at or after its
    watermark; unstamped ones are live)."""
    mark = watermark(record)
    return [(key, entry) for key, at, entry in entries if at is None or at >= mark]


def reserved_from_ledger(entries: list[tuple[str, dict[str, Any]]]) -> dict[str, int]:
    """Units currently reserved per sku, from ``("sku|order_id", entry)`` ledger items.

    A ledger entry is one record, exact after a crash; the sku's counters are another
    record.  After recovery the counters are set from this sum (see tables/rebuild.py)."""
    out: dict[str, int] = {}
    for key, entry in entries:
        sku = key.rpartition("|")[0]
        out.setdefault(sku, 0)
        if entry.get("state") == "reserved":
            out[sku] += int(entry["quantity"])
    return out


def reserved_with_archive(
    stock: dict[str, Any] | None, entries: Iterable[tuple[str, float | None, dict[str, Any]]]
) -> int:
    """Units the sku holds reserved, rebuilt: archived + the live ledger entries."""
    units = sum(reserved_from_ledger(live_entries(entries, stock)).values())
    return int((stock or {}).get("archived", 0)) + units


def empty_stats(country: str) -> dict[str, Any]:
    return {"country": country, "orders": 0, "revenue": "0", "by_status": {}, "windows": {}}


def prune_windows(stats: dict[str, Any]) -> None:
    """Keep the windows of the last ``WINDOW_RETENTION_S`` (by the newest window)."""
    if not stats["windows"]:
        return
    newest = max(int(k) for k in stats["windows"])
    stats["windows"] = {
        k: v for k, v in stats["windows"].items() if int(k) > newest - WINDOW_RETENTION_S
    }


def stats_from_ledger(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rebuild every country's stats from the per-order ledger entries.

    The ledger entry of an order is one record, so it is exact after a crash; the
    country totals are a second record and may lag or lead it by one order.  Rebuilding
    from the ledger after recovery makes the totals exact again."""
    out: dict[str, dict[str, Any]] = {}
    for e in entries:
        if not e.get("counted") or "country" not in e:
            continue
        stats = out.setdefault(e["country"], empty_stats(e["country"]))
        key = str(e["window"])
        window = stats["windows"].setdefault(key, {"orders": 0, "revenue": "0"})
        stats["orders"] += 1
        window["orders"] += 1
        status = e.get("terminal")
        if status:
            stats["by_status"][status] = stats["by_status"].get(status, 0) + 1
            if status == OrderStatus.FULFILLED:
                stats["revenue"] = str(Decimal(stats["revenue"]) + Decimal(e["total"]))
                window["revenue"] = str(Decimal(window["revenue"]) + Decimal(e["total"]))
    for stats in out.values():
        prune_windows(stats)
    return out


def add_stats(base: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """Two countries' stats summed (orders, revenue, by_status, windows), pruned."""
    out = {
        **base,
        "orders": int(base["orders"]) + int(more["orders"]),
        "revenue": str(Decimal(base["revenue"]) + Decimal(more["revenue"])),
        "by_status": dict(base["by_status"]),
        "windows": {k: dict(v) for k, v in base["windows"].items()},
    }
    for status, n in more["by_status"].items():
        out["by_status"][status] = out["by_status"].get(status, 0) + n
    for key, window in more["windows"].items():
        mine = out["windows"].setdefault(key, {"orders": 0, "revenue": "0"})
        mine["orders"] += window["orders"]
        mine["revenue"] = str(Decimal(mine["revenue"]) + Decimal(window["revenue"]))
    prune_windows(out)
    return out


def _bare(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if k not in {"archived", "archived_before"}}


def stats_with_archive(
    country: str,
    stats: dict[str, Any] | None,
    entries: Iterable[tuple[str, float | None, dict[str, Any]]],
) -> dict[str, Any] | None:
    """The country's stats rebuilt: archived + the live ledger entries, carrying the
    record's archive fields; None when neither has anything."""
    rebuilt = stats_from_ledger([e for _k, e in live_entries(entries, stats)]).get(country)
    archived = (stats or {}).get("archived")
    if archived is not None:
        rebuilt = add_stats(_bare(archived), rebuilt) if rebuilt else _bare(archived)
    if rebuilt is None:
        return None
    if stats is not None and "archived" in stats:
        rebuilt = {
            **rebuilt,
            "archived": stats["archived"],
            "archived_before": stats["archived_before"],
        }
    return rebuilt
