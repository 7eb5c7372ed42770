"""The changelog cache (orders_app/faust_patches/changelog_cache.py) on a real worker and
the real broker: a table row written several times between two commits makes one
changelog record, the last record of every order is its document, and a worker killed
with SIGKILL discards its local stores at the next start and rebuilds them from the
changelogs (a clean stop keeps them), with nothing lost or counted twice."""

from __future__ import annotations

import asyncio
import signal
from decimal import Decimal

import orjson
import pytest

from bench.pipeline_costs import counters
from tables import loads_value
from tests.integration.test_analytics import make_orders, produce, settled_countries
from tests.support import ahttp, eventually, read_topic

pytestmark = pytest.mark.integration

CHANGELOG = "orders_app-order_status-changelog"
DISCARDED = "did not stop cleanly"


async def outcome(url: str, order_ids: list[str]) -> dict[str, object]:
    """What must survive any restart: each order's status, the stock and the totals
    (not the documents' timestamps: an event delivered again is applied at a new time)."""
    out: dict[str, object] = {}
    for oid in order_ids:
        status, body, _ = await ahttp("GET", f"{url}/orders/{oid}")
        out[oid] = (status, body.get("status") if status == 200 else None)
    status, inv, _ = await ahttp("GET", f"{url}/inventory/SKU-0001")
    out["stock"] = (status, inv.get("available"), inv.get("reserved"), inv.get("total"))
    _status, body, _ = await ahttp("GET", f"{url}/analytics/countries")
    out["countries"] = {
        country: (c["orders"], Decimal(c["revenue"]), c["by_status"])
        for country, c in body["countries"].items()
    }
    return out


async def test_one_changelog_record_per_row_between_commits(stack, workers, cdc) -> None:
    worker = workers.start()
    await workers.wait_ready(worker)
    orders, expected = make_orders(120, seed=51, prefix="cc")
    for i in range(0, len(orders), 10):  # a steady pace: each order done within a commit
        await produce(stack.bootstrap, orders[i : i + 10])
        await asyncio.sleep(0.25)
    await settled_countries(worker.url, len(orders))

    async def all_in_changelog() -> dict[str, dict] | None:
        last: dict[str, dict] = {}
        for m in await read_topic(stack.bootstrap, CHANGELOG, idle=1.0):
            last[m.key.decode()] = loads_value(m.value)
        done = all(last.get(o.order_id, {}).get("status") == expected[o.order_id] for o in orders)
        return last if done else None

    last = await eventually(all_in_changelog, 30, 1.0, what="every outcome in the changelog")
    records = len(await read_topic(stack.bootstrap, CHANGELOG, idle=1.0))
    writes = (await asyncio.to_thread(counters, worker.url)).table_writes["order_status"]
    # Without the cache every write is a record (records == writes, about three per order).
    assert records < writes, (records, writes)
    assert records <= 2 * len(orders), (records, writes, len(orders))
    for o in orders:  # the record that is left of each order is its document
        status, body, _ = await ahttp("GET", f"{worker.url}/orders/{o.order_id}")
        assert status == 200 and last[o.order_id]["status"] == body["status"]


async def test_a_killed_worker_rebuilds_its_stores_a_stopped_one_keeps_them(
    stack, workers, cdc, tmp_path
) -> None:
    data = tmp_path / "state"
    first = workers.start(data_dir=data)
    await workers.wait_ready(first)
    orders, _expected = make_orders(200, seed=52, prefix="ck")
    ids = [o.order_id for o in orders]
    await produce(stack.bootstrap, orders[:100])
    await settled_countries(first.url, 100)

    # A clean stop leaves the marker: the next start keeps the stores.
    await asyncio.to_thread(workers.stop, first)
    assert list(data.rglob(".clean-stop"))
    second = workers.start(data_dir=data)
    await workers.wait_ready(second)
    assert DISCARDED not in second.log.read_text()
    assert not list(data.rglob(".clean-stop"))  # consumed: a crash from now on leaves none

    # SIGKILL right after the last orders settle: some writes are not in the changelogs
    # yet; the next start must not trust the stores the crash left.
    await produce(stack.bootstrap, orders[100:])
    await settled_countries(second.url, len(orders))
    before = await outcome(second.url, ids)
    await asyncio.to_thread(workers.stop, second, signal.SIGKILL)
    third = workers.start(data_dir=data)
    await workers.wait_ready(third)
    assert DISCARDED in third.log.read_text()

    async def same() -> bool:
        return await outcome(third.url, ids) == before

    try:
        await eventually(same, 60, 1.0, what="the outcome as before the kill")
    except AssertionError:
        after = await outcome(third.url, ids)
        diff = {k: (before[k], after.get(k)) for k in before if before[k] != after.get(k)}
        raise AssertionError(orjson.dumps(diff, default=str).decode()[:2000]) from None
