"""Helpers for the integration and e2e tests (HTTP, Kafka reads, waiting for a condition)."""

from __future__ import annotations

import asyncio
import inspect
import os
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import psutil  # type: ignore[import-untyped]  # no stubs installed
from aiokafka.record.default_records import DefaultRecordBatchBuilder


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, Any, dict[str, str]]:
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status, rheaders = resp.status, dict(resp.headers)
    except urllib.error.HTTPError as err:
        raw = err.read()
        status, rheaders = err.code, dict(err.headers)
    except (urllib.error.URLError, OSError) as err:  # not listening (yet), reset, timeout
        return 0, str(err), {}
    try:
        parsed = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        parsed = raw.decode(errors="replace")
    return status, parsed, rheaders


async def ahttp(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, Any, dict[str, str]]:
    return await asyncio.to_thread(http, method, url, body, headers, timeout)


async def read_topic(
    bootstrap: str, topic: str, *, idle: float = 2.0, limit: float = 60.0
) -> list[Any]:
    """Every message of ``topic`` from the beginning, until nothing new arrives for ``idle``s."""
    import time

    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        deadline = time.monotonic() + limit
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < idle:
            batch = await consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                if msgs:
                    last = time.monotonic()
                out.extend(msgs)
        return out
    finally:
        await consumer.stop()


ROOT = Path(__file__).resolve().parent.parent


def start_run(
    data: Path, port: int, *extra: str, rate: str, timeout: float
) -> tuple[subprocess.Popen[str], str]:
    """``orders-app run --data <data> <extra>`` on web port ``port`` with the generator at
    ``rate`` (no inherited ``ORDERS_*``), and what it printed up to its "Ctrl-C" line (or
    its exit, or ``timeout`` s)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERS_")}
    env.update(ORDERS_WEB_PORT=str(port), ORDERS_GENERATOR_RATE=rate)
    proc = subprocess.Popen(
        [sys.executable, "-m", "orders_app.cli", "run", "--data", str(data), *extra],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    started = time.monotonic()
    assert proc.stdout is not None
    while time.monotonic() - started < timeout:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if line.startswith("Ctrl-C"):
            break
    return proc, "\n".join(lines)


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """The processes of ``procs`` still running (zombies count as gone)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


T = TypeVar("T")


async def eventually(
    probe: Callable[[], T | Awaitable[T]],
    timeout: float = 30.0,
    interval: float = 0.2,
    what: str = "the condition",
) -> T:
    """The first truthy value of ``probe()`` (sync or async), polled every ``interval`` s;
    AssertionError naming ``what`` and the last value after ``timeout`` s.

    The one way tests wait for something to happen, instead of sleeping "long enough".
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached in {timeout:g}s (last: {value!r})")
        await asyncio.sleep(interval)


def record_batch(base: int, count: int) -> bytes:
    """A real v2 record batch (aiokafka's builder) of ``count`` records, with its base
    offset set as a broker sets it."""
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
    for i in range(count):
        builder.append(i, 1_700_000_000_000, b"k", b"v%d" % i, [])
    raw = bytearray(builder.build())
    struct.pack_into(">q", raw, 0, base)
    return bytes(raw)
