"""A sku's stock counters (table ``stock``: ``total``, ``reserved``, ``available``), as
the inventory rules, the recovery rebuild and the web views all compute them.  Pure."""

from __future__ import annotations

from typing import Any

Stock = dict[str, Any]


def with_reserved(stock: Stock, reserved: int) -> Stock:
    """The sku's counters with ``reserved`` from the ledger; total is kept."""
    return {
        **stock,
        "available": max(0, stock["total"] - reserved),
        "reserved": reserved,
        "total": stock["total"],
    }
