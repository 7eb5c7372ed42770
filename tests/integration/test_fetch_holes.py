"""A Fetch answer with a hole (orders_app/broker_compat/holes.py) on the real broker and
the real aiokafka consumer: the answer that skips a batch not stored yet is made by
holding one stored batch back from one answer, as Tansu's produce race does (offsets
taken, batch stored later).  Without the cut, aiokafka moves past the hole and never
reads that record; with it, every record arrives once, in order."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from orders_app.admin import ensure_topics
from orders_app.broker_compat.holes import cut_holes
from orders_app.faust_patches.gaps import tap_fetch_answers

pytestmark = pytest.mark.integration

TOPIC = "fetch-holes"
N = 12
LATE = 5  # the offset whose batch one answer does not have yet
_HEAD = struct.Struct(">qi")


def without_batch(raw: bytes, base: int) -> bytes:
    out, pos = b"", 0
    while pos + _HEAD.size <= len(raw):
        first, length = _HEAD.unpack_from(raw, pos)
        end = pos + 12 + length
        if first != base:
            out += raw[pos:end]
        pos = end
    return out


class LateBatch:
    """Taps the fetcher's answers: the first answer holding offset LATE's batch after
    another batch comes without it (stored late, as in the broker's race)."""

    def __init__(self) -> None:
        self.held = 0

    def on_answer(self, request: Any, response: Any) -> None:
        if self.held:
            return
        topics = []
        for topic, parts in response.topics:
            kept = []
            for part in parts:
                raw = part[-1]
                cut = without_batch(raw, LATE) if raw else raw
                if cut != raw and cut.find(struct.pack(">q", LATE + 1)) >= 0:
                    self.held += 1
                    part = (*part[:-1], cut)
                kept.append(part)
            topics.append((topic, kept))
        response.topics = topics


async def consume(bootstrap: str, *, cut: bool) -> tuple[list[int], int]:
    consumer = AIOKafkaConsumer(
        TOPIC, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        late = LateBatch()
        tap_fetch_answers(consumer, late.on_answer, "late batch")
        if cut:
            cut_holes(consumer)  # over the late batch, as it is over the broker's client
        seen: list[int] = []
        for _ in range(60):
            got = await consumer.getmany(timeout_ms=200)
            seen += [m.offset for msgs in got.values() for m in msgs]
            if seen and seen[-1] == N - 1:
                break
        return seen, late.held
    finally:
        await consumer.stop()


async def test_a_fetch_answer_with_a_hole_is_fetched_again_not_skipped(broker: Any) -> None:
    await ensure_topics(broker.bootstrap, [TOPIC], 1)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        for i in range(N):  # one batch per record
            await producer.send_and_wait(TOPIC, b"v%d" % i, key=b"k")
    finally:
        await producer.stop()

    skipped, held = await consume(broker.bootstrap, cut=False)
    assert held == 1
    assert skipped == [o for o in range(N) if o != LATE]  # the defect's effect: lost
    whole, held = await consume(broker.bootstrap, cut=True)
    assert held == 1
    assert whole == list(range(N))
