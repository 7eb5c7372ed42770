"""Changelog end offsets used by table recovery are verified by a fetch on the real broker,
and an end that cannot be verified stops recovery loudly instead of falling back to the
broker's known-wrong ListOffsets answer (orders_app/broker_compat/offsets.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from orders_app.admin import ensure_topics
from orders_app.broker_compat.offsets import (
    EndOffsetsUnverified,
    correct_highwaters,
    true_end_offsets,
)
from orders_app.embedded.servers import free_port

pytestmark = pytest.mark.integration

TOPIC = "end-offsets"
TP = TopicPartition(TOPIC, 0)


async def _write_one_batch(bootstrap: str, n: int) -> None:
    """``n`` records in one record batch: Tansu then reports the end as batch start + 1."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=200)
    await producer.start()
    try:
        futs = [await producer.send(TOPIC, value=b"v%d" % i, partition=0) for i in range(n)]
        for fut in futs:
            await fut
    finally:
        await producer.stop()


async def test_multi_record_last_batch_is_corrected(broker: Any) -> None:
    await ensure_topics(broker.bootstrap, [TOPIC], 1)
    await _write_one_batch(broker.bootstrap, 5)
    # What Tansu's ListOffsets answers for one 5-record batch at offset 0.
    assert await true_end_offsets(broker.bootstrap, {TP: 1}) == {TP: 5}
    # A correct end is confirmed unchanged.
    assert await true_end_offsets(broker.bootstrap, {TP: 5}) == {TP: 5}


async def test_end_past_the_log_is_not_trusted(broker: Any) -> None:
    await ensure_topics(broker.bootstrap, [TOPIC], 1)
    await _write_one_batch(broker.bootstrap, 3)
    with pytest.raises(EndOffsetsUnverified):
        await true_end_offsets(broker.bootstrap, {TP: 40}, deadline_s=2.0)


class _FaustConsumer:
    """Stands for Faust's consumer: only ``highwaters`` is wrapped."""

    def __init__(self, reported: Mapping[Any, int]) -> None:
        self.reported = dict(reported)

    async def highwaters(self, *partitions: Any) -> Mapping[Any, int]:
        return self.reported


async def test_unreachable_broker_stops_recovery_instead_of_using_reported() -> None:
    consumer = _FaustConsumer({TP: 7})
    correct_highwaters(consumer, f"127.0.0.1:{free_port()}")
    with pytest.raises(EndOffsetsUnverified, match="end-offsets"):
        await consumer.highwaters(TP)


async def test_empty_partitions_need_no_fetch() -> None:
    consumer = _FaustConsumer({TP: 0})
    correct_highwaters(consumer, f"127.0.0.1:{free_port()}")
    assert await consumer.highwaters(TP) == {TP: 0}


class _Seeker:
    """The two calls ``_past_log_start`` makes on the aiokafka consumer."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.sought: dict[Any, int] = {}

    async def beginning_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return {tp: self.start for tp in tps}

    def seek(self, tp: Any, offset: int) -> None:
        self.sought[tp] = offset


async def test_a_log_deleted_up_to_its_end_is_read_from_its_start() -> None:
    # Kafka: a windowed changelog idle past its retention has log start == end (12); the
    # fetch at reported - 1 (11) is out of range, yet nothing is wrong.
    from aiokafka.errors import OffsetOutOfRangeError

    from orders_app.broker_compat.offsets import _past_log_start

    seeker = _Seeker(start=12)
    err = OffsetOutOfRangeError({TP: 11})
    await _past_log_start(seeker, err, {TP}, {TP: 12}, {TP: TP})  # type: ignore[arg-type]
    assert seeker.sought == {TP: 12}
    # whereas an end reported past a log that starts at 0 is not trusted
    with pytest.raises(EndOffsetsUnverified):
        await _past_log_start(_Seeker(0), err, {TP}, {TP: 12}, {TP: TP})  # type: ignore[arg-type]


async def test_the_embedded_broker_says_it_is_tansu(broker) -> None:
    """The probe `orders-app worker` runs for ORDERS_BROKER_COMPAT=auto."""
    from orders_app.broker_compat import wanted
    from orders_app.preflight import broker_cluster_id
    from orders_app.settings import Settings

    cluster = await broker_cluster_id(Settings(broker_url=f"kafka://{broker.bootstrap}"))
    assert cluster is not None and wanted("auto", cluster)
