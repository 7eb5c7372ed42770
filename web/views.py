"""View shapers: table values -> the JSON bodies of the HTTP API (web/*.py).

Rule: what a client sees is shaped here, beside the views, not in the agents: ``GET
/orders/{id}`` (:func:`order_view`), ``/analytics/countries[/{code}]`` (:func:`totals_view`,
:func:`windows_view`, :func:`merge_totals` for the answers of several workers).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from orders_app.country_totals import CENTS, WINDOW_S, average_order_value


def order_view(doc: dict[str, Any]) -> dict[str, Any]:
    """The ``GET /orders/{id}`` body."""
    return {
        "order_id": doc["order_id"],
        "status": doc["status"],
        "customer_id": doc["customer_id"],
        "country": doc["country"],
        "currency": doc["currency"],
        "total": doc["total"],
        "lines": doc["lines"],
        "history": doc["history"],
        "reasons": doc["reasons"],
    }


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
