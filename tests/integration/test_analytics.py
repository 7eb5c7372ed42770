"""Per-country analytics (the ksqlDB replacement) and the web views over it: totals equal
the ground truth, windows add up, two workers answer alike, SSE pushes changes, and
POST + GET ?wait=terminal gives the terminal status in one call."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from decimal import Decimal

import aiohttp
import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from orders_app.embedded.generator import COUNTRIES as GENERATOR_COUNTRIES
from orders_app.records import OrderCreated, OrderLine, encode
from tests.support import ahttp, eventually

pytestmark = pytest.mark.integration

COUNTRIES = list(GENERATOR_COUNTRIES[:22])


def make_orders(n: int, seed: int, prefix: str) -> tuple[list[OrderCreated], dict[str, str]]:
    """Orders whose outcome is known in advance: normal -> FULFILLED, > 5000 -> REJECTED,
    decline token -> PAYMENT_FAILED, a sku with no stock -> CANCELLED."""
    rng = random.Random(seed)
    orders, expected = [], {}
    now = time.time()
    for i in range(n):
        kind = rng.choices(["ok", "big", "declined", "oos"], [80, 6, 8, 6])[0]
        price = Decimal(rng.choice(["9.99", "19.50", "120.00", "45.25"]))
        qty = 100 if kind == "big" else rng.randint(1, 4)
        price = Decimal("60.00") if kind == "big" else price
        lines = [OrderLine(sku="SKU-0001", quantity=qty, unit_price=price)]
        if kind == "oos":
            lines.append(OrderLine(sku="SKU-ZERO", quantity=1, unit_price=Decimal("1.00")))
        oid = f"{prefix}-{i}"
        orders.append(
            OrderCreated(
                order_id=oid,
                customer_id=f"{prefix}-c-{i}",
                country=COUNTRIES[i % len(COUNTRIES)],
                currency="EUR",
                total=sum((ln.unit_price * ln.quantity for ln in lines), Decimal("0")),
                lines=lines,
                payment_method="tok_chargeDeclined" if kind == "declined" else "tok_visa",
                created_at=now - rng.randint(0, 180),  # spread over a few minute windows
            )
        )
        expected[oid] = {
            "ok": "FULFILLED",
            "big": "REJECTED",
            "declined": "PAYMENT_FAILED",
            "oos": "CANCELLED",
        }[kind]
    return orders, expected


def truth(orders: list[OrderCreated], expected: dict[str, str]) -> dict[str, dict]:
    out: dict[str, dict] = defaultdict(
        lambda: {"orders": 0, "revenue": Decimal("0"), "by_status": Counter()}
    )
    for o in orders:
        t = out[o.country]
        t["orders"] += 1
        t["by_status"][expected[o.order_id]] += 1
        if expected[o.order_id] == "FULFILLED":
            t["revenue"] += o.total
    return out


def fulfilled_quantity(orders: list[OrderCreated], expected: dict[str, str], sku: str) -> int:
    """Units of ``sku`` that the fulfilled orders took (what the stock must show reserved)."""
    return sum(
        ln.quantity
        for o in orders
        if expected[o.order_id] == "FULFILLED"
        for ln in o.lines
        if ln.sku == sku
    )


async def produce(bootstrap: str, orders: list[OrderCreated]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futs = [
            await producer.send(
                "order_created",
                key=o.order_id.encode(),
                value=encode(o),
                timestamp_ms=int(o.created_at * 1000),
            )
            for o in orders
        ]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def add_zero_stock_sku(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO products (sku, name, price, stock) VALUES ('SKU-ZERO', 'none', 1, 0)"
        )
    finally:
        await conn.close()


async def settled_countries(url: str, n: int, timeout: float = 240) -> dict:
    body: dict = {}

    async def settled() -> dict | None:
        nonlocal body
        status, body, _ = await ahttp("GET", f"{url}/analytics/countries")
        if status == 200:
            done = sum(sum(c["by_status"].values()) for c in body["countries"].values())
            if done >= n:
                return body
        return None

    try:
        return await eventually(settled, timeout, 1)
    except AssertionError:
        raise AssertionError(f"analytics did not settle: {body}") from None


def assert_matches_truth(countries: dict, expected_truth: dict) -> None:
    assert set(countries) == set(expected_truth)
    for code, t in expected_truth.items():
        got = countries[code]
        assert got["orders"] == t["orders"], (code, got, t)
        assert Decimal(got["revenue"]) == t["revenue"], (code, got, t)
        assert got["by_status"] == dict(t["by_status"]), (code, got, t)
        fulfilled = t["by_status"]["FULFILLED"]
        aov = (t["revenue"] / fulfilled).quantize(Decimal("0.01")) if fulfilled else Decimal("0.00")
        assert Decimal(got["average_order_value"]) == aov


async def test_country_totals_equal_ground_truth_and_windows_add_up(stack, workers, cdc) -> None:
    await add_zero_stock_sku(stack.dsn)
    worker = workers.start()
    await workers.wait_ready(worker)
    orders, expected = make_orders(2000, seed=7, prefix="an")
    await produce(stack.bootstrap, orders)
    body = await settled_countries(worker.url, len(orders))
    expected_truth = truth(orders, expected)
    assert len(expected_truth) >= 20
    assert_matches_truth(body["countries"], expected_truth)

    for code in ("DE", "JP", "BR"):
        status, detail, _ = await ahttp("GET", f"{worker.url}/analytics/countries/{code}")
        assert status == 200
        assert sum(w["orders"] for w in detail["windows"]) == detail["orders"]
        assert sum(Decimal(w["revenue"]) for w in detail["windows"]) == Decimal(detail["revenue"])
        assert all(w["end"] - w["start"] == 60 and w["start"] % 60 == 0 for w in detail["windows"])
        assert len(detail["windows"]) >= 2
        assert any(w["closed"] for w in detail["windows"])
    status, _b, _ = await ahttp("GET", f"{worker.url}/analytics/countries/ZZ")
    assert status == 404


async def test_two_workers_give_the_same_correct_answers(stack, workers, cdc) -> None:
    await add_zero_stock_sku(stack.dsn)
    w1 = workers.start({"ORDERS_PARTITIONS": "4"})
    await workers.wait_ready(w1)
    w2 = workers.start({"ORDERS_PARTITIONS": "4"})
    await workers.wait_ready(w2)
    await asyncio.sleep(2)
    for w in (w1, w2):  # after the rebalance both are ready
        await workers.wait_ready(w)
    orders, expected = make_orders(600, seed=11, prefix="two")
    await produce(stack.bootstrap, orders)
    a = await settled_countries(w1.url, len(orders))
    b = await settled_countries(w2.url, len(orders))
    assert a == b
    assert_matches_truth(a["countries"], truth(orders, expected))
    # both workers own partitions, and either answers for any order
    rng = random.Random(3)
    for o in rng.sample(orders, 40):
        answers = []
        for w in (w1, w2):
            status, body, _ = await ahttp("GET", f"{w.url}/orders/{o.order_id}")
            assert status == 200, (w.url, body, w1.log_tail(40), w2.log_tail(40))
            answers.append(body)
        assert answers[0] == answers[1]
        assert answers[0]["status"] == expected[o.order_id]
    metadata = [await ahttp("GET", f"{w.url}/analytics/countries?local=1") for w in (w1, w2)]
    assert all(m[1]["countries"] for m in metadata), "each worker should hold some countries"


async def test_sse_pushes_changes_for_new_orders_and_post_waits_for_terminal(
    stack, workers, cdc
) -> None:
    worker = workers.start()
    await workers.wait_ready(worker)
    events: list[dict] = []
    got_one = asyncio.Event()

    async def listen() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{worker.url}/analytics/stream") as resp,
        ):
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            kind = None
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "country":
                    events.append(orjson.loads(line[6:]))
                    if events[-1]["country"] == "NZ":
                        got_one.set()

    task = asyncio.create_task(listen())
    try:
        await asyncio.sleep(0.5)
        body = {
            "customer_id": "c-sse",
            "country": "NZ",
            "currency": "NZD",
            "lines": [{"sku": "SKU-0001", "quantity": 1, "unit_price": "11.99"}],
            "payment_method": "tok_visa",
        }
        status, created, _ = await ahttp("POST", f"{worker.url}/orders", body)
        assert status == 201
        status, final, _ = await ahttp(
            "GET", f"{worker.url}/orders/{created['order_id']}?wait=terminal&timeout=10", timeout=20
        )
        assert status == 200 and final["status"] == "FULFILLED"
        await asyncio.wait_for(got_one.wait(), 15)
        nz = [e for e in events if e["country"] == "NZ"]
        assert nz[-1]["orders"] == 1
        await eventually(
            lambda: any(
                e["by_status"].get("FULFILLED")
                for e in nz + [e for e in events if e["country"] == "NZ"]
            ),
            10,
            0.1,
        )
        assert Decimal(events[-1]["revenue"]) == Decimal("11.99") or any(
            Decimal(e["revenue"]) == Decimal("11.99") for e in events if e["country"] == "NZ"
        )

        # a client that connects late first receives the current totals
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{worker.url}/analytics/stream") as resp,
        ):
            first = None
            async for raw in resp.content:
                line = raw.decode()
                if line.startswith("data: "):
                    first = orjson.loads(line[6:])
                    break
        assert (
            first is not None
            and first["country"] == "NZ"
            and first["by_status"] == {"FULFILLED": 1}
        )
    finally:
        task.cancel()
