"""Inventory view: ``GET /inventory/{sku}`` -> {"sku", "available", "reserved"}, routed to
the worker owning the sku's partition of the ``stock`` table."""

from __future__ import annotations

from faust.web import Request, Response, View

from orders_app.app import app
from tables.corrections import stock_view
from tables.stock import stock
from web.routing import routed


@app.page("/inventory/{sku}")
class Inventory(View):
    @routed(stock, "sku")
    async def get(self, request: Request, sku: str) -> Response:
        entry = stock_view(sku)
        if entry is None:
            return self.error(404, f"sku {sku} not found")
        return self.json(
            {
                "sku": sku,
                "available": entry["available"],
                "reserved": entry["reserved"],
                "total": entry["total"],
            }
        )
