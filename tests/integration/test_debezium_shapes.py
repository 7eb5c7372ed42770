"""Debezium's JsonConverter shapes through a real worker: with ``schemas.enable=true``
(its default: ``{"schema", "payload"}`` around keys and values) and ``false``, a created
order, a snapshot read and a products update each take effect, and a delete with its
tombstone is no dead letter (agents/cdc.py, agents/cdc_rules.py)."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.support import ahttp, read_topic

pytestmark = pytest.mark.integration

SAMPLES = json.loads(
    (Path(__file__).resolve().parent.parent / "data" / "debezium" / "samples.json").read_text()
)
ORDERS, PRODUCTS = "orders_db.public.orders", "orders_db.public.products"


def _payload(part: Any) -> Any:
    return part["payload"] if isinstance(part, dict) and "schema" in part else part


def sample(name: str, shape: str, order_id: str | None = None) -> tuple[bytes, bytes | None]:
    """A stored sample as (key, value) bytes, its order id replaced by ``order_id``."""
    event = copy.deepcopy(SAMPLES[name][shape])
    if order_id is not None:
        _payload(event["key"])["id"] = order_id
        value = _payload(event["value"])
        for row in (value.get("before"), value.get("after")):
            if row:
                row["id"] = order_id
    value_bytes = None if event["value"] is None else orjson.dumps(event["value"])
    return orjson.dumps(event["key"]), value_bytes


async def _until(probe: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await probe()
        if got:
            return got
        await asyncio.sleep(0.3)
    return None


@pytest.mark.parametrize("shape", ["schemas_enabled", "schemas_disabled"])
async def test_each_converter_shape_takes_effect(stack, workers, cdc, shape: str) -> None:
    worker = workers.start()
    await workers.wait_ready(worker)
    tag = "on" if shape == "schemas_enabled" else "off"
    created, snapshot, deleted = f"dbz-{tag}-c", f"dbz-{tag}-r", f"dbz-{tag}-d"
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap)
    await producer.start()
    try:
        key, value = sample("products_update", shape)
        await producer.send_and_wait(PRODUCTS, key=key, value=value)

        async def restocked() -> Any:
            status, inv, _ = await ahttp("GET", f"{worker.url}/inventory/SKU-0001")
            return inv if status == 200 and inv["available"] == 150 else None

        assert await _until(restocked, 30), "the products update did not set SKU-0001 to 150"

        for name, oid in (("orders_create", created), ("orders_snapshot", snapshot)):
            key, value = sample(name, shape, oid)
            await producer.send_and_wait(ORDERS, key=key, value=value)
        key, value = sample("orders_delete", shape, deleted)
        await producer.send_and_wait(ORDERS, key=key, value=value)
        await producer.send_and_wait(ORDERS, key=key, value=None)  # Debezium's tombstone
    finally:
        await producer.stop()

    for oid in (created, snapshot):
        status, body, _ = await ahttp(
            "GET", f"{worker.url}/orders/{oid}?wait=terminal&timeout=60", timeout=70
        )
        assert status == 200 and body["status"] == "FULFILLED", (oid, body)
        assert body["total"] == "39.98" and body["customer_id"] == "c-42"
    status, inv, _ = await ahttp("GET", f"{worker.url}/inventory/SKU-0001")
    assert inv["available"] == 150 - 2 * 2
    letters = [
        orjson.loads(m.value) for m in await read_topic(stack.bootstrap, "dead_letters", idle=1.0)
    ]
    assert letters == []
