"""Offset gaps: the detector's rules (orders_app/faust_patches/gaps.py: intervals, Fetch-answer batch
ranges, broker holes, per-agent delivery checks against the records received), and the
guards against the two Faust defects that skipped records (orders_app/faust_patches/skip_guard.py), on
the real library objects: mode's FlowControlEvent with a Faust channel queue, and mode's
Service.wait_first with the statements Faust's ``_drain_messages`` runs per message."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import faust
import pytest
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.types.tuples import ConsumerMessage
from mode import Service
from mode.utils.queues import FlowControlEvent, FlowControlQueue
from prometheus_client import CollectorRegistry

from orders_app.faust_patches.gaps import (
    Gap,
    GapDetector,
    Intervals,
    batch_ranges,
    broker_holes,
    detector_for,
)
from orders_app.faust_patches.skip_guard import (
    ReadOffsets,
    guard_flow_clear,
    guard_flow_resume,
    guard_read_offsets,
)
from tests.support import record_batch

TOPIC = "order_validated"
TP = TopicPartition(TOPIC, 1)


batch = record_batch


def records(*offsets: int, tp: TopicPartition = TP) -> dict[Any, list[Any]]:
    return {
        tp: [
            ConsumerRecord(tp.topic, tp.partition, o, 0, 0, b"k", b"v", None, 1, 1, ())
            for o in offsets
        ]
    }


@dataclass(eq=False)
class Stream:
    """Stands where a Faust stream is: the detector reads its ``prefix`` (agent name)."""

    prefix: str


@pytest.fixture
def detector() -> GapDetector:
    return detector_for(CollectorRegistry(), compacted=lambda topic: topic.endswith("-changelog"))


def count(detector: GapDetector, topic: str = TOPIC, partition: int = 1) -> float:
    value = detector.counter.labels(topic, str(partition))._value.get()
    return float(value)


def test_intervals_merge_and_count() -> None:
    iv = Intervals()
    iv.add(10, 12)
    iv.add(13, 15)  # touching: merged
    iv.add(20, 21)
    iv.add(0, 3)  # before the others
    iv.add(4, 9)  # bridges 0-3 and 10-15
    assert iv.as_list() == [(0, 15), (20, 21)]
    assert iv.first() == 0
    assert iv.count_within(14, 20) == 3  # 14, 15, 20
    assert iv.count_within(16, 19) == 0
    iv.add(17, 30)
    assert iv.as_list() == [(0, 15), (17, 30)]
    iv.keep_last(1)
    assert iv.as_list() == [(17, 30)]


def test_batch_ranges_reads_real_batches_and_stops_at_a_cut_batch() -> None:
    raw = batch(100, 5) + batch(105, 3) + batch(200, 2)
    assert batch_ranges(raw) == [(100, 104), (105, 107), (200, 201)]
    assert batch_ranges(raw[:-10]) == [(100, 104), (105, 107)]
    assert batch_ranges(b"") == []
    assert batch_ranges(None) == []


def test_broker_holes() -> None:
    # the batch holding the fetch offset may start before it (Kafka returns it whole)
    assert broker_holes(102, [(100, 104), (105, 107)]) == []
    assert broker_holes(100, [(148, 160)]) == [(100, 147)]
    assert broker_holes(100, [(100, 104), (110, 120), (121, 130)]) == [(105, 109)]


def test_contiguous_deliveries_are_no_gap(detector: GapDetector) -> None:
    detector.on_handed_out(records(*range(0, 10)))
    stream = Stream("payment-charge")
    for offset in range(0, 10):
        detector.on_stream_event_in(TP, offset, stream, None)
    assert detector.found == []


def test_jump_over_fetched_records_is_a_gap(
    detector: GapDetector, caplog: pytest.LogCaptureFixture
) -> None:
    detector.on_handed_out(records(*range(100, 200)))
    stream = Stream("payment-charge")
    for offset in range(100, 120):
        detector.on_stream_event_in(TP, offset, stream, None)
    with caplog.at_level(logging.WARNING, logger="orders_app.faust_patches.gaps"):
        detector.on_stream_event_in(TP, 168, stream, None)
    assert detector.found == [Gap("payment-charge", TOPIC, 1, 120, 168, 48)]
    assert count(detector) == 1
    (line,) = [r.getMessage() for r in caplog.records]
    assert "order_validated[1]" in line and "expected offset 120, got 168" in line
    # the rest follows on from 168
    for offset in range(169, 200):
        detector.on_stream_event_in(TP, offset, stream, None)
    assert len(detector.found) == 1


def test_first_event_after_assignment_checked_against_the_first_record_received(
    detector: GapDetector,
) -> None:
    detector.on_handed_out(records(*range(1710, 1900)))
    detector.on_stream_event_in(TP, 1818, Stream("cdc-orders"), None)
    assert detector.found == [Gap("cdc-orders", TOPIC, 1, 1710, 1818, 108)]


def test_jump_over_offsets_never_received_is_no_gap(detector: GapDetector) -> None:
    # markers, compaction, or another worker's share before a rebalance
    detector.on_handed_out(records(0, 1, 2, 3))
    detector.on_handed_out(records(10, 11, 12))
    stream = Stream("status")
    for offset in (0, 1, 2, 3, 10, 11, 12):
        detector.on_stream_event_in(TP, offset, stream, None)
    assert detector.found == []


def test_redelivery_after_a_seek_back_is_no_gap(detector: GapDetector) -> None:
    detector.on_handed_out(records(*range(0, 50)))
    detector.on_handed_out(records(*range(20, 60)))
    stream = Stream("status")
    for offset in [*range(0, 50), *range(20, 60)]:
        detector.on_stream_event_in(TP, offset, stream, None)
    assert detector.found == []


def test_each_agent_is_checked_on_its_own(detector: GapDetector) -> None:
    detector.on_handed_out(records(*range(0, 10)))
    status, payment = Stream("status"), Stream("payment-charge")
    for offset in range(0, 10):
        detector.on_stream_event_in(TP, offset, status, None)
    detector.on_stream_event_in(TP, 0, payment, None)
    detector.on_stream_event_in(TP, 9, payment, None)
    assert detector.found == [Gap("payment-charge", TOPIC, 1, 1, 9, 8)]


def test_a_rebalance_starts_afresh(detector: GapDetector) -> None:
    stream = Stream("payment-charge")
    detector.on_handed_out(records(*range(0, 10)))
    detector.on_stream_event_in(TP, 5, stream, None)
    assert len(detector.found) == 1
    detector.on_rebalance_start(None)
    # another worker processed up to 500 and committed: this one resumes there
    detector.on_handed_out(records(*range(500, 510)))
    for offset in range(500, 510):
        detector.on_stream_event_in(TP, offset, stream, None)
    assert len(detector.found) == 1


def fetch_request(topic: str, partition: int, offset: int) -> FetchRequest:
    return FetchRequest(20, 1, 1 << 20, 0, [(topic, [(partition, offset, 1 << 20)])])


@dataclass
class Answer:
    topics: list[Any]


def test_broker_answer_that_skips_a_batch_is_a_gap(detector: GapDetector) -> None:
    raw = batch(100, 48) + batch(196, 10)  # 148..195 missing from the answer
    answer = Answer([(TOPIC, [(1, 0, 206, 206, 0, [], raw)])])
    detector.on_fetch_answer(fetch_request(TOPIC, 1, 100), answer)
    assert detector.found == [Gap("broker", TOPIC, 1, 148, 196, 48)]
    assert count(detector) == 1


def test_broker_answer_from_inside_a_batch_is_no_gap(detector: GapDetector) -> None:
    answer = Answer([(TOPIC, [(1, 0, 110, 110, 0, [], batch(100, 10))])])
    detector.on_fetch_answer(fetch_request(TOPIC, 1, 105), answer)
    assert detector.found == []


def test_holes_on_compacted_topics_and_error_answers_are_not_flagged(
    detector: GapDetector,
) -> None:
    changelog = "orders_app-payments-changelog"
    answer = Answer([(changelog, [(0, 0, 300, 300, 0, [], batch(200, 3))])])
    detector.on_fetch_answer(fetch_request(changelog, 0, 100), answer)
    error = Answer([(TOPIC, [(1, 1, -1, -1, 0, [], b"")])])  # OffsetOutOfRange
    detector.on_fetch_answer(fetch_request(TOPIC, 1, 100), error)
    assert detector.found == []


def test_one_detector_and_one_counter_per_registry() -> None:
    registry = CollectorRegistry()
    first = detector_for(registry, compacted=lambda topic: False)
    assert detector_for(registry, compacted=lambda topic: False) is first
    first.counter.labels(TOPIC, "1").inc()
    assert (
        registry.get_sample_value("orders_offset_gaps_total", {"topic": TOPIC, "partition": "1"})
        == 1
    )


# -- the guards (orders_app/faust_patches/skip_guard.py) -------------------------------------------


def channel_queue(flow: FlowControlEvent) -> FlowControlQueue[int]:
    """What a Faust channel creates (faust/channels.py: ``clear_on_resume=True``)."""
    return FlowControlQueue(maxsize=100, flow_control=flow, clear_on_resume=True)


async def test_unguarded_resume_of_an_active_flow_drops_queued_events() -> None:
    # the defect itself, so this test fails the day mode stops clearing here
    flow = FlowControlEvent()
    queue = channel_queue(flow)
    flow.resume()  # recovery starts the flow
    for offset in range(100, 148):
        queue.put_nowait(offset)  # delivered during perform_seek's walk
    flow.resume()  # on_recovery_completed, after perform_seek
    assert queue.qsize() == 0


async def test_guarded_resume_keeps_this_assignments_events() -> None:
    flow = FlowControlEvent()
    guard_flow_resume(flow)
    queue = channel_queue(flow)
    flow.resume()
    for offset in range(100, 148):
        queue.put_nowait(offset)
    flow.resume()
    assert queue.qsize() == 48
    assert flow.is_active()


async def test_guarded_resume_still_clears_after_a_suspension() -> None:
    flow = FlowControlEvent()
    guard_flow_resume(flow)
    queue = channel_queue(flow)
    flow.resume()
    queue.put_nowait(1)  # an event of the revoked assignment
    flow.suspend()  # a rebalance
    flow.resume()
    assert queue.qsize() == 0
    assert flow.is_active()


@dataclass
class Msg:
    tp: TopicPartition
    offset: int


class Consumer(Service):
    """Holds what ``_drain_messages`` uses: ``callback``, ``_read_offset``,
    ``suspend_flow`` and (from mode's Service) the real ``wait_first``."""

    def __init__(self, agent_queue: asyncio.Queue[Msg]) -> None:
        super().__init__()
        self.agent_queue = agent_queue
        self.callback = self.deliver
        self._read_offset: defaultdict[Any, int | None] = defaultdict(lambda: None)
        self.suspend_flow = asyncio.Event()

    async def deliver(self, message: Msg) -> None:
        await self.agent_queue.put(message)  # waits while the agent's buffer is full

    async def drain_one(self, message: Msg) -> None:
        """The per-message statements of Faust's ``_drain_messages``."""
        callback, set_read_offset = self.callback, self._read_offset.__setitem__
        await self.wait_first(callback(message), self.suspend_flow.wait())
        set_read_offset(message.tp, message.offset)


async def interrupted_delivery(consumer: Consumer) -> None:
    """Offset 499 delivered; offset 500 waits on a full buffer when a rebalance revokes
    the partition (its read offset popped, then the flow stopped)."""
    await consumer.drain_one(Msg(TP, 499))
    waiting = asyncio.create_task(consumer.drain_one(Msg(TP, 500)))
    await asyncio.sleep(0.01)
    consumer._read_offset.pop(TP, None)  # Consumer.on_partitions_revoked
    consumer.suspend_flow.set()  # App._on_partitions_revoked -> consumer.stop_flow()
    await waiting


async def test_unguarded_interrupted_delivery_leaves_a_stale_read_offset() -> None:
    consumer = Consumer(asyncio.Queue(maxsize=1))
    await interrupted_delivery(consumer)
    assert consumer.agent_queue.qsize() == 1  # only 499 reached the agent
    assert consumer._read_offset[TP] == 500  # the defect: 500 counts as read


async def test_guarded_interrupted_delivery_is_not_recorded_as_read() -> None:
    consumer = Consumer(asyncio.Queue(maxsize=1))
    offsets = guard_read_offsets(consumer)
    await interrupted_delivery(consumer)
    assert isinstance(consumer._read_offset, ReadOffsets)
    assert TP not in consumer._read_offset
    assert offsets.refused == 1
    # completed deliveries are still recorded, and a seek still sets the offset
    consumer.suspend_flow.clear()
    consumer.agent_queue.get_nowait()
    await consumer.drain_one(Msg(TP, 500))
    assert consumer._read_offset[TP] == 500
    consumer._read_offset[TP] = 120
    assert consumer._read_offset[TP] == 120
    assert consumer._read_offset[TopicPartition("other", 0)] is None  # still a defaultdict


def test_guarded_seek_reset_keeps_deliveries_of_the_assignment() -> None:
    # Consumer.perform_seek ends with read_offset.update(<committed offsets it sought to>)
    plain: defaultdict[Any, int | None] = defaultdict(lambda: None)
    guarded = ReadOffsets(set())
    ahead, behind, new = TP, TopicPartition("order_validated", 2), TopicPartition("x", 0)
    for offsets in (plain, guarded):
        offsets[ahead] = 248  # delivered during the walk, past the committed 146
        offsets[behind] = 70  # nothing delivered past the committed 77
    committed = {ahead: 146, behind: 77, new: None}
    plain.update(committed)
    guarded.update(committed)
    # Faust's reset: the next delivery (249) is 103 past 146 and becomes a gap
    assert plain[ahead] == 146
    assert guarded[ahead] == 248
    assert guarded[behind] == 77
    assert guarded[new] is None


# -- defect 4: a cleared copy of a message read by two agents ----------------------


def revoke_with_one_copy_in_flight(guard: bool) -> tuple[Any, ConsumerMessage]:
    """``order_created``@7 delivered to two agents' channels (the conductor counts it
    twice); one copy is being processed, the other still queued when a revoke clears the
    queues; then the processing copy is acknowledged.  Real Faust consumer, message,
    event and mode flow control (no broker: nothing here talks to one)."""
    app = faust.App("skip-guard-test", broker="kafka://127.0.0.1:1")
    app.finalize()
    consumer = app.consumer
    flow = FlowControlEvent()
    if guard:
        guard_flow_clear(flow, consumer)
    fraud, status = channel_queue(flow), channel_queue(flow)
    message = ConsumerMessage("order_created", 1, 7, 0.0, 0, None, b"k", b"v", None)
    consumer.track_message(message)
    message.incref(2)
    event = faust.Event(app, b"k", b"v", {}, message)
    fraud.put_nowait(event)
    status.put_nowait(event)
    in_flight = status.get_nowait()  # the status agent takes its copy
    flow.suspend()  # App._on_partitions_revoked
    flow.clear()
    in_flight.message.ack(consumer)  # the status agent finishes
    consumer._clean_unacked_messages()  # what each wait_empty round does
    return consumer, message


def test_unguarded_clear_leaves_the_message_unacked_forever() -> None:
    consumer, message = revoke_with_one_copy_in_flight(guard=False)
    # the defect: wait_empty loops while this set is non-empty
    assert message in consumer._unacked_messages
    assert message.refcount == 1


def test_guarded_clear_ends_wait_empty_without_committing_the_dropped_offset() -> None:
    consumer, message = revoke_with_one_copy_in_flight(guard=True)
    assert not consumer._unacked_messages
    # never processed by the fraud agent: its offset must not become committable
    assert 7 not in consumer._acked[message.tp]
    assert consumer._new_offset(message.tp) is None


def test_guarded_clear_still_waits_for_the_copy_in_flight() -> None:
    app = faust.App("skip-guard-test-2", broker="kafka://127.0.0.1:1")
    app.finalize()
    consumer = app.consumer
    flow = FlowControlEvent()
    guard_flow_clear(flow, consumer)
    fraud, status = channel_queue(flow), channel_queue(flow)
    message = ConsumerMessage("order_created", 1, 9, 0.0, 0, None, b"k", b"v", None)
    consumer.track_message(message)
    message.incref(2)
    event = faust.Event(app, b"k", b"v", {}, message)
    fraud.put_nowait(event)
    status.put_nowait(event)
    status.get_nowait()
    flow.clear()
    consumer._clean_unacked_messages()
    assert message in consumer._unacked_messages  # status is still processing it
    # a message queued only once, cleared, goes at once and stays uncommitted
    lone = ConsumerMessage("order_validated", 0, 3, 0.0, 0, None, b"k", b"v", None)
    consumer.track_message(lone)
    lone.incref(1)
    fraud.put_nowait(faust.Event(app, b"k", b"v", {}, lone))
    flow.clear()
    assert lone not in consumer._unacked_messages
    assert consumer._new_offset(lone.tp) is None


# -- defect 5: an ack while the flow is suspended --------------------------------------


def test_ack_while_suspended_is_forgotten_not_committed() -> None:
    app = faust.App("skip-guard-test-3", broker="kafka://127.0.0.1:1")
    app.finalize()
    consumer = app.consumer
    app.topics._acking_topics.add("order_validated")
    flow = FlowControlEvent()
    flow.resume()
    guard_flow_clear(flow, consumer)
    live = ConsumerMessage("order_validated", 0, 10, 0.0, 0, None, b"k", b"v", None)
    consumer.track_message(live)
    live.incref(1)
    live.ack(consumer)  # flowing: a normal ack, committable
    assert 10 in consumer._acked[live.tp]
    flow.suspend()  # a revoke: the stream acks what it skips
    skipped = ConsumerMessage("order_validated", 0, 11, 0.0, 0, None, b"k", b"v", None)
    consumer.track_message(skipped)
    skipped.incref(1)
    skipped.ack(consumer)
    assert skipped not in consumer._unacked_messages
    assert 11 not in consumer._acked[skipped.tp]


# -- defect 4, the catch-all: a count lost outside the queues --------------------------


class _WaitingConsumer:
    """Faust's wait_empty loop as far as the guard sees it: until the unacked set is
    empty (Faust re-checks at least every second)."""

    def __init__(self) -> None:
        self._unacked_messages: set[Any] = set()
        self._waiting_for_ack: Any = None
        self.committed = False

    def ack(self, message: Any) -> bool:
        return True

    async def wait_empty(self) -> None:
        while self._unacked_messages:
            await asyncio.sleep(0.02)
        self.committed = True


async def test_revoke_wait_is_bounded_and_forgets_what_is_stuck() -> None:
    consumer = _WaitingConsumer()
    flow = FlowControlEvent()
    guard_flow_clear(flow, consumer, wait_limit=0.2)
    stuck = ConsumerMessage("order_created", 2, 5, 0.0, 0, None, b"k", b"v", None)
    consumer._unacked_messages.add(stuck)  # its second copy was blocked on a full queue
    stuck.incref(1)
    await asyncio.wait_for(consumer.wait_empty(), 5)
    assert consumer.committed and not consumer._unacked_messages
    assert stuck.acked  # forgotten: a late ack of the other copy changes nothing
