"""orders_app/faust_patches/quick_exit.py: mode still ends a worker's shutdown with a
one-second sentinel (the step the patch shortens), ours waits SETTLE_S and still runs the
callbacks the last cancellations schedule, and the app's worker is ours."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from typing import Any

import faust
import mode
import pytest

from orders_app.faust_patches.quick_exit import SETTLE_S, QuickExitWorker


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Every ``asyncio.sleep`` delay awaited while it is active (then slept as 0)."""
    asked: list[float] = []
    real = asyncio.sleep

    async def recording(delay: float, result: Any = None) -> Any:
        asked.append(delay)
        return await real(0, result)

    monkeypatch.setattr(asyncio, "sleep", recording)
    yield asked


def test_mode_ends_its_shutdown_with_a_one_second_sentinel(sleeps: list[float]) -> None:
    # What the patch relies on: the loop closes right after this task; if mode drops or
    # renames it, the override below does nothing and this fails first.
    assert "self._sentinel_task()" in inspect.getsource(mode.Worker._shutdown_loop)
    asyncio.run(mode.Worker._sentinel_task(None))  # type: ignore[arg-type]
    assert sleeps == [1.0]


def test_quick_exit_sentinel_waits_settle_time(sleeps: list[float]) -> None:
    asyncio.run(QuickExitWorker._sentinel_task(None))  # type: ignore[arg-type]
    assert sleeps == [SETTLE_S]
    assert SETTLE_S < 1.0


def test_shutdown_still_runs_callbacks_scheduled_by_cancelled_tasks() -> None:
    app = faust.App("quick-exit-probe", broker="kafka://127.0.0.1:1")
    loop = asyncio.new_event_loop()
    try:
        worker = QuickExitWorker(app, loop=loop, quiet=True)
        seen: list[str] = []

        async def holder() -> None:
            try:
                await asyncio.sleep(100)
            finally:  # as a transport's connection_lost: scheduled, run a turn later
                loop.call_soon(seen.append, "late callback")

        held = loop.create_task(holder())
        loop.run_until_complete(asyncio.sleep(0))
        worker._shutdown_loop()
        assert held.cancelled()
        assert seen == ["late callback"]
        assert loop.is_closed()
    finally:
        if not loop.is_closed():
            loop.close()
        asyncio.set_event_loop(None)


def test_the_app_runs_the_quick_exit_worker() -> None:
    from orders_app.app import apply_settings
    from orders_app.settings import Settings

    probe = faust.App("quick-exit-settings", broker="kafka://127.0.0.1:1")
    apply_settings(probe.conf, Settings())
    assert probe.conf.Worker is QuickExitWorker
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(probe.Worker(loop=loop, quiet=True), QuickExitWorker)
    finally:
        loop.close()
        asyncio.set_event_loop(None)
