"""Failover: two workers, SIGTERM one mid-stream; the other takes over its partitions
quickly (generation-0 LeaveGroup), GET /orders/{id} keeps answering within 10 s, and every
order still ends exactly once with the right outcome, one notification, exact analytics
and conserved stock."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import defaultdict

import orjson
import pytest

from tests.integration.test_analytics import (
    add_zero_stock_sku,
    assert_matches_truth,
    fulfilled_quantity,
    make_orders,
    produce,
    settled_countries,
    truth,
)
from tests.support import ahttp, eventually, read_topic

pytestmark = pytest.mark.integration


async def test_sigterm_one_of_two_workers_mid_stream(stack, workers, cdc) -> None:
    await add_zero_stock_sku(stack.dsn)
    survivor = workers.start()
    await workers.wait_ready(survivor)
    leaving = workers.start()
    await workers.wait_ready(leaving)
    await asyncio.sleep(1)
    await workers.wait_ready(survivor)

    orders, expected = make_orders(1500, seed=31, prefix="fo")
    first, rest = orders[:700], orders[700:]
    await produce(stack.bootstrap, first)
    feeder = asyncio.create_task(produce(stack.bootstrap, rest))
    await asyncio.sleep(1.0)

    # an order owned by the worker that is about to leave
    owned = None
    for o in first:
        status, _body, _ = await ahttp("GET", f"{leaving.url}/orders/{o.order_id}?local=1")
        if status == 200:
            owned = o.order_id
            break
    assert owned is not None, "the leaving worker should own some orders"

    stopped_at = time.monotonic()
    leaving.proc.send_signal(signal.SIGTERM)

    async def answered() -> float | None:  # seconds since the SIGTERM, once answered
        status, _body, _ = await ahttp("GET", f"{survivor.url}/orders/{owned}", timeout=12)
        return time.monotonic() - stopped_at if status == 200 else None

    answered_after = await eventually(answered, 30, 0.2, what=f"the survivor answering {owned}")
    assert answered_after < 10, answered_after
    await feeder
    assert leaving.proc.wait(20) is not None
    assert "LeaveGroup" in leaving.log.read_text()

    countries = await settled_countries(survivor.url, len(orders))
    assert_matches_truth(countries["countries"], truth(orders, expected))

    terminal: dict[str, set[str]] = defaultdict(set)
    for m in await read_topic(stack.bootstrap, "orders_app-status-by-country", idle=1.0):
        v = orjson.loads(m.value)
        if v["terminal"]:
            terminal[v["order_id"]].add(v["status"])
    assert set(terminal) == set(expected)
    assert all(terminal[o] == {s} for o, s in expected.items())

    notes: dict[str, set[str]] = defaultdict(set)
    for m in await read_topic(stack.bootstrap, "notification_sent", idle=0.5):
        v = orjson.loads(m.value)
        notes[v["order_id"]].add(v["template"])
    assert set(notes) == set(expected) and all(len(t) == 1 for t in notes.values())

    for sku in ("SKU-0001", "SKU-ZERO"):
        status, inv, _ = await ahttp("GET", f"{survivor.url}/inventory/{sku}")
        assert status == 200 and inv["available"] >= 0
        assert inv["available"] + inv["reserved"] == inv["total"]
    taken = fulfilled_quantity(orders, expected, "SKU-0001")
    status, inv, _ = await ahttp("GET", f"{survivor.url}/inventory/SKU-0001")
    assert inv["reserved"] == taken
