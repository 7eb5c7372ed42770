"""orders_app/faust_patches/lean_monitor.py against Faust's own ``PrometheusMonitor``: the
same hook calls give the same exposition (names, labels, values), without a
``labels(...)`` lookup per event once a child is known; and the app picks it by
``ORDERS_LEAN_MONITOR``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP
from faust.types.tuples import Message
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from orders_app.faust_patches.lean_monitor import LeanPrometheusMonitor


class FakeStream:
    """What the sensors read of a stream: its label and its task owner."""

    def __init__(self, label: str) -> None:
        self.shortlabel = f"Stream: {label}"
        self.task_owner = self

    def __str__(self) -> str:
        return self.shortlabel


class FakeTable:
    def __init__(self, name: str) -> None:
        self.name = name


def message(tp: TP, offset: int) -> Message:
    return Message(tp.topic, tp.partition, offset, 0.0, 0, [], b"k", b"v", None, tp=tp)


TPS = [TP("order_created", 0), TP("order_created", 3), TP("orders_app-stock-replies", 1)]
STREAMS = [FakeStream("topic_order_created,order_validated"), FakeStream("stock")]
TABLES = [FakeTable("order_status"), FakeTable("stock")]


def drive(monitor: PrometheusMonitor, events: int) -> None:
    """A worker's hook calls for ``events`` events over two topics, two streams, two tables."""
    for n in range(events):
        tp = TPS[n % len(TPS)]
        msg = message(tp, n)
        stream = STREAMS[n % 2]
        table = TABLES[n % 2]
        monitor.on_message_in(tp, n, msg)
        state = monitor.on_stream_event_in(tp, n, stream, None)  # type: ignore[arg-type]
        monitor.on_table_get(table, b"k")  # type: ignore[arg-type]
        monitor.on_table_set(table, b"k", b"v")  # type: ignore[arg-type]
        if n % 5 == 0:
            monitor.on_table_del(table, b"k")  # type: ignore[arg-type]
        monitor.on_send_initiated(None, tp.topic, None, 1, 1)  # type: ignore[arg-type]
        monitor.on_stream_event_out(tp, n, stream, None, state)  # type: ignore[arg-type]
        monitor.on_message_out(tp, n, msg)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every counter and gauge sample; histograms hold timings, which differ run to run."""
    out = {}
    for metric in registry.collect():
        if metric.type == "histogram":
            continue
        for s in metric.samples:
            if s.name.endswith("_created"):
                continue
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_the_same_hook_calls_give_the_same_metrics_as_faust() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    drive(PrometheusMonitor(metrics=FaustMetrics.create(theirs, "faust")), 40)
    drive(LeanPrometheusMonitor(metrics=FaustMetrics.create(ours, "faust")), 40)
    expected = samples(theirs)
    assert samples(ours) == expected
    # The labelled series are there, with the counts the calls made.
    stream_events = {
        dict(k[1])["stream"]: v
        for k, v in expected.items()
        if k[0] == "faust_total_events_per_stream_total"
    }
    assert sorted(stream_events.values()) == [20.0, 20.0]
    assert (
        expected[
            (
                "faust_table_operations_total",
                (("operation", "keys_deleted"), ("table", "table.order_status")),
            )
        ]
        == 4.0
    )


@pytest.fixture
def labels_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    calls: list[Any] = []
    original = MetricWrapperBase.labels

    def counting(self: MetricWrapperBase, *args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MetricWrapperBase, "labels", counting)
    yield calls


def test_no_label_lookup_per_event_once_the_children_are_known(labels_calls: list[Any]) -> None:
    monitor = LeanPrometheusMonitor(metrics=FaustMetrics.create(CollectorRegistry(), "faust"))
    drive(monitor, 12)  # every topic, partition, stream, table and operation seen
    labels_calls.clear()
    drive(monitor, 300)
    assert labels_calls == []


def test_faust_s_monitor_looks_labels_up_per_event(labels_calls: list[Any]) -> None:
    """What the lean monitor saves: pinned, so a Faust that caches them itself shows here."""
    monitor = PrometheusMonitor(metrics=FaustMetrics.create(CollectorRegistry(), "faust"))
    drive(monitor, 12)
    labels_calls.clear()
    drive(monitor, 10)
    assert len(labels_calls) >= 5 * 10


def test_the_app_uses_it_by_default_and_faust_s_when_turned_off() -> None:
    from orders_app.app import OrdersApp
    from orders_app.settings import Settings

    for lean, expected in ((True, LeanPrometheusMonitor), (False, PrometheusMonitor)):
        app = OrdersApp(f"lean-monitor-{lean}")
        app.use_settings(Settings(lean_monitor=lean))
        list(app.on_init_dependencies())
        assert type(app.monitor) is expected
