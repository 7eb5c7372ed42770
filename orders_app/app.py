"""The Faust application object.

Rule: the app is created at import time *unconfigured*; ``Settings`` are read and applied
in ``on_configured`` (the first time Faust needs its configuration), so importing this
module reads no environment, opens no connection and starts nothing.

``faust -A orders_app.app worker`` and ``orders-app worker`` both start a worker from it.
The agents, tables and web views are found by autodiscovery of the top-level packages
``agents``, ``tables`` and ``web``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import faust
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from mode import ServiceT

from orders_app.broker_compat import wanted
from orders_app.broker_compat.fetch import use_fetch_wait
from orders_app.broker_compat.group import leave_group_on_stop
from orders_app.broker_compat.holes import cut_holes
from orders_app.broker_compat.offsets import correct_highwaters
from orders_app.db import Database
from orders_app.faust_patches import eager_delivery, skip_guard
from orders_app.faust_patches.changelog_cache import (
    ChangelogCache,
    discard_unclean_state,
    mark_clean_stop,
)
from orders_app.faust_patches.gaps import watch_gaps
from orders_app.faust_patches.lean_monitor import LeanPrometheusMonitor
from orders_app.faust_patches.quick_exit import QuickExitWorker
from orders_app.faust_patches.skip_guard import on_client_started
from orders_app.feed import Feed
from orders_app.logs import logging_config
from orders_app.metrics import BusinessMetrics
from orders_app.records import DeadLetter, encode
from orders_app.settings import Settings, load_settings_or_exit
from orders_app.sink import OutcomeSink
from orders_app.sink_rules import Source

# The worker's own consumer fetches every ``fetch_wait_ms`` (20 ms): each hop of an order
# waits for it.  The two side readers need not: the dashboard's feed coalesces its pushes
# (250 ms by default) and the sink reads changelogs that the changelog cache sends once a
# commit interval (2.8 s).  Every Fetch answer, empty or not, costs a decode of all the
# reader's partitions in pure Python: at 20 ms the two cost ~3 % of a core idle
# (bench/PROFILE.md).
FEED_FETCH_WAIT_MS = 100
SINK_FETCH_WAIT_MS = 250


class OrdersApp(faust.App):
    """``faust.App`` plus the app's own settings and injected resources."""

    _orders_settings: Settings | None = None
    _database: Database | None = None
    _feed: Feed | None = None
    _sink: OutcomeSink | None = None
    _metrics: BusinessMetrics | None = None
    _changelog_cache: ChangelogCache | None = None

    @property
    def settings(self) -> Settings:
        if self._orders_settings is None:
            self._orders_settings = load_settings_or_exit()
        return self._orders_settings

    def use_settings(self, settings: Settings) -> None:
        """Inject settings (tests, the embedded stack) before the app is configured."""
        self._orders_settings = settings

    @property
    def db(self) -> Database:
        """The asyncpg pool service; started with the worker (server mode only)."""
        if self._database is None:
            self._database = Database(self.settings.postgres_dsn, loop=self.loop)
        return self._database

    @property
    def metrics(self) -> BusinessMetrics:
        """The app's Prometheus registry and business metrics."""
        if self._metrics is None:
            self._metrics = BusinessMetrics()
            self._metrics.watch_embedded_broker(self.settings.embedded_broker_pid)
        return self._metrics

    @property
    def feed(self) -> Feed:
        """The live analytics / dead-letter feed for the web layer (server mode only)."""
        if self._feed is None:
            self._feed = Feed(
                self.settings.kafka_bootstrap,
                fetch_wait_ms=max(self.settings.fetch_wait_ms, FEED_FETCH_WAIT_MS),
                loop=self.loop,
            )
        return self._feed

    @property
    def sink(self) -> OutcomeSink:
        """The outcome sink (order outcomes and country totals into Postgres)."""
        if self._sink is None:
            s = self.settings
            self._sink = OutcomeSink(
                s.kafka_bootstrap,
                s.app_id,
                self.db,
                self.metrics,
                self._sink_dead_letter,
                fetch_wait_ms=max(s.fetch_wait_ms, SINK_FETCH_WAIT_MS),
                session_timeout_s=s.session_timeout,
                max_records=s.batch_max,
                cut_fetch_holes=wanted(s.broker_compat, None),
                loop=self.loop,
            )
        return self._sink

    @property
    def changelog_cache(self) -> ChangelogCache:
        """Table changelog records kept until the next commit (changelog_cache.py)."""
        if self._changelog_cache is None:
            self._changelog_cache = ChangelogCache(
                interval=float(self.conf.broker_commit_interval), loop=self.loop
            )
        return self._changelog_cache

    @property
    def changelog_cache_in_use(self) -> ChangelogCache | None:
        """The cache once it flushes with the producer; None: tables send as Faust does."""
        cache = self._changelog_cache
        return cache if cache is not None and cache.attached else None

    def _uses_changelog_cache(self) -> bool:
        return (
            self.settings.changelog_cache
            and self.settings.processing_guarantee == "at_least_once"
            and not (self.producer_only or self.client_only)
        )

    def _new_producer(self) -> Any:
        producer = super()._new_producer()
        if self._uses_changelog_cache():
            self.changelog_cache.attach(producer)
        return producer

    def _rocksdb_worker(self) -> bool:
        return not (self.producer_only or self.client_only) and str(self.conf.store).startswith(
            "rocksdb"
        )

    async def on_first_start(self) -> None:
        await super().on_first_start()
        if self._rocksdb_worker():
            # Stores a crash left ahead of their changelogs (changelog_cache.py).
            discard_unclean_state(Path(self.conf.tabledir))

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        if self._rocksdb_worker() and self.crash_reason is None:
            mark_clean_stop(Path(self.conf.tabledir), self._changelog_cache)

    async def _sink_dead_letter(self, source: Source, error: str) -> None:
        self.metrics.dead_letters.labels(source.topic).inc()
        letter = DeadLetter.of(
            topic=source.topic,
            partition=source.partition,
            offset=source.offset,
            key=source.key,
            payload=source.value,
            error=error,
            agent="sink",
        )
        await self.producer.send_and_wait(
            "dead_letters", source.key, encode(letter), None, None, None
        )

    def _new_consumer(self) -> Any:
        consumer = super()._new_consumer()
        if wanted(self.settings.broker_compat, None):
            # Table recovery must not trust the embedded broker's ListOffsets (offsets.py).
            correct_highwaters(consumer, self.settings.kafka_bootstrap)
            # Generation-0 groups (Tansu) get no LeaveGroup from aiokafka (group.py).
            leave_group_on_stop(consumer)
            # Fetch answers that skip a batch not stored yet are cut there (holes.py);
            # installed first, so the gap detector below sees the answers as cut.
            on_client_started(consumer, cut_holes)
        # ORDERS_FETCH_WAIT_MS on any broker (Faust has no setting for it); Tansu answers a
        # waiting fetch only when the wait is over, so it matters most there (fetch.py).
        use_fetch_wait(consumer, self.settings.fetch_wait_ms)
        # Nothing is skipped silently: offset jumps over fetched records are counted (gaps.py),
        # and the Faust defects that skipped ranges after an assignment are guarded
        # (skip_guard.py; ORDERS_SKIP_GUARD=false turns it off).
        watch_gaps(self, consumer)
        skip_guard.install(self, consumer, enabled=self.settings.skip_guard)
        # Per message: no four-task race when the handoff to the agents need not wait.
        eager_delivery.install(consumer, enabled=self.settings.eager_delivery)
        return consumer

    def on_init_dependencies(self) -> Iterable[ServiceT]:
        if not isinstance(self.monitor, PrometheusMonitor):
            # Faust's own sensors, on the app's registry beside the business metrics.
            faust_metrics = FaustMetrics.create(self.metrics.registry, "faust")
            monitor_cls = LeanPrometheusMonitor if self.settings.lean_monitor else PrometheusMonitor
            self.monitor = monitor_cls(metrics=faust_metrics)
        deps = list(super().on_init_dependencies())
        if not (self.producer_only or self.client_only):
            # Children stop in reverse order: the outcome sink (and the pool it writes
            # with) stop after the agents and the producer, so it records their last
            # writes on a graceful stop.
            first = [self.db, self.sink] if self.settings.sink_enabled else [self.db]
            deps = [*first, *deps, self.feed]
            if self._uses_changelog_cache():
                deps.append(self.changelog_cache)  # stops first: what timers wrote goes out
        return deps


def apply_settings(conf: Any, settings: Settings) -> None:
    """Translate :class:`Settings` into Faust's configuration."""
    conf.broker = settings.broker_url
    conf.store = settings.store_url
    conf.datadir = settings.data_dir
    conf.web_host = settings.web_host
    conf.web_port = settings.web_port
    conf.canonical_url = f"http://{settings.web_host}:{settings.web_port}"
    conf.topic_partitions = settings.partitions
    conf.topic_replication_factor = settings.replication_factor
    conf.processing_guarantee = settings.processing_guarantee
    # Tansu holds JoinGroup for session_timeout/2: Faust's 60 s default means 30 s before
    # the first event; 4 s gives a first event about 4.5 s after the worker starts.
    conf.broker_session_timeout = settings.session_timeout
    conf.broker_heartbeat_interval = settings.heartbeat_interval
    # Slow members (a busy 2-core CI) get time to rejoin; start-up does not wait on it.
    conf.broker_rebalance_timeout = max(settings.session_timeout, 20.0)
    # A new consumer group must see the events already in the log (orders made before
    # the first worker started), as a Kafka Streams app with auto.offset.reset=earliest.
    conf.consumer_auto_offset_reset = "earliest"
    conf.table_standby_replicas = 0
    conf.web_enabled = True
    # Faust's /table/{name}/{key}/ would serve raw table documents (customer ids) with no
    # auth, and /router/ answers 500 for an unknown table: the API is web/, documented.
    conf.web_tables_enabled = False
    conf.producer_acks = -1
    # Off unless asked: Faust's repaired fast paths (one decode per message for every
    # channel, the stream taking what is queued without a loop turn), see README.
    conf.cython_optimizations = settings.cython_optimizations
    # Closes its loop 0.1 s after the last task is gathered, not 1 s (faust_patches).
    conf.Worker = QuickExitWorker
    if settings.log_format == "json":
        conf.logging_config = logging_config()


app = OrdersApp(
    "orders_app",
    autodiscover=["agents", "tables", "web"],
    origin="orders_app",
)


@app.on_configured.connect  # type: ignore[arg-type]
def _configure(sender: OrdersApp, conf: Any, **kwargs: Any) -> None:
    settings = sender.settings
    conf.id = settings.app_id
    apply_settings(conf, settings)
