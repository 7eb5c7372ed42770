"""Reconciliation after recovery: derived counters rebuilt from per-order ledgers.

Rule: without transactions (the embedded broker has none) a crash can persist one of two
changelog records written for one event and lose the other.  Every effect is recorded
per order in a ledger record (exact by itself): ``stock_ledger`` (sku|order -> reserved
quantity) and ``analytics_ledger`` (order -> country, total, terminal status).  When a
rebalance's recovery completes, before streams resume, the derived counters (``stock``
reserved/available, ``country_stats``) are recomputed from the ledgers of this worker's
partitions; a corrected value is written by the next event for that key (tables can only
be written from a stream) and served by the views meanwhile.
Input: the local tables after recovery.  Output: ``pending`` corrections, in memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from agents.analytics_rules import stats_from_ledger
from agents.inventory_rules import reserved_from_ledger, with_reserved
from orders_app.app import app
from tables.country_stats import analytics_ledger, country_stats
from tables.stock import stock, stock_ledger

log = logging.getLogger(__name__)


@dataclass
class Pending:
    stock: dict[str, int] = field(default_factory=dict)  # sku -> reserved per ledger
    countries: dict[str, dict[str, Any]] = field(default_factory=dict)  # country -> stats


pending = Pending()


def stock_view(sku: str) -> dict[str, int] | None:
    """The sku's counters, corrected when a correction is pending."""
    current = stock.get(sku)
    if current is not None and sku in pending.stock:
        return with_reserved(current, pending.stock[sku])
    return current  # type: ignore[no-any-return]


def take_stock_fix(sku: str) -> dict[str, int] | None:
    """Pop the pending correction for ``sku`` (call inside the stock agent)."""
    reserved = pending.stock.pop(sku, None)
    if reserved is None:
        return None
    current = stock.get(sku)
    if current is None or current["reserved"] == reserved:
        return None
    log.warning(
        "stock of %s corrected from the ledger: reserved %s -> %s",
        sku,
        current["reserved"],
        reserved,
    )
    return with_reserved(current, reserved)


def country_view(country: str) -> dict[str, Any] | None:
    return pending.countries.get(country) or country_stats.get(country)


def take_country_fix(country: str) -> dict[str, Any] | None:
    fixed = pending.countries.pop(country, None)
    if fixed is None or fixed == country_stats.get(country):
        return None
    log.warning("country stats of %s corrected from the ledger", country)
    return fixed


@app.on_rebalance_complete.connect  # type: ignore[arg-type]
async def rebuild(sender: Any, **kwargs: Any) -> None:
    reserved = reserved_from_ledger(list(stock_ledger.items()))
    countries = stats_from_ledger([entry for _oid, entry in analytics_ledger.items()])
    pending.stock = {
        sku: n for sku, n in reserved.items() if (stock.get(sku) or {}).get("reserved") != n
    }
    pending.countries = {c: s for c, s in countries.items() if country_stats.get(c) != s}
    if pending.stock or pending.countries:
        log.warning(
            "after recovery: %d sku(s) and %d country(ies) differ from their ledgers; correcting",
            len(pending.stock),
            len(pending.countries),
        )
