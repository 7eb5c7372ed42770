"""The fetch wait reaches the real aiokafka consumer and it still consumes."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from orders_app.admin import ensure_topics
from orders_app.fetch import use_fetch_wait

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
        await producer.send_and_wait("fetch-wait", key=b"k", value=b"v")
        got = await client.getone()
        assert (got.key, got.value) == (b"k", b"v")
    finally:
        await client.stop()
        await producer.stop()
