"""Outcome sink: order outcomes and country totals into Postgres (what a JDBC sink
connector would do).

Input: ``<app id>-order_status-changelog`` (key order_id: every write of an order's
document) and ``order_analytics`` (key country).  Output: upserts into
``order_status_view``, ``country_stats_view`` and ``country_window_view`` (not in the
CDC publication, so nothing loops).  Rules: :mod:`orders_app.sink_rules`.

Each worker runs one consumer in the group ``<app id>-sink``, so the partitions are
shared among the workers and move on a crash like any consumer group's.  A batch
(what one fetch returns) becomes at most one statement per table; its offsets are
committed after the statements commit: at-least-once, and idempotent because each row
carries a version and the upsert keeps the newer one.  When Postgres is unreachable
the batch is retried (1 s .. 30 s) and nothing is committed; the pipeline does not wait
for the sink.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from mode import Service
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_not_exception_type,
    wait_exponential,
)

from orders_app.admin import wait_for_topics
from orders_app.broker_compat.holes import cut_holes
from orders_app.db import Database
from orders_app.metrics import BusinessMetrics
from orders_app.sink_rules import (
    ORDER_ANALYTICS,
    Batch,
    Source,
    batch_rows,
    columns,
    latest_documents,
    order_status_changelog,
    split,
)

DeadLetters = Callable[[Source, str], Awaitable[None]]

DRAIN_S = 5.0
LINGER_S = 0.2

# Postgres refusing a row (a value out of range, a constraint): that row cannot be
# written however often it is retried.  Any other Postgres error, a lost connection or a
# timeout (a server restarting) is retried until it works.
REFUSED = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, ValueError)
TRANSIENT = (TimeoutError, OSError, asyncpg.PostgresError)

log = logging.getLogger(__name__)

UPSERT_ORDERS = """
INSERT INTO order_status_view AS v (order_id, status, customer_id, country, currency, total,
    reasons, history, terminal_at, version, written_at, document, updated_at)
SELECT r.*, now() FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
    $6::numeric[], $7::jsonb[], $8::jsonb[], $9::timestamptz[], $10::integer[],
    $11::timestamptz[], $12::jsonb[]) AS r
ON CONFLICT (order_id) DO UPDATE SET
    status = EXCLUDED.status, customer_id = EXCLUDED.customer_id,
    country = EXCLUDED.country, currency = EXCLUDED.currency, total = EXCLUDED.total,
    reasons = EXCLUDED.reasons, history = EXCLUDED.history,
    terminal_at = EXCLUDED.terminal_at, version = EXCLUDED.version,
    written_at = EXCLUDED.written_at, document = EXCLUDED.document, updated_at = now()
WHERE (v.version, v.written_at) <= (EXCLUDED.version, EXCLUDED.written_at)
"""

UPSERT_COUNTRIES = """
INSERT INTO country_stats_view AS v (country, orders, revenue, by_status,
    average_order_value, at, updated_at)
SELECT r.*, now() FROM unnest($1::text[], $2::bigint[], $3::numeric[], $4::jsonb[],
    $5::numeric[], $6::timestamptz[]) AS r
ON CONFLICT (country) DO UPDATE SET
    orders = EXCLUDED.orders, revenue = EXCLUDED.revenue, by_status = EXCLUDED.by_status,
    average_order_value = EXCLUDED.average_order_value, at = EXCLUDED.at,
    updated_at = now()
WHERE v.at <= EXCLUDED.at
"""

UPSERT_WINDOWS = """
INSERT INTO country_window_view AS v (country, window_start, window_end, orders, revenue, at)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::bigint[],
    $5::numeric[], $6::timestamptz[])
ON CONFLICT (country, window_start) DO UPDATE SET
    window_end = EXCLUDED.window_end, orders = EXCLUDED.orders,
    revenue = EXCLUDED.revenue, at = EXCLUDED.at
WHERE v.at <= EXCLUDED.at
"""


async def write_batch(conn: Any, batch: Batch) -> None:
    """One statement per table, in one transaction."""
    async with conn.transaction():
        if batch.orders:
            await conn.execute(UPSERT_ORDERS, *columns(list(batch.orders.values())))
        if batch.countries:
            await conn.execute(UPSERT_COUNTRIES, *columns(list(batch.countries.values())))
        if batch.windows:
            await conn.execute(UPSERT_WINDOWS, *columns(list(batch.windows.values())))


Sleep = Callable[[float], Awaitable[None]]


def write_retrying(
    should_stop: Callable[[], bool], rows: int, sleep: Sleep = asyncio.sleep
) -> AsyncRetrying:
    """The outcome sink's write policy: a lost connection or a restarting server
    (``TimeoutError``, ``OSError``, ``asyncpg.PostgresError``) is retried forever, 1 s
    doubling to 30 s between attempts, until it works or the service is stopping (then
    the last error is raised); what Postgres refuses (:data:`REFUSED`) and any other
    error are raised at once.  A new one per call: tenacity keeps the attempt's state."""

    def warn(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning("outcome sink: writing %d rows failed (%s); retry", rows, error)

    return AsyncRetrying(
        retry=retry_if_exception_type(TRANSIENT) & retry_if_not_exception_type(REFUSED),
        wait=wait_exponential(multiplier=1, exp_base=2, min=1, max=30),
        stop=lambda _state: should_stop(),
        before_sleep=warn,
        reraise=True,
        sleep=sleep,
    )


class OutcomeSink(Service):
    """The consumer-group service that keeps the Postgres projections current."""

    def __init__(
        self,
        bootstrap: str,
        app_id: str,
        db: Database,
        metrics: BusinessMetrics,
        dead_letters: DeadLetters,
        *,
        fetch_wait_ms: int = 500,
        session_timeout_s: float = 10.0,
        max_records: int = 2000,
        cut_fetch_holes: bool = False,
        **kw: Any,
    ) -> None:
        self.bootstrap = bootstrap
        self.app_id = app_id
        self.db = db
        self.metrics = metrics
        self.dead_letters = dead_letters
        self.fetch_wait_ms = fetch_wait_ms
        self.session_timeout_s = session_timeout_s
        self.max_records = max_records
        self.cut_fetch_holes = cut_fetch_holes  # the embedded broker's (broker_compat/holes.py)
        self.consumer: AIOKafkaConsumer | None = None
        self.lock = asyncio.Lock()
        super().__init__(**kw)

    async def on_start(self) -> None:
        self.add_future(self._run())

    async def on_stop(self) -> None:
        if self.consumer is not None:
            # A graceful stop records what the worker did last (the app stops this
            # service after its agents and producer: see OrdersApp.on_init_dependencies),
            # so a restart restores those orders instead of running them again.
            try:
                await asyncio.wait_for(self._drain(), DRAIN_S)
            except (TimeoutError, KafkaError, OSError, asyncpg.PostgresError) as err:
                log.warning("outcome sink: stopped before catching up (%s)", err)
            await self.consumer.stop()
            self.consumer = None

    async def _drain(self) -> None:
        """Fetch and write until two fetches in a row bring nothing."""
        empty = 0
        while empty < 2:
            empty = 0 if await self._step(timeout_ms=200) else empty + 1

    async def _run(self) -> None:
        topics = [order_status_changelog(self.app_id), ORDER_ANALYTICS]
        # Not before they exist: subscribing would auto-create the changelog with the
        # broker's default partitions, and Faust would refuse it (PartitionsMismatch).
        await wait_for_topics(self.bootstrap, topics, stop=lambda: self.should_stop)
        if self.should_stop:
            return
        consumer = self.consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=self.bootstrap,
            group_id=f"{self.app_id}-sink",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.fetch_wait_ms,
            max_poll_records=self.max_records,
            session_timeout_ms=int(self.session_timeout_s * 1000),
            heartbeat_interval_ms=max(100, int(self.session_timeout_s * 1000) // 4),
        )
        await consumer.start()
        if self.cut_fetch_holes:
            cut_holes(consumer)
        while not self.should_stop:
            started = time.monotonic()
            await self._step(timeout_ms=500)
            # At most one batch per LINGER_S: under load a batch then holds many orders
            # (one statement instead of dozens, each document decoded once), and the
            # worker's loop is left to the agents; Postgres trails by about LINGER_S.
            await self.sleep(LINGER_S - (time.monotonic() - started))

    async def _step(self, timeout_ms: int) -> int:
        """One fetch -> one write -> commit; -> messages handled."""
        consumer = self.consumer
        if consumer is None:
            return 0
        async with self.lock:
            fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=self.max_records)
            messages = [
                Source(tp.topic, tp.partition, m.offset, m.key, m.value)
                for tp, msgs in fetched.items()
                for m in msgs
            ]
            if not messages:
                return 0
            batch, bad = batch_rows(latest_documents(messages))
            for source, error in bad:
                await self.dead_letters(source, error)
            await self._write(batch)
            try:
                await consumer.commit(
                    {tp: msgs[-1].offset + 1 for tp, msgs in fetched.items() if msgs}
                )
            except KafkaError as err:  # a rebalance: the next owner writes them again
                log.info("outcome sink: commit skipped (%s)", err)
            return len(messages)

    async def _write(self, batch: Batch) -> None:
        try:
            await self._retrying(batch)
        except REFUSED:
            # Row by row, to dead-letter only what Postgres refuses.
            for one, source in split(batch):
                try:
                    await self._retrying(one)
                except REFUSED as err:
                    await self.dead_letters(source, f"outcome sink: Postgres refused it: {err}")

    async def _retrying(self, batch: Batch) -> None:
        """Write ``batch`` (:func:`write_retrying`), then count it."""
        started = time.monotonic()
        async for attempt in write_retrying(lambda: self.should_stop, batch.rows):
            with attempt:
                started = time.monotonic()
                async with self.db.acquire() as conn:
                    await write_batch(conn, batch)
        self.metrics.sink_rows.labels("order_status_view").inc(len(batch.orders))
        self.metrics.sink_rows.labels("country_stats_view").inc(len(batch.countries))
        self.metrics.sink_rows.labels("country_window_view").inc(len(batch.windows))
        # The successful attempt only: the histogram is what a write costs, not an outage.
        self.metrics.sink_batch_seconds.observe(time.monotonic() - started)
