"""Customer spend table for fraud velocity (written from ``orders_app-orders-by-customer``).

``customer_velocity``: customer_id -> {"count", "amount", "orders"} per 1-minute tumbling
window (event time: the order's commit time, carried as the message timestamp of the
by-customer repartition topic), expiring after 10 minutes.  ``orders`` lists the orders
counted, so a redelivered order is neither counted twice nor decided differently.
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
