"""Stream helpers shared by every agent: decode-or-dead-letter, and sending records.

Rule: nothing is silently dropped.  A message an agent cannot decode or process is sent
to ``dead_letters`` (keyed by its original key) with the source topic, partition, offset,
the error and the raw payload, and the agent goes on with the next message.
"""

from __future__ import annotations

import base64
import logging
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
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


async def dead_letter(event: EventT[Any], error: str, agent: str) -> None:
    """Send the event's raw bytes to ``dead_letters`` with the reason."""
    msg = event.message
    payload = event.value if isinstance(event.value, bytes) else b""
    letter = DeadLetter(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=key_str(event),
        error=error[:2000],
        payload_b64=base64.b64encode(payload).decode(),
        agent=agent,
        at=time.time(),
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


async def decoded_batches(
    stream: StreamT[Any],
    cls: type[R],
    agent: str,
    *,
    max_events: int,
    within: float,
    owner: bool = True,
) -> AsyncIterator[list[tuple[EventT[Any], R]]]:
    """As :func:`decoded`, a batch at a time (``stream.take_events``): up to
    ``max_events`` events, or what arrived within ``within`` seconds.  The events are
    acknowledged after the caller is done with the batch (at-least-once holds).

    A batch mixes partitions and no event is "current": wrap table reads and writes in
    :func:`in_partition_of` with the event the key came from."""
    # StreamT does not declare take_events; faust.Stream has it.
    async for events in stream.take_events(max_events, within):  # type: ignore[attr-defined]
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
