"""Order status table: order_id -> status document (single writer: ``agents.status``).

Key: order_id (UTF-8, co-partitioned with every order topic).  Value: JSON document with
status, order details, reasons and the timestamped history of transitions.  Also the
notification ledger (order_id -> template sent), written only by ``agents.notification``.
"""

from __future__ import annotations

from tables import json_table

order_status = json_table(
    "order_status",
    help="order_id -> status document",
)

notifications = json_table(
    "notifications",
    help="order_id -> notification sent (exactly one per order)",
)

payments = json_table(
    "payments",
    help="order_id -> charge / refund ledger (at most one of each per order)",
)
