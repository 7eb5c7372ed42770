"""Live feed: tails ``order_analytics`` and ``dead_letters`` for the web layer.

Rule: every worker runs one, reading *all* partitions without a consumer group (like a
ksqlDB push query), so any worker can serve ``GET /analytics/stream`` with every
country's changes.  It keeps the latest ``CountryStats`` per country (what a client that
connects late receives first) and the most recent dead letters, and fans each new event
out to subscriber queues.  Input topics: ``order_analytics`` (key country),
``dead_letters``.  Output: in-process queues only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from mode import Service

log = logging.getLogger(__name__)

ANALYTICS = "order_analytics"
DEAD_LETTERS = "dead_letters"
QUEUE_SIZE = 1000


class Feed(Service):
    def __init__(self, bootstrap: str, fetch_wait_ms: int = 500, **kw: Any) -> None:
        self.bootstrap = bootstrap
        self.fetch_wait_ms = fetch_wait_ms
        self.latest: dict[str, dict[str, Any]] = {}
        self.dead_letters: collections.deque[dict[str, Any]] = collections.deque(maxlen=50)
        self.subscribers: set[asyncio.Queue[tuple[str, dict[str, Any]]]] = set()
        self.consumer: AIOKafkaConsumer | None = None
        super().__init__(**kw)

    async def on_start(self) -> None:
        self.add_future(self._tail())

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None

    async def _assign(self, consumer: AIOKafkaConsumer) -> None:
        while not self.should_stop:
            await consumer._client.force_metadata_update()
            tps = [
                TopicPartition(topic, p)
                for topic in (ANALYTICS, DEAD_LETTERS)
                for p in (consumer.partitions_for_topic(topic) or ())
            ]
            if tps:
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                return
            await asyncio.sleep(1)

    async def _tail(self) -> None:
        consumer = self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=self.fetch_wait_ms,
        )
        await consumer.start()
        await self._assign(consumer)
        while not self.should_stop:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, messages in batch.items():
                for msg in messages:
                    self._handle(tp.topic, msg.value)

    def _handle(self, topic: str, raw: bytes | None) -> None:
        if raw is None:
            return
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict):
            return
        if topic == ANALYTICS and isinstance(data.get("country"), str):
            self.latest[data["country"]] = data
            self._publish("country", data)
        elif topic == DEAD_LETTERS:
            letter = {
                k: data.get(k)
                for k in ("topic", "partition", "offset", "key", "error", "agent", "at")
            }
            self.dead_letters.append(letter)
            self._publish("dead_letter", letter)

    def _publish(self, kind: str, data: dict[str, Any]) -> None:
        for queue in list(self.subscribers):
            with contextlib.suppress(
                asyncio.QueueFull
            ):  # a stalled client loses events, not memory
                queue.put_nowait((kind, data))

    async def subscribe(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Current totals first, then every change."""
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(QUEUE_SIZE)
        snapshot = [("country", v) for v in self.latest.values()]
        self.subscribers.add(queue)
        try:
            for item in snapshot:
                yield item
            while True:
                yield await queue.get()
        finally:
            self.subscribers.discard(queue)
