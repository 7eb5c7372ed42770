"""Faust tables (RocksDB-backed, changelogged), one module per table family.

Every table is keyed by a UTF-8 string (the same bytes as the input topic's key, so the
changelog is co-partitioned and ``table_route`` finds the owner) and holds JSON values.
"""

from __future__ import annotations

from typing import Any

import faust

from orders_app.app import app

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
    table = app.Table(
        name,
        schema=faust.Schema(key_type=str, key_serializer="utf8", value_serializer="json"),
        help=help,
        options=ROCKSDB_OPTIONS,
        **kwargs,
    )
    if routable:
        table.key_serializer = "utf8"  # type: ignore[attr-defined]
        # The table manager built the changelog topic when the table was registered;
        # rebuild it (lazily) with the UTF-8 key serializer.
        table._changelog_topic = None  # type: ignore[attr-defined]
    return table
