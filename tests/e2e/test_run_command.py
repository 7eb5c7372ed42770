"""``orders-app run``: the whole embedded stack from one command, real orders flowing
from Postgres through CDC to a terminal status, and a clean stop on Ctrl-C."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import asyncpg
import psutil
import pytest

from tests.conftest import free_port
from tests.support import ahttp, eventually, start_run

pytestmark = pytest.mark.integration


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_run_starts_everything_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    port = free_port()
    proc, output = start_run(tmp_path / "data", port, rate="50", timeout=60)
    try:
        assert "Ctrl-C" in output, output
        web = re.search(r"web:\s+(\S+)", output)
        dsn = re.search(r"postgres:\s+(\S+)", output)
        broker = re.search(r"broker:\s+kafka://127\.0\.0\.1:(\d+)", output)
        assert web and dsn and broker, output
        assert web.group(1) == f"http://127.0.0.1:{port}/"

        status, body, _ = await ahttp("GET", web.group(1) + "health")
        assert status == 200 and body == {"status": "ok"}

        # A real order from the generator: Postgres row -> CDC -> pipeline -> terminal.
        conn = await asyncpg.connect(dsn.group(1))
        try:
            order_id = await eventually(
                lambda: conn.fetchval("SELECT id FROM orders ORDER BY created_at LIMIT 1"),
                30,
                0.2,
                what="a first order in Postgres",
            )
        finally:
            await conn.close()
        status, body, _ = await ahttp(
            "GET", f"{web.group(1)}orders/{order_id}?wait=terminal&timeout=30", timeout=40
        )
        assert status == 200, body
        assert body["status"] in {"FULFILLED", "REJECTED", "PAYMENT_FAILED", "CANCELLED"}

        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("worker" in " ".join(c.cmdline()) for c in children)
        # real Debezium (Java is on this machine), a child of the stack like the workers
        assert re.search(r"cdc:\s+Debezium \(started in [\d.]+s, slot orders_debezium\)", output)
        assert any("orders_app.cdc.debezium_connect" in " ".join(c.cmdline()) for c in children)
        stop_at = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
        assert time.monotonic() - stop_at < 10
        assert proc.returncode == 0
        assert not _listening(port)
        assert not _listening(int(broker.group(1)))
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert str(tmp_path) not in ps, ps
        assert not [
            c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE
        ]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
