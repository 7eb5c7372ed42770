"""Analytics agents: order status changes -> per-country totals -> order_analytics.

``analytics-repartition`` re-keys ``orders_app-order-status`` (key order_id) by country to
``orders_app-status-by-country`` (as ``group_by``), with the order's commit time as the
message timestamp.  ``analytics`` (key country) updates ``country_stats`` once per order
(ledger) and emits every change as ``CountryStats`` on ``order_analytics`` (key country).
Rules: :mod:`agents.analytics_rules`.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from agents.analytics_rules import WINDOW_S, apply_change, average_order_value, window_start
from agents.reconcile import take_country_fix
from orders_app.app import app
from orders_app.records import CountryStats, StatusChanged, encode
from orders_app.streams import decoded, send
from orders_app.topics import ORDER_ANALYTICS, ORDER_STATUS, STATUS_BY_COUNTRY
from tables.country_stats import analytics_ledger, country_stats


@app.agent(ORDER_STATUS, name="analytics-repartition")
async def by_country(stream: Any) -> None:
    # The notification agent owns this topic's dead letters.
    async for _event, change in decoded(stream, StatusChanged, "analytics", owner=False):
        await STATUS_BY_COUNTRY.send(
            key=change.country.encode(), value=encode(change), timestamp=change.created_at
        )


@app.agent(STATUS_BY_COUNTRY, name="analytics")
async def aggregate(stream: Any) -> None:
    async for _event, change in decoded(stream, StatusChanged, "analytics"):
        fixed = take_country_fix(change.country)
        if fixed is not None:
            country_stats[change.country] = fixed
        stats, ledger, changed = apply_change(
            country_stats.get(change.country), analytics_ledger.get(change.order_id), change
        )
        if not changed:
            continue
        analytics_ledger[change.order_id] = ledger
        country_stats[change.country] = stats
        start = window_start(change.created_at)
        window = stats["windows"][str(start)]
        await send(
            ORDER_ANALYTICS,
            change.country,
            CountryStats(
                country=change.country,
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
