"""Order status table: order_id -> the order's document (single writer: ``agents.status``).

Key: order_id (UTF-8, co-partitioned with every order topic).  Value: JSON document with
status, order details, reasons and the timestamped history of transitions, and the
fused steps' ledgers (:mod:`agents.order_flow`): ``payment`` (charge / refund, at most one
of each), ``saga`` (the all-or-nothing stock reservation) and ``notified`` (the one
notification).  One write per input event covers all of them.
"""

from __future__ import annotations

from tables import json_table

order_status = json_table(
    "order_status",
    help="order_id -> order document (status, history, payment, saga, notification)",
)
