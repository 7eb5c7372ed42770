"""Hop latency on the embedded broker, shaped like the worker: chains of ``HOPS`` hops,
each hop a message consumed from topic x or y (4 partitions each) and produced on to the
other; chains start 10 ms apart (100/s).  Per-hop latency (produce -> consume), for
fetch waits of 5 and 20 ms, two ways: aiokafka alone (one consumer relaying), and a bare
Faust agent relaying (``bench/faust_relay.py``, a worker process; with and without the
app's eager delivery).  What a hop costs without our agents, to compare with the
pipeline's hops (README, "Benchmarks"; bench/PROFILE.md).

Usage: ``.venv/bin/python -m bench.hop_latency`` (about four minutes).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from orders_app.admin import ensure_topics
from orders_app.broker_compat.fetch import prefetch_backoff_for
from orders_app.embedded.servers import EmbeddedBroker

HOPS = 6
CHAINS = 300


async def hops(wait_ms: int) -> list[float]:
    """Per-hop latencies (ms) of ``CHAINS`` chains of ``HOPS`` hops."""
    broker = EmbeddedBroker()
    await broker.start()
    try:
        await ensure_topics(broker.bootstrap, ["x", "y"], 4)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks=-1)
        await producer.start()
        consumer = AIOKafkaConsumer(
            "x",
            "y",
            bootstrap_servers=broker.bootstrap,
            group_id=None,
            auto_offset_reset="latest",
            fetch_max_wait_ms=wait_ms,
        )
        await consumer.start()
        consumer._fetcher._prefetch_backoff = prefetch_backoff_for(wait_ms)  # as the app does
        await asyncio.sleep(1)
        latencies: list[float] = []

        async def send(topic: str, chain: int, hop: int) -> None:
            value = orjson.dumps({"chain": chain, "hop": hop, "t": time.time()})
            await producer.send(topic, value, key=b"%d" % (chain * HOPS + hop))

        async def relay() -> None:
            finished = 0
            while finished < CHAINS:
                for tp, messages in (await consumer.getmany(timeout_ms=1000)).items():
                    for m in messages:
                        v = orjson.loads(m.value)
                        latencies.append((time.time() - v["t"]) * 1000)
                        if v["hop"] + 1 >= HOPS:
                            finished += 1
                        else:
                            await send("y" if tp.topic == "x" else "x", v["chain"], v["hop"] + 1)

        relaying = asyncio.ensure_future(relay())
        for chain in range(CHAINS):
            await send("x", chain, 0)
            await asyncio.sleep(0.01)
        await asyncio.wait_for(relaying, 60)
        await consumer.stop()
        await producer.stop()
        return latencies
    finally:
        await broker.stop()


async def faust_hops(wait_ms: int, eager: bool) -> list[float]:
    """The same chains through a bare Faust agent (``bench/faust_relay.py``)."""
    broker = EmbeddedBroker()
    await broker.start()
    tmp = Path(tempfile.mkdtemp(prefix="relay-"))
    try:
        await ensure_topics(broker.bootstrap, ["x", "y"], 4)
        lat_file = tmp / "latencies.json"
        env = {
            **os.environ,
            "BROKER": f"kafka://{broker.bootstrap}",
            "LAT_FILE": str(lat_file),
            "RELAY_WAIT": str(wait_ms),
            "EAGER": "1" if eager else "0",
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        }
        with (tmp / "worker.log").open("wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "bench.faust_relay", "worker", "-l", "warn"],
                env=env,
                cwd=tmp,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                await asyncio.sleep(12)  # started, assigned, caught up
                producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks=-1)
                await producer.start()
                for chain in range(CHAINS):
                    value = orjson.dumps({"chain": chain, "hop": 0, "t": time.time()})
                    await producer.send("x", value, key=b"%d" % chain)
                    await asyncio.sleep(0.01)
                await asyncio.sleep(5)
                await producer.stop()
            finally:
                worker.terminate()
                worker.wait(20)
        latencies: list[float] = orjson.loads(lat_file.read_bytes())
        return latencies
    finally:
        await broker.stop()


def report(what: str, latencies: list[float]) -> None:
    q = statistics.quantiles(latencies, n=100)
    p50, p90, p99 = q[49], q[89], q[98]
    print(f"{what}: per hop p50 {p50:.1f}, p90 {p90:.1f}, p99 {p99:.1f} ms (n={len(latencies)})")


def main() -> None:
    for wait_ms in (5, 20):
        report(f"aiokafka, fetch wait {wait_ms} ms", asyncio.run(hops(wait_ms)))
    for eager in (False, True):
        for wait_ms in (5, 20):
            what = f"Faust agent{' (eager delivery)' if eager else ''}, fetch wait {wait_ms} ms"
            report(what, asyncio.run(faust_hops(wait_ms, eager)))


if __name__ == "__main__":
    main()
