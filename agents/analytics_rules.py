"""Per-country analytics (pure): what ksqlDB's ``CREATE TABLE ... GROUP BY country`` would
keep, plus 1-minute tumbling windows.

Per country: ``orders`` (each order counted once, when first seen: its terminal
change), ``revenue`` (sum of totals of FULFILLED orders, Decimal), ``by_status``
(terminal statuses, each order once),
``average_order_value`` (revenue / fulfilled orders), and ``windows``: per minute of the
order's commit time, orders and revenue, kept for ``WINDOW_RETENTION_S``
(:mod:`orders_app.ledgers`).  A per-order ledger makes every count idempotent under
redelivery.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from orders_app.country_totals import WINDOW_S
from orders_app.ledgers import empty_stats, prune_windows
from orders_app.records import OrderStatus, StatusChanged


def counts(change: StatusChanged) -> bool:
    """Whether ``change`` is repartitioned to the analytics agent: terminal changes only.

    Every order ends in exactly one terminal status, so the order is counted (``orders``,
    its window) when it is first seen there, together with its status and revenue: one
    message and one ledger write per order instead of two (issue 12); the totals lag
    the order's creation by its time in the pipeline."""
    return change.terminal


def window_start(ts: float) -> int:
    return int(ts // WINDOW_S) * WINDOW_S


def apply_change(
    stats: dict[str, Any] | None, ledger: dict[str, Any] | None, change: StatusChanged
) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """-> (new stats, new ledger entry for the order, changed?)."""
    new = copy_stats(stats or empty_stats(change.country))
    ledger = dict(ledger or {"counted": False, "terminal": None})
    changed = _apply(new, ledger, change)
    if changed:
        prune_windows(new)
    return (new if changed else (stats or empty_stats(change.country))), ledger, changed


@dataclass
class BatchResult:
    """What one batch changed: per-country stats, per-order ledger entries, and per
    country the window of its newest change (the window an update reports)."""

    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    ledgers: dict[str, dict[str, Any]] = field(default_factory=dict)
    window: dict[str, int] = field(default_factory=dict)


def apply_batch(
    stats: Mapping[str, dict[str, Any] | None],
    ledgers: Mapping[str, dict[str, Any] | None],
    changes: Iterable[StatusChanged],
) -> BatchResult:
    """Apply ``changes`` in order, as many :func:`apply_change` calls would, but copying
    each country's stats once and pruning its windows once: one table write per country
    and per order serves the whole batch.  ``stats``/``ledgers`` hold the current values
    of every country/order in the batch (None when absent); they are not modified."""
    out = BatchResult()
    work: dict[str, dict[str, Any]] = {}
    for change in changes:
        country = work.get(change.country)
        if country is None:
            country = work[change.country] = copy_stats(
                stats.get(change.country) or empty_stats(change.country)
            )
        ledger = out.ledgers.get(change.order_id)
        if ledger is None:
            ledger = dict(ledgers.get(change.order_id) or {"counted": False, "terminal": None})
        if _apply(country, ledger, change):
            out.ledgers[change.order_id] = ledger
            out.stats[change.country] = country
            out.window[change.country] = window_start(change.created_at)
    for country in out.stats.values():
        prune_windows(country)
    return out


def copy_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """A copy whose nested dicts can be changed without touching ``stats``."""
    return {
        **stats,
        "by_status": dict(stats["by_status"]),
        "windows": {k: dict(v) for k, v in stats["windows"].items()},
    }


def _apply(stats: dict[str, Any], ledger: dict[str, Any], change: StatusChanged) -> bool:
    """Count ``change`` into ``stats`` and ``ledger`` in place; -> changed?"""
    start = window_start(change.created_at)
    key = str(start)
    window = stats["windows"].get(key) or {"orders": 0, "revenue": "0"}
    changed = False
    if not ledger["counted"]:
        ledger["counted"] = True
        stats["orders"] += 1
        window["orders"] += 1
        changed = True
    if change.terminal and ledger["terminal"] is None:
        ledger["terminal"] = change.status
        by_status = stats["by_status"]
        by_status[change.status] = by_status.get(change.status, 0) + 1
        if change.status == OrderStatus.FULFILLED:
            stats["revenue"] = str(Decimal(stats["revenue"]) + change.total)
            window["revenue"] = str(Decimal(window["revenue"]) + change.total)
        changed = True
    if changed:
        stats["windows"][key] = window
        # what a rebuild from the ledger needs (see orders_app.ledgers.stats_from_ledger)
        ledger.update(country=change.country, total=str(change.total), window=start)
    return changed
