"""The fetch wait and the prefetch backoff that goes with it reach the real aiokafka
consumer, and it still consumes; an emptied live partition set hands out nothing once
guarded (orders_app/faust_patches/skip_guard.py, defect 3)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from orders_app.admin import ensure_topics
from orders_app.broker_compat.fetch import (
    AIOKAFKA_PREFETCH_BACKOFF,
    prefetch_backoff_for,
    use_fetch_wait,
)
from orders_app.faust_patches.skip_guard import guard_fetched_records

pytestmark = pytest.mark.integration


class _Thread:
    """Stands where Faust's consumer thread is: it creates the aiokafka consumer."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def _create_consumer(self, loop: Any = None) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            "fetch-wait",
            bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
        )


class _Consumer:
    def __init__(self, bootstrap: str) -> None:
        self._thread = _Thread(bootstrap)


async def test_fetch_wait_reaches_the_fetcher(broker: Any) -> None:
    await ensure_topics(broker.bootstrap, ["fetch-wait"], 2)
    holder = _Consumer(broker.bootstrap)
    use_fetch_wait(holder, 15)
    client = holder._thread._create_consumer()
    assert client._fetch_max_wait_ms == 15
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    await client.start()
    try:
        assert client._fetcher._fetch_max_wait_ms == 15
        assert client._fetcher._prefetch_backoff == 0.015
        await producer.send_and_wait("fetch-wait", key=b"k", value=b"v")
        got = await client.getone()
        assert (got.key, got.value) == (b"k", b"v")
    finally:
        await client.stop()
        await producer.stop()


def test_prefetch_backoff_follows_short_waits_only() -> None:
    assert prefetch_backoff_for(20) == 0.02
    assert prefetch_backoff_for(100) == AIOKAFKA_PREFETCH_BACKOFF
    assert prefetch_backoff_for(500) == AIOKAFKA_PREFETCH_BACKOFF  # never raised


async def prefetched(bootstrap: str, topic: str, guarded: bool) -> AIOKafkaConsumer:
    """A consumer of both partitions of ``topic`` whose fetcher holds records of both."""
    client = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=20
    )
    await client.start()
    if guarded:
        guard_fetched_records(client)
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    client.assign(tps)
    client.seek(tps[0], 0)
    client.seek(tps[1], 0)
    deadline = time.monotonic() + 20
    while set(client._fetcher._records) != set(tps) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert set(client._fetcher._records) == set(tps)
    return client


async def test_an_emptied_live_partition_set_hands_out_nothing(broker: Any) -> None:
    topic = "live-set"
    await ensure_topics(broker.bootstrap, [topic], 2)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        for partition in (0, 1):
            for i in range(5):
                await producer.send_and_wait(topic, value=b"%d" % i, partition=partition)
    finally:
        await producer.stop()
    # Faust passes its live set of active partitions; pausing the last one empties it
    live: set[TopicPartition] = set()

    plain = await prefetched(broker.bootstrap, topic, guarded=False)
    try:
        handed = await plain._fetcher.fetched_records(live, timeout=0)
        # the defect: records of partitions Faust paused, handed out and moved past
        assert {tp.partition for tp in handed} == {0, 1}
        assert await plain.position(TopicPartition(topic, 1)) == 5
    finally:
        await plain.stop()

    client = await prefetched(broker.bootstrap, topic, guarded=True)
    try:
        assert await client._fetcher.fetched_records(live, timeout=0) == {}
        assert await client.position(TopicPartition(topic, 1)) == 0
        live.add(TopicPartition(topic, 0))  # Faust resumes partition 0 only
        handed = await client._fetcher.fetched_records(live, timeout=0)
        assert {tp.partition for tp in handed} == {0}
        assert [m.offset for m in handed[TopicPartition(topic, 0)]] == [0, 1, 2, 3, 4]
    finally:
        await client.stop()
