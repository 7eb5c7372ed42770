"""The batch helper (orders_app/streams.py: ``event_batches``, ``decoded_batches``,
``in_partition_of``) against a fake Faust stream: no broker, no worker.

The fake has what the helper reads from a Faust stream: its channel (an asyncio queue),
the app's consumer (``unacked``), acking topics, consumer generation and flow control,
and the four sensor hooks, which here record the calls made.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from faust.streams import current_event
from faust.types import TP

from orders_app import streams
from orders_app.records import OrderCreated, encode
from orders_app.streams import decoded_batches, event_batches, in_partition_of

ACKING = "orders"
NOT_ACKING = "internal"


class Message:
    def __init__(self, offset: int, topic: str = ACKING, generation_id: int = 1) -> None:
        self.topic = topic
        self.partition = offset % 2
        self.tp = TP(topic, self.partition)
        self.offset = offset
        self.key = b"k%d" % offset
        self.generation_id = generation_id
        self.tracked = False


class Event:
    def __init__(self, message: Message, calls: list[Any], value: bytes = b"{}") -> None:
        self.message = message
        self.key = message.key
        self.value = value
        self.calls = calls
        self.acks = 0

    def ack(self) -> bool:
        self.acks += 1
        self.calls.append(("ack", self.message.offset))
        return True  # the last stream processor's ack


class Channel:
    """Faust's channel as far as the helper goes: ``queue`` and ``__anext__``; closed, it
    raises ``StopAsyncIteration`` once its queue is empty."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.closed = False

    async def __anext__(self) -> Event:
        if self.closed and self.queue.empty():
            raise StopAsyncIteration
        return await self.queue.get()


class FlowControl:
    def __init__(self) -> None:
        self.active = True

    def is_active(self) -> bool:
        return self.active


class App:
    def __init__(self) -> None:
        self.consumer = type("Consumer", (), {})()
        self.consumer.unacked = set()
        self.topics = type("Topics", (), {})()
        self.topics.acking_topics = {ACKING}
        self.consumer_generation_id = 1
        self.flow_control = FlowControl()


class Stream:
    def __init__(self) -> None:
        self.app = App()
        self.channel = Channel()
        self.should_stop = False
        self.starts = 0
        self.calls: list[Any] = []

    async def maybe_start(self) -> None:
        self.starts += 1

    def _on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: Event) -> Any:
        assert stream is self and event.message.tp == tp
        self.calls.append(("event_in", offset))
        return f"state-{offset}"

    def _on_stream_event_out(
        self, tp: TP, offset: int, stream: Any, event: Event, state: Any
    ) -> None:
        self.calls.append(("event_out", offset, state))

    def _on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        self.calls.append(("message_in", offset))

    def _on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        self.calls.append(("message_out", offset))

    def event(self, offset: int, **kw: Any) -> Event:
        value = kw.pop("value", b"{}")
        return Event(Message(offset, **kw), self.calls, value)

    def put(self, *events: Event, close: bool = False) -> list[Event]:
        for event in events:
            self.channel.queue.put_nowait(event)
        self.channel.closed = close
        return list(events)


async def _take(batches: AsyncIterator[Any], n: int) -> list[Any]:
    out = []
    for _ in range(n):
        out.append(await asyncio.wait_for(anext(batches), 5))
    return out


def _offsets(batch: list[Event]) -> list[int]:
    return [e.message.offset for e in batch]


async def test_batches_hold_at_most_max_events_in_order_and_end_with_the_channel() -> None:
    stream = Stream()
    stream.put(*(stream.event(i) for i in range(5)), close=True)
    got = [_offsets(b) async for b in event_batches(stream, max_events=2, linger=0)]  # type: ignore[arg-type]
    assert got == [[0, 1], [2, 3], [4]]
    assert stream.starts == 1


async def test_events_are_acknowledged_only_after_the_caller_is_done_with_the_batch() -> None:
    stream = Stream()
    first, second = stream.put(stream.event(0), stream.event(1))
    batches = event_batches(stream, max_events=1, linger=0)  # type: ignore[arg-type]
    [batch] = await _take(batches, 1)
    assert batch == [first]
    assert first.acks == 0 and ("event_out", 0, "state-0") not in stream.calls
    [batch] = await _take(batches, 1)  # asking for the next batch: the first is done
    assert batch == [second]
    assert first.acks == 1 and second.acks == 0
    assert stream.calls == [
        ("message_in", 0),
        ("event_in", 0),
        ("ack", 0),
        ("event_out", 0, "state-0"),
        ("message_out", 0),
        ("message_in", 1),
        ("event_in", 1),
    ]
    await batches.aclose()  # type: ignore[attr-defined]
    assert second.acks == 1


async def test_a_failing_caller_still_acknowledges_when_the_generator_closes() -> None:
    stream = Stream()
    events = stream.put(stream.event(0), stream.event(1))
    batches = event_batches(stream, max_events=10, linger=0)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        async for _batch in batches:
            raise RuntimeError("the agent's step failed")
    assert [e.acks for e in events] == [0, 0]  # not before the generator is finalized
    await batches.aclose()  # type: ignore[attr-defined]
    assert [e.acks for e in events] == [1, 1]


async def test_acking_topic_messages_are_tracked_once() -> None:
    stream = Stream()
    tracked = stream.event(0)
    tracked.message.tracked = True  # another stream of the topic tracked it already
    fresh, internal = stream.event(1), stream.event(2, topic=NOT_ACKING)
    stream.put(tracked, fresh, internal, close=True)
    got: list[Any] = [b async for b in event_batches(stream, max_events=10, linger=0)]  # type: ignore[arg-type]
    assert got == [[tracked, fresh, internal]]
    assert stream.app.consumer.unacked == {fresh.message}
    assert fresh.message.tracked and not internal.message.tracked
    assert [c for c in stream.calls if c[0] == "message_in"] == [("message_in", 1)]
    assert [c for c in stream.calls if c[0] == "event_in"] == [
        ("event_in", 0),
        ("event_in", 1),
        ("event_in", 2),
    ]


async def test_events_of_an_older_generation_are_acknowledged_unprocessed() -> None:
    stream = Stream()
    stream.app.consumer_generation_id = 2
    stale = stream.event(0, generation_id=1)
    live = stream.event(1, generation_id=2)
    only_stale = stream.event(2, generation_id=1)
    stream.put(stale, live)
    batches = event_batches(stream, max_events=2, linger=0)  # type: ignore[arg-type]
    [batch] = await _take(batches, 1)
    assert batch == [live]
    assert stale.acks == 0  # acknowledged with the batch it came in
    # a batch of stale events only is not handed out at all, yet acknowledged
    stream.put(only_stale, close=True)
    assert [b async for b in batches] == []
    assert (stale.acks, live.acks, only_stale.acks) == (1, 1, 1)
    assert ("event_out", 0, None) in stream.calls and ("event_out", 2, None) in stream.calls
    assert ("event_in", 0) not in stream.calls and ("event_in", 2) not in stream.calls
    assert not stale.message.tracked and stream.app.consumer.unacked == {live.message}


async def test_nothing_is_handed_out_while_flow_control_is_suspended() -> None:
    stream = Stream()
    stream.app.flow_control.active = False
    events = stream.put(stream.event(0), stream.event(1), close=True)
    assert [b async for b in event_batches(stream, max_events=5, linger=0)] == []  # type: ignore[arg-type]
    assert [e.acks for e in events] == [1, 1]
    assert stream.app.consumer.unacked == set()


async def test_a_stopping_stream_yields_nothing() -> None:
    stream = Stream()
    stream.should_stop = True
    event = stream.event(0)
    stream.put(event)
    assert [b async for b in event_batches(stream, max_events=5)] == []  # type: ignore[arg-type]
    assert event.acks == 0 and stream.channel.queue.qsize() == 1


async def test_linger_collects_events_that_arrive_meanwhile() -> None:
    stream = Stream()
    stream.put(stream.event(0))
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, stream.put, stream.event(1))  # while the first event lingers
    batches = event_batches(stream, max_events=10, linger=0.2)  # type: ignore[arg-type]
    [batch] = await _take(batches, 1)
    assert _offsets(batch) == [0, 1]
    await batches.aclose()  # type: ignore[attr-defined]


async def test_without_linger_a_lone_event_goes_alone() -> None:
    stream = Stream()
    stream.put(stream.event(0))
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, stream.put, stream.event(1))
    batches = event_batches(stream, max_events=10, linger=0)  # type: ignore[arg-type]
    first, second = await _take(batches, 2)
    assert (_offsets(first), _offsets(second)) == ([0], [1])
    await batches.aclose()  # type: ignore[attr-defined]


async def test_no_linger_when_a_full_batch_is_already_waiting() -> None:
    stream = Stream()
    stream.put(*(stream.event(i) for i in range(4)))
    # a linger of 60 s would time the take out (5 s): a full batch does not wait
    batches = event_batches(stream, max_events=3, linger=60)  # type: ignore[arg-type]
    [batch] = await _take(batches, 1)
    assert _offsets(batch) == [0, 1, 2]
    await batches.aclose()  # type: ignore[attr-defined]


# -- decoded_batches ----------------------------------------------------------------------


@pytest.fixture
def dead_letters(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str, str]]:
    sent: list[tuple[int, str, str]] = []

    async def dead_letter(event: Any, error: str, agent: str) -> None:
        sent.append((event.message.offset, error, agent))

    monkeypatch.setattr(streams, "dead_letter", dead_letter)
    return sent


async def test_decoded_batches_pair_events_with_records_and_dead_letter_the_rest(
    mk: Any, dead_letters: list[tuple[int, str, str]]
) -> None:
    stream = Stream()
    good = [stream.event(i, value=encode(mk.order(f"ord-{i}"))) for i in (0, 2)]
    bad = stream.event(1, value=b'{"order_id": 1}')
    tombstone = stream.event(3, value=None)  # type: ignore[arg-type]
    stream.put(good[0], bad, good[1], tombstone, close=True)
    got: list[Any] = [
        b
        async for b in decoded_batches(
            stream,  # type: ignore[arg-type]
            OrderCreated,
            "orders",
            max_events=10,
        )
    ]
    [batch] = got
    assert [(event, record.order_id) for event, record in batch] == [
        (good[0], "ord-0"),
        (good[1], "ord-2"),
    ]
    assert all(isinstance(record, OrderCreated) for _, record in batch)
    assert [(offset, agent) for offset, _error, agent in dead_letters] == [
        (1, "orders"),
        (3, "orders"),
    ]
    assert "tombstone" in dead_letters[1][1]
    # every event, decoded or not, is acknowledged once the batch is done
    assert [e.acks for e in (*good, bad, tombstone)] == [1, 1, 1, 1]


async def test_decoded_batches_of_a_non_owner_skip_bad_messages_silently(
    mk: Any, dead_letters: list[tuple[int, str, str]]
) -> None:
    stream = Stream()
    bad = stream.put(stream.event(0, value=b"not json"), close=True)
    got = [
        b
        async for b in decoded_batches(
            stream,  # type: ignore[arg-type]
            OrderCreated,
            "fraud",
            max_events=10,
            owner=False,
        )
    ]
    assert got == []  # a batch with nothing decodable is not handed out
    assert dead_letters == []
    assert bad[0].acks == 1


# -- in_partition_of ----------------------------------------------------------------------


def _current() -> Any:
    return current_event()


def test_in_partition_of_makes_the_event_current_for_the_block_only() -> None:
    stream = Stream()
    outer, inner = stream.event(0), stream.event(1)
    assert _current() is None
    with in_partition_of(outer):  # type: ignore[arg-type]
        assert _current() is outer
        with in_partition_of(inner):  # type: ignore[arg-type]
            assert _current() is inner
        assert _current() is outer
    assert _current() is None
    with pytest.raises(KeyError), in_partition_of(outer):  # type: ignore[arg-type]
        raise KeyError("a table read failed")
    assert _current() is None


def test_has_header_reads_aiokafkas_pairs_and_a_mapping() -> None:
    """``streams.has_header`` (the order agent asks whether the cdc agent has sent an
    order to the fraud check): aiokafka hands headers over as (name, value) pairs."""

    class Event:
        def __init__(self, headers: Any) -> None:
            self.headers = headers

    name = "orders-app-fraud-requested"
    assert streams.has_header(Event([(name, b"1")]), name)
    assert streams.has_header(Event((("other", b""), (name, b"1"))), name)
    assert streams.has_header(Event({name: b"1"}), name)
    assert not streams.has_header(Event([("other", b"1")]), name)
    assert not streams.has_header(Event(None), name)
    assert not streams.has_header(Event([]), name)
