"""A restart on a fresh broker never runs an order again (issue 16): orders flow through
Postgres and CDC, the outcome sink records them; then a new broker, a new worker with a
clean state and a new CDC snapshot.  Every recorded order is restored from Postgres -
status, analytics, stock held, notification record - with no new charge, reservation,
refund, notification or fraud check on the new broker; a new order goes through at
once, not behind a replay."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from orders_app.admin import ensure_topics, registry_topic_names
from orders_app.cdc.builtin import CdcReader
from orders_app.cdc.debezium import DebeziumConnect
from orders_app.embedded.servers import EmbeddedBroker
from tests.conftest import Stack, WorkerPool, drop_slot
from tests.integration.test_analytics import (
    add_zero_stock_sku,
    assert_matches_truth,
    fulfilled_quantity,
    make_orders,
    settled_countries,
    truth,
)
from tests.integration.test_crash import insert_paced
from tests.integration.test_sink import recorded
from tests.support import ahttp, read_topic

pytestmark = pytest.mark.integration

EFFECTS = (
    "payment_successful",
    "payment_failed",
    "payment_refunded",
    "inventory_updated",
    "notification_sent",
    "order_validated",
    "fraud_alerts",
    "order_created",
)


async def test_a_fresh_broker_restores_recorded_orders_without_running_them_again(
    stack, workers, cdc, tmp_path: Path, tmp_root: Path
) -> None:
    await add_zero_stock_sku(stack.dsn)
    first = workers.start(data_dir=tmp_path / "first")
    await workers.wait_ready(first)
    orders, expected = make_orders(300, seed=41, prefix="rst")
    await insert_paced(stack.dsn, orders, rate=1000)
    await settled_countries(first.url, len(orders))
    ids = [o.order_id for o in orders]
    await recorded(stack.dsn, ids)
    await asyncio.to_thread(workers.stop, first)
    await cdc.stop()

    # The embedded stack restarted: a new (empty) broker, clean worker state, a snapshot.
    broker = EmbeddedBroker(log_path=tmp_root / f"broker-{uuid.uuid4().hex[:6]}.log")
    await broker.start()
    # The same CDC as before on the new broker: real Debezium with its slot (its offsets
    # lived on the old broker, so it snapshots again), or the built-in reader.
    reader: Any
    if isinstance(cdc, DebeziumConnect):
        reader = DebeziumConnect(
            dsn=stack.dsn,
            bootstrap=broker.bootstrap,
            work_dir=tmp_path / "debezium-2",
            overrides={"slot.name": cdc.slot},
        )
    else:
        reader = CdcReader(
            dsn=stack.dsn,
            bootstrap=broker.bootstrap,
            slot="s_" + uuid.uuid4().hex[:10],
            poll_interval=0.2,
            fresh_broker=True,
        )
    pool = WorkerPool(Stack(bootstrap=broker.bootstrap, dsn=stack.dsn), tmp_path / "second")
    (tmp_path / "second").mkdir()
    try:
        await ensure_topics(broker.bootstrap, registry_topic_names(), 4)
        await reader.start()
        second = pool.start()
        await pool.wait_ready(second)
        countries = await settled_countries(second.url, len(orders), timeout=120)
        assert_matches_truth(countries["countries"], truth(orders, expected))

        # a new order right after the restart: through at once
        new_orders, new_expected = make_orders(1, seed=42, prefix="after")
        new = new_orders[0]
        started = time.monotonic()
        await insert_paced(stack.dsn, new_orders, rate=1000)
        status, body, _ = await ahttp(
            "GET", f"{second.url}/orders/{new.order_id}?wait=terminal&timeout=30", timeout=40
        )
        assert status == 200 and body["status"] == new_expected[new.order_id], body
        assert time.monotonic() - started < 15

        # every recorded order has its status back, none ran again
        for oid in ids[:40]:
            status, body, _ = await ahttp("GET", f"{second.url}/orders/{oid}")
            assert status == 200 and body["status"] == expected[oid], (oid, body)
        for topic in EFFECTS:
            again = [
                orjson.loads(m.value)["order_id"]
                for m in await read_topic(broker.bootstrap, topic, idle=1.0)
                if m.value is not None
            ]
            assert not [oid for oid in again if oid.startswith("rst")], (topic, again[:5])
        restores = await read_topic(broker.bootstrap, "orders_app-order-restores", idle=1.0)
        assert {m.key.decode() for m in restores} == set(ids)

        # stock: the catalogue level, minus what the recorded fulfilled orders hold
        all_orders, all_expected = orders + new_orders, {**expected, **new_expected}
        conn = await asyncpg.connect(stack.dsn)
        try:
            levels = {
                r["sku"]: r["stock"] for r in await conn.fetch("SELECT sku, stock FROM products")
            }
        finally:
            await conn.close()
        for sku, level in levels.items():
            status, inv, _ = await ahttp("GET", f"{second.url}/inventory/{sku}")
            assert status == 200, (sku, inv)
            held = fulfilled_quantity(all_orders, all_expected, sku)
            assert (inv["total"], inv["reserved"]) == (level, held), (sku, inv)
    finally:
        await asyncio.to_thread(pool.stop_all)
        await reader.stop()
        await drop_slot(stack.dsn, reader.slot)
        await broker.stop()
