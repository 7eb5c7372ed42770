"""End-offset correction for table recovery.

Rule: Tansu's ListOffsets reports a partition's end as the *first* offset of its last
record batch + 1, so a changelog whose last batch holds several records looks shorter
than it is: Faust's recovery then stops early or raises ``ConsistencyError`` ("persisted
offset is higher than the highwater").  Recovery must not depend on that value, so the
reported end is verified by fetching the last batch itself: the true end is the offset
after the last record fetched from ``reported - 1`` on (or the fetch response's high
watermark, whichever is higher).  On a correct broker the fetch confirms the reported
value; the cost is one small fetch per recovered partition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

log = logging.getLogger(__name__)

FETCH_DEADLINE_S = 5.0


async def true_end_offsets(bootstrap: str, reported: Mapping[Any, int]) -> dict[Any, int]:
    """``reported`` end offsets per TP (Faust's or aiokafka's), corrected by a fetch."""
    todo = {tp: end for tp, end in reported.items() if end and end > 0}
    out = dict(reported)
    if not todo:
        return out
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        tps = {TopicPartition(tp.topic, tp.partition): tp for tp in todo}
        consumer.assign(list(tps))
        for ktp, tp in tps.items():
            consumer.seek(ktp, todo[tp] - 1)
        pending = set(tps)
        deadline = time.monotonic() + FETCH_DEADLINE_S
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(*pending, timeout_ms=200)
            for ktp, records in batch.items():
                if not records:
                    continue
                tp = tps[ktp]
                last = records[-1].offset + 1
                hw = consumer.highwater(ktp) or 0
                out[tp] = max(out[tp], last, hw)
                if await consumer.position(ktp) >= max(last, hw):
                    pending.discard(ktp)
        for ktp in pending:
            log.debug("end offset of %s not confirmed by a fetch; keeping %s", ktp, out[tps[ktp]])
        corrected = {tp: (reported[tp], out[tp]) for tp in todo if out[tp] != reported[tp]}
        if corrected:
            log.info("corrected changelog end offsets (reported, true): %s", corrected)
        return out
    finally:
        await consumer.stop()


def correct_highwaters(consumer: Any, bootstrap: str) -> None:
    """Wrap a Faust consumer's ``highwaters`` (used by table recovery) with the fetch check."""
    original: Callable[..., Awaitable[Mapping[Any, int]]] = consumer.highwaters

    async def highwaters(*partitions: Any) -> Mapping[Any, int]:
        reported = await original(*partitions)
        try:
            return await true_end_offsets(bootstrap, reported)
        except (TimeoutError, OSError) as err:
            log.warning("could not verify end offsets (%s); using the broker's", err)
            return reported

    consumer.highwaters = highwaters
