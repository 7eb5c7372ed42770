"""The rebuild after recovery: derived counters recomputed from per-order ledgers.

Rule: without transactions (the embedded broker has none) a crash can persist one of two
changelog records written for one event and lose the other.  Every effect is recorded
per order in a ledger record (exact by itself): ``stock_ledger`` (sku|order -> reserved
quantity) and ``analytics_ledger`` (order -> country, total, terminal status).  When a
rebalance's recovery completes, before streams resume, the derived counters (``stock``
reserved/available, ``country_stats``) are recomputed from the ledgers of this worker's
partitions; a corrected value is written by the next event for that key (tables can only
be written from a stream) and served by the views meanwhile (tables/corrections.py).
Expired ledger entries live on in their counter's ``archived`` part (agents/retention_rules.py):
the rebuild is the archive plus the entries stamped at or after its watermark
(orders_app/ledgers.py).
The scan runs in a thread, not in the event loop (heartbeats and the web stay served);
Faust awaits this handler before it resumes the streams, so no agent writes meanwhile,
and ``scan_lock`` keeps the retention sweeper out.
Input: the local tables after recovery.  Output: ``pending`` corrections, in memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

from orders_app.app import app
from orders_app.ledgers import reserved_with_archive, stats_with_archive
from tables import corrections as _corrections
from tables.corrections import Pending, scan_lock
from tables.country_stats import analytics_ledger, country_stats
from tables.outside_stream import Row, has_raw_store, rows
from tables.stock import stock, stock_ledger

log = logging.getLogger(__name__)


def corrections(
    ledger: list[Row], stocks: list[Row], countries_ledger: list[Row], countries: list[Row]
) -> Pending:
    """What the ledgers (plus archives) say the counters should be, where they differ."""
    stock_of = {k: v for k, _at, v in stocks}
    by_sku: dict[str, list[Row]] = defaultdict(list)
    for row in ledger:
        by_sku[row[0].rpartition("|")[0]].append(row)
    out = Pending()
    archived_skus = {sku for sku, record in stock_of.items() if record and "archived" in record}
    for sku in set(by_sku) | archived_skus:
        record = stock_of.get(sku)
        if record is None:
            continue  # only failed reservations: no counter to correct
        reserved = reserved_with_archive(record, by_sku[sku])
        if record.get("reserved") != reserved:
            out.stock[sku] = reserved
    stats_of = {k: v for k, _at, v in countries}
    by_country: dict[str, list[Row]] = defaultdict(list)
    for row in countries_ledger:
        if row[2].get("counted") and "country" in row[2]:
            by_country[row[2]["country"]].append(row)
    archived = {c for c, s in stats_of.items() if s and "archived" in s}
    for country in set(by_country) | archived:
        rebuilt = stats_with_archive(country, stats_of.get(country), by_country[country])
        if rebuilt is not None and stats_of.get(country) != rebuilt:
            out.countries[country] = rebuilt
    return out


@app.on_rebalance_complete.connect  # type: ignore[arg-type]
async def rebuild(sender: Any, **kwargs: Any) -> None:
    async with scan_lock:
        tables = (stock_ledger, stock, analytics_ledger, country_stats)
        if not all(has_raw_store(t) for t in tables):
            # A memory store: its dicts are read here, on the loop, since the loop also
            # writes them (standby batches).
            found = corrections(*(rows(t) for t in tables))
        else:
            found = await asyncio.to_thread(lambda: corrections(*(rows(t) for t in tables)))
    pending = _corrections.pending
    pending.stock, pending.countries = found.stock, found.countries
    if pending.stock or pending.countries:
        log.warning(
            "after recovery: %d sku(s) and %d country(ies) differ from their ledgers; correcting",
            len(pending.stock),
            len(pending.countries),
        )
