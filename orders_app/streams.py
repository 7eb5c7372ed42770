"""Stream helpers shared by every agent: decode-or-dead-letter, guarded steps, sending.

Rule: nothing is silently dropped.  A message an agent cannot decode (:func:`decoded`)
or process (an exception inside the step, :func:`guarded`) is sent to ``dead_letters``
(keyed by its original key) with the source topic, partition, offset, the step, the
error and the raw payload, counted, and the agent goes on with the next message.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import faust
from faust.streams import _current_event
from faust.types import EventT, StreamT

from orders_app import records
from orders_app.app import app
from orders_app.records import DeadLetter, DecodeError, encode
from orders_app.topics import DEAD_LETTERS

log = logging.getLogger(__name__)

R = TypeVar("R", bound=faust.Record)


def key_str(event: EventT[Any]) -> str | None:
    key = event.key
    if key is None:
        return None
    if isinstance(key, bytes):
        return key.decode("utf-8", errors="replace")
    return str(key)


def has_header(event: EventT[Any], name: str) -> bool:
    """Whether the event's message carries header ``name`` (aiokafka gives a sequence of
    ``(name, value)`` pairs; Faust's own events may hold a mapping)."""
    headers = event.headers
    if not headers:
        return False
    if isinstance(headers, dict):
        return name in headers
    return any(key == name for key, _value in headers)


async def dead_letter(event: EventT[Any], error: str, agent: str) -> None:
    """Send the event's raw bytes to ``dead_letters`` with the reason."""
    msg = event.message
    letter = DeadLetter.of(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=key_str(event),
        payload=event.value if isinstance(event.value, bytes) else None,
        error=error,
        agent=agent,
    )
    log.warning(
        "dead letter from %s[%s]@%s (%s): %s",
        msg.topic,
        msg.partition,
        msg.offset,
        agent,
        error,
        extra={
            "topic": msg.topic,
            "partition": msg.partition,
            "offset": msg.offset,
            "order_id": letter.key,
            "agent": agent,
        },
    )
    app.metrics.dead_letters.labels(msg.topic).inc()
    await DEAD_LETTERS.send(key=msg.key, value=encode(letter))


@asynccontextmanager
async def guarded(event: EventT[Any], step: str) -> AsyncIterator[None]:
    """Run one event's step; an exception inside it (a rule that raises, a table value
    it cannot handle) sends the event to ``dead_letters`` with the error and the step,
    counts it in ``orders_processing_errors_total{step}``, and is not re-raised, so the
    agent goes on with the next event.  Cancellation (worker stop) passes through."""
    try:
        yield
    except Exception as err:  # one bad event must not stop the agent
        msg = event.message
        log.error(
            "processing error in %s on %s[%s]@%s",
            step,
            msg.topic,
            msg.partition,
            msg.offset,
            exc_info=True,
        )
        app.metrics.processing_errors.labels(step).inc()
        await dead_letter(event, f"{step} failed: {type(err).__name__}: {err}", step)


async def _decode_or_dead_letter(
    event: EventT[Any], cls: type[R], agent: str, owner: bool
) -> R | None:
    try:
        return records.decode(cls, event.value)
    except Exception as err:  # noqa: BLE001 - a decoder gap must not stop the agent
        if owner:
            reason = str(err) if isinstance(err, DecodeError) else f"{type(err).__name__}: {err}"
            await dead_letter(event, reason, agent)
        return None


async def decoded(
    stream: StreamT[Any], cls: type[R], agent: str, *, owner: bool = True
) -> AsyncIterator[tuple[EventT[Any], R]]:
    """Yield ``(event, record)`` for every decodable event; dead-letter the rest.

    When several agents read one topic, only its ``owner`` dead-letters a bad message
    (one dead letter per bad message); the others skip it."""
    async for event in stream.events():
        record = await _decode_or_dead_letter(event, cls, agent, owner)
        if record is not None:
            yield event, record


async def event_batches(
    stream: StreamT[Any], max_events: int, linger: float = 0.01
) -> AsyncIterator[list[EventT[Any]]]:
    """Yield the events waiting in the stream's channel, up to ``max_events`` at a time:
    after the first event, at most ``linger`` seconds for more (a lone event waits 10 ms,
    not a full ``take_events`` timeout).

    Faust's own iterator (and ``take_events``, built on it) yields to the event loop once
    per event; this drains the channel queue directly instead (the consumer's own
    per-message cost remains, see bench/PROFILE.md) and keeps the same bookkeeping:
    events of an older consumer generation (before a rebalance) are acknowledged
    unprocessed, as Faust does; the others are tracked as unacked (offsets are committed
    only past acknowledged events) and acknowledged after the caller is done with the
    batch, so at-least-once holds."""
    await stream.maybe_start()
    channel: Any = stream.channel
    queue = channel.queue
    faust_app = stream.app
    consumer: Any = faust_app.consumer
    acking_topics = faust_app.topics.acking_topics
    event_in = stream._on_stream_event_in  # type: ignore[attr-defined]
    event_out = stream._on_stream_event_out  # type: ignore[attr-defined]
    message_in = stream._on_message_in  # type: ignore[attr-defined]
    message_out = stream._on_message_out  # type: ignore[attr-defined]
    while not stream.should_stop:
        try:
            items = [await channel.__anext__()]
        except StopAsyncIteration:  # the channel was closed: the worker is stopping
            return
        if linger and queue.qsize() < max_events:
            await asyncio.sleep(linger)
        while len(items) < max_events and not queue.empty():
            items.append(queue.get_nowait())
        live: list[EventT[Any]] = []
        done: list[tuple[EventT[Any], Any]] = []
        generation = faust_app.consumer_generation_id
        active = faust_app.flow_control.is_active()
        for event in items:
            message = event.message
            if not active or message.generation_id != generation:
                done.append((event, None))
                continue
            if message.topic in acking_topics and not message.tracked:
                message.tracked = True
                consumer.unacked.add(message)
                message_in(message.tp, message.offset, message)
            done.append((event, event_in(message.tp, message.offset, stream, event)))
            live.append(event)
        try:
            if live:
                yield live
        finally:
            for event, state in done:
                message = event.message
                last = event.ack()
                event_out(message.tp, message.offset, stream, event, state)
                if last:
                    message_out(message.tp, message.offset, message)


async def decoded_batches(
    stream: StreamT[Any], cls: type[R], agent: str, *, max_events: int, owner: bool = True
) -> AsyncIterator[list[tuple[EventT[Any], R]]]:
    """As :func:`decoded`, a batch at a time (see :func:`event_batches`).

    A batch mixes partitions and no event is "current": wrap table reads and writes in
    :func:`in_partition_of` with the event the key came from."""
    async for events in event_batches(stream, max_events):
        batch = []
        for event in events:
            record = await _decode_or_dead_letter(event, cls, agent, owner)
            if record is not None:
                batch.append((event, record))
        if batch:
            yield batch


@contextmanager
def in_partition_of(event: EventT[Any]) -> Iterator[None]:
    """Make ``event`` Faust's current event: table reads, writes and changelog records
    go to its partition (as when iterating one event at a time)."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


async def send(topic: faust.TopicT, key: str, record: faust.Record, **kw: Any) -> None:
    await topic.send(key=key.encode(), value=encode(record), **kw)
