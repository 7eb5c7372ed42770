"""Retention sweeper: per-order state expires ``ORDERS_ORDER_RETENTION`` after its last
write, so tables, their changelogs (compacted on Kafka) and recovery stop growing with
history (as ksqlDB's and Kafka Streams' retention).

Rule (:mod:`agents.retention_rules`): every ``retention / 8`` (0.5 s .. 1 h) each worker
walks the partitions it owns of every per-order table and deletes the rows written
before now - retention: locally and with a changelog tombstone (tables/outside_stream.py).
- ``order_status`` (the order's document with its fraud decision, payment, saga and
  notification), ``cdc_seen`` (key order_id): dropped.
- ``customer_velocity`` (windowed, key [customer, window]): dropped after its own 10
  minutes; Faust expires windows only locally and never the ones a recovery brought back.
- ``stock_ledger`` (key sku|order_id) and ``analytics_ledger`` (key order_id): first
  folded into the ``stock`` / ``country_stats`` record of their sku / country (same
  partition), that write acknowledged by the broker, then dropped; the rebuild after a
  recovery (tables/rebuild.py) adds the archive, so it stays exact.
Input: the local stores.  Output: tombstones (and folded records) on the changelogs.
No ``await`` between reading a row and writing it (the agents share the event loop);
the walk yields to the loop every few hundred rows and stops at a rebalance.  A
retention shorter than the life of an order (seconds) would drop an order's state while
it is still moving: the default, 7 days, is far above it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

from agents.retention_rules import expired, fold_country, fold_stock, sweep_interval
from orders_app.app import app
from tables import dumps_stamped, loads_value, stamp_of
from tables.cdc_seen import cdc_seen
from tables.corrections import pending, scan_lock
from tables.country_stats import analytics_ledger, country_stats
from tables.customer_spend import VELOCITY_EXPIRES_S, customer_velocity
from tables.order_status import order_status
from tables.outside_stream import active_partitions, delete_raw, get_raw, put_raw, raw_items
from tables.stock import stock, stock_ledger

log = logging.getLogger(__name__)

#: Rows handled between two yields to the event loop, and most expired ledger entries
#: folded, acknowledged and dropped in one step (bounds memory after a long downtime).
CHUNK = 500
FOLD_BATCH = 2000
#: The first sweep after a worker starts (later ones every sweep_interval).
FIRST_SWEEP_S = 30.0

PER_ORDER = (order_status, cdc_seen)


class Interrupted(Exception):
    """A rebalance started (or the worker stops): the walk stops, the next sweep starts
    over; nothing is written to a partition this worker may no longer own."""


def _name(table: Any) -> str:
    return str(getattr(table, "table", table).name)


class Walk:
    """One sweep's view of ownership: the consumer generation it started in."""

    def __init__(self) -> None:
        self.generation = app.consumer_generation_id

    def check(self) -> None:
        if (
            app.rebalancing
            or getattr(app, "in_recovery", False)
            or app.should_stop
            or app.consumer_generation_id != self.generation
        ):
            raise Interrupted()

    async def pause(self) -> None:
        """Yield to the event loop (and let the producer buffer drain), then re-check."""
        await asyncio.sleep(0)
        await app.producer.buffer.wait_until_ebb()
        self.check()


def _drop_if_expired(table: Any, partition: int, key: bytes, cutoff: float) -> bool:
    # Read again right before deleting: an agent may have rewritten it since the walk
    # saw it (the walk's iterator is a snapshot).
    if expired(stamp_of(get_raw(table, partition, key)), cutoff):
        return delete_raw(table, partition, key) is not None
    return False


async def sweep_plain(walk: Walk, table: Any, partition: int, cutoff: float) -> int:
    """Drop the partition's rows written before ``cutoff``; -> rows dropped."""
    dropped = 0
    for i, (key, raw) in enumerate(raw_items(table, partition), 1):
        if expired(stamp_of(raw), cutoff) and _drop_if_expired(table, partition, key, cutoff):
            dropped += 1
        if i % CHUNK == 0:
            await walk.pause()
    return dropped


async def _fold_and_drop(
    walk: Walk,
    ledger: Any,
    partition: int,
    cutoff: float,
    keys: list[bytes],
    owner_of: Any,
    fold: Any,
    record_table: Any,
) -> int:
    """Fold these expired ledger entries into their records, wait for the broker to
    acknowledge the folded records, then drop the entries."""
    walk.check()
    # From here to the sends: no await, so no agent rewrites an entry or a record in
    # between; each entry is read again (the walk saw a snapshot) and only what is
    # still expired, with its current value, is folded and later dropped.
    by_owner: dict[str, list[tuple[str, float | None, dict[str, Any]]]] = defaultdict(list)
    for key in keys:
        raw = get_raw(ledger, partition, key)
        at = stamp_of(raw)
        if raw is None or not expired(at, cutoff):
            continue
        entry = loads_value(raw)
        by_owner[owner_of(key.decode(), entry)].append((key.decode(), at, entry))
    sent, droppable = [], []
    now = time.time()
    for owner, entries in by_owner.items():
        if owner and (owner in pending.stock or owner in pending.countries):
            continue  # a rebuilt value waits for its key: fold next time
        if owner:
            owner_key = owner.encode()
            current = get_raw(record_table, partition, owner_key)
            if current is None:
                if any(_holds_stock(entry) or entry.get("counted") for _k, _a, entry in entries):
                    continue  # counted into a record not written yet: keep the entries
                droppable += [key.encode() for key, _at, _entry in entries]
                continue  # e.g. failed reservations of an unknown sku: nothing to keep
            folded = fold(loads_value(current), owner, entries, cutoff)
            future = put_raw(record_table, partition, owner_key, dumps_stamped(folded, now))
            if future is None:
                raise Interrupted()
            sent.append(future)
        droppable += [key.encode() for key, _at, _entry in entries]
    # The archive must be on the broker before the entries it replaces are tombstoned.
    await asyncio.gather(*(asyncio.ensure_future(fut) for fut in sent))
    walk.check()
    return sum(_drop_if_expired(ledger, partition, key, cutoff) for key in droppable)


async def sweep_ledger(
    walk: Walk,
    ledger: Any,
    partition: int,
    cutoff: float,
    owner_of: Any,
    fold: Any,
    record_table: Any,
) -> int:
    """Fold the expired ledger entries into their records and drop them, in batches."""
    dropped = 0
    batch: list[bytes] = []
    for i, (key, raw) in enumerate(raw_items(ledger, partition), 1):
        if expired(stamp_of(raw), cutoff):
            batch.append(key)
        if len(batch) >= FOLD_BATCH:
            dropped += await _fold_and_drop(
                walk, ledger, partition, cutoff, batch, owner_of, fold, record_table
            )
            batch = []
        if i % CHUNK == 0:
            await walk.pause()
    if batch:
        dropped += await _fold_and_drop(
            walk, ledger, partition, cutoff, batch, owner_of, fold, record_table
        )
    return dropped


def _holds_stock(entry: dict[str, Any]) -> bool:
    return entry.get("state") == "reserved"


def _sku_of(key: str, entry: dict[str, Any]) -> str:
    return key.rpartition("|")[0]  # as orders_app.ledgers.reserved_from_ledger


def _country_of(key: str, entry: dict[str, Any]) -> str:
    return str(entry.get("country") or "") if entry.get("counted") else ""


def _fold_stock(record: Any, owner: str, entries: Any, cutoff: float) -> Any:
    return fold_stock(record, entries, cutoff)


async def sweep_once(retention_s: float, now: float | None = None) -> dict[str, int]:
    """One sweep over every partition this worker owns; -> rows dropped per table."""
    now = time.time() if now is None else now
    cutoff = now - retention_s
    dropped: dict[str, int] = defaultdict(int)
    async with scan_lock:
        walk = Walk()
        walk.check()
        try:
            for table in PER_ORDER:
                for partition in active_partitions(table):
                    dropped[_name(table)] += await sweep_plain(walk, table, partition, cutoff)
            for partition in active_partitions(customer_velocity):
                dropped["customer_velocity"] += await sweep_plain(
                    walk, customer_velocity, partition, now - VELOCITY_EXPIRES_S
                )
            for partition in active_partitions(stock_ledger):
                dropped["stock_ledger"] += await sweep_ledger(
                    walk, stock_ledger, partition, cutoff, _sku_of, _fold_stock, stock
                )
            for partition in active_partitions(analytics_ledger):
                dropped["analytics_ledger"] += await sweep_ledger(
                    walk,
                    analytics_ledger,
                    partition,
                    cutoff,
                    _country_of,
                    fold_country,
                    country_stats,
                )
        finally:
            for name, n in dropped.items():
                if n:
                    app.metrics.state_expired.labels(name).inc(n)
    return dict(dropped)


@app.task  # type: ignore[untyped-decorator]
async def sweep_expired_state() -> None:
    retention_s = app.settings.order_retention.total_seconds()
    interval = sweep_interval(retention_s)
    await asyncio.sleep(min(interval, FIRST_SWEEP_S))
    while not app.should_stop:
        if not (app.rebalancing or getattr(app, "in_recovery", False)):
            try:
                dropped = await sweep_once(retention_s)
            except Interrupted:
                pass
            except Exception:  # a sweep that fails is retried next time; the worker goes on
                log.exception("retention sweep failed; retrying in %.0f s", interval)
            else:
                if any(dropped.values()):
                    log.info("retention: expired %s", {k: v for k, v in dropped.items() if v})
        await asyncio.sleep(interval)
