"""Prometheus metrics: Faust's own sensors plus the pipeline's business metrics.

Rule: one ``CollectorRegistry`` per app (injected, not the process-global default), served
at ``GET /metrics`` in the Prometheus text format by Faust's prometheus sensor.  Business
metrics follow Prometheus naming: ``orders_``-prefixed, ``_total`` for counters,
``_seconds`` for durations.  Each worker counts what it processed.

Under ``orders-app run`` every worker also exports the embedded broker's process figures
(``orders_embedded_broker_process_resident_memory_bytes`` and the rest of the standard
``process_*`` set, read from ``/proc/<pid>`` by prometheus_client's ``ProcessCollector``):
Tansu keeps every message in memory, so its RSS grows with the orders it has carried.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

EMBEDDED_BROKER_NAMESPACE = "orders_embedded_broker"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2.5, 5, 10, 30, 60)


@dataclass
class BusinessMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    embedded_broker: ProcessCollector | None = field(default=None, init=False)

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
        self.redriven = Counter(
            "orders_redriven_total",
            "Stalled orders whose awaited step was asked again (ORDERS_REDRIVE_AFTER), "
            "by the topic asked",
            ["topic"],
            registry=r,
        )
        self.state_expired = Counter(
            "orders_state_expired_total",
            "Table rows dropped by the retention sweeper (ORDERS_ORDER_RETENTION)",
            ["table"],
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
        self.sink_rows = Counter(
            "orders_sink_rows_total",
            "Rows the outcome sink upserted into Postgres",
            ["table"],
            registry=r,
        )
        self.sink_batch_seconds = Histogram(
            "orders_sink_batch_seconds",
            "Time to write one outcome-sink batch (one statement per table)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def watch_embedded_broker(self, pid: int | None) -> None:
        """Export the process figures of the embedded broker ``pid`` (memory, CPU, fds) as
        ``orders_embedded_broker_process_*``; nothing when ``pid`` is None.  Once only: a
        second call is ignored.  A broker that has exited simply yields no samples."""
        if pid is None or self.embedded_broker is not None:
            return
        self.embedded_broker = ProcessCollector(
            namespace=EMBEDDED_BROKER_NAMESPACE, pid=lambda: pid, registry=self.registry
        )
