"""``cdc_seen``: order id -> the LSN of the CDC change already turned into ``order_created``
(or an ``orders_app-order-restores`` record), so a replayed or re-snapshotted change of the
same order is not emitted twice.  Written by the ``cdc-orders`` agent (agents/cdc.py);
expired with the order's other per-order state by the retention sweeper."""

from __future__ import annotations

from tables import json_table

cdc_seen = json_table(
    "cdc_seen",
    help="order id -> LSN of the change already turned into order_created",
)
