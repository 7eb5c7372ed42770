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
from typing import Any

from orders_app.ledgers import add_stats, empty_stats, live_entries, stats_from_ledger, watermark

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


# -- country stats ---------------------------------------------------------------------


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
