"""Bounded state: with ``ORDERS_ORDER_RETENTION`` short, per-order state expires (GET
/orders/{id} answers 404, the changelogs end in tombstones) while the per-country totals
and stock stay exactly what they were, also after a restart from the changelogs alone
(the rebuild adds the folded archive), and new orders keep flowing
(agents/retention.py, agents/retention_rules.py, tables/rebuild.py)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import time

import pytest

from tests.integration.test_analytics import (
    assert_matches_truth,
    make_orders,
    produce,
    settled_countries,
    truth,
)
from tests.support import ahttp, eventually, read_topic

pytestmark = pytest.mark.integration

SKUS = [f"SKU-{i:04d}" for i in range(1, 25)]
RETENTION_S = 8
PER_ORDER_CHANGELOGS = [
    "orders_app-order_status-changelog",
    "orders_app-stock_ledger-changelog",
    "orders_app-analytics_ledger-changelog",
]


async def inventory(url: str) -> dict:
    out = {}
    for sku in SKUS:
        status, inv, _ = await ahttp("GET", f"{url}/inventory/{sku}")
        out[sku] = (status, inv)
    return out


def expired_rows(metrics: str, table: str) -> float:
    found = re.search(rf'orders_state_expired_total\{{table="{table}"\}} ([0-9.e+]+)', metrics)
    return float(found.group(1)) if found else 0.0


async def all_gone(url: str, ids: list[str], timeout: float) -> list[str]:
    """Order ids still answered after ``timeout`` s (empty when every one is a 404)."""
    deadline = time.monotonic() + timeout
    left = list(ids)
    while left and time.monotonic() < deadline:
        answers = await asyncio.gather(*(ahttp("GET", f"{url}/orders/{oid}") for oid in left))
        left = [oid for oid, (status, _b, _h) in zip(left, answers, strict=True) if status != 404]
        if left:
            await asyncio.sleep(1)
    return left


async def test_per_order_state_expires_and_totals_survive_a_restart(
    stack, workers, cdc, tmp_path
) -> None:
    env = {"ORDERS_ORDER_RETENTION": str(RETENTION_S)}
    data = tmp_path / "state"
    first = workers.start(env, data_dir=data)
    await workers.wait_ready(first)
    orders, expected = make_orders(150, seed=31, prefix="ret")
    await produce(stack.bootstrap, orders)
    countries = await settled_countries(first.url, len(orders))
    assert_matches_truth(countries["countries"], truth(orders, expected))
    stock_before = await inventory(first.url)
    ids = [o.order_id for o in orders]

    left = await all_gone(first.url, ids, timeout=RETENTION_S * 6)
    assert not left, f"{len(left)} orders still answered, e.g. {left[:3]}"
    wanted = {
        "order_status": len(orders),
        "analytics_ledger": len(orders),
        "stock_ledger": 1,
    }
    got: dict[str, float] = {}

    async def all_expired() -> bool:
        nonlocal got
        _, metrics, _ = await ahttp("GET", f"{first.url}/metrics")
        got = {table: expired_rows(metrics, table) for table in wanted}
        return all(got[t] >= n for t, n in wanted.items())

    with contextlib.suppress(AssertionError):  # timed out: the assertion below tells how
        await eventually(all_expired, RETENTION_S * 4, 1)
    assert all(got[t] >= n for t, n in wanted.items()), (got, wanted)
    # the totals and the stock are what they were
    _, now_countries, _ = await ahttp("GET", f"{first.url}/analytics/countries")
    assert now_countries == countries
    assert await inventory(first.url) == stock_before

    # every per-order changelog ends each key with a tombstone
    for topic in PER_ORDER_CHANGELOGS:
        last: dict[bytes, bytes | None] = {}
        for m in await read_topic(stack.bootstrap, topic, idle=1.0):
            last[m.key] = m.value
        assert last, topic
        alive = [k for k, v in last.items() if v is not None]
        assert not alive, (topic, alive[:3])

    # a restart with no local state: recovery replays the tombstones and the archives,
    # the rebuild after it finds nothing to correct
    await asyncio.to_thread(workers.stop, first)
    shutil.rmtree(data)
    second = workers.start(env, data_dir=data)
    await workers.wait_ready(second)
    _, recovered, _ = await ahttp("GET", f"{second.url}/analytics/countries")
    assert recovered == countries
    assert await inventory(second.url) == stock_before
    status, _body, _ = await ahttp("GET", f"{second.url}/orders/{ids[0]}")
    assert status == 404
    assert "differ from their ledgers" not in second.log.read_text(errors="replace")

    # and new orders still flow and add up on top of the archive
    more, more_expected = make_orders(40, seed=32, prefix="ret2")
    await produce(stack.bootstrap, more)
    after = await settled_countries(second.url, len(orders) + len(more))
    assert_matches_truth(after["countries"], truth(orders + more, {**expected, **more_expected}))
    stock_mixed = await inventory(second.url)

    # a rebuild over archive + live entries (the new orders) finds nothing to correct
    await asyncio.to_thread(workers.stop, second)
    shutil.rmtree(data)
    third = workers.start(env, data_dir=data)
    await workers.wait_ready(third)
    _, again, _ = await ahttp("GET", f"{third.url}/analytics/countries")
    assert again == after
    assert await inventory(third.url) == stock_mixed
    assert "differ from their ledgers" not in third.log.read_text(errors="replace")
