"""Hop latency on the embedded broker with aiokafka alone, shaped like the worker: one
consumer on two topics x 4 partitions; each consumed message is produced on to the other
topic (a hop), up to ``HOPS`` hops per chain; chains start 10 ms apart (100/s).  Prints
the per-hop latency (produce -> consume) for fetch waits of 5 and 20 ms: what a hop costs
without Faust, to compare with the pipeline's hops (README, "Benchmarks").

Usage: ``.venv/bin/python -m bench.hop_latency`` (about a minute).
"""

from __future__ import annotations

import asyncio
import statistics
import time

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


def main() -> None:
    for wait_ms in (5, 20):
        q = statistics.quantiles(asyncio.run(hops(wait_ms)), n=100)
        p50, p90, p99 = q[49], q[89], q[98]
        print(f"fetch wait {wait_ms} ms: per hop p50 {p50:.1f}, p90 {p90:.1f}, p99 {p99:.1f} ms")


if __name__ == "__main__":
    main()
