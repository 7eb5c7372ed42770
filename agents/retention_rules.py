"""Retention rules (pure): when per-order state expires, and how an expired ledger entry
is folded into its counter's record so the post-recovery rebuild stays exact.

A value's age is the time of its last write (its stamp, see ``tables``).  A per-order row
expires ``ORDERS_ORDER_RETENTION`` after its last write.  The ledgers that counters are
rebuilt from (``stock_ledger`` -> ``stock``, ``analytics_ledger`` -> ``country_stats``)
are not simply dropped: their sum moves into the counter's record first, as
``archived`` (what the expired entries contributed) with ``archived_before`` (the
watermark: every entry stamped before it is in ``archived``).  The rebuild is then
``archived`` + the entries stamped at or after the watermark, so an expired entry whose
deletion a crash lost is not counted twice, and one folded is never counted again.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from agents.analytics_rules import empty_stats, prune_windows, stats_from_ledger
from agents.inventory_rules import reserved_from_ledger

#: How often a worker sweeps, as a share of the retention (rows live at most
#: retention * (1 + 1/SWEEPS_PER_RETENTION)), and its bounds.
SWEEPS_PER_RETENTION = 8
MIN_SWEEP_INTERVAL_S = 0.5
MAX_SWEEP_INTERVAL_S = 3600.0


def sweep_interval(retention_s: float) -> float:
    return min(MAX_SWEEP_INTERVAL_S, max(MIN_SWEEP_INTERVAL_S, retention_s / SWEEPS_PER_RETENTION))


def expired(at: float | None, cutoff: float) -> bool:
    """Whether a row last written at ``at`` is older than ``cutoff`` (now - retention).
    An unstamped row (written before stamps existed) never expires by itself."""
    return at is not None and at < cutoff


def watermark(record: dict[str, Any] | None) -> float:
    return float((record or {}).get("archived_before", 0.0))


def live_entries(
    entries: Iterable[tuple[str, float | None, dict[str, Any]]], record: dict[str, Any] | None
) -> list[tuple[str, dict[str, Any]]]:
    """The ledger entries not yet in the record's ``archived`` (stamped at or after its
    watermark; unstamped ones are live)."""
    mark = watermark(record)
    return [(key, entry) for key, at, entry in entries if at is None or at >= mark]


# -- stock -----------------------------------------------------------------------------


def fold_stock(
    stock: dict[str, Any] | None,
    entries: Iterable[tuple[str, float | None, dict[str, Any]]],
    cutoff: float,
) -> dict[str, Any] | None:
    """The sku's record with the expired ``("sku|order", at, entry)`` ledger entries
    folded into ``archived`` (units they hold reserved); None when there is no record
    (only failed reservations were ever made for it: nothing to keep)."""
    if stock is None:
        return None
    units = sum(
        int(entry.get("quantity", 0))
        for _key, entry in live_entries(entries, stock)
        if entry.get("state") == "reserved"
    )
    return {
        **stock,
        "archived": int(stock.get("archived", 0)) + units,
        "archived_before": max(watermark(stock), cutoff),
    }


def reserved_with_archive(
    stock: dict[str, Any] | None, entries: Iterable[tuple[str, float | None, dict[str, Any]]]
) -> int:
    """Units the sku holds reserved, rebuilt: archived + the live ledger entries."""
    units = sum(reserved_from_ledger(live_entries(entries, stock)).values())
    return int((stock or {}).get("archived", 0)) + units


# -- country stats ---------------------------------------------------------------------


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


def fold_country(
    stats: dict[str, Any] | None,
    country: str,
    entries: Iterable[tuple[str, float | None, dict[str, Any]]],
    cutoff: float,
) -> dict[str, Any] | None:
    """The country's record with the expired ledger entries' contribution added to its
    ``archived`` stats; None when there is no record."""
    if stats is None:
        return None
    folded = stats_from_ledger([e for _k, e in live_entries(entries, stats)]).get(country)
    archived = stats.get("archived") or empty_stats(country)
    if folded is not None:
        archived = add_stats(archived, folded)
    return {**stats, "archived": archived, "archived_before": max(watermark(stats), cutoff)}


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
