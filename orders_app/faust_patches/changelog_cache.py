"""Changelog cache: a table row written several times between two commits makes one
changelog record, as Kafka Streams' record cache does (``cache.max.bytes.buffering``,
flushed on every commit), and a worker that did not stop cleanly rebuilds its local
tables from the changelogs.

Rule: the changelog of a table is what recovery reads, so every write the committed
offsets depend on must be in it before those offsets are committed; writes between two
commits need not each be a record of their own - a compacted changelog keeps only the
last value of a key anyway.  Behind ``ORDERS_CHANGELOG_CACHE`` (default on), at-least-once
processing only (with ``exactly_once`` every changelog record belongs to a transaction:
Faust's path is kept).

faust-streaming 0.15.3 sends one changelog record per table write (``Table.on_key_set``
-> ``send_changelog`` -> the producer's buffer).  An order's document is written three
times in ~100 ms, a sku's stock counter on every order: about three of the sixteen Kafka
writes an order costs (issue 12; bench/PROFILE.md).

Patch, in two parts:

- :class:`ChangelogCache` keeps the last write of each row (table, partition, key) not
  sent yet; a later write of the same row replaces it and moves it to the end, so the
  changelog gets the rows in the order of their last writes.  The local store is
  written at once, as before (reads see every write).  ``flush`` sends what is kept,
  one record per row, with Faust's own callback (``Table._on_changelog_sent``: the
  persisted offset): each changelog partition's records as whole record batches handed
  to the aiokafka producer under Faust's (``create_batch``/``send_batch``: the batch is
  built in C, one future and one callback per batch, with the batch's last offset;
  Faust's send sensors still see every record), or one ``Topic.send`` per record when
  that producer is not aiokafka's.  It runs before every flush of
  the producer - :meth:`ChangelogCache.attach` wraps ``Producer.flush``, which Faust
  awaits before it commits offsets (``Consumer._commit_offsets``), when partitions are
  revoked (``App._on_partitions_revoked``) and when the app stops - and on a timer
  every commit interval (writes no commit follows: the retention sweeper's).  A lock
  makes a flush wait for one in progress, so "flushed" always means "handed to the
  producer".  The rows the retention sweeper and the rebuild write outside a stream
  (tables/outside_stream.py) are sent at once, as before (the sweeper waits for their
  acknowledgement); such a send drops the row's kept record, which is older
  (:meth:`ChangelogCache.forget`), so it can never follow and undo it; a kept record
  already in a batch waiting to be queued cannot be dropped, so the newer one is sent
  again after that batch.
- A crash leaves the local RocksDB stores ahead of the changelog by what was not sent
  (with or without the cache; the cache widens the window from the producer's
  linger to the commit interval).  The worker would go on from its local state and
  never write those rows again (a redelivered event finds its effect in place and
  writes nothing), so the changelog - what another worker recovers from - would miss
  them for good.  Kafka Streams wipes a task's stores after an unclean shutdown; so
  does this: :func:`mark_clean_stop` leaves a marker in the table directory when the
  app stopped with nothing unsent, :func:`discard_unclean_state` removes the stores at
  start when the marker is missing (the changelogs rebuild them; the events after the
  last commit are delivered again).

Upstream shape: a ``table_cache`` setting in Faust's ``Table`` (the same two hooks:
record on set, flush before the producer flushes) and a clean-shutdown checkpoint file
beside the stores, as Kafka Streams' ``.checkpoint``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from mode import Service

log = logging.getLogger(__name__)

CLEAN_STOP_MARKER = ".clean-stop"

Row = tuple[Any, int, bytes]  # table, changelog partition, serialized key


class ChangelogCache(Service):
    """The changelog records not sent yet, one per row (see the module docstring)."""

    def __init__(self, *, interval: float, **kwargs: Any) -> None:
        self.interval = interval
        self.attached = False
        self._pending: dict[Row, tuple[Any, str | None]] = {}
        self._taken: dict[Row, tuple[Any, str | None]] = {}  # by the flush in progress
        self._in_flight: set[Row] = set()  # in a batch not queued yet
        self._superseded: dict[Row, tuple[Any, str | None]] = {}  # newer, for in-flight rows
        self._producer: Any = None  # Faust's, once attached
        self._flushing = asyncio.Lock()
        self.writes = 0  # table writes taken (all rows)
        self.sent = 0  # changelog records sent
        super().__init__(**kwargs)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def write(
        self, table: Any, partition: int, key: bytes, value: Any, serializer: str | None
    ) -> None:
        """Keep ``value`` (None: a tombstone) as the row's next changelog record.
        ``serializer`` None: the table's value serializer."""
        row = (table, partition, key)
        self._pending.pop(row, None)  # the record goes where the last write is
        self._pending[row] = (value, serializer)
        self.writes += 1

    def forget(self, table: Any, partition: int, key: bytes, newer: bytes | None) -> None:
        """The row's ``newer`` record (raw bytes, None: a tombstone) is being sent by
        other means: drop the kept one, also when a flush in progress has taken it and
        not handed it over yet (sent after the newer one, it would undo it).  A row
        already in a batch being queued cannot be dropped: the newer record is sent
        again after that batch."""
        row = (table, partition, key)
        self._pending.pop(row, None)
        self._taken.pop(row, None)
        if row in self._in_flight:
            self._superseded[row] = (newer, "raw")

    async def flush(self) -> int:
        """Hand every kept record to the producer (not waiting for acknowledgements:
        the producer's own flush does; a partition's next batch is queued once its
        previous one is on its way); -> how many."""
        async with self._flushing:
            before = self.sent
            while self._pending:
                # Taken, not yet handed over: ``forget`` may still drop a row here.
                self._taken, self._pending = self._pending, {}
                batches = self._batch_producer()
                if batches is None:
                    await self._send_one_by_one()
                    continue
                for (table, partition), rows in _by_changelog_partition(self._taken):
                    await self._send_in_batches(batches, table, partition, rows)
            return self.sent - before

    async def _send_one_by_one(self) -> None:
        """Faust's path: one ``Topic.send`` per record (no aiokafka producer to hand
        whole batches to)."""
        while self._taken:
            row = next(iter(self._taken))
            value, serializer = self._taken.pop(row)
            table, partition, key = row
            try:
                await table.changelog_topic.send(
                    key=key,
                    value=value,
                    partition=partition,
                    key_serializer="raw",
                    value_serializer="raw"
                    if value is None
                    else serializer or table.value_serializer,
                    callback=table._on_changelog_sent,
                    force=True,  # never attached to the current event
                )
            except BaseException:
                self._keep_unsent([(row, (value, serializer)), *self._taken.items()])
                self._taken = {}
                raise
            self.sent += 1

    def _batch_producer(self) -> Any | None:
        """The aiokafka producer under the attached Faust producer, when it takes whole
        batches (``create_batch``/``send_batch``); None: records go one by one."""
        producer = getattr(self._producer, "_producer", None)
        if producer is None or not all(
            hasattr(producer, name) for name in ("create_batch", "send_batch")
        ):
            return None
        return producer

    async def _send_in_batches(
        self, producer: Any, table: Any, partition: int, rows: list[Row]
    ) -> None:
        """Hand one changelog partition's taken ``rows`` to ``producer`` as record
        batches (aiokafka's ``BatchBuilder``: built in C, one future per batch), in
        order.  A row is in flight from its append to the builder until the batch is
        queued; ``forget`` cannot drop it there, so it notes the newer record, sent
        again after this batch."""
        topic = table.changelog_topic
        name = topic.get_topic_name()
        sensors, faust_producer = table.app.sensors, self._producer
        rows_left = iter(rows)
        row: Row | None = next(rows_left, None)
        while row is not None:
            builder = producer.create_batch()
            batch: list[tuple[Row, tuple[Any, str | None]]] = []
            states: list[Any] = []
            try:
                while row is not None:
                    record = self._taken.get(row)
                    if record is None:  # forgotten meanwhile
                        row = next(rows_left, None)
                        continue
                    key, (value, serializer) = row[2], record
                    data, headers = _serialized(topic, value, serializer or table.value_serializer)
                    if builder.append(timestamp=None, key=key, value=data, headers=headers) is None:
                        break  # full (a first record always fits): the next batch takes it
                    del self._taken[row]
                    self._in_flight.add(row)
                    batch.append((row, record))
                    states.append(
                        sensors.on_send_initiated(
                            faust_producer, name, None, len(key), 0 if data is None else len(data)
                        )
                    )
                    row = next(rows_left, None)
                if not batch:
                    return  # the rest was forgotten meanwhile
                queued = await producer.send_batch(builder, name, partition=partition)
            except BaseException as exc:
                for state in states:
                    sensors.on_send_error(faust_producer, exc, state)
                unsent = [(r, rec) for r, rec in batch if self._settle(r) is None]
                self._keep_unsent([*unsent, *self._taken.items()])
                self._taken = {}
                raise
            for r, _record in batch:
                newer = self._settle(r)
                if newer is not None and r not in self._pending:
                    self._pending[r] = newer  # sent again, after this batch
            queued.add_done_callback(
                partial(_on_batch_sent, table, faust_producer, states, len(batch) - 1)
            )
            self.sent += len(batch)

    def _settle(self, row: Row) -> tuple[Any, str | None] | None:
        """The row's batch is queued (or failed): out of flight; -> the newer record
        ``forget`` noted for it meanwhile, if any."""
        self._in_flight.discard(row)
        return self._superseded.pop(row, None)

    def _keep_unsent(self, items: list[tuple[Row, tuple[Any, str | None]]]) -> None:
        """A send failed: what was not handed over is kept again, ahead of what was
        written meanwhile (a newer write of the same row stays the newer)."""
        newer, self._pending = self._pending, dict(items)
        for row, record in newer.items():
            self._pending.pop(row, None)
            self._pending[row] = record

    def attach(self, producer: Any) -> None:
        """Flush before every flush of ``producer`` (Faust's commit, revoke and stop)."""
        original = producer.flush
        self._producer = producer

        async def flush() -> None:
            await self.flush()
            await original()

        producer.flush = flush
        self.attached = True

    @Service.task
    async def _flush_periodically(self) -> None:
        async for _ in self.itertimer(self.interval, name="changelog_cache"):
            try:
                await self.flush()
            except Exception as err:  # noqa: BLE001 - kept; the next tick or commit retries
                log.warning("changelog records not sent yet (%r); retried", err)

    async def on_stop(self) -> None:
        try:
            await self.flush()
        except Exception as err:  # noqa: BLE001 - the stop goes on; no clean-stop marker
            log.warning("changelog records not sent at stop: %r", err)


def _by_changelog_partition(
    taken: dict[Row, tuple[Any, str | None]],
) -> Iterator[tuple[tuple[Any, int], list[Row]]]:
    """The taken rows grouped by (table, partition), each group in the order of the
    rows' last writes (the only order a changelog has is within a partition)."""
    groups: dict[tuple[Any, int], list[Row]] = {}
    for row in taken:
        groups.setdefault((row[0], row[1]), []).append(row)
    return iter(groups.items())


def _serialized(
    topic: Any, value: Any, serializer: str | None
) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """A record's value bytes and headers as Faust's ``Topic.send`` would make them
    (``as_future_message``: ``prepare_headers`` then ``prepare_value``)."""
    headers = topic.prepare_headers(None)
    if value is None:
        data = None
    else:
        data, headers = topic.prepare_value(value, serializer, None, headers)
    if not headers:
        return data, []
    items = headers.items() if hasattr(headers, "items") else headers
    return data, [(k, v) for k, v in items]


class _Sent:
    """What ``Table._on_changelog_sent`` reads of a sent record: ``result()``."""

    __slots__ = ("_metadata",)

    def __init__(self, metadata: Any) -> None:
        self._metadata = metadata

    def result(self) -> Any:
        return self._metadata


def _on_batch_sent(
    table: Any, producer: Any, states: list[Any], last: int, queued: asyncio.Future[Any]
) -> None:
    """A batch is acknowledged (or failed): Faust's per-record callbacks, once per batch.
    The table's persisted offset is the batch's last record's (base offset + its
    relative offset, as aiokafka computes each record's offset)."""
    sensors = table.app.sensors
    if queued.cancelled():
        return
    exc = queued.exception()
    if exc is not None:
        log.error("changelog batch for %s not sent: %r", table.changelog_topic_name, exc)
        for state in states:
            sensors.on_send_error(producer, exc, state)
        return
    metadata = queued.result()
    metadata = metadata._replace(offset=metadata.offset + last)
    table._on_changelog_sent(_Sent(metadata))
    for state in states:
        sensors.on_send_completed(producer, state, metadata)


def discard_unclean_state(tabledir: Path) -> bool:
    """At start: remove the local stores unless the last run left its clean-stop marker;
    then remove the marker (a crash from now on leaves none).  -> whether it discarded."""
    marker = tabledir / CLEAN_STOP_MARKER
    stores = [p for p in tabledir.iterdir()] if tabledir.is_dir() else []
    clean = marker.exists()
    marker.unlink(missing_ok=True)
    stores = [p for p in stores if p.name != CLEAN_STOP_MARKER]
    if clean or not stores:
        return False
    log.warning(
        "the last run did not stop cleanly: local table stores in %s discarded, "
        "recovering them from the changelogs",
        tabledir,
    )
    for path in stores:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return True


def mark_clean_stop(tabledir: Path, cache: ChangelogCache | None) -> bool:
    """At a clean stop (nothing unsent): leave the marker; -> whether it did."""
    if cache is not None and cache.pending:
        log.warning("%d changelog record(s) unsent at stop: no clean-stop marker", cache.pending)
        return False
    if not tabledir.is_dir():
        return False
    (tabledir / CLEAN_STOP_MARKER).touch()
    return True
