"""Analytics agent: order status changes -> per-country totals -> order_analytics.

Input ``orders_app-status-by-country`` (key country): the status agent writes there, as
a ``group_by``, each order's terminal change (it counts the order, its status and
revenue) with the order's commit time as the message timestamp.
``analytics`` (key country) takes the events in batches (what is waiting, up to
``ORDERS_BATCH_MAX``), pre-aggregates each batch per country, then writes
``analytics_ledger`` once per order and ``country_stats`` once per country, and emits
each changed country's totals as
``CountryStats`` on ``order_analytics`` (key country): one update per country per
batch, as ksqlDB's record cache does.  Rules: :mod:`agents.analytics_rules`.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from agents.analytics_rules import apply_batch
from orders_app.app import app
from orders_app.country_totals import WINDOW_S, average_order_value
from orders_app.records import CountryStats, StatusChanged
from orders_app.streams import decoded_batches, guarded, in_partition_of, send
from orders_app.topics import ORDER_ANALYTICS, STATUS_BY_COUNTRY
from tables.corrections import take_country_fix
from tables.country_stats import analytics_ledger, country_stats


@app.agent(STATUS_BY_COUNTRY, name="analytics")
async def aggregate(stream: Any) -> None:
    async for batch in decoded_batches(
        stream, StatusChanged, "analytics", max_events=app.settings.batch_max
    ):
        try:
            await _aggregate(batch)
        except Exception:  # noqa: BLE001 - find the bad event, dead-letter only it
            # One event at a time: the good ones are counted (the per-order ledger
            # makes a second pass over what the batch already wrote harmless).
            for item in batch:
                async with guarded(item[0], "analytics"):
                    await _aggregate([item])


async def _aggregate(batch: list[tuple[Any, StatusChanged]]) -> None:
    # The event each key came from: its partition holds the key's table rows.
    of_country = {change.country: event for event, change in batch}
    of_order = {change.order_id: event for event, change in batch}
    current: dict[str, Any] = {}
    for country in {change.country for _event, change in batch}:
        with in_partition_of(of_country[country]):
            fixed = take_country_fix(country)
            if fixed is not None:
                country_stats[country] = fixed
            current[country] = fixed or country_stats.get(country)
    ledgers: dict[str, Any] = {}
    for _event, change in batch:
        if change.order_id not in ledgers:
            with in_partition_of(of_order[change.order_id]):
                ledgers[change.order_id] = analytics_ledger.get(change.order_id)
    result = apply_batch(current, ledgers, [change for _event, change in batch])
    # Ledgers first: after a crash between the two, the rebuild from the ledgers
    # (tables/rebuild.py) corrects the country totals.
    for order_id, ledger in result.ledgers.items():
        with in_partition_of(of_order[order_id]):
            analytics_ledger[order_id] = ledger
    # Every write before the first await: the retention sweeper (agents.retention) folds
    # into these records between two events, never in the middle of one batch.
    for country, stats in result.stats.items():
        with in_partition_of(of_country[country]):
            country_stats[country] = stats
    for country, stats in result.stats.items():
        start = result.window[country]
        # a change older than the kept windows reports an empty window
        window = stats["windows"].get(str(start), {"orders": 0, "revenue": "0"})
        await send(
            ORDER_ANALYTICS,
            country,
            CountryStats(
                country=country,
                orders=stats["orders"],
                revenue=Decimal(stats["revenue"]),
                by_status=stats["by_status"],
                average_order_value=average_order_value(stats),
                window_start=float(start),
                window_end=float(start + WINDOW_S),
                window_orders=window["orders"],
                window_revenue=Decimal(window["revenue"]),
                at=time.time(),
            ),
        )
