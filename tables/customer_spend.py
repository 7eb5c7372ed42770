"""Customer spend tables for fraud velocity.

- ``customer_velocity``: customer_id -> {"count", "amount"} per 1-minute tumbling window
  (event time: the order's commit time, carried as the message timestamp of the
  by-customer repartition topic), expiring after 10 minutes.
- ``fraud_decisions``: order_id -> rule ids; a redelivered order gets the same decision
  and is not counted twice.  Both are written from ``orders_app-orders-by-customer``.
"""

from __future__ import annotations

from datetime import timedelta

from tables import json_table

VELOCITY_WINDOW_S = 60.0
VELOCITY_EXPIRES_S = 600.0

customer_velocity = json_table(
    "customer_velocity",
    routable=False,
    default=dict,
    help="customer_id -> orders and spend in the current minute",
).tumbling(VELOCITY_WINDOW_S, expires=timedelta(seconds=VELOCITY_EXPIRES_S))

fraud_decisions = json_table(
    "fraud_decisions",
    help="order_id -> fraud rule ids (empty when it passed)",
)
