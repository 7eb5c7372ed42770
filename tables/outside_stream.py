"""Reading and writing a table's local partitions outside a stream (the retention
sweeper, the post-recovery rebuild, the re-drive's index of waiting orders).

Rule: Faust writes a table only from inside a stream (``Store._set`` asserts a current
event; the changelog partition is the event's).  A background job that owns a partition
may still change a row when it keeps Faust's two invariants itself: the local store and
the changelog get the same bytes, in the partition that owns the row, with no ``await``
between reading a row and writing it (so no agent interleaves; the event loop is the
only writer).  This module is the one place that reaches into Faust's RocksDB store for
that (``Store._dbs_for_actives``/``_db_for_partition``/``_visible_items``, faust-streaming
0.15): only the partitions this worker owns as actives, raw bytes in and out.
A memory store (``ORDERS_STORE_URL=memory://``) keeps objects, not stamped bytes: it has
no partitions here (nothing to expire; it is lost on every restart anyway).
A partition whose database is not open here (revoked meanwhile) is never reopened: reads
give nothing and writes return None, so a caller stops instead of writing into a
partition another worker owns now.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from faust.stores.rocksdb import Store as RocksStore
from faust.types import TP

from tables import loads_value, stamp_of


def _store(table: Any) -> RocksStore | None:
    store = getattr(table, "table", table).data  # a windowed table's wrapper holds it
    return store if isinstance(store, RocksStore) else None


def has_raw_store(table: Any) -> bool:
    """Whether the table keeps stamped bytes (RocksDB), not objects (memory store)."""
    return _store(table) is not None


def _table(table: Any) -> Any:
    return getattr(table, "table", table)


def active_partitions(table: Any) -> list[int]:
    """The table's partitions this worker owns (empty for a memory store)."""
    store = _store(table)
    if store is None:
        return []
    topic = _table(table).changelog_topic_name
    actives = store.app.assignor.assigned_actives()
    return sorted(p for p in list(store._dbs) if TP(topic, p) in actives)


def _db(table: Any, partition: int) -> Any:
    store = _store(table)
    return None if store is None else store._dbs.get(partition)


def raw_items(table: Any, partition: int) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of one local partition as stored (a snapshot iterator)."""
    store, db = _store(table), _db(table, partition)
    if store is None or db is None:
        return iter(())
    return store._visible_items(db)  # type: ignore[no-any-return]


def get_raw(table: Any, partition: int, key: bytes) -> bytes | None:
    db = _db(table, partition)
    return None if db is None else db.get(key)


def _supersede_cached(table: Any, partition: int, key: bytes, value: bytes | None) -> None:
    """The row's record the changelog cache keeps (an agent's write not sent yet) is older
    than ``value``, sent now: drop it, so it cannot follow and undo this one."""
    cache = _table(table).app.changelog_cache_in_use
    if cache is not None:
        cache.forget(_table(table), partition, key, value)


def put_raw(table: Any, partition: int, key: bytes, value: bytes) -> Any:
    """Write a row in the local store and its changelog; -> the changelog send future
    (None when the partition is not open here)."""
    db = _db(table, partition)
    if db is None:
        return None
    db.put(key, value)
    _supersede_cached(table, partition, key, value)
    return _table(table).send_changelog(
        partition, key, value, key_serializer="raw", value_serializer="raw"
    )


def delete_raw(table: Any, partition: int, key: bytes) -> Any:
    """Delete a row locally and tombstone it in the changelog; -> the send future
    (None when the partition is not open here)."""
    store, db = _store(table), _db(table, partition)
    if store is None or db is None:
        return None
    db.delete(key)
    store._key_index.pop(key, None)
    _supersede_cached(table, partition, key, None)
    return _table(table).send_changelog(
        partition, key, None, key_serializer="raw", value_serializer="raw"
    )


Row = tuple[str, float | None, dict[str, Any]]


def rows(table: Any) -> list[Row]:
    """Every local row of the partitions this worker owns: (key, write time, value).
    A memory store has no stamps (write time None: nothing there has expired)."""
    if not has_raw_store(table):
        return [(k, None, v) for k, v in table.items()]
    partitions = active_partitions(table)
    return [
        (key.decode(), stamp_of(raw), loads_value(raw))
        for p in partitions
        for key, raw in raw_items(table, p)
    ]
