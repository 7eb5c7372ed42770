"""Restart: stop the only worker, delete its data directory, start it again: every table
is rebuilt from its changelog exactly (this also proves recovery does not trust the
embedded broker's wrong partition end offsets)."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest

from tests.integration.test_analytics import (
    add_zero_stock_sku,
    make_orders,
    produce,
    settled_countries,
)
from tests.support import ahttp

pytestmark = pytest.mark.integration

SKUS = [f"SKU-{i:04d}" for i in range(1, 25)] + ["SKU-ZERO"]


async def snapshot(url: str, order_ids: list[str]) -> dict:
    async def one(path: str) -> tuple[str, object]:
        status, body, _ = await ahttp("GET", url + path)
        return path, (status, body)

    paths = [f"/orders/{oid}" for oid in order_ids] + [f"/inventory/{sku}" for sku in SKUS]
    paths += ["/analytics/countries"]
    out = {}
    for i in range(0, len(paths), 50):
        out.update(await asyncio.gather(*(one(p) for p in paths[i : i + 50])))
    return out


async def test_clean_restart_rebuilds_tables_from_changelogs(stack, workers, cdc, tmp_path) -> None:
    await add_zero_stock_sku(stack.dsn)
    data = tmp_path / "state"
    first = workers.start(data_dir=data)
    await workers.wait_ready(first)
    orders, expected = make_orders(800, seed=21, prefix="rs")
    await produce(stack.bootstrap, orders)
    await settled_countries(first.url, len(orders))
    ids = [o.order_id for o in orders]
    before = await snapshot(first.url, ids)
    assert all(v[0] == 200 for v in before.values()), [k for k, v in before.items() if v[0] != 200][
        :5
    ]
    assert {before[f"/orders/{o}"][1]["status"] for o in ids} == set(expected.values())

    await asyncio.to_thread(workers.stop, first)
    shutil.rmtree(data)
    started = time.monotonic()
    second = workers.start(data_dir=data)
    await workers.wait_ready(second)
    recovered = time.monotonic() - started
    after = await snapshot(second.url, ids)
    diff = [k for k in before if before[k] != after[k]]
    assert not diff, (diff[:5], [before[k] for k in diff[:2]], [after[k] for k in diff[:2]])
    assert recovered < 60

    # and the rebuilt state keeps working: new orders reserve from the recovered stock
    more, _more_expected = make_orders(100, seed=22, prefix="rs2")
    await produce(stack.bootstrap, more)
    await settled_countries(second.url, len(orders) + len(more))
    for sku in SKUS:
        status, inv, _ = await ahttp("GET", f"{second.url}/inventory/{sku}")
        assert status == 200
        assert inv["available"] + inv["reserved"] == inv["total"] and inv["available"] >= 0
