"""Faust tables (RocksDB-backed, changelogged), one module per table family.

Every table is keyed by a UTF-8 string (the same bytes as the input topic's key, so the
changelog is co-partitioned and ``table_route`` finds the owner) and holds JSON values.

Every write is stamped with the time it was made (:class:`StampedTable`, codec
``stamped_json``): the stored and changelogged bytes are ``{"~at": <epoch s>, "~v":
<value>}``, readers get ``<value>``.  The retention sweeper (agents/retention.py) reads
the stamp to expire per-order state; the stamp is taken once per write, so the local
store and the changelog carry the same bytes (a recovered row has the stamp it had).
"""

from __future__ import annotations

import time
from typing import Any

import faust
from faust.serializers import codecs
from faust.stores.memory import Store as MemoryStore
from faust.utils import json as faust_json

from orders_app.app import app

STAMP_PREFIX = b'{"~at":'


class Stamped:
    """A table value with the time of its write (what ``stamped_json`` encodes)."""

    __slots__ = ("at", "value")

    def __init__(self, value: Any, at: float) -> None:
        self.value = value
        self.at = at


def dumps_stamped(value: Any, at: float) -> bytes:
    inner: Any = faust_json.dumps(value)  # orjson: bytes; stdlib json: str
    if isinstance(inner, str):
        inner = inner.encode()
    return b'%s%.3f,"~v":%s}' % (STAMP_PREFIX, at, inner)


def stamp_of(raw: bytes | None) -> float | None:
    """The write time of stored bytes; None for an unstamped (older) value."""
    if not raw or not raw.startswith(STAMP_PREFIX):
        return None
    end = raw.index(b",", len(STAMP_PREFIX))
    return float(raw[len(STAMP_PREFIX) : end])


def loads_value(raw: bytes) -> Any:
    """A stored value without its stamp (stamped or not)."""
    value = faust_json.loads(raw)  # type: ignore[arg-type]  # orjson takes bytes
    if isinstance(value, dict) and "~v" in value and "~at" in value:
        return value["~v"]
    return value


class StampedJson(codecs.Codec):
    """JSON with the write time around the value (see the module docstring)."""

    def _dumps(self, obj: Any) -> bytes:
        if isinstance(obj, Stamped):
            return dumps_stamped(obj.value, obj.at)
        return dumps_stamped(obj, time.time())

    def _loads(self, s: bytes) -> Any:
        return loads_value(s)


codecs.register("stamped_json", StampedJson())


class StampedTable(faust.Table):  # type: ignore[misc,type-arg]
    """A table whose every write carries its write time (one stamp per write), and whose
    changelog records go through the app's changelog cache when it is in use (one record
    per row between two commits: orders_app/faust_patches/changelog_cache.py)."""

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(self.data, MemoryStore):
            # The memory store keeps objects, not bytes: readers would get the wrapper.
            super().__setitem__(key, value)
        else:
            super().__setitem__(key, Stamped(value, time.time()))

    def on_key_set(self, key: Any, value: Any) -> None:
        # As faust.Table.on_key_set, with the record kept instead of sent.
        cache = app.changelog_cache_in_use
        partition = self.partition_for_key(key) if cache is not None else None
        if cache is None or partition is None:
            super().on_key_set(key, value)
            return
        key_bytes, _headers = self.changelog_topic.prepare_key(key, self.key_serializer)
        cache.write(self, partition, key_bytes, value, None)
        self._maybe_set_key_ttl(key, partition)
        self._sensor_on_set(self, key, value)

    def on_key_del(self, key: Any) -> None:
        cache = app.changelog_cache_in_use
        partition = self.partition_for_key(key) if cache is not None else None
        if cache is None or partition is None:
            super().on_key_del(key)
            return
        key_bytes, _headers = self.changelog_topic.prepare_key(key, self.key_serializer)
        cache.write(self, partition, key_bytes, None, "raw")
        self._maybe_del_key_ttl(key, partition)
        self._sensor_on_del(self, key)


# Faust's RocksDB defaults are per partition of every table: 3 x 64 MiB memtables and a
# 2 GiB block cache; with a dozen tables x 4 partitions the worker's memory would grow
# with the data it writes (the per-order ledgers) for a long while.  These bound each
# partition's store to about 2 x 4 MiB of memtables + 8 MiB of cache; the data lives on
# disk and the changelog.
ROCKSDB_OPTIONS = {
    "write_buffer_size": 4 << 20,
    "max_write_buffer_number": 2,
    "block_cache_size": 8 << 20,
    "block_cache_compressed_size": 0,
}


def json_table(name: str, help: str, *, routable: bool = True, **kwargs: Any) -> Any:
    """A table with UTF-8 string keys and JSON document values.

    ``routable`` tables write their changelog keys as plain UTF-8 too: Faust derives the
    changelog topic's key serializer from the key *type* (JSON for ``str``), ignoring the
    schema, and ``table_route`` hashes the changelog-serialized key; with JSON keys it
    would hash ``'"o-1"'`` while the data sits in the partition of ``o-1``.  Windowed
    tables keep JSON keys (their keys are ``[key, [start, end]]``)."""
    table: Any = app.tables.add(
        StampedTable(
            app,
            name=name,
            beacon=app.tables.beacon,
            schema=faust.Schema(key_type=str, key_serializer="utf8"),
            help=help,
            options=ROCKSDB_OPTIONS,
            **kwargs,
        )
    )
    # Faust takes a table's serializers from its key/value *types* (JSON for both),
    # not from the schema; the store and the changelog topic are built lazily from them.
    table.value_serializer = "stamped_json"
    if routable:
        table.key_serializer = "utf8"
    # The table manager built the changelog topic when the table was registered;
    # rebuild it (lazily) with these serializers.
    table._changelog_topic = None
    return table
