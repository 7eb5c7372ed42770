"""End-offset correction for table recovery.

Rule: Tansu's ListOffsets reports a partition's end as the *first* offset of its last
record batch + 1, so a changelog whose last batch holds several records looks shorter
than it is: Faust's recovery then stops early or raises ``ConsistencyError`` ("persisted
offset is higher than the highwater").  Recovery must not depend on that value, so the
reported end is verified by fetching the last batch itself: the true end is the offset
after the last record fetched from ``reported - 1`` on (or the fetch response's high
watermark, whichever is higher).  On a correct broker the fetch confirms the reported
value; the cost is one small fetch per recovered partition.

A partition whose end cannot be confirmed (broker unreachable, fetch deadline passed)
raises :class:`EndOffsetsUnverified` naming it: falling back to the reported value would
make recovery silently stop short of the changelog's end, so the worker stops instead and
its supervisor restarts it (``orders-app run``, compose ``restart:``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError, OffsetOutOfRangeError
from aiokafka.structs import TopicPartition

log = logging.getLogger(__name__)

FETCH_DEADLINE_S = 5.0


class EndOffsetsUnverified(RuntimeError):
    """The true end of a changelog partition could not be confirmed by a fetch."""


async def true_end_offsets(
    bootstrap: str, reported: Mapping[Any, int], *, deadline_s: float = FETCH_DEADLINE_S
) -> dict[Any, int]:
    """``reported`` end offsets per TP (Faust's or aiokafka's), corrected by a fetch.

    Raises :class:`EndOffsetsUnverified` when a partition's end is not confirmed.
    """
    todo = {tp: end for tp, end in reported.items() if end and end > 0}
    out = dict(reported)
    if not todo:
        return out
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        # Reading past the reported end (it was too high) must not reset to the end and
        # "confirm" it: the partition stays unconfirmed and recovery stops loudly.
        auto_offset_reset="none",
    )
    try:
        await asyncio.wait_for(consumer.start(), deadline_s)
    except (TimeoutError, OSError, KafkaError) as err:
        await consumer.stop()
        raise EndOffsetsUnverified(
            f"cannot verify changelog end offsets of {sorted(map(str, todo))}: {err!r}"
        ) from err
    try:
        tps = {TopicPartition(tp.topic, tp.partition): tp for tp in todo}
        consumer.assign(list(tps))
        for ktp, tp in tps.items():
            consumer.seek(ktp, todo[tp] - 1)
        pending = set(tps)
        deadline = time.monotonic() + deadline_s
        while pending and time.monotonic() < deadline:
            try:
                batch = await consumer.getmany(*pending, timeout_ms=200)
            except OffsetOutOfRangeError as err:
                await _past_log_start(consumer, err, pending, todo, tps)
                continue
            for ktp, records in batch.items():
                tp = tps[ktp]
                last = records[-1].offset + 1 if records else 0
                hw = consumer.highwater(ktp) or 0
                out[tp] = max(out[tp], last, hw)
            for ktp in list(pending):
                # A batch of control records only (a transactional changelog's last
                # commit marker) returns no records but moves the position past it.
                position = await consumer.position(ktp)
                if position >= todo[tps[ktp]] and position >= (consumer.highwater(ktp) or 0):
                    out[tps[ktp]] = max(out[tps[ktp]], position)
                    pending.discard(ktp)
        if pending:
            raise EndOffsetsUnverified(
                f"end offsets of {sorted(map(str, pending))} not confirmed by a fetch "
                f"within {deadline_s:g} s"
            )
        corrected = {tp: (reported[tp], out[tp]) for tp in todo if out[tp] != reported[tp]}
        if corrected:
            log.info("corrected changelog end offsets (reported, true): %s", corrected)
        return out
    finally:
        await consumer.stop()


async def _past_log_start(
    consumer: AIOKafkaConsumer,
    err: OffsetOutOfRangeError,
    pending: set[TopicPartition],
    todo: Mapping[Any, int],
    tps: Mapping[TopicPartition, Any],
) -> None:
    """An out-of-range fetch: below the log start (Kafka deleted the old segments, e.g. a
    windowed changelog's retention) the fetch goes on from the log start; past the log's
    end the reported end is wrong and recovery must not trust it."""
    failed = err.args[0] if err.args and isinstance(err.args[0], dict) else {}
    bad = [tp for tp in failed if tp in pending] or list(pending)
    starts = await consumer.beginning_offsets(bad)
    for ktp in bad:
        start = starts.get(ktp, 0)
        if start <= todo[tps[ktp]] - 1:
            raise EndOffsetsUnverified(
                f"changelog end offset of {ktp} reported past the log's end "
                f"({todo[tps[ktp]]}): {err!r}"
            ) from err
        consumer.seek(ktp, start)


def correct_highwaters(consumer: Any, bootstrap: str) -> None:
    """Wrap a Faust consumer's ``highwaters`` (used by table recovery) with the fetch check."""
    original: Callable[..., Awaitable[Mapping[Any, int]]] = consumer.highwaters

    async def highwaters(*partitions: Any) -> Mapping[Any, int]:
        reported = await original(*partitions)
        return await true_end_offsets(bootstrap, reported)

    consumer.highwaters = highwaters
