"""Postgres as the source of truth: POST /orders -> committed row -> Debezium-identical
envelope on orders_db.public.orders -> OrderCreated on order_created, with a CDC restart
in the middle; the envelope's shape against Debezium's documented PostgreSQL events;
restocks through CDC."""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import orjson
import pytest

from orders_app.cdc.builtin import CdcReader
from tests.support import ahttp, eventually, http, read_topic

pytestmark = pytest.mark.integration

# Debezium PostgreSQL connector, JSON converter with schemas disabled: the value payload of
# a create / update / delete event (Debezium 3.x: what the embedded connector produces),
# as field -> JSON type. Values such as LSNs and times differ; names and types must not.
DEBEZIUM_VALUE_FIELDS = {
    "before": (dict, type(None)),
    "after": (dict, type(None)),
    "source": dict,
    "op": str,
    "ts_ms": int,
    "ts_us": int,
    "ts_ns": int,
    "transaction": (dict, type(None)),
}
DEBEZIUM_SOURCE_FIELDS = {
    "version": str,
    "connector": str,
    "name": str,
    "ts_ms": int,
    "ts_us": int,
    "ts_ns": int,
    "snapshot": str,
    "db": str,
    "sequence": str,
    "schema": str,
    "table": str,
    "txId": int,
    "lsn": int,
    "xmin": (int, type(None)),
    "origin": (str, type(None)),  # Debezium 3.x
    "origin_lsn": (int, type(None)),
}


def body(i: int) -> dict:
    return {
        "customer_id": f"c-{i}",
        "country": "DE",
        "currency": "EUR",
        "lines": [{"sku": "SKU-0001", "quantity": 1 + i % 3, "unit_price": "11.99"}],
        "payment_method": "tok_visa",
    }


async def test_thousand_posted_orders_reach_order_created_across_a_cdc_restart(
    stack, workers
) -> None:
    worker = workers.start({"ORDERS_PARTITIONS": "4"})
    await workers.wait_ready(worker)
    reader = CdcReader(
        dsn=stack.dsn,
        bootstrap=stack.bootstrap,
        slot="restart_slot",
        poll_interval=0.2,
        fresh_broker=True,
    )
    await reader.start()

    def post(i: int) -> str:
        status, resp, headers = http(
            "POST", f"{worker.url}/orders", body(i), {"Idempotency-Key": f"k-{i}"}
        )
        assert status == 201, resp
        assert headers["Location"] == f"/orders/{resp['order_id']}"
        return resp["order_id"]

    with ThreadPoolExecutor(8) as pool:
        first = await asyncio.to_thread(lambda: list(pool.map(post, range(500))))
    await reader.stop()  # CDC down: the rows keep committing in Postgres
    with ThreadPoolExecutor(8) as pool:
        second = await asyncio.to_thread(lambda: list(pool.map(post, range(500, 1000))))
    reader = CdcReader(
        dsn=stack.dsn, bootstrap=stack.bootstrap, slot="restart_slot", poll_interval=0.2
    )
    await reader.start()  # resumes from the slot: no new snapshot
    try:
        ids = set(first) | set(second)
        assert len(ids) == 1000

        async def all_created() -> list | None:
            msgs = await read_topic(stack.bootstrap, "order_created", idle=1.0)
            return msgs if len({m.key for m in msgs}) >= 1000 else None

        created = await eventually(all_created, timeout=90)
        keys = Counter(m.key.decode() for m in created)
        assert set(keys) == ids  # none lost
        # The CDC reader, across its restart, publishes each row's change exactly once.
        envelopes = await read_topic(stack.bootstrap, "orders_db.public.orders", idle=0.5)
        per_row = Counter(orjson.loads(m.key)["id"] for m in envelopes)
        assert set(per_row) == ids and max(per_row.values()) == 1
        # order_created is at-least-once: a change the worker gets again (a rebalance
        # redelivers what it had not committed) is emitted again, identical; downstream
        # is idempotent per order id.
        values: dict[str, set[bytes]] = {}
        for m in created:
            values.setdefault(m.key.decode(), set()).add(m.value)
        assert all(len(v) == 1 for v in values.values())
        assert all(orjson.loads(m.value)["op"] == "c" for m in envelopes)

        conn = await asyncpg.connect(stack.dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM orders") == 1000
        finally:
            await conn.close()
        status, order, _ = await ahttp(
            "GET", f"{worker.url}/orders/{second[-1]}?wait=terminal&timeout=60", timeout=70
        )
        assert status == 200 and order["status"] == "FULFILLED"
    finally:
        await reader.stop()


def check_shape(value: dict, op: str) -> None:
    assert set(value) == set(DEBEZIUM_VALUE_FIELDS), set(value) ^ set(DEBEZIUM_VALUE_FIELDS)
    for name, kind in DEBEZIUM_VALUE_FIELDS.items():
        assert isinstance(value[name], kind), (name, value[name])
    assert value["op"] == op
    source = value["source"]
    assert set(source) == set(DEBEZIUM_SOURCE_FIELDS), set(source) ^ set(DEBEZIUM_SOURCE_FIELDS)
    for name, kind in DEBEZIUM_SOURCE_FIELDS.items():
        assert isinstance(source[name], kind), (name, source[name])
    assert source["connector"] == "postgresql" and source["name"] == "orders_db"
    assert source["schema"] == "public" and source["snapshot"] == "false"
    seq = orjson.loads(source["sequence"])
    assert isinstance(seq, list) and len(seq) == 2 and seq[1] == str(source["lsn"])
    assert value["ts_us"] // 1000 == value["ts_ms"] and value["ts_ns"] // 1000 == value["ts_us"]
    assert source["ts_us"] // 1000 == source["ts_ms"]


async def test_envelopes_match_debezium_insert_update_delete(stack, cdc) -> None:
    conn = await asyncpg.connect(stack.dsn)
    try:
        await conn.execute(
            "INSERT INTO orders (id, customer_id, country, currency, total, lines) VALUES "
            "('env-1', 'c-1', 'FR', 'EUR', 12.50, '[{\"sku\": \"SKU-0001\", \"quantity\": 1, \"unit_price\": \"12.50\"}]')"
        )
        await conn.execute("UPDATE orders SET customer_id = 'c-2' WHERE id = 'env-1'")
        await conn.execute("DELETE FROM orders WHERE id = 'env-1'")
    finally:
        await conn.close()

    async def three() -> list | None:
        msgs = [
            m
            for m in await read_topic(stack.bootstrap, "orders_db.public.orders", idle=0.5)
            if orjson.loads(m.key) == {"id": "env-1"}
        ]
        return msgs if len(msgs) >= 4 else None

    msgs = await eventually(three, timeout=20)
    assert msgs is not None
    insert, update, delete, tombstone = msgs
    ins, upd, dele = (orjson.loads(m.value) for m in (insert, update, delete))
    check_shape(ins, "c")
    check_shape(upd, "u")
    check_shape(dele, "d")
    assert ins["before"] is None
    after = ins["after"]
    assert after["id"] == "env-1" and after["total"] == "12.50"  # decimal.handling.mode=string
    assert isinstance(after["lines"], str) and orjson.loads(after["lines"])[0]["sku"] == "SKU-0001"
    assert after["created_at"].endswith("Z") and "T" in after["created_at"]  # ZonedTimestamp
    assert upd["before"]["customer_id"] == "c-1" and upd["after"]["customer_id"] == "c-2"
    assert dele["after"] is None and dele["before"]["id"] == "env-1"
    assert tombstone.value is None  # Debezium's tombstone after a delete
    assert ins["source"]["txId"] != upd["source"]["txId"]
    assert ins["source"]["lsn"] < upd["source"]["lsn"] < dele["source"]["lsn"]
    assert {m.partition for m in msgs} == {insert.partition}  # same key, same partition


async def test_snapshot_events_are_read_ops(stack, cdc) -> None:
    msgs = await read_topic(stack.bootstrap, "orders_db.public.products", idle=0.5)
    values = [orjson.loads(m.value) for m in msgs]
    assert len(values) == 24
    assert all(v["op"] == "r" and v["before"] is None for v in values)
    markers = [v["source"]["snapshot"] for v in values]
    assert set(markers) <= {
        "first",
        "first_in_data_collection",
        "true",
        "last_in_data_collection",
        "last",
    }
    # Debezium marks the first row of the whole snapshot "first" (of its first table,
    # orders, when it has rows), else the first row of a table "first_in_data_collection"
    assert "last" in markers and {"first", "first_in_data_collection"} & set(markers)
    assert {tuple(orjson.loads(m.key)) for m in msgs} == {("sku",)}


async def test_products_update_restocks_inventory(stack, workers, cdc) -> None:
    worker = workers.start()
    await workers.wait_ready(worker)

    async def stock() -> dict | None:
        status, inv, _ = await ahttp("GET", f"{worker.url}/inventory/SKU-0022")
        return inv if status == 200 else None

    before = await eventually(stock, timeout=30)
    assert before is not None
    conn = await asyncpg.connect(stack.dsn)
    try:
        await conn.execute("UPDATE products SET stock = stock + 7 WHERE sku = 'SKU-0022'")
    finally:
        await conn.close()

    async def raised() -> dict | None:
        inv = await stock()
        return inv if inv and inv["available"] == before["available"] + 7 else None

    after = await eventually(raised, timeout=30)
    assert after is not None, before
    assert after["reserved"] == before["reserved"]
