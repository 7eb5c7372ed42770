"""Corrections of derived counters after recovery, and the views that apply them.

Rule: the recovery rebuild (tables/rebuild.py) recomputes ``stock`` reserved/available
and ``country_stats`` from their per-order ledgers and leaves what differs in
:data:`pending`; a table can only be written from a stream, so the stock and analytics
agents write a correction with the next event of its key (:func:`take_stock_fix`,
:func:`take_country_fix`) and the web views serve corrected values meanwhile
(:func:`stock_view`, :func:`country_view`).  In memory, per worker.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from orders_app.stock_levels import with_reserved
from tables.country_stats import country_stats
from tables.stock import stock

log = logging.getLogger(__name__)


@dataclass
class Pending:
    stock: dict[str, int] = field(default_factory=dict)  # sku -> reserved per ledger
    countries: dict[str, dict[str, Any]] = field(default_factory=dict)  # country -> stats


pending = Pending()
#: Held by the rebuild's scan and by each retention sweep.
scan_lock = asyncio.Lock()


def stock_view(sku: str) -> dict[str, Any] | None:
    """The sku's counters, corrected when a correction is pending."""
    current = stock.get(sku)
    if current is not None and sku in pending.stock:
        return with_reserved(current, pending.stock[sku])
    return current  # type: ignore[no-any-return]


def take_stock_fix(sku: str) -> dict[str, Any] | None:
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
