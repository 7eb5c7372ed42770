"""Stock tables.

- ``stock``: sku -> {"available", "reserved", "total"}; written only by the stock agent
  from ``orders_app-stock-commands`` (keyed by sku).  Invariant: available + reserved ==
  total (initial + restocks), available >= 0.
- ``stock_ledger``: "sku|order_id" -> {"state": reserved|failed|released, "quantity"};
  makes every reserve/release idempotent per order.  Same stream, so same partition.
  (The order side of the saga lives in the order's document, ``tables.order_status``.)
"""

from __future__ import annotations

from tables import json_table

stock = json_table("stock", help="sku -> stock")

stock_ledger = json_table(
    "stock_ledger",
    help="sku|order_id -> reservation line state",
)
