"""Shared fixtures: a real PostgreSQL (session) and a real Tansu broker (per test), both
on free loopback ports, plus helpers to run real worker processes against them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from tests.support import ahttp, eventually

ROOT = Path(__file__).resolve().parent.parent
# Every random choice of a test (a kill moment, a victim, a generated mix) comes from this
# seed: a failure is re-run with ORDERS_TEST_SEED=<the seed in the report header>.
SEED = int(os.environ.get("ORDERS_TEST_SEED", "20261124"))


def pytest_report_header() -> str:
    return (
        f"orders_app: ORDERS_TEST_SEED={SEED}, CDC {os.environ.get('ORDERS_TEST_CDC', 'debezium')}"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """A random generator seeded from ``ORDERS_TEST_SEED`` and the test's name."""
    return random.Random(f"{SEED}:{request.node.nodeid}")


@dataclass
class Stack:
    bootstrap: str
    dsn: str

    @property
    def broker_url(self) -> str:
        return f"kafka://{self.bootstrap}"


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[Path]:
    # Not under /root: the unprivileged postgres user must be able to reach it.
    path = Path(tempfile.mkdtemp(prefix="orders-tests-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest_asyncio.fixture(scope="session")
async def postgres_server(tmp_root: Path) -> AsyncIterator[Any]:
    from orders_app.embedded.servers import EmbeddedPostgres

    server = EmbeddedPostgres(tmp_root / "pg")
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture
async def database(postgres_server: Any) -> AsyncIterator[str]:
    """A fresh, migrated database with the demo catalogue; returns its DSN."""
    from orders_app.db import migrate, seed_catalogue

    name = "t_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(postgres_server.dsn_for("postgres"))
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = postgres_server.dsn_for(name)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        await seed_catalogue(conn)
    finally:
        await conn.close()
    yield dsn
    # drop slots first: a database with an active slot cannot be dropped
    await admin.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
        "WHERE database = $1 AND NOT active",
        name,
    )
    with contextlib.suppress(asyncpg.PostgresError):
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


@pytest_asyncio.fixture
async def broker(tmp_root: Path) -> AsyncIterator[Any]:
    """A fresh Tansu broker per test (memory only, starts in well under a second)."""
    from orders_app.embedded.servers import EmbeddedBroker

    b = EmbeddedBroker(log_path=tmp_root / f"broker-{uuid.uuid4().hex[:6]}.log")
    await b.start()
    yield b
    await b.stop()


@pytest_asyncio.fixture
async def stack(broker: Any, database: str) -> Stack:
    from orders_app.admin import ensure_topics, registry_topic_names

    await ensure_topics(broker.bootstrap, registry_topic_names(), 4)
    return Stack(bootstrap=broker.bootstrap, dsn=database)


def free_port() -> int:
    from orders_app.embedded.servers import free_port as fp

    return fp()


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


# A worker's graceful stop takes ~1.5 s; SIGKILL after this.
STOP_TIMEOUT = 20.0


class WorkerPool:
    def __init__(self, stack: Stack, tmp: Path) -> None:
        self.stack = stack
        self.tmp = tmp
        self.workers: list[Worker] = []

    def start(
        self, extra_env: dict[str, str] | None = None, data_dir: Path | None = None
    ) -> Worker:
        port = free_port()
        data = data_dir or self.tmp / f"worker-{port}"
        log = self.tmp / f"worker-{port}.log"
        env = {
            **os.environ,
            "ORDERS_BROKER_URL": self.stack.broker_url,
            "ORDERS_POSTGRES_DSN": self.stack.dsn,
            "ORDERS_WEB_PORT": str(port),
            "ORDERS_DATA_DIR": str(data),
            "ORDERS_PARTITIONS": "4",
            **(extra_env or {}),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "orders_app.cli", "worker"],
            env=env,
            cwd=ROOT,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        worker = Worker(proc, port, log, data, env)
        self.workers.append(worker)
        return worker

    async def wait_ready(self, worker: Worker, timeout: float = 60.0) -> None:
        async def ready() -> bool:
            if worker.proc.poll() is not None:
                raise AssertionError(f"worker exited {worker.proc.returncode}")
            status, _body, _ = await ahttp("GET", worker.url + "/ready", timeout=2)
            return status == 200

        try:
            await eventually(ready, timeout, 0.2, what="worker ready")
        except AssertionError as err:  # it exited, or was not ready in time
            raise AssertionError(f"{err}:\n{worker.log_tail()}") from None

    def stop(
        self, worker: Worker, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT
    ) -> None:
        if worker.proc.poll() is None:
            worker.proc.send_signal(sig)
            self._reap(worker, timeout)

    def stop_all(self) -> None:
        # All at once: stopped one by one, each survivor rebalances onto the partitions
        # just left and is then stopped mid-join (a LeaveGroup that waits ~4 s).
        running = [w for w in self.workers if w.proc.poll() is None]
        for w in running:
            w.proc.send_signal(signal.SIGTERM)
        for w in running:
            self._reap(w, STOP_TIMEOUT)

    @staticmethod
    def _reap(worker: Worker, timeout: float) -> None:
        try:
            worker.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            worker.proc.wait(5)


@pytest_asyncio.fixture
async def workers(stack: Stack, tmp_path: Path) -> AsyncIterator[WorkerPool]:
    pool = WorkerPool(stack, tmp_path)
    yield pool
    await asyncio.to_thread(pool.stop_all)


CDC_READER = os.environ.get("ORDERS_TEST_CDC", "debezium")


async def drop_slot(dsn: str, slot: str) -> None:
    from orders_app.db import drop_idle_slot

    await drop_idle_slot(dsn, slot, wait_s=5.0)


async def start_debezium(stack: Stack, work_dir: Path, **overrides: str) -> Any:
    """Real Debezium (orders_app/cdc/debezium.py) on the test database, its own slot."""
    from orders_app.cdc.debezium import DebeziumConnect, java_runtime, missing_part

    missing = missing_part(java_runtime())
    assert missing is None, (
        f"real Debezium cannot run: {missing} (make test installs both); or run the CDC "
        "tests on the built-in reader: ORDERS_TEST_CDC=builtin"
    )

    dbz = DebeziumConnect(
        dsn=stack.dsn,
        bootstrap=stack.bootstrap,
        work_dir=work_dir,
        overrides={"slot.name": "s_" + uuid.uuid4().hex[:10], **overrides},
    )
    await dbz.start()
    return dbz


async def start_builtin_cdc(stack: Stack) -> Any:
    from orders_app.cdc.builtin import CdcReader

    reader = CdcReader(
        dsn=stack.dsn,
        bootstrap=stack.bootstrap,
        slot="s_" + uuid.uuid4().hex[:10],
        poll_interval=0.2,
        fresh_broker=True,
    )
    await reader.start()
    return reader


@pytest_asyncio.fixture
async def cdc(stack: Stack, tmp_path: Path) -> AsyncIterator[Any]:
    """CDC on the test database (snapshot of products + orders, then streaming): real
    Debezium, or the built-in reader with ``ORDERS_TEST_CDC=builtin``."""
    if CDC_READER == "builtin":
        reader = await start_builtin_cdc(stack)
    else:
        reader = await start_debezium(stack, tmp_path / "debezium")
    yield reader
    await reader.stop()
    await drop_slot(stack.dsn, reader.slot)


@pytest_asyncio.fixture
async def builtin_cdc(stack: Stack) -> AsyncIterator[Any]:
    """The built-in reader (orders_app/cdc/builtin.py), whatever ``ORDERS_TEST_CDC`` says."""
    reader = await start_builtin_cdc(stack)
    yield reader
    await reader.stop()
    await drop_slot(stack.dsn, reader.slot)
