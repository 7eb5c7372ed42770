"""Topic registry: every topic of the app, its key, value record and writer, in one place.

Rule: agents consume raw bytes and decode with :func:`orders_app.records.decode` so that
an undecodable message becomes a ``DeadLetter`` instead of an exception inside Faust's
stream; producers encode with :func:`orders_app.records.encode`.  Every topic that carries
an order is keyed by order_id (plain UTF-8), so the status table is co-partitioned with
all of them.  Partition counts come from ``ORDERS_PARTITIONS`` when the worker declares
the topics (``partitions=None`` defers to ``app.conf.topic_partitions``).

Internal topics (prefixed ``orders_app-``) are the repartition/command streams that Kafka
Streams would create for ``groupBy``/``through``: by customer for fraud velocity, by sku
for stock, by country for analytics (each order's terminal status change: also the
outcome log).  One message header: :data:`FRAUD_REQUESTED`.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust

from orders_app import records
from orders_app.app import app


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    value: type[faust.Record]
    writer: str
    internal: bool = False


SPECS: tuple[TopicSpec, ...] = (
    TopicSpec(
        "orders_db.public.orders", '{"id": ...}', records.ChangeEvent, "Debezium / embedded CDC"
    ),
    TopicSpec(
        "orders_db.public.products", '{"sku": ...}', records.ChangeEvent, "Debezium / embedded CDC"
    ),
    TopicSpec("order_created", "order_id", records.OrderCreated, "cdc agent, load generator"),
    TopicSpec("order_validated", "order_id", records.OrderValidated, "fraud"),
    TopicSpec("fraud_alerts", "order_id", records.FraudAlert, "fraud"),
    TopicSpec("payment_successful", "order_id", records.PaymentSucceeded, "status (payment)"),
    TopicSpec("payment_failed", "order_id", records.PaymentFailed, "status (payment)"),
    TopicSpec("inventory_updated", "order_id", records.InventoryUpdated, "status (inventory)"),
    TopicSpec("payment_refunded", "order_id", records.PaymentRefunded, "status (payment)"),
    TopicSpec("notification_sent", "order_id", records.NotificationSent, "status (notification)"),
    TopicSpec("order_analytics", "country", records.CountryStats, "analytics"),
    TopicSpec("dead_letters", "original key", records.DeadLetter, "every agent"),
    TopicSpec(
        "orders_app-orders-by-customer", "customer_id", records.OrderCreated, "cdc, status", True
    ),
    TopicSpec("orders_app-stock-commands", "sku", records.StockCommand, "status, cdc", True),
    TopicSpec("orders_app-stock-replies", "order_id", records.StockReply, "inventory", True),
    TopicSpec("orders_app-status-by-country", "country", records.StatusChanged, "status", True),
    TopicSpec("orders_app-order-restores", "order_id", records.OrderRestored, "cdc", True),
)


def _topic(name: str) -> faust.TopicT:
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,  # Debezium tombstones have a null value
    )


ORDERS_CDC = _topic("orders_db.public.orders")
PRODUCTS_CDC = _topic("orders_db.public.products")
ORDER_CREATED = _topic("order_created")
ORDER_VALIDATED = _topic("order_validated")
FRAUD_ALERTS = _topic("fraud_alerts")
PAYMENT_SUCCESSFUL = _topic("payment_successful")
PAYMENT_FAILED = _topic("payment_failed")
INVENTORY_UPDATED = _topic("inventory_updated")
PAYMENT_REFUNDED = _topic("payment_refunded")
NOTIFICATION_SENT = _topic("notification_sent")
ORDER_ANALYTICS = _topic("order_analytics")
DEAD_LETTERS = _topic("dead_letters")
ORDERS_BY_CUSTOMER = _topic("orders_app-orders-by-customer")
STOCK_COMMANDS = _topic("orders_app-stock-commands")
STOCK_REPLIES = _topic("orders_app-stock-replies")
STATUS_BY_COUNTRY = _topic("orders_app-status-by-country")
ORDER_RESTORES = _topic("orders_app-order-restores")

ALL_TOPICS: tuple[faust.TopicT, ...] = (
    ORDERS_CDC,
    PRODUCTS_CDC,
    ORDER_CREATED,
    ORDER_VALIDATED,
    FRAUD_ALERTS,
    PAYMENT_SUCCESSFUL,
    PAYMENT_FAILED,
    INVENTORY_UPDATED,
    PAYMENT_REFUNDED,
    NOTIFICATION_SENT,
    ORDER_ANALYTICS,
    DEAD_LETTERS,
    ORDERS_BY_CUSTOMER,
    STOCK_COMMANDS,
    STOCK_REPLIES,
    STATUS_BY_COUNTRY,
    ORDER_RESTORES,
)

BY_NAME: dict[str, faust.TopicT] = {t.get_topic_name(): t for t in ALL_TOPICS}
assert set(BY_NAME) == {s.name for s in SPECS}, "SPECS and ALL_TOPICS disagree"


#: Header on an ``order_created`` message whose fraud check its writer has asked for
#: itself (the cdc agent sends the order to ``orders_app-orders-by-customer`` beside it,
#: so the check does not wait for the order agent's first step).  Without it (the load
#: generator, any other producer) the order agent asks for the check.
FRAUD_REQUESTED = "orders-app-fraud-requested"


def key_bytes(key: str) -> bytes:
    return key.encode()
