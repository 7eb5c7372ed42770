"""Embedded CDC: Postgres publication -> Debezium-identical change events on Kafka.

Rule: reads ``dbz_publication`` through a ``pgoutput`` logical replication slot
(``pg_logical_slot_peek_binary_changes``), publishes every change of a committed
transaction to ``orders_db.<schema>.<table>`` (key ``{"<pk>": ...}``, Debezium envelope,
a tombstone after each delete), and advances the slot (``pg_replication_slot_advance``)
only after the broker acknowledged the whole batch: at-least-once, resumable after a
restart.  On first start (no slot) or when the broker has lost the topics (the embedded
broker is memory-only, like Kafka Connect losing its offsets) it takes an initial
snapshot (``op: "r"``).  Polling is adaptive: immediate while changes flow, backing off
to ``poll_interval`` when idle.  Output topics: ``orders_db.public.orders``,
``orders_db.public.products``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from mode import Service

from orders_app.cdc import pgoutput
from orders_app.cdc.pgoutput import Column, Relation
from orders_app.db import PUBLICATION

log = logging.getLogger(__name__)

TOPIC_PREFIX = "orders_db"
BATCH_CHANGES = 2000
MIN_BACKOFF = 0.01


def lsn_int(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def lsn_text(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def snapshot_marker(overall: int, total: int, index: int, rows: int) -> str:
    """Debezium's ``source.snapshot`` for the n-th snapshot row of a table and overall."""
    if overall == 0:
        return "first"
    if overall == total - 1:
        return "last"
    if index == 0:
        return "first_in_data_collection"
    if index == rows - 1:
        return "last_in_data_collection"
    return "true"


class CdcReader(Service):
    """The embedded Debezium stand-in, as a service with start/stop."""

    def __init__(
        self,
        *,
        dsn: str,
        bootstrap: str,
        slot: str = "orders_cdc",
        poll_interval: float = 0.5,
        fresh_broker: bool = False,
        **kw: Any,
    ) -> None:
        self.dsn = dsn
        self.bootstrap = bootstrap
        self.slot = slot
        self.poll_interval = poll_interval
        self.fresh_broker = fresh_broker
        self.conn: asyncpg.Connection | None = None
        self.producer: AIOKafkaProducer | None = None
        self.reader = pgoutput.Reader()
        self._primary_keys: dict[tuple[str, str], list[str]] = {}
        self.db_name = ""
        self.last_commit_lsn: int | None = None
        self.events_published = 0
        self.last_commit_ts: float = 0.0
        self.lag_seconds = 0.0
        super().__init__(**kw)

    async def on_start(self) -> None:
        self.conn = await asyncpg.connect(self.dsn)
        await self.conn.execute("SET TIME ZONE 'UTC'")
        self.db_name = await self.conn.fetchval("SELECT current_database()")
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        await self.producer.start()
        exists = await self.conn.fetchval(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", self.slot
        )
        # REPLICA IDENTITY FULL marks every column as "key" in pgoutput Relation messages;
        # Debezium keys by the primary key, so take the key columns from the catalogue.
        self._primary_keys = {
            (rel.schema, rel.table): [c.name for c in rel.columns if c.key]
            for rel in await self._relations()
        }
        self.reader.primary_keys = self._primary_keys
        needs_snapshot = not exists or await self._topics_empty()
        if exists and needs_snapshot:
            await self.conn.execute("SELECT pg_drop_replication_slot($1)", self.slot)
        if needs_snapshot:
            row = await self.conn.fetchrow(
                "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
                self.slot,
            )
            assert row is not None
            await self._snapshot(lsn_int(row["lsn"]))
        self.add_future(self._stream())

    async def _reconnect(self) -> None:
        """A fresh connection after a failed poll (unpublished changes stay in the slot)."""
        old, self.conn = self.conn, None
        if old is not None:
            old.terminate()
        try:
            self.conn = await asyncpg.connect(self.dsn)
            await self.conn.execute("SET TIME ZONE 'UTC'")
        except (OSError, asyncpg.PostgresError) as err:
            log.warning("cdc: reconnect failed: %s", err)
        self.reader = pgoutput.Reader()
        self.reader.primary_keys = self._primary_keys

    async def on_stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None
        if self.conn is not None:
            await self.conn.close()
            self.conn = None

    async def _topics_empty(self) -> bool:
        """True when the broker holds no change events (new memory-only broker)."""
        if self.fresh_broker:
            return True
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await consumer.start()
        try:
            tps = []
            for table in ("orders", "products"):
                topic = f"{TOPIC_PREFIX}.public.{table}"
                parts = consumer.partitions_for_topic(topic) or set()
                tps += [TopicPartition(topic, p) for p in parts]
            if not tps:
                return True
            ends = await consumer.end_offsets(tps)
            return not any(ends.values())
        finally:
            await consumer.stop()

    async def _relations(self) -> list[Relation]:
        assert self.conn is not None
        rows = await self.conn.fetch(
            """
            SELECT c.oid AS relid, n.nspname AS schema, c.relname AS table, a.attname AS name,
                   a.atttypid AS type_oid,
                   COALESCE(a.attnum = ANY(i.indkey), false) AS key
            FROM pg_publication_tables pt
            JOIN pg_namespace n ON n.nspname = pt.schemaname
            JOIN pg_class c ON c.relname = pt.tablename AND c.relnamespace = n.oid
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
            WHERE pt.pubname = $1
            ORDER BY c.oid, a.attnum
            """,
            PUBLICATION,
        )
        rels: dict[int, Relation] = {}
        for r in rows:
            rel = rels.setdefault(r["relid"], Relation(r["relid"], r["schema"], r["table"]))
            rel.columns.append(Column(r["name"], r["type_oid"], r["key"]))
        return list(rels.values())

    async def _snapshot(self, slot_lsn: int) -> None:
        """Initial snapshot: every row as ``op: "r"``, then the stream takes over."""
        assert self.conn is not None and self.producer is not None
        now_us = int(time.time() * 1_000_000)
        futures = []
        count = 0
        tables: list[tuple[Relation, list[Any]]] = []
        async with self.conn.transaction(isolation="repeatable_read", readonly=True):
            txid = await self.conn.fetchval("SELECT txid_current_if_assigned()")
            for rel in await self._relations():
                cols = ", ".join(f'"{c.name}"::text' for c in rel.columns)
                rows = await self.conn.fetch(f'SELECT {cols} FROM "{rel.schema}"."{rel.table}"')
                if rows:
                    tables.append((rel, rows))
        total = sum(len(rows) for _rel, rows in tables)
        for rel, rows in tables:
            for i, row in enumerate(rows):
                after = {
                    c.name: pgoutput.convert(c.type_oid, row[j]) for j, c in enumerate(rel.columns)
                }
                source = pgoutput.source_block(
                    prefix=TOPIC_PREFIX,
                    db=self.db_name,
                    rel=rel,
                    ts_us=now_us,
                    snapshot=snapshot_marker(count, total, i, len(rows)),
                    txid=txid,
                    lsn=slot_lsn,
                    last_commit_lsn=None,
                )
                futures.append(
                    await self.producer.send(
                        pgoutput.topic_for(TOPIC_PREFIX, rel),
                        key=pgoutput.key_for(rel, after),
                        value=pgoutput.envelope("r", None, after, source, now_us),
                    )
                )
                count += 1
        await asyncio.gather(*futures)
        self.events_published += count
        log.info(
            "cdc: snapshot of %d rows published (slot %s at %s)",
            count,
            self.slot,
            lsn_text(slot_lsn),
        )

    async def _stream(self) -> None:
        backoff = MIN_BACKOFF
        while not self.should_stop:
            try:
                published = await self.poll_once()
            except Exception as err:  # noqa: BLE001 - the slot has not moved: retry is safe
                log.warning("cdc: poll failed (%r); reconnecting and retrying", err)
                published = 0
                await asyncio.sleep(min(self.poll_interval, 1.0))
                await self._reconnect()
            if published:
                backoff = MIN_BACKOFF
                continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.poll_interval)

    async def poll_once(self) -> int:
        """Publish one batch of committed transactions; returns the number of changes."""
        if self.conn is None:
            raise ConnectionError("no database connection")
        assert self.producer is not None
        rows = await self.conn.fetch(
            "SELECT lsn::text AS lsn, data FROM pg_logical_slot_peek_binary_changes("
            "$1, NULL, $2, 'proto_version', '1', 'publication_names', $3)",
            self.slot,
            BATCH_CHANGES,
            PUBLICATION,
        )
        if not rows:
            self.lag_seconds = 0.0
            return 0
        futures = []
        last_end: int | None = None
        changes = 0
        now_us = int(time.time() * 1_000_000)
        for row in rows:
            txn = self.reader.feed(lsn_int(row["lsn"]), row["data"])
            if txn is None:
                continue
            for lsn, change in txn.changes:
                futures.extend(await self._publish(txn, lsn, change, now_us))
                changes += 1
            # Debezium's "last commit LSN" (source.sequence[0]) is where the commit record
            # ends - the position pgoutput reports for the commit message - not where it
            # starts (checked against real Debezium: tests/integration/test_debezium.py).
            self.last_commit_lsn = txn.end_lsn
            self.last_commit_ts = txn.commit_ts_us / 1e6
            last_end = txn.end_lsn
        if futures:
            await asyncio.gather(*futures)  # the broker has them: now the slot may move
        if last_end is not None:
            await self.conn.execute(
                "SELECT pg_replication_slot_advance($1, $2)", self.slot, last_end
            )
        self.events_published += changes
        if self.last_commit_ts:
            self.lag_seconds = max(0.0, time.time() - self.last_commit_ts)
        return changes or (1 if last_end is not None else 0)

    async def _publish(
        self, txn: pgoutput.Transaction, lsn: int, change: pgoutput.Change, now_us: int
    ) -> list[Any]:
        assert self.producer is not None
        rel = change.relation
        if change.op == "t":
            return []  # Debezium skips truncates unless configured to publish them
        source = pgoutput.source_block(
            prefix=TOPIC_PREFIX,
            db=self.db_name,
            rel=rel,
            ts_us=txn.commit_ts_us,
            snapshot="false",
            txid=txn.xid,
            lsn=lsn,
            last_commit_lsn=self.last_commit_lsn,
        )
        topic = pgoutput.topic_for(TOPIC_PREFIX, rel)
        row = change.after if change.after is not None else change.before or {}
        key = pgoutput.key_for(rel, row)
        out = [
            await self.producer.send(
                topic,
                key=key,
                value=pgoutput.envelope(change.op, change.before, change.after, source, now_us),
            )
        ]
        if change.op == "d":
            out.append(await self.producer.send(topic, key=key, value=None))
        return out
