"""Per-country analytics (pure): what ksqlDB's ``CREATE TABLE ... GROUP BY country`` would
keep, plus 1-minute tumbling windows.

Per country: ``orders`` (each order counted once, when first seen), ``revenue`` (sum of
totals of FULFILLED orders, Decimal), ``by_status`` (terminal statuses, each order once),
``average_order_value`` (revenue / fulfilled orders), and ``windows``: per minute of the
order's commit time, orders and revenue, kept for ``WINDOW_RETENTION_S``.  A per-order
ledger makes every count idempotent under redelivery.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from orders_app.records import OrderStatus, StatusChanged

WINDOW_S = 60
WINDOW_RETENTION_S = 3600
CENTS = Decimal("0.01")


def empty_stats(country: str) -> dict[str, Any]:
    return {"country": country, "orders": 0, "revenue": "0", "by_status": {}, "windows": {}}


def window_start(ts: float) -> int:
    return int(ts // WINDOW_S) * WINDOW_S


def apply_change(
    stats: dict[str, Any] | None, ledger: dict[str, Any] | None, change: StatusChanged
) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """-> (new stats, new ledger entry for the order, changed?)."""
    stats = stats or empty_stats(change.country)
    ledger = dict(ledger or {"counted": False, "terminal": None})
    # what a rebuild from the ledger needs (see stats_from_ledger)
    ledger.update(
        country=change.country, total=str(change.total), window=window_start(change.created_at)
    )
    new = {**stats, "by_status": dict(stats["by_status"]), "windows": dict(stats["windows"])}
    changed = False
    key = str(window_start(change.created_at))
    window = dict(new["windows"].get(key, {"orders": 0, "revenue": "0"}))
    if not ledger["counted"]:
        ledger["counted"] = True
        new["orders"] += 1
        window["orders"] += 1
        changed = True
    if change.terminal and ledger["terminal"] is None:
        ledger["terminal"] = change.status
        new["by_status"][change.status] = new["by_status"].get(change.status, 0) + 1
        if change.status == OrderStatus.FULFILLED:
            new["revenue"] = str(Decimal(new["revenue"]) + change.total)
            window["revenue"] = str(Decimal(window["revenue"]) + change.total)
        changed = True
    if changed:
        new["windows"][key] = window
        newest = max(int(k) for k in new["windows"])
        new["windows"] = {
            k: v for k, v in new["windows"].items() if int(k) > newest - WINDOW_RETENTION_S
        }
    return (new if changed else stats), ledger, changed


def average_order_value(stats: dict[str, Any]) -> Decimal:
    fulfilled = int(stats["by_status"].get(OrderStatus.FULFILLED, 0))
    if not fulfilled:
        return Decimal("0.00")
    revenue = Decimal(stats["revenue"])
    return (revenue / fulfilled).quantize(CENTS)


def totals_view(stats: dict[str, Any]) -> dict[str, Any]:
    return {
        "orders": stats["orders"],
        "revenue": str(Decimal(stats["revenue"]).quantize(CENTS)),
        "by_status": dict(stats["by_status"]),
        "average_order_value": str(average_order_value(stats)),
    }


def windows_view(stats: dict[str, Any], now: float, last: int = 60) -> list[dict[str, Any]]:
    out = []
    for start in sorted((int(k) for k in stats["windows"]), reverse=True)[:last]:
        w = stats["windows"][str(start)]
        out.append(
            {
                "start": start,
                "end": start + WINDOW_S,
                "orders": w["orders"],
                "revenue": str(Decimal(w["revenue"]).quantize(CENTS)),
                "closed": start + WINDOW_S <= now,
            }
        )
    return out


def merge_totals(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge ``{"countries": {...}}`` answers from several workers (disjoint countries)."""
    out: dict[str, Any] = {}
    for part in parts:
        out.update(part.get("countries", {}))
    return dict(sorted(out.items()))


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
        newest = max(int(k) for k in stats["windows"])
        stats["windows"] = {
            k: v for k, v in stats["windows"].items() if int(k) > newest - WINDOW_RETENTION_S
        }
    return out
