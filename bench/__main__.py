"""Benchmark harness: ``make bench`` (``BENCH_QUICK=1`` for a short run).

Everything runs on the embedded broker (Tansu) and PostgreSQL, started fresh for each
measurement, in one run so the figures are comparable:

1. ceiling: raw aiokafka produce, and consume + JSON decode, of OrderCreated messages;
2. pipeline: orders/s from ``order_created`` to terminal status with one worker;
3. latency: p50/p95/p99 from Postgres commit to terminal status at a fixed offered rate
   (through the embedded CDC);
4. start-up: worker start to first processed event; worker RSS after the pipeline run.

Each figure is measured ``RUNS`` times and reported as min/median/max with machine info;
results go to ``bench/results.json`` as ``[{"name", "unit", "min", "median", "max", "runs"}]``
(machine info in ``bench/machine.json``).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from orders_app.admin import ensure_topics, registry_topic_names
from orders_app.cdc import CdcReader
from orders_app.db import migrate, seed_catalogue
from orders_app.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from orders_app.records import OrderCreated, OrderLine, encode

QUICK = os.environ.get("BENCH_QUICK") == "1"
RUNS = 1 if QUICK else 3
CEILING_N = 20_000 if QUICK else 100_000
PIPELINE_N = 2_000 if QUICK else 10_000
LATENCY_RATE = 100.0 if QUICK else 300.0
LATENCY_S = 10.0 if QUICK else 60.0
ROOT = Path(__file__).resolve().parent.parent
COUNTRIES = ["DE", "FR", "GB", "US", "NL", "ES", "IT", "PL", "SE", "JP", "CA", "BR"]


def order(i: int, prefix: str) -> OrderCreated:
    return OrderCreated(
        order_id=f"{prefix}-{i}",
        customer_id=f"{prefix}-c-{i}",
        country=COUNTRIES[i % len(COUNTRIES)],
        currency="EUR",
        total=Decimal("23.98"),
        lines=[OrderLine(sku="SKU-0001", quantity=2, unit_price=Decimal("11.99"))],
        payment_method="tok_visa",
        created_at=time.time(),
    )


class Stack:
    """A fresh broker + database for one measurement."""

    def __init__(self, pg: EmbeddedPostgres) -> None:
        self.pg = pg
        self.broker = EmbeddedBroker()
        self.db = "b_" + os.urandom(5).hex()
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-"))
        self.workers: list[subprocess.Popen[bytes]] = []

    async def __aenter__(self) -> Stack:
        import asyncpg

        await self.broker.start()
        admin = await asyncpg.connect(self.pg.dsn_for("postgres"))
        await admin.execute(f'CREATE DATABASE "{self.db}"')
        await admin.close()
        conn = await asyncpg.connect(self.dsn)
        await migrate(conn)
        await seed_catalogue(conn)
        await conn.close()
        await ensure_topics(self.broker.bootstrap, registry_topic_names(), 4)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for w in self.workers:
            w.terminate()
            try:
                w.wait(15)
            except subprocess.TimeoutExpired:
                w.kill()
        await self.broker.stop()

    @property
    def dsn(self) -> str:
        return self.pg.dsn_for(self.db)

    def worker(self) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        env = {
            **os.environ,
            "ORDERS_BROKER_URL": self.broker.url,
            "ORDERS_POSTGRES_DSN": self.dsn,
            "ORDERS_WEB_PORT": str(port),
            "ORDERS_DATA_DIR": str(self.tmp / f"w{port}"),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "orders_app.cli", "worker", "--skip-checks"],
            env=env,
            cwd=ROOT,
            stdout=(self.tmp / f"w{port}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.workers.append(proc)
        return proc, f"http://127.0.0.1:{port}"


def get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return orjson.loads(resp.read())
    except OSError:
        return None


async def until(cond: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await cond():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("benchmark condition not reached")


async def produce(bootstrap: str, events: list[OrderCreated]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=262144)
    await producer.start()
    t0 = time.perf_counter()
    futs = [
        await producer.send("order_created", key=e.order_id.encode(), value=encode(e))
        for e in events
    ]
    await asyncio.gather(*futs)
    elapsed = time.perf_counter() - t0
    await producer.stop()
    return elapsed


async def ceiling(pg: EmbeddedPostgres) -> dict[str, float]:
    async with Stack(pg) as s:
        events = [order(i, "ceil") for i in range(CEILING_N)]
        produce_s = await produce(s.broker.bootstrap, events)
        consumer = AIOKafkaConsumer(
            "order_created",
            bootstrap_servers=s.broker.bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            max_partition_fetch_bytes=4 << 20,
        )
        await consumer.start()
        t0 = time.perf_counter()
        n = 0
        while n < CEILING_N:
            for msgs in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                for m in msgs:
                    orjson.loads(m.value)
                n += len(msgs)
        consume_s = time.perf_counter() - t0
        await consumer.stop()
    return {
        "ceiling_produce": CEILING_N / produce_s,
        "ceiling_consume_decode": CEILING_N / consume_s,
    }


def terminal_count(url: str) -> int:
    body = get_json(url + "/analytics/countries?local=1")
    if not body:
        return 0
    return sum(sum(c["by_status"].values()) for c in body["countries"].values())


async def pipeline(pg: EmbeddedPostgres) -> dict[str, float]:
    async with Stack(pg) as s:
        reader = CdcReader(dsn=s.dsn, bootstrap=s.broker.bootstrap, slot="bench", fresh_broker=True)
        await reader.start()  # products snapshot -> stock
        # start-up: an order is waiting before the worker starts
        first = order(0, "start")
        await produce(s.broker.bootstrap, [first])
        t0 = time.perf_counter()
        proc, url = s.worker()

        async def first_done() -> bool:
            return bool(get_json(f"{url}/orders/{first.order_id}?local=1"))

        await until(first_done, 120)
        startup = time.perf_counter() - t0
        events = [order(i, "pipe") for i in range(PIPELINE_N)]
        t0 = time.perf_counter()
        await produce(s.broker.bootstrap, events)

        async def all_done() -> bool:
            return await asyncio.to_thread(terminal_count, url) >= PIPELINE_N + 1

        await until(all_done, 1800)
        rate = PIPELINE_N / (time.perf_counter() - t0)
        rss = psutil.Process(proc.pid).memory_info().rss / 2**20
        await reader.stop()
    return {"pipeline_orders_per_s": rate, "worker_first_event_s": startup, "worker_rss_mib": rss}


async def latency(pg: EmbeddedPostgres) -> dict[str, float]:
    import asyncpg

    async with Stack(pg) as s:
        reader = CdcReader(
            dsn=s.dsn,
            bootstrap=s.broker.bootstrap,
            slot="bench",
            fresh_broker=True,
            poll_interval=0.05,
        )
        await reader.start()
        _proc, url = s.worker()

        async def ready() -> bool:
            body = get_json(url + "/ready")
            return bool(body and body.get("ready"))

        await until(ready, 120)
        await asyncio.sleep(2)
        conn = await asyncpg.connect(s.dsn)
        n = int(LATENCY_RATE * LATENCY_S)
        t0 = time.monotonic()
        lines = json.dumps([{"sku": "SKU-0001", "quantity": 1, "unit_price": "11.99"}])
        for i in range(n):
            await conn.execute(
                "INSERT INTO orders (id, customer_id, country, currency, total, lines) "
                "VALUES ($1, $2, 'DE', 'EUR', 11.99, $3::jsonb)",
                f"lat-{i}",
                f"lat-c-{i}",
                lines,
            )
            delay = t0 + (i + 1) / LATENCY_RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await conn.close()

        async def all_done() -> bool:
            return await asyncio.to_thread(terminal_count, url) >= n

        await until(all_done, 600)
        consumer = AIOKafkaConsumer(
            "orders_app-order-status",
            bootstrap_servers=s.broker.bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
        )
        await consumer.start()
        lat: list[float] = []
        idle = time.monotonic()
        while time.monotonic() - idle < 2:
            for msgs in (await consumer.getmany(timeout_ms=300)).values():
                idle = time.monotonic()
                for m in msgs:
                    v = orjson.loads(m.value)
                    if v["terminal"]:
                        lat.append((v["at"] - v["created_at"]) * 1000)
        await consumer.stop()
        await reader.stop()
    lat.sort()
    q = statistics.quantiles(lat, n=100)
    return {"latency_p50_ms": q[49], "latency_p95_ms": q[94], "latency_p99_ms": q[98]}


UNITS = {
    "ceiling_produce": "msg/s",
    "ceiling_consume_decode": "msg/s",
    "pipeline_orders_per_s": "orders/s",
    "worker_first_event_s": "s",
    "worker_rss_mib": "MiB",
    "latency_p50_ms": "ms",
    "latency_p95_ms": "ms",
    "latency_p99_ms": "ms",
}


async def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    tmp.chmod(0o755)
    pg = EmbeddedPostgres(tmp / "pg")
    await pg.start()
    runs: dict[str, list[float]] = {}
    try:
        for _ in range(RUNS):
            for step in (ceiling, pipeline, latency):
                for name, value in (await step(pg)).items():
                    runs.setdefault(name, []).append(round(value, 3))
                    print(f"  {name}: {value:,.2f} {UNITS[name]}", flush=True)
    finally:
        await pg.stop()
    results = [
        {
            "name": k,
            "unit": UNITS[k],
            "min": min(v),
            "median": statistics.median(v),
            "max": max(v),
            "runs": v,
        }
        for k, v in runs.items()
    ]
    machine = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "quick": QUICK,
        "runs": RUNS,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    out = Path(__file__).parent / "results.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    (out.parent / "machine.json").write_text(json.dumps(machine, indent=2) + "\n")
    print(f"\nmachine: {machine}")
    print(f"| {'figure':<24} | {'unit':<8} | {'min':>10} | {'median':>10} | {'max':>10} |")
    print(f"|{'-' * 26}|{'-' * 10}|{'-' * 12}|{'-' * 12}|{'-' * 12}|")
    for r in results:
        row = [f"{r[k]:>10,.2f}" for k in ("min", "median", "max")]
        print(f"| {r['name']:<24} | {r['unit']:<8} | " + " | ".join(row) + " |")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    asyncio.run(main())
