"""A cold start where orders overtake the catalogue: the worker runs with no CDC at all,
so no restock ever reaches the stock agent, yet an order for a sku the Postgres
catalogue has is fulfilled (its level is read from Postgres), and one for a sku it does
not have is still out of stock.  Before: every such order was CANCELLED ("no stock record
for the sku here"); a supervised run saw it when orders reached a stock partition before
the products snapshot did."""

from __future__ import annotations

import pytest

from tests.integration.test_foundation import order, produce
from tests.support import ahttp, eventually

pytestmark = pytest.mark.integration


async def test_orders_before_the_catalogue_reaches_the_stock_agent(stack, workers) -> None:
    worker = workers.start()
    await workers.wait_ready(worker)
    _s, before, _ = await ahttp("GET", f"{worker.url}/inventory/SKU-0001")
    assert _s == 404, before  # no CDC: the stock agent has never seen the catalogue
    await produce(stack.bootstrap, order("cold-1", "SKU-0001", 2), order("cold-2", "SKU-NONE", 1))

    async def statuses() -> dict[str, str] | None:
        out = {}
        for oid in ("cold-1", "cold-2"):
            status, body, _ = await ahttp("GET", f"{worker.url}/orders/{oid}")
            if status != 200 or body["status"] not in ("FULFILLED", "CANCELLED"):
                return None
            out[oid] = body["status"]
        return out

    assert await eventually(statuses, 60, 0.5, what="both orders terminal") == {
        "cold-1": "FULFILLED",
        "cold-2": "CANCELLED",
    }
    status, inv, _ = await ahttp("GET", f"{worker.url}/inventory/SKU-0001")
    assert status == 200 and inv["reserved"] == 2, inv
    assert inv["available"] + inv["reserved"] == inv["total"] > 2
    assert "catalogue level" in worker.log.read_text()
