"""Prometheus metrics: Faust's own sensors plus the pipeline's business metrics.

Rule: one ``CollectorRegistry`` per app (injected, not the process-global default), served
at ``GET /metrics`` in the Prometheus text format by Faust's prometheus sensor.  Business
metrics follow Prometheus naming: ``orders_``-prefixed, ``_total`` for counters,
``_seconds`` for durations.  Each worker counts what it processed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2.5, 5, 10, 30, 60)


@dataclass
class BusinessMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.orders_terminal = Counter(
            "orders_terminal_total",
            "Orders that reached a terminal status",
            ["status", "country"],
            registry=r,
        )
        self.revenue = Counter(
            "orders_revenue_total",
            "Revenue of fulfilled orders (currency units, for graphs)",
            ["country"],
            registry=r,
        )
        self.fraud_rejections = Counter(
            "orders_fraud_rejections_total",
            "Fraud rule hits on rejected orders",
            ["rule"],
            registry=r,
        )
        self.fraud_checks = Counter(
            "orders_fraud_checks_total", "Orders checked by fraud", ["result"], registry=r
        )
        self.payments = Counter(
            "orders_payments_total", "Charges and refunds", ["result"], registry=r
        )
        self.reservations = Counter(
            "orders_inventory_reservations_total",
            "Order reservation outcomes",
            ["result"],
            registry=r,
        )
        self.notifications = Counter(
            "orders_notifications_sent_total", "Notifications sent", ["template"], registry=r
        )
        self.dead_letters = Counter(
            "orders_dead_letters_total", "Messages sent to dead_letters", ["topic"], registry=r
        )
        self.processing_errors = Counter(
            "orders_processing_errors_total",
            "Events whose step raised (sent to dead_letters)",
            ["step"],
            registry=r,
        )
        self.cdc_events = Counter(
            "orders_cdc_events_total", "Change events consumed", ["table", "op"], registry=r
        )
        self.cdc_lag = Gauge(
            "orders_cdc_lag_seconds",
            "Seconds between the database commit and its processing",
            registry=r,
        )
        self.end_to_end = Histogram(
            "orders_end_to_end_seconds",
            "Order committed in Postgres -> terminal status",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
