"""Faust tables (RocksDB-backed, changelogged), one module per table family.

Every table is keyed by a UTF-8 string (the same bytes as the input topic's key, so the
changelog is co-partitioned and ``table_route`` finds the owner) and holds JSON values.
"""

from __future__ import annotations

from typing import Any

import faust

from orders_app.app import app


def json_table(name: str, help: str, **kwargs: Any) -> Any:
    """A table with UTF-8 string keys and JSON document values."""
    return app.Table(
        name,
        schema=faust.Schema(key_type=str, key_serializer="utf8", value_serializer="json"),
        help=help,
        **kwargs,
    )
