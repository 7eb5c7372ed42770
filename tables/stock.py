"""Stock tables.

- ``stock``: sku -> {"available", "reserved", "total"}; written only by the stock agent
  from ``orders_app-stock-commands`` (keyed by sku).  Invariant: available + reserved ==
  total (initial + restocks), available >= 0.
- ``stock_ledger``: "sku|order_id" -> {"state": reserved|failed|released, "quantity"};
  makes every reserve/release idempotent per order.  Same stream, so same partition.
- ``reservations``: order_id -> saga state of the order's all-or-nothing reservation;
  written by the reply collector from ``orders_app-stock-replies`` and by the order-side
  agent on ``payment_successful`` (both keyed by order_id).
"""

from __future__ import annotations

from tables import json_table

stock = json_table("stock", help="sku -> stock")

stock_ledger = json_table(
    "stock_ledger",
    help="sku|order_id -> reservation line state",
)

reservations = json_table(
    "reservations",
    help="order_id -> reservation saga",
)
