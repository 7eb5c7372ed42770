"""Benchmark harness: ``make bench`` (``BENCH_QUICK=1`` for a short run).

Everything runs on the embedded broker (Tansu) and PostgreSQL, a fresh broker and
database for each measurement, in one run so the figures are comparable:

1. ceiling: raw aiokafka produce, and consume + JSON decode, of OrderCreated messages;
2. analytics: the per-country stage alone over ``ANALYTICS_N`` terminal StatusChanged
   events (count, revenue, 1-minute windows), in this project's ``analytics`` agent and
   in Quix Streams (``bench/quix_analytics.py``) on the same topic; events/s from the
   first totals update to the one that completes the count, and the ratio ours/Quix;
3. pipeline: orders/s from ``order_created`` to terminal status, one worker and two;
   and (issue 12, ``pipeline_vs_quix``) the whole pipeline against the same pipeline in
   Quix Streams (``bench/quix_pipeline.py``, its docstring says what differs): the same
   ``PIPELINE_N`` orders as Debezium envelopes (schemas disabled, as the embedded CDC
   writes them) on ``orders_db.public.orders``, each side on a fresh broker with one
   process (our worker, whose ``cdc`` agent reads them; one Quix application), each
   timed once a first order has gone through, orders/s from the first envelope produced
   until all are terminal (each side's per-country totals count ``PIPELINE_N``
   FULFILLED orders more than before, checked): ``pipeline_ours_cdc_orders_per_s``,
   ``pipeline_quix_orders_per_s``, their ratio ``pipeline_ratio_ours_to_quix``, and the
   Quix process's RSS after the run ``pipeline_quix_rss_mib``;
4. latency: p50/p95/p99 from Postgres commit to terminal status at ``LATENCY_RATE``
   orders/s offered for ``LATENCY_S`` seconds (through the embedded CDC), and the same
   at ``LIGHT_RATE`` and ``MID_RATE`` (100) orders/s for ``LIGHT_S`` seconds;
5. start-up: worker start to first processed event; worker RSS after the pipeline run,
   and after ``RSS_N`` orders through the analytics agent (windows expiring), with the
   growth from the first ``ANALYTICS_N``;
6. broker memory (issue 13: Tansu's memory store keeps every message, with no retention
   or compaction): the Tansu process's RSS (psutil, as ``/proc/<pid>`` and the workers'
   ``orders_embedded_broker_process_resident_memory_bytes``) just before the pipeline's
   orders are produced and once all are terminal (and the broker's RSS has settled),
   (after - before) / orders = ``broker_bytes_per_order`` (one worker; every topic an
   order touches, changelogs and repartition topics included); the same over the latency
   run, where orders come through Postgres and the CDC reader as under ``orders-app
   run``, is ``broker_bytes_per_order_cdc``.
7. per-order costs (issue 12), counted on the one-worker pipeline run, whose orders are
   all fulfilled one-sku orders (SKU-0001 x 2, 100,000 in stock, a new customer each,
   ``tok_visa``, 23.98; checked: the worker's analytics must count exactly
   ``PIPELINE_N`` new FULFILLED orders and nothing else, or the run gives none of the
   three), see ``bench/pipeline_costs.py``:
   ``kafka_writes_per_order`` = records written to every topic the broker lists
   (seed, repartition/command, changelog and Faust's own topics) during the run /
   orders, from *true* end offsets before and after (Tansu's ListOffsets reports the
   first offset of the last batch + 1, so each partition's end is verified by fetching
   its last batch, ``orders_app.broker_compat.offsets.true_end_offsets``); the orders' own
   ``order_created`` records are included, the CDC hop (``orders_db.public.orders`` and
   the ``cdc-orders`` agent) is not in this scenario (orders are produced straight to
   ``order_created``);
   ``agent_deliveries_per_order`` = events delivered to agent streams during the run /
   orders, from Faust's Prometheus counter
   ``faust_total_events_per_stream_total{stream}`` scraped from the worker's
   ``GET /metrics`` before and after;
   ``worker_cpu_ms_per_order`` = the worker's user + system CPU time (psutil) over the
   timed window of ``pipeline_orders_per_s`` / orders.
   Before and after are taken once nothing has moved for 2 s (the start-up order done;
   the last notifications and changelog writes landed), and the run prints where the
   writes (per topic, with the worker's own send counts and table writes) and the
   deliveries (per stream, with the agents reading it) go.

8. the CDC hop (issue 14), for each reader - real Debezium (``orders_app/cdc/debezium.py``,
   the default) and the built-in pgoutput reader: ``CDC_N`` orders inserted into Postgres
   at ``CDC_RATE`` orders/s, one transaction each; per order, the Kafka record's timestamp
   (set when the reader's producer sends it) minus the commit time Debezium's envelope
   carries (``source.ts_us``): ``cdc_hop_<reader>_p50_ms`` / ``_p99_ms``; for Debezium also
   its start (process start to streaming, snapshot of the catalogue included)
   ``debezium_start_s``, its RSS after the run ``debezium_rss_mib`` and its CPU per order
   ``debezium_cpu_ms_per_order``.  The latency steps (4) run through the default reader
   (``BENCH_CDC=builtin`` for the built-in one).

Figures are measured ``RUNS`` times (latency and the RSS soak once, to keep ``make
bench`` within 20 minutes) and reported as
min/median/max with machine info; results go to ``bench/results.json`` as
``[{"name", "unit", "min", "median", "max", "runs"}]`` (machine info in
``bench/machine.json``).  ``BENCH_ONLY=analytics,pipeline`` runs some steps;
``BENCH_PROFILE=1`` samples every worker with py-spy into ``bench/profiles/``.
``BENCH_OUT=/some/dir`` writes ``results.json`` and ``machine.json`` there instead (a
quick or partial run without replacing the committed full-run figures).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Self

import orjson
import psutil  # type: ignore[import-untyped]  # no stubs in the venv
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench import pipeline_costs as costs
from orders_app.admin import ensure_topics, registry_topic_names
from orders_app.cdc import pgoutput
from orders_app.cdc.builtin import TOPIC_PREFIX, CdcReader
from orders_app.cdc.debezium import DebeziumConnect
from orders_app.db import migrate, seed_catalogue
from orders_app.embedded.servers import EmbeddedBroker, EmbeddedPostgres, free_port
from orders_app.records import OrderCreated, OrderLine, encode

QUICK = os.environ.get("BENCH_QUICK") == "1"
PROFILE = os.environ.get("BENCH_PROFILE") == "1"
PROFILES = Path(__file__).resolve().parent / "profiles"
STATUS_BY_COUNTRY = "orders_app-status-by-country"
ORDER_ANALYTICS = "order_analytics"
RUNS = 1 if QUICK else 3
CEILING_N = 20_000 if QUICK else 50_000
PIPELINE_N = 2_000 if QUICK else 4_000
ANALYTICS_N = 50_000 if QUICK else 200_000
RSS_N = 200_000 if QUICK else 1_000_000  # the first analytics run goes on to this many
RSS_NAME = f"worker_rss_after_{RSS_N // 1000}k_orders_mib"
LATENCY_RATE = 100.0 if QUICK else 300.0
LATENCY_S = 10.0 if QUICK else 60.0
LIGHT_RATE = 40.0
LIGHT_S = 10.0 if QUICK else 30.0
MID_RATE = 100.0
CDC_RATE = 50.0
CDC_N = 500 if QUICK else 1_500
BENCH_CDC = os.environ.get("BENCH_CDC", "debezium")
ROOT = Path(__file__).resolve().parent.parent
OUT = Path(os.environ.get("BENCH_OUT") or Path(__file__).resolve().parent)
FULFILLED = "FULFILLED"
COUNTRIES = ["DE", "FR", "GB", "US", "NL", "ES", "IT", "PL", "SE", "JP", "CA", "BR"]
ORDERS_CDC = f"{TOPIC_PREFIX}.public.orders"
ORDERS_RELATION = pgoutput.Relation(relid=0, schema="public", table="orders")
QUIX_ORDER_ANALYTICS = "quix_order_analytics"  # bench/quix_pipeline.py's order_analytics


def order(i: int, prefix: str) -> OrderCreated:
    return OrderCreated(
        order_id=f"{prefix}-{i}",
        customer_id=f"{prefix}-c-{i}",
        country=COUNTRIES[i % len(COUNTRIES)],
        currency="EUR",
        total=Decimal("23.98"),
        lines=[OrderLine(sku="SKU-0001", quantity=2, unit_price=Decimal("11.99"))],
        payment_method="tok_visa",
        created_at=time.time(),
    )


def envelope(i: int, prefix: str) -> tuple[bytes, bytes]:
    """``order(i, prefix)`` as the CDC would publish its row's insert: key ``{"id"}``,
    Debezium envelope (column formats of ``orders_app.cdc.pgoutput``), schemas disabled."""
    o = order(i, prefix)
    ts_us = int(o.created_at * 1_000_000)
    lines = [
        {"sku": ln.sku, "quantity": ln.quantity, "unit_price": str(ln.unit_price)} for ln in o.lines
    ]
    after = {
        "id": o.order_id,
        "customer_id": o.customer_id,
        "country": o.country,
        "currency": o.currency,
        "total": str(o.total),
        "lines": json.dumps(lines),
        "payment_method": o.payment_method,
        "created_at": pgoutput.zoned_timestamp(
            datetime.fromtimestamp(o.created_at, UTC).isoformat(sep=" ")
        ),
        "idempotency_key": None,
    }
    source = pgoutput.source_block(
        prefix=TOPIC_PREFIX,
        db="bench",
        rel=ORDERS_RELATION,
        ts_us=ts_us,
        snapshot="false",
        txid=1000 + i,
        lsn=1_000_000 + i,
        last_commit_lsn=None,
    )
    value = pgoutput.envelope("c", None, after, source, ts_us)
    return orjson.dumps({"id": o.order_id}), value


class Stack:
    """A fresh broker + database for one measurement."""

    def __init__(self, pg: EmbeddedPostgres, step: str = "bench") -> None:
        self.pg = pg
        self.step = step
        self.broker = EmbeddedBroker()
        self.db = "b_" + os.urandom(5).hex()
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-"))
        self.workers: list[subprocess.Popen[bytes]] = []

    async def __aenter__(self) -> Stack:
        import asyncpg

        await self.broker.start()
        admin = await asyncpg.connect(self.pg.dsn_for("postgres"))
        await admin.execute(f'CREATE DATABASE "{self.db}"')
        await admin.close()
        conn = await asyncpg.connect(self.dsn)
        await migrate(conn)
        await seed_catalogue(conn)
        await conn.close()
        await ensure_topics(self.broker.bootstrap, registry_topic_names(), 4)
        return self

    async def __aexit__(self, *exc: object) -> None:
        import asyncpg

        self.stop_workers()
        await self.broker.stop()
        # an idle slot of a finished step would hold WAL for the rest of the run
        admin = await asyncpg.connect(self.pg.dsn_for("postgres"))
        try:
            await admin.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE database = $1 AND NOT active",
                self.db,
            )
        finally:
            await admin.close()

    async def cdc(self, kind: str) -> Any:
        """The CDC reader ``kind`` (``debezium`` or ``builtin``), started on this stack."""
        if kind == "debezium":
            dbz = DebeziumConnect(
                dsn=self.dsn,
                bootstrap=self.broker.bootstrap,
                work_dir=self.tmp / "debezium",
                # slots are per cluster, the bench's databases share one
                overrides={"slot.name": f"dbz_{self.db}"},
            )
            await dbz.start()
            return dbz
        reader = CdcReader(
            dsn=self.dsn,
            bootstrap=self.broker.bootstrap,
            slot="bench",
            fresh_broker=True,
            poll_interval=0.05,
        )
        await reader.start()
        return reader

    def stop_workers(self) -> None:
        for w in self.workers:
            w.terminate()
            try:
                w.wait(15)
            except subprocess.TimeoutExpired:
                w.kill()
        self.workers.clear()

    @property
    def dsn(self) -> str:
        return self.pg.dsn_for(self.db)

    def broker_rss(self) -> int:
        """Resident bytes of the Tansu process (it holds every message in memory)."""
        assert self.broker.process is not None
        return int(psutil.Process(self.broker.process.pid).memory_info().rss)

    async def settled_broker_rss(self, quiet: float = 2.0, timeout: float = 30.0) -> int:
        """The broker's RSS once it has not grown for ``quiet`` seconds (the last writes of
        a run - notifications, changelogs, offset commits - land after the terminal status)."""
        deadline = time.monotonic() + timeout
        last, since = self.broker_rss(), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < quiet:
            await asyncio.sleep(0.25)
            now = self.broker_rss()
            if now > last:
                last, since = now, time.monotonic()
        return last

    def env(self, port: int) -> dict[str, str]:
        """The environment of a worker on web port ``port``."""
        return {
            **os.environ,
            "ORDERS_BROKER_URL": self.broker.url,
            "ORDERS_POSTGRES_DSN": self.dsn,
            "ORDERS_WEB_PORT": str(port),
            "ORDERS_DATA_DIR": str(self.tmp / f"w{port}"),
        }

    def agent_streams(self) -> dict[str, list[str]]:
        """Stream label -> agents (``bench/agent_streams.py``, in a subprocess with a
        worker's environment); empty if it fails (the labels are printed without names)."""
        try:
            done = subprocess.run(
                [sys.executable, "-m", "bench.agent_streams"],
                env=self.env(free_port()),
                cwd=ROOT,
                capture_output=True,
                timeout=120,
                check=True,
            )
            out: dict[str, list[str]] = orjson.loads(done.stdout.splitlines()[-1])
            return out
        except (subprocess.SubprocessError, OSError, IndexError, orjson.JSONDecodeError) as err:
            print(f"    (agent names unavailable: {err!r})", flush=True)
            return {}

    def worker(self) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "orders_app.cli", "worker", "--skip-checks"],
            env=self.env(port),
            cwd=ROOT,
            stdout=(self.tmp / f"w{port}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.workers.append(proc)
        if PROFILE:
            self.profile(proc.pid, "worker")
        return proc, f"http://127.0.0.1:{port}"

    def profile(self, pid: int, what: str) -> None:
        """Sample ``pid`` with py-spy until it exits (``BENCH_PROFILE=1``)."""
        PROFILES.mkdir(exist_ok=True)
        out = PROFILES / f"{self.step}-{what}.raw"
        spy = ROOT / ".venv" / "bin" / "py-spy"
        args = [str(spy), "record", "--pid", str(pid), "--format", "raw", "--rate", "100"]
        subprocess.Popen(
            [*args, "--nonblocking", "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return orjson.loads(resp.read())
    except OSError:
        return None


async def until(cond: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await cond():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("benchmark condition not reached")


async def produce(bootstrap: str, events: list[OrderCreated]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=262144)
    await producer.start()
    t0 = time.perf_counter()
    futs = [
        await producer.send("order_created", key=e.order_id.encode(), value=encode(e))
        for e in events
    ]
    await asyncio.gather(*futs)
    elapsed = time.perf_counter() - t0
    await producer.stop()
    return elapsed


async def produce_envelopes(bootstrap: str, messages: list[tuple[bytes, bytes]]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=262144)
    await producer.start()
    t0 = time.perf_counter()
    futs = [await producer.send(ORDERS_CDC, key=k, value=v) for k, v in messages]
    await asyncio.gather(*futs)
    elapsed = time.perf_counter() - t0
    await producer.stop()
    return elapsed


async def ceiling(pg: EmbeddedPostgres) -> dict[str, float]:
    async with Stack(pg, "ceiling") as s:
        events = [order(i, "ceil") for i in range(CEILING_N)]
        produce_s = await produce(s.broker.bootstrap, events)
        consumer = AIOKafkaConsumer(
            "order_created",
            bootstrap_servers=s.broker.bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            max_partition_fetch_bytes=4 << 20,
        )
        await consumer.start()
        t0 = time.perf_counter()
        n = 0
        while n < CEILING_N:
            for msgs in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                for m in msgs:
                    orjson.loads(m.value)
                n += len(msgs)
        consume_s = time.perf_counter() - t0
        await consumer.stop()
    return {
        "ceiling_produce": CEILING_N / produce_s,
        "ceiling_consume_decode": CEILING_N / consume_s,
    }


def status_changed(i: int, base: float) -> bytes:
    """A terminal StatusChanged (as the status agent emits it) for order ``i``; commit
    times 50 ms apart, so 200,000 orders span 2.8 hours and windows expire."""
    return orjson.dumps(
        {
            "order_id": f"an-{i}",
            "status": "FULFILLED",
            "previous": "RESERVED",
            "terminal": True,
            "customer_id": f"an-c-{i}",
            "country": COUNTRIES[i % len(COUNTRIES)],
            "currency": "EUR",
            "total": "23.98",
            "reasons": [],
            "created_at": base + i * 0.05,
            "at": base + i * 0.05,
        }
    )


async def produce_status_changes(bootstrap: str, start: int, n: int, base: float) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=262144)
    await producer.start()
    futs = []
    for i in range(start, start + n):
        country = COUNTRIES[i % len(COUNTRIES)]
        futs.append(
            await producer.send(
                STATUS_BY_COUNTRY,
                key=country.encode(),
                value=status_changed(i, base),
                timestamp_ms=int((base + i * 0.05) * 1000),
            )
        )
    await asyncio.gather(*futs)
    await producer.stop()


class TotalsTail:
    """Tails a topic of per-country running totals (values with an ``orders`` count)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            max_partition_fetch_bytes=4 << 20,
        )
        self.latest: dict[bytes, int] = {}
        self.first: tuple[float, int] | None = None

    async def __aenter__(self) -> Self:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def until(self, n: int, timeout: float = 1800) -> float:
        """Wait until the counts add up to ``n``; -> events/s since the first update."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batches = await self.consumer.getmany(timeout_ms=200, max_records=50_000)
            for msgs in batches.values():
                for m in msgs:
                    self.latest[m.key] = orjson.loads(m.value)["orders"]
            if not self.latest:
                continue
            now, done = time.perf_counter(), sum(self.latest.values())
            if self.first is None:
                self.first = (now, done)
            if done >= n:
                return (n - self.first[1]) / max(now - self.first[0], 1e-9)
        raise TimeoutError(f"totals did not reach {n}")


async def totals_rate(bootstrap: str, topic: str, n: int) -> float:
    """events/s between the first update seen on ``topic`` and the one completing ``n``."""
    async with TotalsTail(bootstrap, topic) as tail:
        return await tail.until(n)


_soaked: list[bool] = []


async def analytics(pg: EmbeddedPostgres) -> dict[str, float]:
    """The analytics stage alone: ours (the ``analytics`` agent in a worker) and Quix
    Streams, each reading the same ``ANALYTICS_N`` events from the same broker.

    The first time, our worker then goes on to ``RSS_N`` orders (the RSS soak: windows
    expire as commit times advance 50 ms per order) before Quix runs."""
    out: dict[str, float] = {}
    soak = not _soaked
    _soaked.append(True)
    total = RSS_N if soak else ANALYTICS_N
    async with Stack(pg, "analytics") as s:
        base = time.time() - total * 0.05
        await produce_status_changes(s.broker.bootstrap, 0, ANALYTICS_N, base)
        proc, _url = s.worker()
        async with TotalsTail(s.broker.bootstrap, ORDER_ANALYTICS) as tail:
            out["analytics_ours_events_per_s"] = await tail.until(ANALYTICS_N)
            rss = [psutil.Process(proc.pid).memory_info().rss / 2**20]
            out["analytics_ours_rss_mib"] = rss[0]
            step = ANALYTICS_N
            for start in range(ANALYTICS_N, total, step):
                await produce_status_changes(s.broker.bootstrap, start, step, base)
                await tail.until(start + step)
                rss.append(psutil.Process(proc.pid).memory_info().rss / 2**20)
                print(
                    f"    worker rss after {start + step:,} orders: {rss[-1]:.1f} MiB", flush=True
                )
        if soak:
            out[RSS_NAME] = rss[-1]
            out["worker_rss_growth_mib"] = rss[-1] - rss[0]
        s.stop_workers()
        quix = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.quix_analytics",
                s.broker.bootstrap,
                STATUS_BY_COUNTRY,
                "bench_quix_totals",
                "bench_quix_windows",
                str(s.tmp / "quix-state"),
                "bench-quix",
            ],
            cwd=ROOT,
            stdout=(s.tmp / "quix.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        s.workers.append(quix)
        if PROFILE:
            s.profile(quix.pid, "quix")
        out["analytics_quix_events_per_s"] = await totals_rate(
            s.broker.bootstrap, "bench_quix_totals", ANALYTICS_N
        )
        out["analytics_quix_rss_mib"] = psutil.Process(quix.pid).memory_info().rss / 2**20
    out["analytics_ratio_ours_to_quix"] = (
        out["analytics_ours_events_per_s"] / out["analytics_quix_events_per_s"]
    )
    return out


def terminal_count(url: str) -> int:
    body = get_json(url + "/analytics/countries?local=1")
    if not body:
        return 0
    return sum(sum(c["by_status"].values()) for c in body["countries"].values())


async def pipeline(pg: EmbeddedPostgres) -> dict[str, float]:
    return await _pipeline(pg, 1)


async def pipeline_two(pg: EmbeddedPostgres) -> dict[str, float]:
    return await _pipeline(pg, 2)


async def _pipeline(pg: EmbeddedPostgres, n_workers: int) -> dict[str, float]:
    async with Stack(pg, f"pipeline{n_workers}") as s:
        reader = CdcReader(dsn=s.dsn, bootstrap=s.broker.bootstrap, slot="bench", fresh_broker=True)
        await reader.start()  # products snapshot -> stock
        # start-up: an order is waiting before the workers start
        first = order(0, "start")
        await produce(s.broker.bootstrap, [first])
        t0 = time.perf_counter()
        workers = [s.worker() for _ in range(n_workers)]
        urls = [url for _proc, url in workers]

        async def first_done() -> bool:
            return any(get_json(f"{url}/orders/{first.order_id}?local=1") for url in urls)

        async def all_ready() -> bool:
            return all((get_json(url + "/ready") or {}).get("ready") for url in urls)

        await until(first_done, 120)
        startup = time.perf_counter() - t0
        await until(all_ready, 120)
        events = [order(i, "pipe") for i in range(PIPELINE_N)]
        # issue 12's per-order costs, on the one-worker run
        meter = costs.Meter(s.broker.bootstrap, urls[0], workers[0][0].pid)
        if n_workers == 1:
            await meter.start(terminal_before=1)  # the start-up order
        broker_before = s.broker_rss()
        t0 = time.perf_counter()
        await produce(s.broker.bootstrap, events)

        async def all_done() -> bool:
            counts = await asyncio.gather(*(asyncio.to_thread(terminal_count, u) for u in urls))
            return sum(counts) >= PIPELINE_N + 1

        await until(all_done, 1800)
        done_at = time.perf_counter()
        rate = PIPELINE_N / (done_at - t0)
        if n_workers == 1:
            meter.stop()
            sink = await sink_figures(s.dsn, urls[0], t0, done_at)
        rss = max(psutil.Process(proc.pid).memory_info().rss for proc, _url in workers) / 2**20
        broker_per_order = (await s.settled_broker_rss() - broker_before) / PIPELINE_N
        measured = await meter.finish(PIPELINE_N, FULFILLED) if n_workers == 1 else None
        await reader.stop()
    if n_workers == 2:
        return {"pipeline_2_workers_orders_per_s": rate}
    out = {
        "pipeline_orders_per_s": rate,
        "worker_first_event_s": startup,
        "worker_rss_mib": rss,
        "broker_bytes_per_order": broker_per_order,
    }
    if measured is not None:
        costs.report(measured, s.agent_streams())
        out.update(measured.figures)
        out.update(sink)
    return out


async def sink_figures(dsn: str, url: str, t0: float, done_at: float) -> dict[str, float]:
    """Issue 16's outcome sink at the pipeline's full rate: how long after the last
    terminal status Postgres records every order (``sink_lag_s``), and the rows it
    upserted per second from the first order to then (``sink_rows_per_s``, from the
    worker's ``orders_sink_rows_total``: an order's document is written up to three
    times - created, paid, terminal - fewer when one batch holds several)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:

        async def recorded() -> bool:
            n = await conn.fetchval(
                "SELECT count(*) FROM order_status_view "
                "WHERE order_id LIKE 'pipe-%' AND terminal_at IS NOT NULL"
            )
            return int(n) >= PIPELINE_N

        await until(recorded, 300)
        all_recorded = time.perf_counter()
    finally:
        await conn.close()
    rows = (await asyncio.to_thread(costs.counters, url)).sink_rows
    return {
        "sink_lag_s": max(0.0, all_recorded - done_at),
        "sink_rows_per_s": float(rows) / (all_recorded - t0),
    }


def fulfilled_count(url: str) -> int:
    body = get_json(url + "/analytics/countries?local=1")
    if not body:
        return 0
    return sum(c["by_status"].get(FULFILLED, 0) for c in body["countries"].values())


class StatsTail(TotalsTail):
    """Tails a topic of per-country ``CountryStats``, keeping each country's latest."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(bootstrap, topic)
        self.stats: dict[bytes, dict[str, Any]] = {}

    def orders(self) -> int:
        return sum(int(v["orders"]) for v in self.stats.values())

    def fulfilled(self) -> int:
        return sum(int(v["by_status"].get(FULFILLED, 0)) for v in self.stats.values())

    async def until_orders(
        self, n: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 1800
    ) -> None:
        """Wait until the countries count ``n`` orders (``proc`` must stay up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batches = await self.consumer.getmany(timeout_ms=100, max_records=50_000)
            for msgs in batches.values():
                for m in msgs:
                    self.stats[m.key] = orjson.loads(m.value)
            if self.orders() >= n:
                return
            if proc.poll() is not None:
                raise RuntimeError(f"exited with {proc.returncode} (see {log})")
        raise TimeoutError(f"{self.orders()} of {n} orders counted (see {log})")


async def pipeline_vs_quix(pg: EmbeddedPostgres) -> dict[str, float]:
    """Ours and Quix Streams (``bench/quix_pipeline.py``) on the same envelopes."""
    ours = await _ours_from_envelopes(pg)
    quix, quix_rss = await _quix_pipeline(pg)
    return {
        "pipeline_ours_cdc_orders_per_s": ours,
        "pipeline_quix_orders_per_s": quix,
        "pipeline_ratio_ours_to_quix": ours / quix,
        "pipeline_quix_rss_mib": quix_rss,
    }


async def _ours_from_envelopes(pg: EmbeddedPostgres) -> float:
    """One worker: ``PIPELINE_N`` envelopes on ``orders_db.public.orders`` -> all terminal."""
    async with Stack(pg, "ours-cdc") as s:
        reader = CdcReader(dsn=s.dsn, bootstrap=s.broker.bootstrap, slot="bench", fresh_broker=True)
        await reader.start()  # products snapshot -> stock
        await produce_envelopes(s.broker.bootstrap, [envelope(0, "cdc-start")])
        _proc, url = s.worker()

        async def terminal(n: int) -> bool:
            return await asyncio.to_thread(terminal_count, url) >= n

        async def ready() -> bool:
            return bool((get_json(url + "/ready") or {}).get("ready"))

        await until(lambda: terminal(1), 120)
        await until(ready, 120)
        before = fulfilled_count(url)
        messages = [envelope(i, "cdc") for i in range(PIPELINE_N)]
        t0 = time.perf_counter()
        await produce_envelopes(s.broker.bootstrap, messages)
        await until(lambda: terminal(PIPELINE_N + 1), 1800)
        rate = PIPELINE_N / (time.perf_counter() - t0)
        fulfilled = fulfilled_count(url) - before
        await reader.stop()
    if fulfilled != PIPELINE_N:
        raise RuntimeError(f"ours: {fulfilled} of {PIPELINE_N} orders FULFILLED")
    return rate


async def _quix_pipeline(pg: EmbeddedPostgres) -> tuple[float, float]:
    """The Quix application: the same envelopes -> all terminal; -> (orders/s, RSS MiB)."""
    async with Stack(pg, "quix-pipeline") as s:
        reader = CdcReader(dsn=s.dsn, bootstrap=s.broker.bootstrap, slot="bench", fresh_broker=True)
        await reader.start()  # products snapshot -> stock
        # the tail needs the topic before it subscribes
        await ensure_topics(s.broker.bootstrap, [QUIX_ORDER_ANALYTICS], 4)
        log = s.tmp / "quix-pipeline.log"
        quix = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.quix_pipeline",
                s.broker.bootstrap,
                str(s.tmp / "quix-state"),
                "bench-quix-pipeline",
                "4",
            ],
            cwd=ROOT,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        s.workers.append(quix)
        if PROFILE:
            s.profile(quix.pid, "quix")
        async with StatsTail(s.broker.bootstrap, QUIX_ORDER_ANALYTICS) as tail:
            await produce_envelopes(s.broker.bootstrap, [envelope(0, "quix-start")])
            await tail.until_orders(1, quix, log, timeout=180)
            before = tail.fulfilled()
            messages = [envelope(i, "quix") for i in range(PIPELINE_N)]
            t0 = time.perf_counter()
            await produce_envelopes(s.broker.bootstrap, messages)
            await tail.until_orders(PIPELINE_N + 1, quix, log)
            rate = PIPELINE_N / (time.perf_counter() - t0)
            fulfilled = tail.fulfilled() - before
        rss = psutil.Process(quix.pid).memory_info().rss / 2**20
        await reader.stop()
    if fulfilled != PIPELINE_N:
        raise RuntimeError(f"quix: {fulfilled} of {PIPELINE_N} orders FULFILLED (see {log})")
    return rate, rss


async def insert_paced(dsn: str, prefix: str, n: int, rate: float) -> None:
    """``n`` one-line orders (``<prefix>-<i>``) into Postgres at ``rate`` per second, one
    transaction each, as the CDC readers see real traffic."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    lines = json.dumps([{"sku": "SKU-0001", "quantity": 1, "unit_price": "11.99"}])
    t0 = time.monotonic()
    try:
        for i in range(n):
            await conn.execute(
                "INSERT INTO orders (id, customer_id, country, currency, total, lines) "
                "VALUES ($1, $2, 'DE', 'EUR', 11.99, $3::jsonb)",
                f"{prefix}-{i}",
                f"{prefix}-c-{i}",
                lines,
            )
            delay = t0 + (i + 1) / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    finally:
        await conn.close()


async def latency(pg: EmbeddedPostgres) -> dict[str, float]:
    return await _latency(pg, LATENCY_RATE, LATENCY_S, "latency", broker_memory=True)


async def latency_light(pg: EmbeddedPostgres) -> dict[str, float]:
    """The same at a rate one worker sustains: latency without queueing."""
    return await _latency(pg, LIGHT_RATE, LIGHT_S, f"latency_at_{LIGHT_RATE:.0f}_per_s")


async def latency_mid(pg: EmbeddedPostgres) -> dict[str, float]:
    """The same at 100 orders/s (issue 12), with the per-order costs at that pace."""
    return await _latency(pg, MID_RATE, LIGHT_S, f"latency_at_{MID_RATE:.0f}_per_s", metered=True)


async def _latency(
    pg: EmbeddedPostgres,
    rate: float,
    seconds: float,
    name: str,
    broker_memory: bool = False,
    metered: bool = False,
) -> dict[str, float]:
    """``metered``: also the per-order costs at this pace (``<figure>_at_<rate>_per_s``):
    a flood (the pipeline step) spreads an order's steps over seconds, a steady pace does
    not, which matters to what the changelog cache can fold."""
    measured: costs.Costs | None = None
    async with Stack(pg, name) as s:
        reader = await s.cdc(BENCH_CDC)
        proc, url = s.worker()

        async def ready() -> bool:
            body = get_json(url + "/ready")
            return bool(body and body.get("ready"))

        await until(ready, 120)
        await asyncio.sleep(2)
        meter = costs.Meter(s.broker.bootstrap, url, proc.pid) if metered else None
        if meter is not None:
            await meter.start(terminal_before=0)
        broker_before = s.broker_rss()
        n = int(rate * seconds)
        await insert_paced(s.dsn, "lat", n, rate)

        async def all_done() -> bool:
            return await asyncio.to_thread(terminal_count, url) >= n

        await until(all_done, 600)
        if meter is not None:
            meter.stop()
            measured = await meter.finish(n, FULFILLED)
            if measured is not None:
                costs.report(measured, s.agent_streams())
        broker_after = await s.settled_broker_rss()
        consumer = AIOKafkaConsumer(
            "orders_app-status-by-country",
            bootstrap_servers=s.broker.bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
        )
        await consumer.start()
        lat: list[float] = []
        idle = time.monotonic()
        while time.monotonic() - idle < 2:
            for msgs in (await consumer.getmany(timeout_ms=300)).values():
                idle = time.monotonic()
                for m in msgs:
                    v = orjson.loads(m.value)
                    if v["terminal"]:
                        lat.append((v["at"] - v["created_at"]) * 1000)
        await consumer.stop()
        await reader.stop()
    lat.sort()
    q = statistics.quantiles(lat, n=100)
    out = {f"{name}_p50_ms": q[49], f"{name}_p95_ms": q[94], f"{name}_p99_ms": q[98]}
    if metered and measured is not None:
        out.update({f"{k}_at_{rate:.0f}_per_s": v for k, v in measured.figures.items()})
    if broker_memory:
        out["broker_bytes_per_order_cdc"] = (broker_after - broker_before) / n
    return out


async def cdc_hop(pg: EmbeddedPostgres) -> dict[str, float]:
    out: dict[str, float] = {}
    for kind in ("debezium", "builtin"):
        out.update(await _cdc_hop(pg, kind))
    return out


async def _cdc_hop(pg: EmbeddedPostgres, kind: str) -> dict[str, float]:

    async with Stack(pg, f"cdc_{kind}") as s:
        t0 = time.monotonic()
        reader = await s.cdc(kind)
        started = time.monotonic() - t0
        proc = psutil.Process(reader.pid) if kind == "debezium" else None
        await asyncio.sleep(1)  # the snapshot's tail
        cpu0 = sum(proc.cpu_times()[:2]) if proc is not None else 0.0
        await insert_paced(s.dsn, "hop", CDC_N, CDC_RATE)
        consumer = AIOKafkaConsumer(
            ORDERS_CDC,
            bootstrap_servers=s.broker.bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
        )
        await consumer.start()
        hops: dict[bytes, float] = {}
        idle = time.monotonic()
        while len(hops) < CDC_N and time.monotonic() - idle < 10:
            for msgs in (await consumer.getmany(timeout_ms=300)).values():
                idle = time.monotonic()
                for m in msgs:
                    if m.value is None:
                        continue
                    v = orjson.loads(m.value)
                    if v["op"] == "c":
                        hops[m.key] = m.timestamp - v["source"]["ts_us"] / 1000
        await consumer.stop()
        cpu = sum(proc.cpu_times()[:2]) - cpu0 if proc is not None else 0.0
        rss = proc.memory_info().rss / 2**20 if proc is not None else 0.0
        await reader.stop()
    if len(hops) < CDC_N:
        raise RuntimeError(f"cdc_hop {kind}: {len(hops)} of {CDC_N} orders reached the broker")
    q = statistics.quantiles(sorted(hops.values()), n=100)
    out = {f"cdc_hop_{kind}_p50_ms": q[49], f"cdc_hop_{kind}_p99_ms": q[98]}
    if kind == "debezium":
        out.update(
            debezium_start_s=started,
            debezium_rss_mib=rss,
            debezium_cpu_ms_per_order=cpu * 1000 / CDC_N,
        )
    return out


UNITS = {
    "ceiling_produce": "msg/s",
    "ceiling_consume_decode": "msg/s",
    "pipeline_orders_per_s": "orders/s",
    "worker_first_event_s": "s",
    "worker_rss_mib": "MiB",
    "broker_bytes_per_order": "B/order",
    "broker_bytes_per_order_cdc": "B/order",
    "kafka_writes_per_order": "writes",
    "agent_deliveries_per_order": "events",
    "worker_cpu_ms_per_order": "ms",
    **{
        f"{k}_at_{MID_RATE:.0f}_per_s": unit
        for k, unit in (
            ("kafka_writes_per_order", "writes"),
            ("agent_deliveries_per_order", "events"),
            ("worker_cpu_ms_per_order", "ms"),
        )
    },
    "sink_lag_s": "s",
    "sink_rows_per_s": "rows/s",
    "latency_p50_ms": "ms",
    "latency_p95_ms": "ms",
    "latency_p99_ms": "ms",
    **{f"latency_at_{LIGHT_RATE:.0f}_per_s_p{q}_ms": "ms" for q in (50, 95, 99)},
    **{f"latency_at_{MID_RATE:.0f}_per_s_p{q}_ms": "ms" for q in (50, 95, 99)},
    "pipeline_ours_cdc_orders_per_s": "orders/s",
    "pipeline_quix_orders_per_s": "orders/s",
    "pipeline_ratio_ours_to_quix": "ratio",
    "pipeline_quix_rss_mib": "MiB",
    "pipeline_2_workers_orders_per_s": "orders/s",
    RSS_NAME: "MiB",
    "worker_rss_growth_mib": "MiB",
    "analytics_ours_events_per_s": "events/s",
    "analytics_quix_events_per_s": "events/s",
    "analytics_ratio_ours_to_quix": "ratio",
    "analytics_ours_rss_mib": "MiB",
    "analytics_quix_rss_mib": "MiB",
    **{f"cdc_hop_{k}_p{q}_ms": "ms" for k in ("debezium", "builtin") for q in (50, 99)},
    "debezium_start_s": "s",
    "debezium_rss_mib": "MiB",
    "debezium_cpu_ms_per_order": "ms",
}


STEPS = [
    ceiling,
    analytics,
    pipeline,
    pipeline_two,
    pipeline_vs_quix,
    latency_light,
    latency_mid,
    latency,
    cdc_hop,
]
# measured once per `make bench` (they take minutes each); the others RUNS times
ONCE = {"latency_light", "latency_mid", "latency", "pipeline_vs_quix", "cdc_hop"}
ONLY = os.environ.get("BENCH_ONLY")
if ONLY:
    STEPS = [step for step in STEPS if step.__name__ in ONLY.split(",")]


async def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    tmp.chmod(0o755)
    pg = EmbeddedPostgres(tmp / "pg")
    await pg.start()
    runs: dict[str, list[float]] = {}
    started = time.monotonic()
    try:
        for run in range(RUNS):
            for step in STEPS:
                if run and step.__name__ in ONCE:
                    continue
                print(f"run {run + 1}/{RUNS}: {step.__name__}", flush=True)
                for name, value in (await step(pg)).items():
                    runs.setdefault(name, []).append(round(value, 3))
                    print(f"  {name}: {value:,.2f} {UNITS[name]}", flush=True)
    finally:
        await pg.stop()
    results = [
        {
            "name": k,
            "unit": UNITS[k],
            "min": min(v),
            "median": statistics.median(v),
            "max": max(v),
            "runs": v,
        }
        for k, v in runs.items()
    ]
    machine = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "quick": QUICK,
        "duration_s": round(time.monotonic() - started),
        "runs": RUNS,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / "results.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    (out.parent / "machine.json").write_text(json.dumps(machine, indent=2) + "\n")
    print(f"\nmachine: {machine}")
    w = max([24, *(len(str(r["name"])) for r in results)])
    print(f"| {'figure':<{w}} | {'unit':<8} | {'min':>10} | {'median':>10} | {'max':>10} |")
    print(f"|{'-' * (w + 2)}|{'-' * 10}|{'-' * 12}|{'-' * 12}|{'-' * 12}|")
    for r in results:
        row = [f"{r[k]:>10,.2f}" for k in ("min", "median", "max")]
        print(f"| {r['name']:<{w}} | {r['unit']:<8} | " + " | ".join(row) + " |")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    asyncio.run(main())
