"""Offset gap detector: a delivered offset that jumps over records never delivered.

Rule (DESIGN.md, failure rules): nothing is silently dropped.  For every agent (Faust
stream) and topic-partition, each event the agent starts processing must follow the
previous one, unless nothing that jumped over was ever received.  A jump over records
that were received is logged (one WARNING line naming topic, partition, expected and
got offsets) and counted in ``orders_offset_gaps_total{topic,partition}``.

Reads, on the worker's own consumer only:

* every Fetch answer the aiokafka fetcher receives (a tap on its client): the record
  batches' offset ranges per partition.  An answer with offsets that no batch covers
  (after the fetch offset or between two batches) skipped data on the broker side.  Real
  Kafka leaves such holes only where compaction removed whole batches, so holes are not
  flagged on compacted topics (``compacted`` predicate, Faust's changelogs).  Control
  batches (transaction markers) and records compacted out of a batch lie inside batches
  and are never holes.
* the records aiokafka hands to Faust (``Fetcher.fetched_records``): the ledger of
  offsets received in the current assignment.
* every event an agent starts processing (Faust's ``on_stream_event_in`` sensor hook;
  ``orders_app.streams.event_batches`` calls it too).  A jump to ``got`` past the highest
  offset delivered so far (or past the first record received since the assignment) is a
  gap when the ledger holds records in between: they were fetched and never delivered,
  wherever between aiokafka and the agent they were lost.  A jump over offsets that were
  never received (another worker processed them before a rebalance, markers, compaction)
  is not a gap.

State is per assignment: a rebalance (eager protocol: everything is revoked) clears it.
Limit: only Faust's changelogs are known to be compacted; a topic compacted by other means
(a Debezium topic with ``cleanup.policy=compact`` on Kafka) would report its compaction
holes as broker gaps until it is added to the predicate.  Tansu compacts nothing.

Writes: the WARNING lines, the counter, and :attr:`GapDetector.found` (tests, debugging).
"""

from __future__ import annotations

import bisect
import logging
import struct
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiokafka.protocol.fetch import FetchRequest
from faust.sensors import Sensor
from prometheus_client import CollectorRegistry, Counter

from orders_app.faust_patches.skip_guard import on_client_started

log = logging.getLogger(__name__)

__all__ = [
    "Gap",
    "GapDetector",
    "Intervals",
    "batch_ranges",
    "broker_holes",
    "watch_gaps",
]

# Record batch v2 header: baseOffset int64, batchLength int32, partitionLeaderEpoch int32,
# magic int8, crc int32, attributes int16, lastOffsetDelta int32 (then timestamps ...).
_HEAD = struct.Struct(">qiibihi")
_LOG_OVERHEAD = 12  # baseOffset + batchLength precede the length-counted part
_CONTROL = 0x20
# Runs kept per partition: one run per contiguous stretch of received records (one in
# normal operation); transaction markers split runs, so the oldest are let go.
MAX_RUNS = 4096


class Gap(NamedTuple):
    """One detected gap: records ``expected .. got-1`` (or a part of them) never arrived."""

    where: str  # "broker" (the Fetch answer) or the agent that missed them
    topic: str
    partition: int
    expected: int
    got: int
    missing: int  # records (client side) or offsets (broker side) skipped


class Intervals:
    """Sorted, disjoint, merged closed intervals ``[a, b]`` of offsets."""

    __slots__ = ("_ends", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __len__(self) -> int:
        return len(self._starts)

    def add(self, a: int, b: int) -> None:
        starts, ends = self._starts, self._ends
        if starts and a >= starts[-1]:  # the common case: appending at the end
            if a <= ends[-1] + 1:
                ends[-1] = max(ends[-1], b)
            else:
                starts.append(a)
                ends.append(b)
            return
        i = bisect.bisect_left(ends, a - 1)  # first interval that may touch [a, b]
        j = i
        while j < len(starts) and starts[j] <= b + 1:
            a = min(a, starts[j])
            b = max(b, ends[j])
            j += 1
        starts[i:j] = [a]
        ends[i:j] = [b]

    def first(self) -> int | None:
        return self._starts[0] if self._starts else None

    def count_within(self, lo: int, hi: int) -> int:
        """How many offsets of ``[lo, hi]`` the intervals hold."""
        if hi < lo:
            return 0
        total = 0
        i = bisect.bisect_left(self._ends, lo)
        while i < len(self._starts) and self._starts[i] <= hi:
            total += min(hi, self._ends[i]) - max(lo, self._starts[i]) + 1
            i += 1
        return total

    def keep_last(self, n: int) -> None:
        if len(self._starts) > n:
            del self._starts[:-n]
            del self._ends[:-n]

    def as_list(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))


def batch_ranges(raw: bytes | None) -> list[tuple[int, int]] | None:
    """``(base, last)`` offsets of each complete v2 record batch in a Fetch answer's
    record set; ``None`` for older message formats (nothing is checked then)."""
    if not raw:
        return []
    out: list[tuple[int, int]] = []
    pos, end = 0, len(raw)
    while pos + _HEAD.size <= end:
        base, length, _epoch, magic, _crc, _attributes, last_delta = _HEAD.unpack_from(raw, pos)
        if magic != 2:
            return None
        if pos + _LOG_OVERHEAD + length > end:  # a batch cut by the size limit
            break
        out.append((base, base + last_delta))
        pos += _LOG_OVERHEAD + length
    return out


def broker_holes(fetch_offset: int, batches: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Offset ranges ``[a, b]`` at or after ``fetch_offset`` that no batch covers, up to
    the last batch: the broker skipped them (or compaction removed whole batches)."""
    holes: list[tuple[int, int]] = []
    expected = fetch_offset
    for base, last in batches:
        if last < expected:  # the batch holding the fetch offset starts before it
            continue
        if base > expected:
            holes.append((expected, base - 1))
        expected = last + 1
    return holes


@dataclass
class _Partition:
    received: Intervals = field(default_factory=Intervals)


class GapDetector(Sensor):  # type: ignore[misc]  # faust is untyped
    """Detects offset gaps per agent and partition (see the module docstring)."""

    def __init__(
        self,
        counter: Counter,
        *,
        compacted: Callable[[str], bool] = lambda topic: False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.counter = counter
        self.compacted = compacted
        self.found: list[Gap] = []
        self._lock = threading.Lock()
        self._parts: dict[tuple[str, int], _Partition] = {}
        # (stream, topic, partition) -> highest offset the stream was given
        self._high: dict[tuple[int, str, int], int] = {}
        self._names: dict[int, str] = {}

    # -- the fetcher's side (consumer thread) ------------------------------------------

    def on_fetch_answer(self, request: Any, response: Any) -> None:
        """Check a Fetch answer's record batches for offsets the broker skipped."""
        offsets: dict[tuple[str, int], int] = {}
        for topic, partitions in request.topics:
            for partition, offset, *_ in partitions:
                offsets[(topic, partition)] = offset
        for topic, partitions in response.topics:
            for partition, error_code, _highwater, *data in partitions:
                fetch_offset = offsets.get((topic, partition))
                if error_code or fetch_offset is None or self.compacted(topic):
                    continue
                batches = batch_ranges(data[-1] if data else None)
                if not batches:
                    continue
                for a, b in broker_holes(fetch_offset, batches):
                    self._report(Gap("broker", topic, partition, a, b + 1, b - a + 1))

    def on_handed_out(self, records: dict[Any, list[Any]]) -> None:
        """Record the offsets aiokafka handed to Faust (``fetched_records``' result)."""
        with self._lock:
            for tp, messages in records.items():
                if not messages:
                    continue
                key = (tp.topic, tp.partition)
                part = self._parts.get(key)
                if part is None:
                    part = self._parts[key] = _Partition()
                received = part.received
                run_start = prev = messages[0].offset
                for message in messages[1:]:
                    offset = message.offset
                    if offset != prev + 1:
                        received.add(run_start, prev)
                        run_start = offset
                    prev = offset
                received.add(run_start, prev)
                received.keep_last(MAX_RUNS)

    # -- the agents' side (main thread) ----------------------------------------------

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        topic, partition = tp.topic, tp.partition
        key = (id(stream), topic, partition)
        high = self._high.get(key)
        if high is not None and offset <= high + 1:
            if offset > high:
                self._high[key] = offset
            return  # the next one, or a redelivery after a seek back
        with self._lock:
            part = self._parts.get((topic, partition))
            if high is None:
                first = part.received.first() if part is not None else None
                expected = first if first is not None and first < offset else offset
            else:
                expected = high + 1
            missing = part.received.count_within(expected, offset - 1) if part else 0
        self._high[key] = offset
        if missing:
            name = self._names.get(id(stream))
            if name is None:
                name = self._names[id(stream)] = _stream_name(stream)
            self._report(Gap(name, topic, partition, expected, offset, missing))

    def on_rebalance_start(self, app: Any) -> dict[str, Any]:
        # Eager rebalancing revokes every partition: a new assignment starts afresh from
        # the committed offsets, so nothing seen before can be owed any more.
        with self._lock:
            self._parts.clear()
            self._high.clear()
        result: dict[str, Any] = super().on_rebalance_start(app)
        return result

    def _report(self, gap: Gap) -> None:
        self.found.append(gap)
        del self.found[:-1000]
        self.counter.labels(gap.topic, str(gap.partition)).inc()
        if gap.where == "broker":
            log.warning(
                "offset gap on %s[%s]: expected offset %s, got %s: the broker's Fetch "
                "answer has no batch for %s offset(s)",
                gap.topic,
                gap.partition,
                gap.expected,
                gap.got,
                gap.missing,
                extra={"topic": gap.topic, "partition": gap.partition},
            )
        else:
            log.warning(
                "offset gap on %s[%s] in %s: expected offset %s, got %s: %s record(s) "
                "fetched and never delivered",
                gap.topic,
                gap.partition,
                gap.where,
                gap.expected,
                gap.got,
                gap.missing,
                extra={"topic": gap.topic, "partition": gap.partition, "agent": gap.where},
            )


def _stream_name(stream: Any) -> str:
    prefix = getattr(stream, "prefix", "") or ""
    return str(prefix or getattr(stream, "shortlabel", "stream"))


class FetchAnswerTap:
    """Stands in for a fetcher's client: forwards everything, and shows each Fetch answer
    to ``on_answer(request, response)`` before the fetcher reads it (which may change
    the answer: orders_app/broker_compat/holes.py).  ``owner`` names the tap in its log
    line and tells taps apart; an error in ``on_answer`` is logged and the answer goes on
    as it is."""

    def __init__(self, client: Any, on_answer: Callable[[Any, Any], None], owner: str) -> None:
        self._tapped = client
        self.on_answer = on_answer
        self.owner = owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tapped, name)

    async def send(self, node_id: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        response = await self._tapped.send(node_id, request, *args, **kwargs)
        if isinstance(request, FetchRequest):
            try:
                self.on_answer(request, response)
            except Exception:
                log.exception("%s: could not read a Fetch answer", self.owner)
        return response


def tap_fetch_answers(client: Any, on_answer: Callable[[Any, Any], None], owner: str) -> bool:
    """Tap a started ``AIOKafkaConsumer``'s Fetch answers, once per ``owner``; -> False
    when that owner's tap is there already."""
    fetcher = client._fetcher
    current = fetcher._client
    if isinstance(current, FetchAnswerTap) and current.owner == owner:
        return False
    fetcher._client = FetchAnswerTap(current, on_answer, owner)
    return True


def attach(detector: GapDetector, client: Any) -> None:
    """Watch a started ``AIOKafkaConsumer``'s fetcher."""
    if not tap_fetch_answers(client, detector.on_fetch_answer, "gap detector"):
        return
    fetcher = client._fetcher
    fetched_records = fetcher.fetched_records

    async def watched(
        partitions: Iterable[Any], timeout: float = 0, max_records: Any = None
    ) -> Any:
        records = await fetched_records(partitions, timeout=timeout, max_records=max_records)
        if records:
            detector.on_handed_out(records)
        return records

    fetcher.fetched_records = watched


_detectors: weakref.WeakKeyDictionary[CollectorRegistry, GapDetector] = weakref.WeakKeyDictionary()


def detector_for(registry: CollectorRegistry, compacted: Callable[[str], bool]) -> GapDetector:
    """The registry's detector (its counter can be registered only once)."""
    detector = _detectors.get(registry)
    if detector is None:
        counter = Counter(
            "orders_offset_gaps_total",
            "Offsets an agent jumped over although their records were fetched "
            "(or a Fetch answer skipped them)",
            ["topic", "partition"],
            registry=registry,
        )
        detector = _detectors[registry] = GapDetector(counter, compacted=compacted)
    return detector


def watch_gaps(app: Any, consumer: Any) -> GapDetector:
    """Detect gaps on a Faust worker's consumer: tap the aiokafka consumer it creates
    (once started) and receive every agent's events as a sensor."""
    detector = detector_for(
        app.metrics.registry, lambda topic: topic in app.tables.changelog_topics
    )
    if detector not in app.sensors:
        app.sensors.add(detector)
    on_client_started(consumer, lambda client: attach(detector, client))
    return detector
