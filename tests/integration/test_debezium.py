"""Real Debezium in the embedded stack (orders_app/cdc/debezium.py, orders_app/cdc/debezium_connect.py):
the built-in reader's envelopes equal real Debezium's field by field; the connector's
offsets live as long as the broker (a crash resumes, a fresh broker gets a full snapshot);
a crashed Debezium is restarted by its supervisor."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from orders_app.admin import ensure_topics, registry_topic_names
from orders_app.cdc.builtin import CdcReader
from orders_app.cdc.debezium import DebeziumConnect
from orders_app.cdc.debezium_connect import WORKER_DEFAULTS
from orders_app.embedded.servers import EmbeddedBroker
from tests.conftest import drop_slot
from tests.support import eventually, read_topic

pytestmark = pytest.mark.integration

ORDERS, PRODUCTS = "orders_db.public.orders", "orders_db.public.products"
# Differ between any two runs of the same change: when it was read, and by which build.
TIMING = {"ts_ms", "ts_us", "ts_ns"}
# A snapshot is taken at a moment of its own: its position differs between two readers.
SNAPSHOT_POSITION = {"lsn", "txId", "sequence"}


def normalised(value: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in value.items() if k not in TIMING}
    source = {k: v for k, v in value["source"].items() if k not in TIMING and k != "version"}
    if value["op"] == "r":
        source = {k: v for k, v in source.items() if k not in SNAPSHOT_POSITION}
    out["source"] = source
    return out


async def events(bootstrap: str, topic: str) -> dict[Any, list[Any]]:
    """Per key, the values in partition order (None for a tombstone)."""
    by_key: dict[Any, list[Any]] = defaultdict(list)
    for m in await read_topic(bootstrap, topic, idle=0.7):
        by_key[m.key].append(None if m.value is None else orjson.loads(m.value))
    return by_key


async def new_broker(tmp_root: Path) -> EmbeddedBroker:
    broker = EmbeddedBroker(log_path=tmp_root / f"broker-{uuid.uuid4().hex[:6]}.log")
    await broker.start()
    await ensure_topics(broker.bootstrap, registry_topic_names(), 4)
    return broker


async def insert_order(dsn: str, oid: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO orders (id, customer_id, country, currency, total, lines) VALUES "
            "($1, 'c-7', 'FR', 'EUR', 12.50, "
            '\'[{"sku": "SKU-0001", "quantity": 1, "unit_price": "12.50"}]\')',
            oid,
        )
    finally:
        await conn.close()


def ops_of(by_key: dict[Any, list[Any]], oid: str) -> list[str | None]:
    return [None if v is None else v["op"] for v in by_key.get(orjson.dumps({"id": oid}), [])]


async def test_builtin_envelopes_equal_real_debeziums(stack, tmp_path: Path, tmp_root) -> None:
    """The same changes through both readers (each to a broker of its own): every message,
    key and value, is equal except the connector version and the timing fields (and, for
    snapshot reads, the snapshot's position in the WAL)."""
    await insert_order(stack.dsn, "eq-snap")
    other = await new_broker(tmp_root)
    slots = ["s_" + uuid.uuid4().hex[:10] for _ in range(2)]
    dbz = DebeziumConnect(
        dsn=stack.dsn,
        bootstrap=stack.bootstrap,
        work_dir=tmp_path / "dbz",
        overrides={"slot.name": slots[0]},
    )
    builtin = CdcReader(dsn=stack.dsn, bootstrap=other.bootstrap, slot=slots[1], fresh_broker=True)
    try:
        await dbz.start()
        await builtin.start()
        conn = await asyncpg.connect(stack.dsn)
        try:
            await conn.execute(
                "INSERT INTO orders (id, customer_id, country, currency, total, lines) VALUES "
                "('eq-1', 'c-1', 'FR', 'EUR', 12.50, "
                '\'[{"sku": "SKU-0001", "quantity": 1, "unit_price": "12.50"}]\')'
            )
            async with conn.transaction():  # two changes of one transaction
                await conn.execute("UPDATE orders SET customer_id = 'c-2' WHERE id = 'eq-1'")
                await conn.execute("UPDATE products SET stock = stock + 3 WHERE sku = 'SKU-0005'")
            await conn.execute("DELETE FROM orders WHERE id = 'eq-1'")
        finally:
            await conn.close()

        async def both(topic: str, count: int) -> Any:
            got = [await events(b, topic) for b in (stack.bootstrap, other.bootstrap)]
            sizes = [sum(len(v) for v in g.values()) for g in got]
            return got if all(s >= count for s in sizes) else None

        orders = await eventually(lambda: both(ORDERS, 5), timeout=30)  # r + c, u, d, tombstone
        products = await eventually(lambda: both(PRODUCTS, 25), timeout=30)  # 24 r + u
        assert orders is not None and products is not None
        for real, ours in (orders, products):
            assert set(real) == set(ours)
            for key in real:
                assert len(real[key]) == len(ours[key]), key
                for a, b in zip(real[key], ours[key], strict=True):
                    if a is None or b is None:
                        assert a is b is None, (key, a, b)
                        continue
                    na, nb = normalised(a), normalised(b)
                    flat_a, flat_b = {}, {}
                    for flat, n in ((flat_a, na), (flat_b, nb)):
                        for part in ("source", "before", "after"):
                            for k, v in (n[part] or {}).items():
                                flat[f"{part}.{k}"] = v
                        flat.update(
                            {k: v for k, v in n.items() if k not in ("source", "before", "after")}
                        )
                    differ = {
                        k: (flat_a.get(k), flat_b.get(k))
                        for k in set(flat_a) | set(flat_b)
                        if flat_a.get(k) != flat_b.get(k)
                    }
                    trail = [
                        [
                            (
                                v["op"],
                                v["source"]["lsn"],
                                v["source"]["sequence"],
                                v["source"]["txId"],
                            )
                            for v in side[key]
                            if v
                        ]
                        for side in (real, ours)
                    ]
                    assert nb == na, (trail, key, a["op"], differ)
        real_orders = orders[0]
        assert ops_of(real_orders, "eq-1") == ["c", "u", "d", None]
        assert ops_of(real_orders, "eq-snap") == ["r"]
    finally:
        await builtin.stop()
        await dbz.stop()
        await other.stop()


async def test_offsets_live_as_long_as_the_broker(stack, tmp_path: Path, tmp_root) -> None:
    """SIGKILL: the supervisor restarts Debezium, which resumes from its offsets on the
    broker (no second snapshot, the order written meanwhile arrives as a create); on a
    fresh broker the same connector and slot take a full snapshot again."""
    slot = "s_" + uuid.uuid4().hex[:10]
    await insert_order(stack.dsn, "off-0")
    dbz = DebeziumConnect(
        dsn=stack.dsn,
        bootstrap=stack.bootstrap,
        work_dir=tmp_path / "dbz",
        overrides={"slot.name": slot},
        report=lambda line: None,
    )
    fresh: EmbeddedBroker | None = None
    second: DebeziumConnect | None = None
    try:
        await dbz.start()
        await insert_order(stack.dsn, "off-1")

        async def seen(bootstrap: str, oid: str, op: str) -> Any:
            by_key = await events(bootstrap, ORDERS)
            return by_key if op in ops_of(by_key, oid) else None

        assert await eventually(lambda: seen(stack.bootstrap, "off-1", "c"))
        # one offset commit (the worker's offset.flush.interval.ms)
        await asyncio.sleep(int(WORKER_DEFAULTS["offset.flush.interval.ms"]) / 1000 + 0.5)
        pid = dbz.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await insert_order(stack.dsn, "off-2")

        async def restarted() -> bool:
            return dbz.pid not in (None, pid) and dbz.ready_count() >= 2

        assert await eventually(restarted, timeout=60), dbz.log_path.read_text()[-3000:]
        by_key = await eventually(lambda: seen(stack.bootstrap, "off-2", "c"))
        assert by_key, dbz.log_path.read_text()[-3000:]
        assert ops_of(by_key, "off-0") == ["r"]  # no second snapshot on the same broker
        products = await events(stack.bootstrap, PRODUCTS)
        assert sum(len(v) for v in products.values()) == 24
        assert dbz.failure is None

        # The embedded stack restarted: a new broker has no offsets -> a full snapshot
        await dbz.stop()
        fresh = await new_broker(tmp_root)
        second = DebeziumConnect(
            dsn=stack.dsn,
            bootstrap=fresh.bootstrap,
            work_dir=tmp_path / "dbz2",
            overrides={"slot.name": slot},
        )
        await second.start()
        by_key = await eventually(lambda: seen(fresh.bootstrap, "off-2", "r"))
        assert by_key
        for oid in ("off-0", "off-1", "off-2"):
            assert ops_of(by_key, oid) == ["r"], oid
        products = await eventually(
            lambda: _at_least(events(fresh.bootstrap, PRODUCTS), 24), timeout=30
        )
        assert products is not None
    finally:
        await dbz.stop()
        if second is not None:
            await second.stop()
        if fresh is not None:
            await fresh.stop()


async def _at_least(got: Any, count: int) -> Any:
    by_key = await got
    return by_key if sum(len(v) for v in by_key.values()) >= count else None


async def test_offsets_the_server_cannot_serve_mean_a_new_snapshot(stack, tmp_path: Path) -> None:
    """The broker kept Debezium's offsets but the slot behind them is gone (dropped, or a
    fresh Postgres): ``snapshot.mode=when_needed`` snapshots again instead of failing."""
    await insert_order(stack.dsn, "wn-0")
    first = DebeziumConnect(
        dsn=stack.dsn,
        bootstrap=stack.bootstrap,
        work_dir=tmp_path / "dbz",
        overrides={"slot.name": "s_" + uuid.uuid4().hex[:10]},
    )
    await first.start()

    async def ops(oid: str, want: list[str | None]) -> Any:
        return ops_of(await events(stack.bootstrap, ORDERS), oid) == want

    await eventually(lambda: ops("wn-0", ["r"]), what="the first snapshot")
    await asyncio.sleep(1.5)  # its offsets committed to the broker
    await first.stop()
    await drop_slot(stack.dsn, first.slot)
    second = DebeziumConnect(
        dsn=stack.dsn,
        bootstrap=stack.bootstrap,
        work_dir=tmp_path / "dbz2",
        overrides={"slot.name": "s_" + uuid.uuid4().hex[:10]},
        report=lambda line: None,
    )
    try:
        await second.start()
        await insert_order(stack.dsn, "wn-1")
        await eventually(lambda: ops("wn-0", ["r", "r"]), what="a second snapshot")
        await eventually(lambda: ops("wn-1", ["c"]), what="streaming after it")
        assert second.failure is None
    finally:
        await second.stop()
        await drop_slot(stack.dsn, second.slot)
