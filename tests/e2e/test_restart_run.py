"""``orders-app run``, Ctrl-C mid-stream, ``orders-app run --no-generate`` again (issue 16):
the new embedded broker starts empty and CDC snapshots every order, but no order gets a
second charge, reservation or notification event; every order ends in exactly one
terminal status; ``/analytics/countries`` equals what Postgres records; a new order
posted right after the restart is through within seconds, not behind a replay."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import time
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from tests.conftest import free_port
from tests.support import ahttp, eventually, start_run

pytestmark = pytest.mark.integration

EFFECTS = ("payment_successful", "payment_refunded", "inventory_updated", "notification_sent")
TERMINAL = {"FULFILLED", "REJECTED", "PAYMENT_FAILED", "CANCELLED"}


def start(data: Path, port: int, *extra: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc, output = start_run(data, port, *extra, rate="40", timeout=90)
    web = re.search(r"web:\s+(\S+)", output)
    dsn = re.search(r"postgres:\s+(\S+)", output)
    broker = re.search(r"broker:\s+kafka://(\S+)", output)
    assert web and dsn and broker, output
    return proc, {"web": web.group(1), "dsn": dsn.group(1), "bootstrap": broker.group(1)}


async def tail(bootstrap: str, seen: dict[str, list[dict[str, Any]]]) -> None:
    """Collect every effect event on the broker until cancelled (or the broker is gone)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [
            TopicPartition(t, p) for t in EFFECTS for p in consumer.partitions_for_topic(t) or ()
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while True:
            for tp, msgs in (await consumer.getmany(timeout_ms=200)).items():
                seen[tp.topic] += [orjson.loads(m.value) for m in msgs if m.value]
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    assert proc.returncode == 0


async def test_a_restarted_stack_runs_no_order_twice(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    data = tmp_path / "data"
    port = free_port()
    first: dict[str, list[dict[str, Any]]] = defaultdict(list)
    second: dict[str, list[dict[str, Any]]] = defaultdict(list)
    proc, urls = start(data, port)
    try:
        tailing = asyncio.create_task(tail(urls["bootstrap"], first))
        await asyncio.sleep(10)  # orders stream in from the generator through Postgres
        await asyncio.to_thread(stop, proc)  # Ctrl-C mid-stream
        await asyncio.sleep(0.5)
        tailing.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await tailing
        charged = {e["order_id"] for e in first["payment_successful"]}
        assert len(charged) > 50, "the generator made orders"

        proc, urls = start(data, port, "--no-generate")
        tailing = asyncio.create_task(tail(urls["bootstrap"], second))
        # a new order, right after the restart
        started = time.monotonic()
        status, created, _ = await ahttp(
            "POST",
            urls["web"] + "orders",
            {
                "customer_id": "c-after-restart",
                "country": "DE",
                "currency": "EUR",
                "lines": [{"sku": "SKU-0001", "quantity": 1, "unit_price": "11.99"}],
                "payment_method": "tok_visa",
            },
        )
        assert status == 201, created
        status, body, _ = await ahttp(
            "GET", f"{urls['web']}orders/{created['order_id']}?wait=terminal&timeout=30", timeout=40
        )
        assert status == 200 and body["status"] == "FULFILLED", body
        assert time.monotonic() - started < 15, "the new order waited behind a replay"

        # every order in Postgres ends terminal, recorded by the outcome sink
        conn = await asyncpg.connect(urls["dsn"])
        ids: set[str] = set()
        outcomes: dict[str, Any] = {}
        done: set[str] = set()

        async def all_terminal() -> bool:
            nonlocal ids, outcomes, done
            ids = {r["id"] for r in await conn.fetch("SELECT id FROM orders")}
            outcomes = {
                r["order_id"]: r
                for r in await conn.fetch(
                    "SELECT order_id, status, country, total FROM order_status_view"
                )
            }
            done = {o for o, r in outcomes.items() if r["status"] in TERMINAL}
            return ids <= done

        try:
            with contextlib.suppress(AssertionError):  # timed out: the assertion below counts
                await eventually(all_terminal, 90, 1)
        finally:
            await conn.close()
        assert ids <= done, f"{len(ids - done)} orders not terminal"

        # /analytics/countries equals what Postgres records
        want: dict[str, Any] = defaultdict(
            lambda: {"orders": 0, "revenue": Decimal("0"), "by_status": Counter()}
        )
        for oid in ids:
            row = outcomes[oid]
            w = want[row["country"]]
            w["orders"] += 1
            w["by_status"][row["status"]] += 1
            if row["status"] == "FULFILLED":
                w["revenue"] += row["total"]
        expect = {c: (w["orders"], w["revenue"], dict(w["by_status"])) for c, w in want.items()}
        got: dict[str, Any] = {}

        async def as_recorded() -> bool:
            nonlocal got
            _s, body, _ = await ahttp("GET", urls["web"] + "analytics/countries")
            got = {
                c: (v["orders"], Decimal(v["revenue"]), v["by_status"])
                for c, v in body["countries"].items()
            }
            return got == expect

        with contextlib.suppress(AssertionError):  # timed out: the assertion below shows how
            await eventually(as_recorded, 30, 1)
        assert got == expect

        await asyncio.sleep(1)
        tailing.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await tailing
        # nothing that happened before the restart happened again after it
        for topic in EFFECTS:
            before = {e["order_id"] for e in first[topic]}
            again = before & {e["order_id"] for e in second[topic]}
            assert not again, (topic, sorted(again)[:5])
        # one notification per order (a redelivery repeats the same id, never another)
        notes: dict[str, set[str]] = defaultdict(set)
        for e in first["notification_sent"] + second["notification_sent"]:
            notes[e["order_id"]].add(e["notification_id"])
        assert set(notes) >= ids, f"{len(ids - set(notes))} orders never notified"
        assert all(len(n) == 1 for n in notes.values())
    finally:
        if proc.poll() is None:
            await asyncio.to_thread(stop, proc)
