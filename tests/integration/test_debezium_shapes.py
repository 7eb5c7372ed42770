"""Both JsonConverter settings of real Debezium, end to end through a real worker: with
``schemas.enable=true`` (``{"schema", "payload"}`` around keys and values) and ``false``
(the connector JSON's), a snapshot read, a created order and a products update each take
effect, and a delete with its tombstone is no dead letter (agents/cdc.py,
agents/cdc_rules.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from tests.conftest import drop_slot, start_debezium
from tests.support import ahttp, eventually, read_topic

pytestmark = pytest.mark.integration

ORDERS = "orders_db.public.orders"


async def insert(conn: asyncpg.Connection, oid: str, sku: str) -> None:
    await conn.execute(
        "INSERT INTO orders (id, customer_id, country, currency, total, lines) VALUES "
        "($1, 'c-42', 'DE', 'EUR', 39.98, $2::jsonb)",
        oid,
        orjson.dumps([{"sku": sku, "quantity": 2, "unit_price": "19.99"}]).decode(),
    )


async def terminal(url: str, oid: str) -> dict[str, Any]:
    status, body, _ = await ahttp("GET", f"{url}/orders/{oid}?wait=terminal&timeout=60", timeout=70)
    assert status == 200, (oid, body)
    return dict(body)


@pytest.mark.parametrize("schemas", ["true", "false"])
async def test_each_converter_setting_takes_effect(
    stack, workers, tmp_path: Path, schemas: str
) -> None:
    tag = "on" if schemas == "true" else "off"
    snapshot, created, deleted = f"dbz-{tag}-r", f"dbz-{tag}-c", f"dbz-{tag}-d"
    conn = await asyncpg.connect(stack.dsn)
    worker = workers.start()
    dbz = await start_debezium(
        stack,
        tmp_path / "debezium",
        **{"key.converter.schemas.enable": schemas, "value.converter.schemas.enable": schemas},
    )
    try:
        await insert(conn, snapshot, "SKU-0001")  # may land in the snapshot or the stream
        await workers.wait_ready(worker)
        body = await terminal(worker.url, snapshot)
        assert body["status"] == "FULFILLED" and body["total"] == "39.98", body

        await conn.execute("UPDATE products SET stock = 150 WHERE sku = 'SKU-0001'")

        async def restocked() -> Any:
            status, inv, _ = await ahttp("GET", f"{worker.url}/inventory/SKU-0001")
            return inv if status == 200 and inv["total"] == 150 else None

        inv = await eventually(restocked, 30, what="the products update setting SKU-0001 to 150")
        assert inv["available"] == 150 - 2

        await insert(conn, created, "SKU-0001")
        body = await terminal(worker.url, created)
        assert body["status"] == "FULFILLED" and body["customer_id"] == "c-42", body
        _, inv, _ = await ahttp("GET", f"{worker.url}/inventory/SKU-0001")
        assert inv["available"] == 150 - 2 * 2

        await insert(conn, deleted, "SKU-0002")
        await conn.execute("DELETE FROM orders WHERE id = $1", deleted)
        await terminal(worker.url, deleted)

        async def tombstone() -> Any:
            msgs = await read_topic(stack.bootstrap, ORDERS, idle=0.5)
            mine = [m for m in msgs if deleted.encode() in m.key]
            return mine if mine and mine[-1].value is None else None

        msgs = await eventually(tombstone, 30, what="a tombstone after the delete")
        first = orjson.loads(msgs[0].value)
        assert ("schema" in first) is (schemas == "true")  # the converter setting took effect
        assert ("schema" in orjson.loads(msgs[0].key)) is (schemas == "true")
    finally:
        await dbz.stop()
        await drop_slot(stack.dsn, dbz.slot)
        await conn.close()
    letters = [
        orjson.loads(m.value) for m in await read_topic(stack.bootstrap, "dead_letters", idle=1.0)
    ]
    assert letters == []
