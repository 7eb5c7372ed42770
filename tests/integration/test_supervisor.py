"""The supervisor over tiny real child processes (``python -c ...``): a child that exits
with a code or is SIGKILLed comes back with the same environment and one report line; a
crash loop stops it with a reason; stop() leaves no child or grandchild alive, even one
that ignores SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # no stubs installed
import pytest

from orders_app.embedded.supervisor import ChildSpec, RestartPolicy, Supervisor
from tests.support import alive, eventually

# Fast, so a crash loop is reached in well under a second of backoff.
FAST = RestartPolicy(backoff_initial=0.05, backoff_max=0.2, max_restarts=3, window=30.0)

SLEEP = "import time; time.sleep(600)"
# Exits with code 3 on its first run only (a marker file remembers); prints its
# environment and cwd each run, so the log shows what the restart got.
EXIT_ONCE = (
    "import os, sys, time\n"
    "print('run', os.environ['CHILD_PORT'], os.getcwd(), flush=True)\n"
    "marker = 'ran-once'\n"
    "if not os.path.exists(marker):\n"
    "    open(marker, 'w').close()\n"
    "    sys.exit(3)\n"
    "time.sleep(600)\n"
)
WITH_GRANDCHILD = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "time.sleep(600)\n"
)
IGNORES_SIGTERM = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)\n"
)


def spec(tmp: Path, name: str, code: str, **env: str) -> ChildSpec:
    return ChildSpec(
        name=name,
        argv=[sys.executable, "-c", code],
        log_path=tmp / f"{name}.log",
        env={**os.environ, **env},
        cwd=tmp,
    )


def descendants() -> list[psutil.Process]:
    return list(psutil.Process().children(recursive=True))


class Harness:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.supervisors: list[Supervisor] = []

    def make(self, specs: list[ChildSpec], **kw: object) -> Supervisor:
        sup = Supervisor(specs, report=self.lines.append, poll_interval=0.05, **kw)  # type: ignore[arg-type]
        self.supervisors.append(sup)
        return sup


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    yield h
    for sup in h.supervisors:
        await sup.stop()


async def test_a_child_that_exits_with_a_code_is_restarted_with_the_same_env(
    tmp_path: Path, harness: Harness
) -> None:
    sup = harness.make([spec(tmp_path, "w0", EXIT_ONCE, CHILD_PORT="7001")], policy=FAST)
    await sup.start()
    first = sup.pids["w0"]
    await eventually(lambda: sup.pids.get("w0", first) != first, timeout=20, interval=0.05)
    second = sup.pids["w0"]
    await asyncio.sleep(0.5)  # room for a wrong second restart to show
    assert sup.pids["w0"] == second and psutil.pid_exists(second)
    assert len(harness.lines) == 1, harness.lines
    line = harness.lines[0]
    assert "w0 exited with code 3" in line
    assert "restarting in 0.05s" in line
    assert f"log: {tmp_path / 'w0.log'}" in line
    await eventually(
        lambda: (tmp_path / "w0.log").read_text().count("run ") == 2, timeout=20, interval=0.05
    )
    runs = [ln for ln in (tmp_path / "w0.log").read_text().splitlines() if ln.startswith("run ")]
    assert runs == [f"run 7001 {tmp_path}"] * 2
    assert sup.failure is None


async def test_a_sigkilled_child_is_restarted_and_the_others_are_untouched(
    tmp_path: Path, harness: Harness
) -> None:
    sup = harness.make([spec(tmp_path, "w0", SLEEP), spec(tmp_path, "w1", SLEEP)], policy=FAST)
    await sup.start()
    before = dict(sup.pids)
    os.kill(before["w1"], signal.SIGKILL)
    await eventually(
        lambda: sup.pids.get("w1", before["w1"]) != before["w1"], timeout=20, interval=0.05
    )
    assert sup.pids["w0"] == before["w0"]
    assert len(harness.lines) == 1, harness.lines
    assert "w1 killed by SIGKILL" in harness.lines[0]
    assert "restart 1," in harness.lines[0]
    # the child's own log says where one run ended
    assert "w1 killed by SIGKILL" in (tmp_path / "w1.log").read_text()

    os.kill(sup.pids["w1"], signal.SIGKILL)
    await eventually(lambda: len(harness.lines) == 2, timeout=20, interval=0.05)
    assert "restart 2," in harness.lines[1] and "restarting in 0.1s" in harness.lines[1]
    assert sup.failure is None


async def test_a_crash_loop_stops_with_a_reason(tmp_path: Path, harness: Harness) -> None:
    stop = asyncio.Event()
    sup = harness.make(
        [spec(tmp_path, "bad", "import sys; sys.exit(7)"), spec(tmp_path, "ok", SLEEP)],
        policy=FAST,
    )
    await sup.start()
    ok_pid = sup.pids["ok"]
    reason = await asyncio.wait_for(sup.wait(until=stop), 30)
    assert reason == sup.failure
    assert reason is not None and "\n" not in reason
    assert reason.startswith("bad exited with code 7; crash loop: 3 restarts within 30s")
    assert str(tmp_path / "bad.log") in reason
    assert len(harness.lines) == 3 and all("bad exited with code 7" in ln for ln in harness.lines)
    assert sup.pids.get("ok") == ok_pid  # the others are stopped by stop(), not by the loop
    await sup.stop()
    assert not psutil.pid_exists(ok_pid)


async def test_wait_returns_none_when_told_to_stop(tmp_path: Path, harness: Harness) -> None:
    stop = asyncio.Event()
    sup = harness.make([spec(tmp_path, "w0", SLEEP)])
    await sup.start()
    asyncio.get_running_loop().call_later(0.2, stop.set)
    assert await asyncio.wait_for(sup.wait(until=stop), 10) is None


async def test_stop_leaves_no_child_or_grandchild_alive(tmp_path: Path, harness: Harness) -> None:
    sup = harness.make(
        [
            spec(tmp_path, "plain", SLEEP),
            spec(tmp_path, "parent", WITH_GRANDCHILD),
            spec(tmp_path, "stubborn", IGNORES_SIGTERM),
        ],
        grace=1.0,
    )
    await sup.start()
    pids = set(sup.pids.values())
    # three children and the grandchild
    await eventually(lambda: len(descendants()) >= 4, timeout=20, interval=0.05)
    family = [p for p in descendants() if p.pid in pids or p.ppid() in pids]
    assert len(family) == 4
    await asyncio.sleep(0.3)  # let the stubborn one install its handler
    await sup.stop()
    assert not alive(family), alive(family)
    assert harness.lines == []  # an ordered stop is not a crash
    assert sup.pids == {}


async def test_a_crashed_childs_leftovers_are_killed_before_the_restart(
    tmp_path: Path, harness: Harness
) -> None:
    sup = harness.make([spec(tmp_path, "parent", WITH_GRANDCHILD)], policy=FAST)
    await sup.start()
    leader = sup.pids["parent"]
    await eventually(
        lambda: any(p.ppid() == leader for p in descendants()), timeout=20, interval=0.05
    )
    grandchild = next(p for p in descendants() if p.ppid() == leader)
    os.kill(leader, signal.SIGKILL)
    await eventually(lambda: sup.pids.get("parent", leader) != leader, timeout=20, interval=0.05)
    await eventually(lambda: not alive([grandchild]), timeout=5, interval=0.05)
    assert len(harness.lines) == 1


async def test_a_child_that_cannot_be_started_ends_in_a_crash_loop(
    tmp_path: Path, harness: Harness
) -> None:
    missing = ChildSpec(
        name="ghost", argv=[str(tmp_path / "no-such-binary")], log_path=tmp_path / "g.log"
    )
    sup = harness.make([missing], policy=FAST)
    await sup.start()
    reason = await asyncio.wait_for(sup.wait(), 30)
    assert reason is not None and reason.startswith("ghost could not be started")
    assert "crash loop" in reason
    assert len(harness.lines) == 3
