"""The per-country totals value (table ``country_stats``), shared by the analytics rules
(agents/analytics_rules.py), the ``order_analytics`` output and the web views: its window
size and the one figure derived from it, the average order value.  Pure: no Faust."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from orders_app.records import OrderStatus

WINDOW_S = 60  # the analytics windows: 1-minute tumbling, keyed by their start
CENTS = Decimal("0.01")


def average_order_value(stats: dict[str, Any]) -> Decimal:
    """Revenue per fulfilled order (revenue counts fulfilled orders only)."""
    fulfilled = int(stats["by_status"].get(OrderStatus.FULFILLED, 0))
    if not fulfilled:
        return Decimal("0.00")
    revenue = Decimal(stats["revenue"])
    return (revenue / fulfilled).quantize(CENTS)
