"""``orders-app run --workers 2`` supervises its workers: one worker SIGKILLed at a random
moment while orders stream into Postgres is restarted (one report line, same web port and
data dir), the run keeps going, and against the Postgres ground truth every order ends
exactly once with its expected status, analytics per country equal Postgres, and nothing
is charged, reserved or notified twice.  Ctrl-C then stops everything, exit 0.  A worker
that can never start (its web port is taken) ends the run: one restart line per restart,
then one line naming the crash loop, exit 1, nothing left running.

Marked ``slow``; ``SUPERVISED_ORDERS`` overrides the order count for a quicker run."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import socket
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import asyncpg
import orjson
import psutil  # type: ignore[import-untyped]  # no stubs installed
import pytest

from orders_app.embedded.supervisor import CRASH_LOOP_RESTARTS
from tests.conftest import ROOT, free_port
from tests.integration.test_analytics import (
    add_zero_stock_sku,
    assert_matches_truth,
    fulfilled_quantity,
    make_orders,
    truth,
)
from tests.integration.test_crash import insert_paced
from tests.support import ahttp, alive, eventually, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = int(os.environ.get("SUPERVISED_ORDERS", "3500"))
RATE = 150.0


class Output:
    """The run's merged stdout/stderr, read line by line in the background."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.lines.append(line.decode(errors="replace").rstrip())
            self._changed.set()

    async def closed(self) -> None:
        await self._task

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    async def wait_for(self, needle: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if needle in line:
                    return line
            left = deadline - time.monotonic()
            if left <= 0 or self._task.done():
                raise AssertionError(f"no line with {needle!r} in:\n{self.text}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass


async def start_run(tmp_path: Path, port: int, workers: int) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERS_")}
    env.update(ORDERS_WEB_PORT=str(port))
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "orders_app.cli", "run", "--no-generate", "--workers", str(workers)),
        *("--data", str(tmp_path / "data")),
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def stop_run(
    proc: asyncio.subprocess.Process, tmp_path: Path, known: list[psutil.Process]
) -> None:
    """After a failed assertion: stop the run as Ctrl-C would, then kill what is left."""
    if proc.returncode is None:
        known = known or psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    for p in alive(known) + ours(tmp_path):
        p.kill()


def two_free_ports() -> int:
    while True:
        port = free_port()
        if port < 65535 and _free(port + 1):
            return port


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def worker_processes(run_pid: int) -> dict[int, psutil.Process]:
    """The run's live worker processes by web port."""
    out = {}
    for child in psutil.Process(run_pid).children():
        try:
            if "worker" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                out[int(child.environ()["ORDERS_WEB_PORT"])] = child
        except (psutil.NoSuchProcess, KeyError):
            pass
    return out


def stuck_hint(run_dir: Path) -> str:
    """The last sign of a worker stuck in a rebalance, if any (for a failing assertion)."""
    hints = []
    for log in sorted(run_dir.glob("worker-*.log")):
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if "wait_empty" in ln]
        if lines:
            hints.append(f"{log.name}: {lines[-1]} (x{len(lines)})")
    return "; ".join(hints) or "no worker reports a stuck rebalance"


def ours(tmp: Path) -> list[psutil.Process]:
    """Live processes that name the test's directory: in their command line (Postgres's
    data dir; it runs detached, as another user) or their environment (workers)."""
    found = []
    for p in psutil.process_iter(["cmdline", "environ"]):
        env = p.info["environ"] or {}
        if str(tmp) in " ".join(p.info["cmdline"] or []) or str(tmp) in env.get(
            "ORDERS_DATA_DIR", ""
        ):
            found.append(p)
    return alive(found)


async def test_sigkilled_worker_comes_back_and_nothing_is_lost_or_doubled(
    tmp_path: Path, rng: random.Random
) -> None:
    tmp_path.chmod(0o755)  # the unprivileged Postgres user must reach the data dir
    port = two_free_ports()
    proc = await start_run(tmp_path, port, workers=2)
    assert proc.stdout is not None
    out = Output(proc.stdout)
    everything: list[psutil.Process] = []
    try:
        await out.wait_for("Ctrl-C to stop.", 120)
        urls = re.findall(r"web:\s+(\S+)", out.text)
        dsn = re.search(r"postgres:\s+(\S+)", out.text)
        broker = re.search(r"broker:\s+kafka://(\S+)", out.text)
        assert urls == [f"http://127.0.0.1:{port}/", f"http://127.0.0.1:{port + 1}/"], out.text
        assert dsn and broker, out.text
        dsn_s, bootstrap = dsn.group(1), broker.group(1)
        before = worker_processes(proc.pid)
        assert set(before) == {port, port + 1}, out.text

        await add_zero_stock_sku(dsn_s)
        orders, expected = make_orders(N, seed=61, prefix="sv")
        feeder = asyncio.create_task(insert_paced(dsn_s, orders, RATE))

        index = rng.randrange(2)
        victim, victim_url = before[port + index], urls[index]
        victim_env = victim.environ()
        kill_after = rng.uniform(0.25, 0.75) * N / RATE
        print(f"SIGKILL worker-{index} (pid {victim.pid}) after {kill_after:.1f}s")
        await asyncio.sleep(kill_after)
        assert not feeder.done()
        victim.send_signal(signal.SIGKILL)

        line = await out.wait_for("restarting in", 30)
        assert f"worker-{index} killed by SIGKILL" in line, line
        assert f"worker-{index}.log" in line, line

        async def healthy() -> bool:
            status, body, _ = await ahttp("GET", victim_url + "health", timeout=2)
            return status == 200 and body == {"status": "ok"}

        # back on the same port and data dir, in a new process
        try:
            await eventually(healthy, 90, 0.5)
        except AssertionError:
            raise AssertionError(f"worker-{index} did not come back:\n{out.text}") from None
        after = worker_processes(proc.pid)
        assert set(after) == {port, port + 1}
        assert after[port + index].pid != victim.pid
        assert after[port + 1 - index].pid == before[port + 1 - index].pid  # untouched
        assert after[port + index].environ()["ORDERS_DATA_DIR"] == victim_env["ORDERS_DATA_DIR"]

        await feeder
        # every order terminal in the analytics (answered across both workers)
        done = 0

        async def all_terminal() -> bool:
            nonlocal done
            status, body, _ = await ahttp("GET", f"{urls[0]}analytics/countries")
            if status == 200:
                done = sum(sum(c["by_status"].values()) for c in body["countries"].values())
            return done >= N

        try:
            await eventually(all_terminal, 120, 1)
        except AssertionError:
            raise AssertionError(
                f"{done}/{N} orders terminal in analytics; {stuck_hint(tmp_path / 'data' / 'run')}"
            ) from None
        await asyncio.sleep(3)  # let a possible overshoot show
        status, body, _ = await ahttp("GET", f"{urls[1]}analytics/countries")
        assert status == 200, body
        countries = body["countries"]

        conn = await asyncpg.connect(dsn_s)
        try:
            truth_ids = {r["id"] for r in await conn.fetch("SELECT id FROM orders")}
            per_country = {
                r["country"]: r["n"]
                for r in await conn.fetch("SELECT country, count(*) AS n FROM orders GROUP BY 1")
            }
        finally:
            await conn.close()
        assert truth_ids == set(expected)
        assert {c: v["orders"] for c, v in countries.items()} == per_country
        assert_matches_truth(countries, truth(orders, expected))

        terminal: dict[str, list[str]] = defaultdict(list)
        for m in await read_topic(bootstrap, "orders_app-status-by-country", idle=2.0, limit=120):
            v = orjson.loads(m.value)
            if v["terminal"]:
                terminal[v["order_id"]].append(v["status"])
        lost = truth_ids - set(terminal)
        assert not lost, f"{len(lost)} orders lost, e.g. {sorted(lost)[:5]}"
        wrong = {o: s for o, s in terminal.items() if set(s) != {expected[o]}}
        assert not wrong, list(wrong.items())[:5]

        charges: dict[str, set[str]] = defaultdict(set)
        for m in await read_topic(bootstrap, "payment_successful", idle=1.0, limit=120):
            v = orjson.loads(m.value)
            charges[v["order_id"]].add(v["charge_id"])
        assert all(len(c) == 1 for c in charges.values())
        assert set(charges) == {o for o, s in expected.items() if s in {"FULFILLED", "CANCELLED"}}

        refunds: Counter[str] = Counter()
        for m in await read_topic(bootstrap, "payment_refunded", idle=1.0, limit=120):
            refunds[orjson.loads(m.value)["order_id"]] += 1
        assert set(refunds) == {o for o, s in expected.items() if s == "CANCELLED"}

        notes: dict[str, set[str]] = defaultdict(set)
        for m in await read_topic(bootstrap, "notification_sent", idle=1.0, limit=120):
            v = orjson.loads(m.value)
            notes[v["order_id"]].add(v["notification_id"])
        assert set(notes) == truth_ids
        assert all(len(ids) == 1 for ids in notes.values())

        status, inv, _ = await ahttp("GET", f"{urls[0]}inventory/SKU-0001")
        assert status == 200, inv
        assert inv["reserved"] == fulfilled_quantity(orders, expected, "SKU-0001"), inv

        # one restart, and the run is still up
        restarts = [ln for ln in out.lines if "restarting in" in ln]
        assert len(restarts) == 1, out.text
        assert proc.returncode is None

        everything = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGINT)
        rc = await asyncio.wait_for(proc.wait(), 15)
        assert rc == 0, out.text
        assert not alive(everything), alive(everything)
        assert not ours(tmp_path), ours(tmp_path)
    finally:
        await stop_run(proc, tmp_path, everything)


async def test_a_crash_looping_worker_stops_the_run_with_one_line_and_exit_1(
    tmp_path: Path,
) -> None:
    tmp_path.chmod(0o755)
    # The worker's web port is taken, so every worker run exits at once with code 1.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = await start_run(tmp_path, taken.getsockname()[1], workers=1)
        assert proc.stdout is not None
        out = Output(proc.stdout)
        try:
            rc = await asyncio.wait_for(proc.wait(), 150)
            await out.closed()
        finally:
            await stop_run(proc, tmp_path, [])
    assert rc == 1, out.text
    restarts = [ln for ln in out.lines if "restarting in" in ln]
    assert len(restarts) == CRASH_LOOP_RESTARTS, out.text
    assert all("worker-0 exited with code 1" in ln for ln in restarts), out.text
    reasons = [ln for ln in out.lines if "crash loop" in ln]
    assert len(reasons) == 1, out.text
    assert reasons[0].startswith("orders-app: worker-0 exited with code 1; crash loop: ")
    assert str(tmp_path / "data" / "run" / "worker-0.log") in reasons[0]
    assert "web:" not in out.text and out.lines[-1] == "stopped.", out.text
    assert not ours(tmp_path), ours(tmp_path)
