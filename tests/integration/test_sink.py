"""Outcome sink (orders_app/sink.py): order outcomes and country totals reach Postgres,
batched, idempotent under redelivery (the newer version wins), and a row Postgres
refuses is dead-lettered without holding the others back."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
import pytest

from orders_app.db import Database
from orders_app.metrics import BusinessMetrics
from orders_app.sink import OutcomeSink, write_batch
from orders_app.sink_rules import Source, batch_rows
from tables import dumps_stamped
from tests.integration.test_analytics import (
    add_zero_stock_sku,
    make_orders,
    produce,
    settled_countries,
    truth,
)
from tests.support import ahttp, eventually

pytestmark = pytest.mark.integration

TERMINAL = {"FULFILLED", "REJECTED", "PAYMENT_FAILED", "CANCELLED"}


async def recorded(dsn: str, ids: list[str], timeout: float = 60) -> dict[str, Any]:
    """order id -> row, once every order in ``ids`` is recorded with a terminal status."""
    rows: dict[str, Any] = {}

    async def all_recorded() -> dict[str, Any] | None:
        nonlocal rows
        conn = await asyncpg.connect(dsn)
        try:
            rows = {
                r["order_id"]: r
                for r in await conn.fetch(
                    "SELECT * FROM order_status_view WHERE order_id = ANY($1)", ids
                )
            }
        finally:
            await conn.close()
        if len(rows) == len(ids) and all(r["status"] in TERMINAL for r in rows.values()):
            return rows
        return None

    try:
        return await eventually(all_recorded, timeout, 1)
    except AssertionError:
        raise AssertionError(f"{len(rows)} of {len(ids)} recorded") from None


async def test_outcomes_and_country_totals_reach_postgres(stack, workers, cdc) -> None:
    await add_zero_stock_sku(stack.dsn)
    worker = workers.start()
    await workers.wait_ready(worker)
    orders, expected = make_orders(300, seed=16, prefix="sink")
    await produce(stack.bootstrap, orders)
    countries = (await settled_countries(worker.url, len(orders)))["countries"]

    rows = await recorded(stack.dsn, [o.order_id for o in orders])
    assert {oid: r["status"] for oid, r in rows.items()} == expected
    for o in orders:
        row = rows[o.order_id]
        history = orjson.loads(row["history"])
        assert history[0]["status"] == "CREATED" and history[-1]["status"] == row["status"]
        assert row["terminal_at"] == datetime.fromtimestamp(history[-1]["at"], UTC)
        assert (row["country"], row["total"]) == (o.country, o.total)
        reasons = orjson.loads(row["reasons"])
        if row["status"] == "REJECTED":
            assert reasons and all(r.startswith("fraud:") for r in reasons)
        if row["status"] == "CANCELLED":
            assert "refunded:out_of_stock" in reasons
        document = orjson.loads(row["document"])
        assert document["notified"]["status"] == row["status"]

    # country totals: what the API says, and the ground truth
    want = truth(orders, expected)
    stats: dict[str, Any] = {}
    windows: list[Any] = []

    async def all_counted() -> bool:
        nonlocal stats, windows
        conn = await asyncpg.connect(stack.dsn)
        try:
            stats = {r["country"]: r for r in await conn.fetch("SELECT * FROM country_stats_view")}
            windows = await conn.fetch("SELECT * FROM country_window_view")
        finally:
            await conn.close()
        return {c: r["orders"] for c, r in stats.items()} == {
            c: t["orders"] for c, t in want.items()
        }

    with contextlib.suppress(AssertionError):  # timed out: the assertions below say where
        await eventually(all_counted, 30, 1)
    assert set(stats) == set(countries)
    for code, t in want.items():
        row = stats[code]
        assert row["orders"] == t["orders"] == countries[code]["orders"]
        assert row["revenue"] == t["revenue"]
        assert orjson.loads(row["by_status"]) == dict(t["by_status"])
        assert row["average_order_value"] == Decimal(countries[code]["average_order_value"])
    assert windows and all(w["window_end"] > w["window_start"] for w in windows)
    assert all(w["orders"] <= stats[w["country"]]["orders"] for w in windows)

    _status, metrics, _ = await ahttp("GET", f"{worker.url}/metrics")
    assert 'orders_sink_rows_total{table="order_status_view"}' in metrics


def changelog(value: bytes | None, offset: int) -> Source:
    return Source("orders_app-order_status-changelog", 0, offset, b"o-1", value)


def document(status: str, statuses: list[str], total: str = "12.50") -> dict[str, Any]:
    return {
        "order_id": "o-1",
        "status": status,
        "customer_id": "c-1",
        "country": "DE",
        "currency": "EUR",
        "total": total,
        "reasons": [],
        "history": [{"status": s, "at": 10.0 + i} for i, s in enumerate(statuses)],
    }


async def status_of(dsn: str, order_id: str = "o-1") -> tuple[str, int] | None:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT status, version FROM order_status_view WHERE order_id = $1", order_id
        )
    finally:
        await conn.close()
    return None if row is None else (row["status"], row["version"])


async def test_upserts_are_idempotent_and_keep_the_newer_version(database) -> None:
    paid = dumps_stamped(document("PAID", ["CREATED", "VALIDATED", "PAID"]), 1.0)
    done = dumps_stamped(document("FULFILLED", ["CREATED", "VALIDATED", "PAID", "FULFILLED"]), 2.0)
    conn = await asyncpg.connect(database)
    try:
        newer, _ = batch_rows([changelog(paid, 1), changelog(done, 2)])
        await write_batch(conn, newer)
        await write_batch(conn, newer)  # redelivered
        assert await status_of(database) == ("FULFILLED", 4)
        older, _ = batch_rows([changelog(paid, 1)])  # a late writer with the older value
        await write_batch(conn, older)
        assert await status_of(database) == ("FULFILLED", 4)
        assert await conn.fetchval("SELECT count(*) FROM order_status_view") == 1
    finally:
        await conn.close()


async def test_a_row_postgres_refuses_is_dead_lettered_and_the_rest_written(database) -> None:
    letters: list[tuple[Source, str]] = []

    async def dead_letter(source: Source, error: str) -> None:
        letters.append((source, error))

    db = Database(database)
    await db.start()
    try:
        sink = OutcomeSink("127.0.0.1:1", "orders_app", db, BusinessMetrics(), dead_letter)
        good = document("CREATED", ["CREATED"])
        huge = {**document("CREATED", ["CREATED"], total="1E+20"), "order_id": "o-big"}
        batch, bad = batch_rows(
            [
                changelog(dumps_stamped(good, 1.0), 7),
                Source(
                    "orders_app-order_status-changelog", 1, 8, b"o-big", dumps_stamped(huge, 1.0)
                ),
            ]
        )
        assert bad == []
        await sink._write(batch)
    finally:
        await db.stop()
    assert await status_of(database) == ("CREATED", 1)
    assert await status_of(database, "o-big") is None
    assert [(s.partition, s.offset, s.key) for s, _e in letters] == [(1, 8, b"o-big")]
    assert "Postgres refused it" in letters[0][1]


async def test_the_sink_waits_for_the_changelog_and_never_creates_it(broker, database) -> None:
    """Subscribing early would have the broker auto-create the table's changelog with its
    default partitions, and Faust would then refuse to start (PartitionsMismatch)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from orders_app.admin import ensure_topics

    async def no_dead_letters(source: Source, error: str) -> None:
        raise AssertionError(error)

    db = Database(database)
    await db.start()
    sink = OutcomeSink(broker.bootstrap, "early", db, BusinessMetrics(), no_dead_letters)
    await sink.start()
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        await asyncio.sleep(2)
        assert "early-order_status-changelog" not in set(await admin.list_topics())
        await ensure_topics(
            broker.bootstrap, ["early-order_status-changelog", "order_analytics"], 7
        )
        await eventually(
            lambda: sink.consumer is not None, 20, what="the sink subscribing once the topics exist"
        )
        (described,) = await admin.describe_topics(["early-order_status-changelog"])
        assert len(described["partitions"]) == 7
    finally:
        await admin.close()
        await sink.stop()
        await db.stop()
