"""The embedded broker's work-arounds without a broker (orders_app/broker_compat/).

Small fakes stand where the private Faust/aiokafka objects they patch are; the tests
assert what the patch changes.  tests/integration/test_offsets.py and test_fetch.py run
the same code against the real broker (a multi-record batch corrected, an end past the
log, an unreachable broker, the wait reaching the real Fetcher); this covers the branches
a broker does not show on demand: control-record batches, a high watermark above the
last record, a start that fails or hangs, a fetch that never confirms, keys kept as
given, and the generation-0 LeaveGroup.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, OffsetOutOfRangeError
from aiokafka.protocol.group import JoinGroupRequest, LeaveGroupRequest
from aiokafka.structs import TopicPartition
from faust.types import TP

from orders_app.broker_compat import fetch, group, offsets
from orders_app.broker_compat.offsets import EndOffsetsUnverified, true_end_offsets

# -- offsets: true_end_offsets against a fake aiokafka consumer --------------------------


@dataclass
class _Record:
    offset: int


class _FakeConsumer:
    """Plays the aiokafka consumer ``true_end_offsets`` builds: a partition's log is
    ``logs[tp]`` (the offsets of its records, in order) plus the high watermark
    ``ends[tp]``; ``getmany`` answers with the records at or after the position, as one
    fetch of a last batch does, and moves the position to the high watermark (control
    records at the end are passed over without being handed out)."""

    instances: list[_FakeConsumer] = []
    logs: Mapping[TopicPartition, list[int]] = {}
    ends: Mapping[TopicPartition, int] = {}
    starts: Mapping[TopicPartition, int] = {}
    start_error: BaseException | None = None
    start_hangs = False
    answers = True  # False: every fetch comes back empty and the position stays
    hides_highwater = False  # True: no high watermark known (highwater() is None)

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.assigned: list[TopicPartition] = []
        self.positions: dict[TopicPartition, int] = {}
        self.sought: list[tuple[TopicPartition, int]] = []
        self.fetched: dict[TopicPartition, bool] = {}
        self.stopped = False
        type(self).instances.append(self)

    async def start(self) -> None:
        if self.start_hangs:
            await asyncio.sleep(3600)
        if self.start_error is not None:
            raise self.start_error

    async def stop(self) -> None:
        self.stopped = True

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = list(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.sought.append((tp, offset))
        self.positions[tp] = offset

    async def getmany(self, *tps: TopicPartition, timeout_ms: int = 0) -> dict[Any, Any]:
        await asyncio.sleep(0)
        if not self.answers:
            return {}
        out: dict[TopicPartition, list[_Record]] = {}
        for tp in tps:
            position = self.positions[tp]
            if position < self.starts.get(tp, 0) or position > self.ends[tp]:
                raise OffsetOutOfRangeError({tp: position})
            records = [_Record(o) for o in self.logs[tp] if o >= position]
            if records:  # as aiokafka: only partitions with records are in the answer
                out[tp] = records
            self.positions[tp] = self.ends[tp]
            self.fetched[tp] = True
        return out

    def highwater(self, tp: TopicPartition) -> int | None:
        if self.hides_highwater or not self.fetched.get(tp):
            return None
        return self.ends[tp]

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.starts.get(tp, 0) for tp in tps}


@pytest.fixture
def fake_consumer(monkeypatch: pytest.MonkeyPatch) -> type[_FakeConsumer]:
    class Fake(_FakeConsumer):
        instances: list[_FakeConsumer] = []

    monkeypatch.setattr(offsets, "AIOKafkaConsumer", Fake)
    return Fake


A = TopicPartition("changelog", 0)
B = TopicPartition("changelog", 1)


async def test_a_multi_record_last_batch_is_corrected_from_its_records(
    fake_consumer: type[_FakeConsumer], caplog: pytest.LogCaptureFixture
) -> None:
    # Tansu: one 5-record batch at offset 10 is reported as ending at 11
    fake_consumer.logs = {A: list(range(15)), B: [0, 1, 2]}
    fake_consumer.ends = {A: 15, B: 3}
    with caplog.at_level(logging.INFO, logger=offsets.__name__):
        got = await true_end_offsets("host:1", {A: 11, B: 3})
    assert got == {A: 15, B: 3}
    [consumer] = fake_consumer.instances
    # fetched from reported - 1, with no group, no commits and no reset to the end
    assert sorted(consumer.sought) == [(A, 10), (B, 2)]
    assert consumer.config["group_id"] is None
    assert consumer.config["enable_auto_commit"] is False
    assert consumer.config["auto_offset_reset"] == "none"
    assert consumer.config["bootstrap_servers"] == "host:1"
    assert consumer.stopped
    assert "(11, 15)" in caplog.text and "(3, 3)" not in caplog.text


async def test_control_records_at_the_end_count_through_the_position(
    fake_consumer: type[_FakeConsumer],
) -> None:
    # a transactional changelog: records 0..4, then a commit marker at 5 (never handed out)
    fake_consumer.logs = {A: [0, 1, 2, 3, 4]}
    fake_consumer.ends = {A: 6}
    assert await true_end_offsets("h:1", {A: 5}) == {A: 6}
    # only the marker at reported end - 1: no records handed out, the position confirms it
    assert await true_end_offsets("h:1", {A: 6}) == {A: 6}
    # no high watermark in the answer: the position past the marker is the end
    fake_consumer.hides_highwater = True
    assert await true_end_offsets("h:1", {A: 5}) == {A: 6}


async def test_a_correct_end_is_confirmed_unchanged(fake_consumer: type[_FakeConsumer]) -> None:
    fake_consumer.logs = {A: [0, 1, 2]}
    fake_consumer.ends = {A: 3}
    assert await true_end_offsets("h:1", {A: 3}) == {A: 3}


async def test_empty_and_unknown_ends_need_no_consumer(
    fake_consumer: type[_FakeConsumer],
) -> None:
    reported: dict[Any, Any] = {A: 0, B: None}
    assert await true_end_offsets("h:1", reported) == {A: 0, B: None}
    assert fake_consumer.instances == []


async def test_only_partitions_with_records_are_fetched_and_keys_are_kept(
    fake_consumer: type[_FakeConsumer],
) -> None:
    # Faust passes its own TP type: the answer is keyed by what was given
    faust_a, faust_b = TP("changelog", 0), TP("changelog", 1)
    fake_consumer.logs = {A: [0, 1, 2, 3]}
    fake_consumer.ends = {A: 4}
    got = await true_end_offsets("h:1", {faust_a: 2, faust_b: 0})
    assert got == {faust_a: 4, faust_b: 0}
    assert all(type(tp) is TP for tp in got)
    [consumer] = fake_consumer.instances
    assert consumer.assigned == [A]
    assert all(type(tp) is TopicPartition for tp in consumer.assigned)


@pytest.mark.parametrize(
    "error", [OSError("refused"), KafkaConnectionError("no broker"), TimeoutError()]
)
async def test_a_consumer_that_cannot_start_is_stopped_and_raises(
    fake_consumer: type[_FakeConsumer], error: BaseException
) -> None:
    fake_consumer.start_error = error
    with pytest.raises(EndOffsetsUnverified, match=r"cannot verify .*changelog") as info:
        await true_end_offsets("h:1", {A: 3})
    assert info.value.__cause__ is error
    assert fake_consumer.instances[0].stopped


async def test_a_start_past_the_deadline_raises(fake_consumer: type[_FakeConsumer]) -> None:
    fake_consumer.start_hangs = True
    with pytest.raises(EndOffsetsUnverified, match="TimeoutError"):
        await true_end_offsets("h:1", {A: 3}, deadline_s=0.01)
    assert fake_consumer.instances[0].stopped


async def test_a_fetch_that_never_confirms_raises_naming_the_partition(
    fake_consumer: type[_FakeConsumer],
) -> None:
    fake_consumer.logs = {A: [0, 1, 2]}
    fake_consumer.ends = {A: 3}
    fake_consumer.answers = False
    with pytest.raises(EndOffsetsUnverified, match=r"changelog.*not confirmed.*0\.05 s"):
        await true_end_offsets("h:1", {A: 3}, deadline_s=0.05)
    assert fake_consumer.instances[0].stopped


async def test_an_end_reported_past_the_log_raises(fake_consumer: type[_FakeConsumer]) -> None:
    fake_consumer.logs = {A: [0, 1, 2]}
    fake_consumer.ends = {A: 3}
    with pytest.raises(EndOffsetsUnverified, match="past the log's end"):
        await true_end_offsets("h:1", {A: 40})
    assert fake_consumer.instances[0].stopped


async def test_a_log_deleted_below_the_reported_end_is_read_from_its_start(
    fake_consumer: type[_FakeConsumer],
) -> None:
    # retention deleted everything up to offset 12, the end: the fetch at 11 is out of
    # range, goes on from the log start and confirms the reported end
    fake_consumer.logs = {A: []}
    fake_consumer.ends = {A: 12}
    fake_consumer.starts = {A: 12}
    assert await true_end_offsets("h:1", {A: 12}) == {A: 12}
    assert fake_consumer.instances[0].sought == [(A, 11), (A, 12)]


async def test_correct_highwaters_passes_the_partitions_and_corrects_the_answer(
    fake_consumer: type[_FakeConsumer],
) -> None:
    fake_consumer.logs = {A: list(range(8))}
    fake_consumer.ends = {A: 8}
    asked: list[tuple[Any, ...]] = []

    class FaustConsumer:
        async def highwaters(self, *partitions: Any) -> Mapping[Any, int]:
            asked.append(partitions)
            return {A: 6}

    consumer = FaustConsumer()
    offsets.correct_highwaters(consumer, "h:1")
    assert await consumer.highwaters(A) == {A: 8}
    assert asked == [(A,)]
    assert fake_consumer.instances[0].config["bootstrap_servers"] == "h:1"


# -- group: LeaveGroup for generation 0 ----------------------------------------------------


class _Coordinator:
    def __init__(
        self,
        generation: int = 0,
        member_id: str = "member-1",
        instance_id: str | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.generation = generation
        self.member_id = member_id
        self.group_id = "orders_app"
        self._group_instance_id = instance_id
        self.error = error
        self.sent: list[Any] = []

    async def _send_req(self, request: Any) -> Any:
        self.sent.append(request)
        if self.error is not None:
            raise self.error
        return object()


class _Thread:
    def __init__(self, coordinator: _Coordinator | None, *, inner: bool = True) -> None:
        self.events: list[str] = []
        if inner:
            self._consumer = type("Inner", (), {"_coordinator": coordinator})()

    async def on_thread_stop(self) -> None:
        self.events.append("thread stopped")


class _FaustConsumer:
    def __init__(self, thread: _Thread | None) -> None:
        if thread is not None:
            self._thread = thread


async def test_a_generation_zero_member_leaves_before_the_thread_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    coordinator = _Coordinator(generation=0)
    thread = _Thread(coordinator)
    group.leave_group_on_stop(_FaustConsumer(thread))
    with caplog.at_level(logging.INFO, logger=group.__name__):
        await thread.on_thread_stop()
    [request] = coordinator.sent
    assert isinstance(request, LeaveGroupRequest)
    assert (request._group, request._member_id) == ("orders_app", "member-1")
    assert thread.events == ["thread stopped"]
    assert "LeaveGroup (generation 0) sent" in caplog.text


@pytest.mark.parametrize(
    "coordinator",
    [
        _Coordinator(generation=1),  # Kafka: aiokafka sends its own LeaveGroup
        _Coordinator(generation=-1),  # never joined (aiokafka's NO_GENERATION)
        _Coordinator(member_id=JoinGroupRequest.UNKNOWN_MEMBER_ID),  # not a member yet
        _Coordinator(instance_id="static-1"),  # static membership: must not leave
    ],
    ids=["generation-1", "no-generation", "no-member-id", "static-member"],
)
async def test_no_leave_group_outside_generation_zero(coordinator: _Coordinator) -> None:
    assert await group.leave_generation_zero(coordinator) is False
    thread = _Thread(coordinator)
    group.leave_group_on_stop(_FaustConsumer(thread))
    await thread.on_thread_stop()
    assert coordinator.sent == []
    assert thread.events == ["thread stopped"]


@pytest.mark.parametrize("error", [KafkaConnectionError("gone"), OSError("reset"), TimeoutError()])
async def test_a_failed_leave_group_is_logged_and_the_thread_still_stops(
    error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    coordinator = _Coordinator(error=error)
    assert await group.leave_generation_zero(coordinator) is False
    thread = _Thread(coordinator)
    group.leave_group_on_stop(_FaustConsumer(thread))
    with caplog.at_level(logging.WARNING, logger=group.__name__):
        await thread.on_thread_stop()
    assert len(coordinator.sent) == 2
    assert thread.events == ["thread stopped"]
    assert "LeaveGroup (generation 0) failed" in caplog.text


async def test_accepted_leave_group_returns_true() -> None:
    assert await group.leave_generation_zero(_Coordinator()) is True


async def test_no_aiokafka_consumer_or_coordinator_yet() -> None:
    assert await group.leave_generation_zero(None) is False
    for thread in (_Thread(None, inner=False), _Thread(None)):
        group.leave_group_on_stop(_FaustConsumer(thread))
        await thread.on_thread_stop()
        assert thread.events == ["thread stopped"]


def test_a_consumer_without_a_thread_is_left_alone() -> None:
    consumer = _FaustConsumer(None)
    group.leave_group_on_stop(consumer)
    assert not hasattr(consumer, "_thread")


# -- fetch: the wait and the prefetch backoff ----------------------------------------------


@pytest.mark.parametrize(
    ("wait_ms", "backoff"),
    [(0, 0.0), (1, 0.001), (15, 0.015), (99, 0.099), (100, 0.1), (101, 0.1), (1500, 0.1)],
)
def test_prefetch_backoff_is_the_wait_capped_at_aiokafkas_default(
    wait_ms: int, backoff: float
) -> None:
    assert fetch.prefetch_backoff_for(wait_ms) == pytest.approx(backoff)
    assert fetch.prefetch_backoff_for(wait_ms) <= fetch.AIOKAFKA_PREFETCH_BACKOFF


class _Fetcher:
    _prefetch_backoff = fetch.AIOKAFKA_PREFETCH_BACKOFF


class _Client:
    """An aiokafka consumer as far as ``use_fetch_wait`` touches it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs
        self._fetch_max_wait_ms = 500
        self._fetcher: _Fetcher | None = None
        self.started = False

    async def start(self) -> None:
        self.started = True
        # aiokafka builds its Fetcher in start(), from _fetch_max_wait_ms
        self._fetcher = _Fetcher()
        self.wait_at_start = self._fetch_max_wait_ms


class _ConsumerThread:
    def __init__(self) -> None:
        self.created: list[_Client] = []

    def _create_consumer(self, *args: Any, **kwargs: Any) -> _Client:
        client = _Client(*args, **kwargs)
        self.created.append(client)
        return client


class _FaustConsumerWithThread:
    def __init__(self) -> None:
        self._thread = _ConsumerThread()


async def test_use_fetch_wait_sets_the_wait_before_start_and_the_backoff_after() -> None:
    consumer = _FaustConsumerWithThread()
    thread = consumer._thread
    fetch.use_fetch_wait(consumer, 20)
    loop = asyncio.get_running_loop()
    client = thread._create_consumer(loop=loop)
    # the original factory ran, with the arguments Faust passes
    assert thread.created == [client] and client.kwargs == {"loop": loop}
    assert client._fetch_max_wait_ms == 20
    assert client._fetcher is None and not client.started
    await client.start()
    assert client.started and client.wait_at_start == 20
    assert client._fetcher is not None
    assert client._fetcher._prefetch_backoff == pytest.approx(0.02)


async def test_a_long_wait_keeps_aiokafkas_backoff() -> None:
    consumer = _FaustConsumerWithThread()
    fetch.use_fetch_wait(consumer, 500)
    client = consumer._thread._create_consumer()
    await client.start()
    assert client._fetch_max_wait_ms == 500
    assert client._fetcher is not None
    assert client._fetcher._prefetch_backoff == fetch.AIOKAFKA_PREFETCH_BACKOFF


async def test_every_consumer_the_thread_creates_gets_the_wait() -> None:
    # Faust recreates its aiokafka consumer (e.g. after a crash of the thread)
    consumer = _FaustConsumerWithThread()
    fetch.use_fetch_wait(consumer, 50)
    first, second = consumer._thread._create_consumer(), consumer._thread._create_consumer()
    assert first is not second
    for client in (first, second):
        await client.start()
        assert client._fetch_max_wait_ms == 50
        assert client._fetcher is not None and client._fetcher._prefetch_backoff == 0.05
