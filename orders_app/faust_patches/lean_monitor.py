"""Lean Prometheus monitor: Faust's Prometheus sensor with its labelled children looked up
once, not on every event.

Rule: the metrics are Faust's - same names, labels and values as
``faust.sensors.prometheus.PrometheusMonitor`` (faust-streaming 0.15.3); only the per-event
cost changes.  Behind ``ORDERS_LEAN_MONITOR`` (default on), chosen when the app creates its
monitor (``orders_app/app.py``).

Faust's sensor calls ``Counter.labels(...)`` on every message in, event in, table read or
write and send (about 1.6 µs each: the label values are checked and the child looked up
under the metric's lock) and, per event, renormalises the stream's label with a regular
expression (about 0.8 µs).  A worker makes about sixty such updates per order
(bench/PROFILE.md: ~80 µs per order, ~2 % of its CPU).  Here each child is fetched once
per (metric, label values) and kept in a dict; the update itself (``inc``/``set``) is the
same call on the same child.  The children live as long as the metric (prometheus_client
keeps them too), so the dicts hold nothing the registry does not; streams are held
weakly, as Faust's own ``Monitor.stream_lookup`` holds them.

The stream's label is kept per stream object: Faust's label is built from
``stream.shortlabel``, which does not change for a stream once it iterates.

Upstream shape: the same caches in ``PrometheusMonitor`` itself.
"""

from __future__ import annotations

import typing
from typing import Any
from weakref import WeakKeyDictionary

from faust.sensors.prometheus import PrometheusMonitor

if typing.TYPE_CHECKING:
    from faust.types import TP, CollectionT, EventT, Message, StreamT
    from faust.types.transports import ProducerT
    from faust.types.tuples import PendingMessage

__all__ = ["LeanPrometheusMonitor"]


class LeanPrometheusMonitor(PrometheusMonitor):  # type: ignore[misc]
    """``PrometheusMonitor`` whose hot hooks reuse labelled children."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._by_topic: dict[str, Any] = {}
        self._by_tp: dict[tuple[str, int], Any] = {}
        self._by_stream: WeakKeyDictionary[StreamT[Any], Any] = WeakKeyDictionary()
        self._by_table: dict[tuple[str, str], Any] = {}
        self._sent_by_topic: dict[str, Any] = {}

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        """Call before message is delegated to streams."""
        # Faust's Monitor.on_message_in, then its Prometheus updates, children cached.
        super(PrometheusMonitor, self).on_message_in(tp, offset, message)
        metrics = self._metrics
        metrics.messages_received.inc()
        metrics.active_messages.inc()
        topic = tp.topic
        child = self._by_topic.get(topic)
        if child is None:
            child = self._by_topic[topic] = metrics.messages_received_per_topics.labels(topic=topic)
        child.inc()
        key = (topic, tp.partition)
        gauge = self._by_tp.get(key)
        if gauge is None:
            gauge = self._by_tp[key] = metrics.messages_received_per_topics_partition.labels(
                topic=topic, partition=tp.partition
            )
        gauge.set(offset)

    def on_stream_event_in(
        self, tp: TP, offset: int, stream: StreamT[Any], event: EventT[Any]
    ) -> dict[str, Any] | None:
        """Call when stream starts processing an event."""
        state: dict[str, Any] | None = super(PrometheusMonitor, self).on_stream_event_in(
            tp, offset, stream, event
        )
        metrics = self._metrics
        metrics.total_events.inc()
        metrics.total_active_events.inc()
        # Keyed weakly by the stream itself, as Faust's Monitor keeps its ``stream_lookup``.
        child = self._by_stream.get(stream)
        if child is None:
            child = self._by_stream[stream] = metrics.total_events_per_stream.labels(
                stream=f"stream.{self._stream_label(stream)}.events"
            )
        child.inc()
        return state

    def _table_child(self, table: CollectionT, operation: str) -> Any:
        key = (table.name, operation)
        child = self._by_table.get(key)
        if child is None:
            child = self._by_table[key] = self._metrics.table_operations.labels(
                table=f"table.{table.name}", operation=operation
            )
        return child

    def on_table_get(self, table: CollectionT, key: Any) -> None:
        """Call when value in table is retrieved."""
        super(PrometheusMonitor, self).on_table_get(table, key)
        self._table_child(table, self.KEYS_RETRIEVED).inc()

    def on_table_set(self, table: CollectionT, key: Any, value: Any) -> None:
        """Call when new value for key in table is set."""
        super(PrometheusMonitor, self).on_table_set(table, key, value)
        self._table_child(table, self.KEYS_UPDATED).inc()

    def on_table_del(self, table: CollectionT, key: Any) -> None:
        """Call when key in a table is deleted."""
        super(PrometheusMonitor, self).on_table_del(table, key)
        self._table_child(table, self.KEYS_DELETED).inc()

    def on_send_initiated(
        self,
        producer: ProducerT,
        topic: str,
        message: PendingMessage,
        keysize: int,
        valsize: int,
    ) -> Any:
        """Call when message added to producer buffer."""
        child = self._sent_by_topic.get(topic)
        if child is None:
            child = self._sent_by_topic[topic] = self._metrics.topic_messages_sent.labels(
                topic=f"topic.{topic}"
            )
        child.inc()
        return super(PrometheusMonitor, self).on_send_initiated(
            producer, topic, message, keysize, valsize
        )
