"""orders_app/faust_patches/changelog_cache.py: one record per row between two flushes, in
the order of the rows' last writes; tombstones; a record sent by other means drops the
kept one; the producer's flush sends what is kept first; a flush waits for one in
progress; the clean-stop marker and the discarding of stores a crash left.  The table
writes themselves go through tables.StampedTable (on a real Faust table in a test
context)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from orders_app.faust_patches.changelog_cache import (
    CLEAN_STOP_MARKER,
    ChangelogCache,
    discard_unclean_state,
    mark_clean_stop,
)


class Topic:
    def __init__(self, log: list[tuple[Any, ...]], gate: asyncio.Event | None = None) -> None:
        self.log, self.gate = log, gate
        self.fail_on: bytes | None = None

    async def send(self, **kw: Any) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if kw["key"] == self.fail_on:
            raise RuntimeError("producer stopped")
        self.log.append((kw["partition"], kw["key"], kw["value"], kw["value_serializer"]))
        assert kw["key_serializer"] == "raw" and kw["force"] is True
        assert kw["callback"] == "persisted-offset callback"


class Table:
    """What the cache uses of a Faust table: its changelog topic, value serializer and
    the callback that records the persisted offset."""

    value_serializer = "stamped_json"
    _on_changelog_sent = "persisted-offset callback"

    def __init__(self, log: list[tuple[Any, ...]], gate: asyncio.Event | None = None) -> None:
        self.changelog_topic = Topic(log, gate)


def cache() -> ChangelogCache:
    return ChangelogCache(interval=60.0)


async def test_one_record_per_row_with_its_last_value_in_the_order_of_last_writes() -> None:
    log: list[tuple[Any, ...]] = []
    table, c = Table(log), cache()
    c.write(table, 0, b"a", {"v": 1}, None)
    c.write(table, 1, b"b", {"v": 1}, None)
    c.write(table, 0, b"a", {"v": 2}, None)
    c.write(table, 1, b"a", {"v": 9}, None)  # another partition: another row
    assert c.pending == 3 and c.writes == 4
    assert await c.flush() == 3
    assert log == [
        (1, b"b", {"v": 1}, "stamped_json"),
        (0, b"a", {"v": 2}, "stamped_json"),
        (1, b"a", {"v": 9}, "stamped_json"),
    ]
    assert c.pending == 0 and c.sent == 3
    assert await c.flush() == 0  # nothing twice


async def test_a_delete_is_a_tombstone_and_a_later_write_wins() -> None:
    log: list[tuple[Any, ...]] = []
    table, c = Table(log), cache()
    c.write(table, 0, b"a", {"v": 1}, None)
    c.write(table, 0, b"a", None, "raw")
    c.write(table, 0, b"b", None, "raw")
    c.write(table, 0, b"b", b"raw bytes", "raw")
    await c.flush()
    assert log == [(0, b"a", None, "raw"), (0, b"b", b"raw bytes", "raw")]


async def test_forget_drops_the_kept_record_of_a_row_sent_by_other_means() -> None:
    log: list[tuple[Any, ...]] = []
    table, c = Table(log), cache()
    c.write(table, 0, b"a", {"v": 1}, None)
    c.write(table, 0, b"b", {"v": 1}, None)
    c.forget(table, 0, b"a", b"newer")
    c.forget(table, 0, b"zzz", None)  # nothing kept: nothing happens
    await c.flush()
    assert log == [(0, b"b", {"v": 1}, "stamped_json")]


async def test_the_producers_flush_sends_what_is_kept_first() -> None:
    log: list[tuple[Any, ...]] = []
    table, c = Table(log), cache()

    class Producer:
        async def flush(self) -> None:
            log.append(("producer flushed",))

    producer = Producer()
    assert not c.attached
    c.attach(producer)
    assert c.attached
    c.write(table, 0, b"a", {"v": 1}, None)
    await producer.flush()
    assert log == [(0, b"a", {"v": 1}, "stamped_json"), ("producer flushed",)]


async def test_a_flush_waits_for_the_one_in_progress() -> None:
    """The commit's flush must not return while the timer's flush still holds records
    it has taken but not handed over: the offsets would be committed without them."""
    log: list[tuple[Any, ...]] = []
    gate = asyncio.Event()
    table, c = Table(log, gate), cache()
    c.write(table, 0, b"a", {"v": 1}, None)
    first = asyncio.ensure_future(c.flush())
    await asyncio.sleep(0.01)  # the first has taken the record and waits in send
    assert c.pending == 0 and not log
    second = asyncio.ensure_future(c.flush())
    await asyncio.sleep(0.01)
    assert not second.done()
    gate.set()
    assert await first == 1 and await second == 0
    assert log == [(0, b"a", {"v": 1}, "stamped_json")]


async def test_a_row_forgotten_during_a_flush_is_not_sent_by_it() -> None:
    """The retention sweeper sends a row's newer record itself while a flush is under
    way: the flush must not send the older record it took (it would land after)."""
    log: list[tuple[Any, ...]] = []
    gate = asyncio.Event()
    table, c = Table(log, gate), cache()
    c.write(table, 0, b"a", {"v": 1}, None)
    c.write(table, 0, b"b", {"v": 1}, None)
    flushing = asyncio.ensure_future(c.flush())
    await asyncio.sleep(0.01)  # "a" is being handed over, "b" is taken and waits
    c.forget(table, 0, b"b", b"newer")
    gate.set()
    assert await flushing == 1
    assert log == [(0, b"a", {"v": 1}, "stamped_json")]


async def test_a_write_during_a_flush_is_sent_by_that_flush() -> None:
    log: list[tuple[Any, ...]] = []
    gate = asyncio.Event()
    table, c = Table(log, gate), cache()
    c.write(table, 0, b"a", {"v": 1}, None)
    flushing = asyncio.ensure_future(c.flush())
    await asyncio.sleep(0.01)
    c.write(table, 0, b"a", {"v": 2}, None)  # an agent writes meanwhile
    gate.set()
    assert await flushing == 2
    assert log == [(0, b"a", {"v": 1}, "stamped_json"), (0, b"a", {"v": 2}, "stamped_json")]


async def test_what_a_failed_flush_did_not_send_is_kept(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing is dropped when a send fails: the records not handed over stay kept (a
    newer write of one of them stays the newer), for the next flush to send."""
    log: list[tuple[Any, ...]] = []
    table, c = Table(log), cache()
    for key in (b"a", b"b", b"c"):
        c.write(table, 0, key, {"v": 1}, None)
    table.changelog_topic.fail_on = b"b"
    with pytest.raises(RuntimeError):
        await c.flush()
    assert log == [(0, b"a", {"v": 1}, "stamped_json")] and c.pending == 2
    c.write(table, 0, b"c", {"v": 2}, None)  # written after the failure: the newer
    table.changelog_topic.fail_on = None
    assert await c.flush() == 2
    assert log[1:] == [(0, b"b", {"v": 1}, "stamped_json"), (0, b"c", {"v": 2}, "stamped_json")]
    assert c.sent == 3


async def test_the_periodic_flush_retries_after_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    log: list[tuple[Any, ...]] = []
    table, c = Table(log), ChangelogCache(interval=0.05)
    table.changelog_topic.fail_on = b"a"
    c.write(table, 0, b"a", {"v": 1}, None)
    await c.start()
    try:
        for _ in range(100):
            if "retried" in caplog.text:
                break
            await asyncio.sleep(0.02)
        assert "retried" in caplog.text and c.pending == 1 and not c.crashed
        table.changelog_topic.fail_on = None
        for _ in range(100):
            if log:
                break
            await asyncio.sleep(0.02)
        assert log == [(0, b"a", {"v": 1}, "stamped_json")]
    finally:
        await c.stop()


async def test_the_periodic_flush_sends_what_no_commit_follows() -> None:
    log: list[tuple[Any, ...]] = []
    table, c = Table(log), ChangelogCache(interval=0.05)
    await c.start()
    try:
        c.write(table, 0, b"a", {"v": 1}, None)
        for _ in range(100):
            if log:
                break
            await asyncio.sleep(0.02)
        assert log == [(0, b"a", {"v": 1}, "stamped_json")]
        c.write(table, 0, b"b", {"v": 1}, None)
    finally:
        await c.stop()  # the stop sends what is left
    assert log[-1] == (0, b"b", {"v": 1}, "stamped_json")


# -- the clean-stop marker ----------------------------------------------------------------


def stores(tabledir: Path) -> None:
    (tabledir / "orders_app-order_status-0.db").mkdir(parents=True)
    (tabledir / "orders_app-order_status-0.db" / "CURRENT").write_text("x")
    (tabledir / "LOCK").write_text("")


def test_stores_a_crash_left_are_discarded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stores(tmp_path)
    assert discard_unclean_state(tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert "did not stop cleanly" in caplog.text


def test_stores_a_clean_stop_left_are_kept_and_the_marker_consumed(tmp_path: Path) -> None:
    stores(tmp_path)
    assert mark_clean_stop(tmp_path, cache())
    assert not discard_unclean_state(tmp_path)
    assert (tmp_path / "orders_app-order_status-0.db" / "CURRENT").exists()
    assert not (tmp_path / CLEAN_STOP_MARKER).exists()
    assert discard_unclean_state(tmp_path)  # no marker now: a crash after this start


def test_nothing_to_discard_on_a_first_start(tmp_path: Path) -> None:
    assert not discard_unclean_state(tmp_path / "missing")
    assert not discard_unclean_state(tmp_path)


def test_no_marker_while_records_are_unsent(tmp_path: Path) -> None:
    stores(tmp_path)
    c = cache()
    c.write(Table([]), 0, b"a", {"v": 1}, None)
    assert not mark_clean_stop(tmp_path, c)
    assert not (tmp_path / CLEAN_STOP_MARKER).exists()


# -- what the patch relies on in faust-streaming 0.15 ---------------------------------------


def test_faust_flushes_the_producer_before_it_commits_on_a_revoke_and_at_stop() -> None:
    """The cache is flushed by wrapping ``Producer.flush``: that is only enough while
    Faust awaits the producer's flush before every offset commit (at-least-once), when
    partitions are revoked and when the app stops."""
    import inspect

    from faust.app.base import App
    from faust.transport.consumer import Consumer

    commit = inspect.getsource(Consumer._commit_offsets)
    flush_at = commit.index("await self.app.producer.flush()")
    assert flush_at < commit.index("did_commit = await self._commit(committable_offsets)")
    assert "await T(self._producer_flush)(on_timeout)" in inspect.getsource(
        App._on_partitions_revoked
    )
    assert "await self._producer_flush(self.log)" in inspect.getsource(App.on_stop)
    assert "await self._producer.flush()" in inspect.getsource(App._producer_flush)


def test_stamped_table_mirrors_fausts_on_key_set_and_on_key_del() -> None:
    """tables.StampedTable replaces the send in ``Table.on_key_set`` / ``on_key_del`` and
    keeps the rest: pinned so an upgrade that adds a step there is noticed."""
    import inspect

    from faust.tables.table import Table

    on_set = inspect.getsource(Table.on_key_set)
    assert "self.send_changelog(self.partition_for_key(key), key, value)" in on_set
    assert "self._maybe_set_key_ttl(key, partition)" in on_set
    assert "self._sensor_on_set(self, key, value)" in on_set
    on_del = inspect.getsource(Table.on_key_del)
    assert "self._maybe_del_key_ttl(key, partition)" in on_del
    assert "self._sensor_on_del(self, key)" in on_del
    assert on_set.count("\n") <= 10 and on_del.count("\n") <= 10  # nothing else in them


# -- whole batches to aiokafka's producer ------------------------------------------------


class Builder:
    """aiokafka's ``BatchBuilder`` as the cache uses it, full after ``room`` records."""

    def __init__(self, room: int) -> None:
        self.room, self.records = room, []  # type: ignore[var-annotated]

    def append(self, *, timestamp: Any, key: bytes, value: Any, headers: Any) -> Any:
        if len(self.records) >= self.room:
            return None
        self.records.append((key, value, headers))
        return object()


class Metadata:
    def __init__(self, partition: int, offset: int) -> None:
        self.topic_partition, self.offset = ("changelog", partition), offset

    def _replace(self, *, offset: int) -> Metadata:
        return Metadata(self.topic_partition[1], offset)


class BatchProducer:
    """The aiokafka producer under Faust's: batches queued per partition (gated, and
    failing on demand); ``ack`` answers them with consecutive base offsets."""

    def __init__(self, room: int = 100, gate: asyncio.Event | None = None) -> None:
        self.room, self.gate = room, gate
        self.queued: list[tuple[str, int, Builder, asyncio.Future[Any]]] = []
        self.fail = False
        self.end: dict[int, int] = {}

    def create_batch(self) -> Builder:
        return Builder(self.room)

    async def send_batch(self, builder: Builder, topic: str, *, partition: int) -> Any:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("producer closed")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queued.append((topic, partition, builder, fut))
        return fut

    def ack(self) -> None:
        for _topic, partition, builder, fut in self.queued:
            if not fut.done():
                base = self.end.get(partition, 0)
                self.end[partition] = base + len(builder.records)
                fut.set_result(Metadata(partition, base))

    def records(self) -> list[tuple[int, bytes, Any]]:
        return [(p, k, v) for _t, p, b, _f in self.queued for k, v, _h in b.records]


class Sensors:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def on_send_initiated(self, producer: Any, topic: str, message: Any, ks: int, vs: int) -> Any:
        self.calls.append(("initiated", topic))
        return len(self.calls)

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        self.calls.append(("completed", metadata.offset))

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        self.calls.append(("error", repr(exc)))


class BatchTable:
    """A Faust table as the batch path uses it: the changelog topic's name and value
    serialization, the app's sensors, the persisted-offset callback."""

    value_serializer = "json"
    changelog_topic_name = "changelog"

    def __init__(self) -> None:
        self.persisted: list[tuple[Any, int]] = []
        self.app = type("App", (), {"sensors": Sensors()})()
        table = self

        class ChangelogTopic:
            def get_topic_name(self) -> str:
                return table.changelog_topic_name

            def prepare_headers(self, headers: Any) -> Any:
                return headers

            def prepare_value(self, value: Any, serializer: Any, schema: Any, headers: Any) -> Any:
                if value == "unserializable":
                    raise TypeError("cannot serialize")
                if isinstance(value, bytes):
                    return value, headers
                assert serializer == "json"
                return repr(value).encode(), headers

        self.changelog_topic = ChangelogTopic()

    def _on_changelog_sent(self, fut: Any) -> None:
        res = fut.result()
        self.persisted.append((res.topic_partition, res.offset))


def attached(producer: BatchProducer) -> ChangelogCache:
    c = cache()

    class Faust:
        _producer = producer

        async def flush(self) -> None:
            pass

    c.attach(Faust())
    return c


async def test_batches_per_changelog_partition_in_the_order_of_last_writes() -> None:
    table, producer = BatchTable(), BatchProducer()
    c = attached(producer)
    c.write(table, 0, b"a", {"v": 1}, None)
    c.write(table, 1, b"b", {"v": 1}, None)
    c.write(table, 0, b"c", None, "raw")  # a tombstone
    c.write(table, 0, b"a", {"v": 2}, None)
    c.write(table, 1, b"d", b"raw", "raw")
    assert await c.flush() == 4 and c.sent == 4 and c.pending == 0
    # One batch per partition (partitions in the order their first kept row was written).
    assert [(t, p, len(b.records)) for t, p, b, _ in producer.queued] == [
        ("changelog", 1, 2),
        ("changelog", 0, 2),
    ]
    assert producer.records() == [
        (1, b"b", b"{'v': 1}"),
        (1, b"d", b"raw"),
        (0, b"c", None),
        (0, b"a", b"{'v': 2}"),
    ]
    assert not table.persisted  # not acknowledged yet
    producer.ack()
    await asyncio.sleep(0)
    # Faust's callback once per batch, with the batch's last record's offset.
    assert table.persisted == [(("changelog", 1), 1), (("changelog", 0), 1)]
    sensors = table.app.sensors.calls
    assert sensors.count(("initiated", "changelog")) == 4
    assert sorted(c for c in sensors if c[0] == "completed") == [("completed", 1)] * 4
    assert await c.flush() == 0  # nothing twice


async def test_a_full_batch_goes_on_in_the_next_one_in_order() -> None:
    table, producer = BatchTable(), BatchProducer(room=2)
    c = attached(producer)
    for key in (b"a", b"b", b"c", b"d", b"e"):
        c.write(table, 0, key, key, "raw")
    assert await c.flush() == 5
    assert [len(b.records) for _t, _p, b, _f in producer.queued] == [2, 2, 1]
    assert [k for _p, k, _v in producer.records()] == [b"a", b"b", b"c", b"d", b"e"]
    producer.ack()
    await asyncio.sleep(0)
    assert table.persisted == [(("changelog", 0), 1), (("changelog", 0), 3), (("changelog", 0), 4)]


async def test_a_row_superseded_while_its_batch_is_queued_is_sent_again_after_it() -> None:
    """The retention sweeper sends a row's newer record while the batch holding the
    older one waits to be queued: the older cannot be taken back, so the newer one
    follows it; rows not in a batch yet are dropped as before."""
    gate = asyncio.Event()
    table, producer = BatchTable(), BatchProducer(room=1, gate=gate)
    c = attached(producer)
    c.write(table, 0, b"a", b"old-a", "raw")
    c.write(table, 0, b"b", b"old-b", "raw")
    flushing = asyncio.ensure_future(c.flush())
    await asyncio.sleep(0.01)  # "a" is in a batch waiting to be queued, "b" is taken
    c.forget(table, 0, b"a", b"new-a")
    c.forget(table, 0, b"b", b"new-b")
    gate.set()
    assert await flushing == 2
    assert producer.records() == [(0, b"a", b"old-a"), (0, b"a", b"new-a")]
    # no empty batch for "b", forgotten before its batch was built
    assert [len(b.records) for _t, _p, b, _f in producer.queued] == [1, 1]


async def test_a_batch_not_queued_is_kept_for_the_next_flush() -> None:
    table, producer = BatchTable(), BatchProducer(room=2)
    c = attached(producer)
    for key in (b"a", b"b", b"c"):
        c.write(table, 0, key, b"v1", "raw")
    producer.fail = True
    with pytest.raises(RuntimeError):
        await c.flush()
    assert c.pending == 3 and c.sent == 0 and not producer.queued
    assert table.app.sensors.calls.count(("error", "RuntimeError('producer closed')")) == 2
    c.write(table, 0, b"b", b"v2", "raw")  # written after the failure: the newer
    producer.fail = False
    assert await c.flush() == 3
    assert producer.records() == [(0, b"a", b"v1"), (0, b"c", b"v1"), (0, b"b", b"v2")]


async def test_a_record_that_cannot_be_serialized_keeps_the_whole_batch() -> None:
    table, producer = BatchTable(), BatchProducer()
    c = attached(producer)
    c.write(table, 0, b"a", b"v", "raw")
    c.write(table, 0, b"b", "unserializable", "json")
    with pytest.raises(TypeError):
        await c.flush()
    assert c.pending == 2 and not producer.queued and c.sent == 0
    c.write(table, 0, b"b", b"fixed", "raw")
    assert await c.flush() == 2
    assert producer.records() == [(0, b"a", b"v"), (0, b"b", b"fixed")]


async def test_a_batch_the_broker_refuses_is_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    table, producer = BatchTable(), BatchProducer()
    c = attached(producer)
    c.write(table, 0, b"a", b"v", "raw")
    await c.flush()
    producer.queued[0][3].set_exception(RuntimeError("not leader"))
    await asyncio.sleep(0)
    assert "changelog batch for changelog not sent" in caplog.text
    assert ("error", "RuntimeError('not leader')") in table.app.sensors.calls
    assert not table.persisted


async def test_aiokafkas_batch_builder_takes_a_first_record_of_any_size_and_refuses_when_full() -> (
    None
):
    """What the batch path relies on in aiokafka 0.14: ``create_batch`` builds an empty
    ``BatchBuilder`` without a started producer; ``append`` answers None once the batch
    is full (never for its first record); ``send_batch`` queues a batch on a partition."""
    import inspect

    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", max_batch_size=200)
    builder = producer.create_batch()
    assert builder.append(timestamp=None, key=b"k", value=b"x" * 1000, headers=[]) is not None
    assert builder.append(timestamp=None, key=b"k", value=b"y", headers=[]) is None
    small = producer.create_batch()
    assert small.append(timestamp=None, key=b"k", value=None, headers=[]) is not None
    assert list(inspect.signature(producer.send_batch).parameters) == [
        "batch",
        "topic",
        "partition",
    ]
    # The batch's future holds the RecordMetadata of its first record (its base offset);
    # a record's offset is the base plus its place in the batch, as for send()'s futures.
    from aiokafka.producer.message_accumulator import MessageBatch
    from aiokafka.structs import RecordMetadata

    done = inspect.getsource(MessageBatch.done)
    assert "self.future.set_result(" in done and "offset = base_offset + metadata.offset" in done
    assert {"topic_partition", "offset"} <= set(RecordMetadata._fields)
