"""Per-order costs of the one-worker pipeline run (issue 12), measured, not hand-counted.

- ``kafka_writes_per_order``: records written to the broker during the run over every
  topic it lists (seed topics, internal repartition/command topics, every table changelog,
  Faust's own topics; topics named ``__*``, the broker's internals, are left out and shown
  apart), divided by the orders.  Per partition: *true* end offset after - before.  The
  embedded broker (Tansu) answers ListOffsets with the first offset of the partition's
  last record batch + 1 (too low when that batch holds several records), so the reported
  ends are corrected by fetching each partition's last batch with
  :func:`orders_app.broker_compat.offsets.true_end_offsets`, the check the workers' table
  recovery uses
  (the fetch reads the records themselves: the end is the offset after the last record).
  With ``at_least_once`` (no transactions, no control records) an offset is a record.
- ``agent_deliveries_per_order``: events delivered to agents' streams, from Faust's
  Prometheus sensor on the worker's ``GET /metrics``:
  ``<prefix>_total_events_per_stream_total{stream="stream.<label>.events"}`` (incremented
  in ``on_stream_event_in``, once per event per agent stream; the batching
  ``orders_app.streams.event_batches`` calls the same sensor hook per event).  The label
  names the stream's topics; agents reading the same topics share a label, and
  ``<prefix>_messages_received_per_topic_total{topic}`` (once per message) shows how many
  deliveries each message made.
- ``worker_cpu_ms_per_order``: the worker process's CPU time, user + system over all its
  threads (``psutil.Process.cpu_times``), from just before the orders are produced until
  all are terminal (the timed window of ``pipeline_orders_per_s``), divided by the orders.
  It includes the bench's polls of ``/analytics/countries`` (every 50 ms).

Writes and deliveries are snapshotted once the worker is quiet (the order made before the
worker started is terminal and nothing has moved for ``QUIET_S``) just before the orders
are produced, and again once all are terminal and nothing has moved for ``QUIET_S`` (the
last notifications, changelog writes and analytics updates land after the terminal
status), so each counts everything the orders caused and nothing else.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson
import psutil  # type: ignore[import-untyped]  # no stubs in the venv
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from bench.agent_streams import stream_label
from orders_app.broker_compat.offsets import true_end_offsets

QUIET_S = 2.0
BROKER_INTERNAL = "__"
# Faust's Prometheus sensor (faust/sensors/prometheus.py), counters named
# "<prefix>_<name>" ("faust_" in this app) and exposed with a "_total" suffix.
EVENTS_PER_STREAM = "_total_events_per_stream_total"
SINK_ROWS = "orders_sink_rows_total"
RECEIVED_PER_TOPIC = "_messages_received_per_topic_total"
SENT_PER_TOPIC = "_topic_messages_sent_total"
TABLE_OPERATIONS = "_table_operations_total"
TABLE_WRITES = frozenset({"keys_updated", "keys_deleted"})


@dataclass
class Counters:
    """The worker's Faust sensor counters that matter here, by label."""

    deliveries: dict[str, float] = field(default_factory=dict)  # by stream label
    received: dict[str, float] = field(default_factory=dict)  # by topic
    sent: dict[str, float] = field(default_factory=dict)  # by topic
    table_writes: dict[str, float] = field(default_factory=dict)  # by table
    sink_rows: float = 0.0  # order rows the outcome sink upserted (issue 16)


@dataclass(frozen=True)
class Snapshot:
    ends: dict[TopicPartition, int]
    counters: Counters


@dataclass
class Costs:
    """The three figures and what they are made of (per order)."""

    orders: int
    writes: dict[str, float]  # by topic, broker side
    internal_writes: dict[str, float]  # ``__*`` topics, not in the figure
    deliveries: dict[str, float]  # by stream label
    received: dict[str, float]  # by topic
    sent: dict[str, float]  # by topic, worker side
    table_writes: dict[str, float]  # by table
    cpu_s: float

    @property
    def figures(self) -> dict[str, float]:
        return {
            "kafka_writes_per_order": sum(self.writes.values()) / self.orders,
            "agent_deliveries_per_order": sum(self.deliveries.values()) / self.orders,
            "worker_cpu_ms_per_order": self.cpu_s * 1000 / self.orders,
        }


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            body: bytes = resp.read()
            return body
    except OSError:
        return None


def counters(url: str) -> Counters:
    """Scrape ``url/metrics`` (the worker's Prometheus text)."""
    body = _get(url + "/metrics")
    if body is None:
        raise RuntimeError(f"cannot scrape {url}/metrics")
    out = Counters()
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name.endswith(EVENTS_PER_STREAM):
                label = s.labels["stream"].removeprefix("stream.").removesuffix(".events")
                out.deliveries[label] = out.deliveries.get(label, 0.0) + s.value
            elif s.name.endswith(RECEIVED_PER_TOPIC):
                out.received[s.labels["topic"]] = s.value
            elif s.name.endswith(SENT_PER_TOPIC):
                out.sent[s.labels["topic"].removeprefix("topic.")] = s.value
            elif s.name.endswith(TABLE_OPERATIONS) and s.labels["operation"] in TABLE_WRITES:
                table = s.labels["table"].removeprefix("table.")
                out.table_writes[table] = out.table_writes.get(table, 0.0) + s.value
            elif s.name == SINK_ROWS and s.labels.get("table") == "order_status_view":
                out.sink_rows = s.value
    return out


def statuses(url: str) -> dict[str, int]:
    """Terminal statuses counted by the worker's analytics (every country)."""
    body = _get(url + "/analytics/countries?local=1")
    out: dict[str, int] = {}
    for country in (orjson.loads(body) if body else {}).get("countries", {}).values():
        for status, n in country["by_status"].items():
            out[status] = out.get(status, 0) + int(n)
    return out


async def reported_end_offsets(bootstrap: str) -> dict[TopicPartition, int]:
    """ListOffsets ends of every partition of every topic the broker lists."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in sorted(await consumer.topics())
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return dict(ends)
    finally:
        await consumer.stop()


async def true_ends(bootstrap: str) -> dict[TopicPartition, int]:
    """End offsets of every partition, verified by fetching (see the module docstring)."""
    return await true_end_offsets(bootstrap, await reported_end_offsets(bootstrap))


async def quiet(bootstrap: str, url: str, quiet_s: float = QUIET_S, timeout: float = 60) -> None:
    """Wait until no partition's reported end and no stream's delivery count has moved
    for ``quiet_s`` seconds (the reported end moves with every new batch, even if wrong)."""

    async def state() -> tuple[dict[TopicPartition, int], float]:
        c = await asyncio.to_thread(counters, url)
        return await reported_end_offsets(bootstrap), sum(c.deliveries.values())

    deadline = time.monotonic() + timeout
    last, since = await state(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        if time.monotonic() > deadline:  # counted anyway; the breakdown shows what moved
            print(f"    (the pipeline did not go quiet within {timeout:g} s)", flush=True)
            return
        await asyncio.sleep(0.25)
        now = await state()
        if now != last:
            last, since = now, time.monotonic()


async def snapshot(bootstrap: str, url: str) -> Snapshot:
    await quiet(bootstrap, url)
    return Snapshot(await true_ends(bootstrap), await asyncio.to_thread(counters, url))


def cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


class Meter:
    """The three figures over one worker's run: :meth:`start` just before the orders are
    produced, :meth:`stop` once all are terminal (the CPU window), :meth:`finish` after."""

    def __init__(self, bootstrap: str, url: str, pid: int) -> None:
        self.bootstrap, self.url, self.pid = bootstrap, url, pid
        self.before: Snapshot | None = None
        self.statuses: dict[str, int] = {}
        self.cpu_start = self.cpu = 0.0

    async def start(self, terminal_before: int, timeout: float = 120) -> None:
        """Once the ``terminal_before`` orders made earlier are terminal and all is quiet."""
        deadline = time.monotonic() + timeout
        while sum((await asyncio.to_thread(statuses, self.url)).values()) < terminal_before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{terminal_before} earlier orders not terminal")
            await asyncio.sleep(0.05)
        self.before = await snapshot(self.bootstrap, self.url)
        self.statuses = await asyncio.to_thread(statuses, self.url)
        self.cpu_start = cpu_s(self.pid)

    def stop(self) -> None:
        self.cpu = cpu_s(self.pid) - self.cpu_start

    async def finish(self, orders: int, expected: str) -> Costs | None:
        """The costs of ``orders`` orders, once quiet; None (said why) unless every one of
        them reached the terminal status ``expected`` (the figures are for those only)."""
        assert self.before is not None, "Meter.start was not called"
        after = await snapshot(self.bootstrap, self.url)
        now = await asyncio.to_thread(statuses, self.url)
        new = {k: n - self.statuses.get(k, 0) for k, n in now.items()}
        if {k: n for k, n in new.items() if n} != {expected: orders}:
            print(f"    NOT all {orders} orders {expected} ({new}): no per-order costs", flush=True)
            return None
        return costs(self.before, after, orders, self.cpu)


def _delta(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


def costs(before: Snapshot, after: Snapshot, orders: int, cpu: float) -> Costs:
    writes: dict[str, float] = {}
    for tp, end in after.ends.items():
        writes[tp.topic] = writes.get(tp.topic, 0.0) + end - before.ends.get(tp, 0)
    b, a = before.counters, after.counters
    return Costs(
        orders=orders,
        writes={t: n for t, n in writes.items() if n and not t.startswith(BROKER_INTERNAL)},
        internal_writes={t: n for t, n in writes.items() if n and t.startswith(BROKER_INTERNAL)},
        deliveries=_delta(a.deliveries, b.deliveries),
        received=_delta(a.received, b.received),
        sent=_delta(a.sent, b.sent),
        table_writes=_delta(a.table_writes, b.table_writes),
        cpu_s=cpu,
    )


def report(c: Costs, agents: Mapping[str, list[str]]) -> None:
    """Print where the writes and deliveries go, per order, largest first."""
    n = c.orders
    f = c.figures
    print(
        f"    per fulfilled one-sku order ({n:,} orders): "
        f"{f['kafka_writes_per_order']:.2f} Kafka writes, "
        f"{f['agent_deliveries_per_order']:.2f} agent deliveries, "
        f"{f['worker_cpu_ms_per_order']:.2f} ms worker CPU",
        flush=True,
    )
    print("    Kafka writes per order by topic (broker end offsets; worker's sends):")
    for topic, w in sorted(c.writes.items(), key=lambda kv: (-kv[1], kv[0])):
        sent = c.sent.get(topic)
        by_worker = f"  (worker sent {sent / n:.2f})" if sent is not None else ""
        print(f"      {w / n:6.2f}  {topic}{by_worker}")
    for topic, w in sorted(c.internal_writes.items()):
        print(f"      ({w / n:6.2f}  {topic}: broker internal, not counted)")
    tables = sorted(c.table_writes.items(), key=lambda kv: (-kv[1], kv[0]))
    print(
        "    table writes per order (sets + deletes): "
        + ", ".join(f"{t} {w / n:.2f}" for t, w in tables)
    )
    print("    agent deliveries per order by stream (agents; messages received per order):")
    received = {stream_label(topic): r for topic, r in c.received.items()}
    for label, d in sorted(c.deliveries.items(), key=lambda kv: (-kv[1], kv[0])):
        names = ", ".join(agents.get(label, [])) or "?"
        msgs = received.get(label)
        per_msg = f"; {msgs / n:.2f} messages" if msgs else ""
        print(f"      {d / n:6.2f}  {label} ({names}{per_msg})")
    print(flush=True)
