"""orders_app/faust_patches/eager_delivery.py on the real mode ``Service.wait_first``:
a delivery that need not wait completes in the caller's step, with the result
``wait_first`` would give; one that waits races the others as before (a set
``suspend_flow`` still interrupts it); and the Faust line the patch relies on."""

from __future__ import annotations

import asyncio
import inspect
import warnings
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from mode import Service

from orders_app.faust_patches.eager_delivery import eager_wait_first, install


class Svc(Service):
    pass


@pytest.fixture
async def svc() -> Any:
    s = Svc()
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


async def test_a_delivery_that_need_not_wait_completes_without_a_task(svc: Svc) -> None:
    wait_first = eager_wait_first(svc.wait_first)
    delivered: list[int] = []
    suspend = asyncio.Event()

    async def deliver(n: int) -> int:
        delivered.append(n)
        return n * 10

    tasks_before = len(asyncio.all_tasks())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unawaited suspend_flow.wait() would warn
        first = deliver(1)
        results = await wait_first(first, suspend.wait())
    assert delivered == [1]
    assert (results.done, results.results, results.stopped) == ([first], [10], False)
    assert len(asyncio.all_tasks()) == tasks_before


async def test_a_waiting_delivery_is_interrupted_by_suspend_flow_as_before(svc: Svc) -> None:
    wait_first = eager_wait_first(svc.wait_first)
    room, suspend = asyncio.Event(), asyncio.Event()
    steps: list[str] = []

    async def deliver() -> None:
        steps.append("started")
        try:
            await room.wait()  # a full channel queue
            steps.append("delivered")
        except asyncio.CancelledError:
            steps.append("cancelled")
            raise

    suspend_wait = suspend.wait()
    waiting = asyncio.create_task(wait_first(deliver(), suspend_wait))
    await asyncio.sleep(0.01)
    assert steps == ["started"]  # ran eagerly up to its wait, then waits
    suspend.set()  # a rebalance suspends the flow
    results = await asyncio.wait_for(waiting, 1)
    assert steps == ["started", "cancelled"]
    assert results.done == [suspend_wait]
    assert not results.stopped


async def test_a_waiting_delivery_that_gets_room_completes_with_its_result(svc: Svc) -> None:
    wait_first = eager_wait_first(svc.wait_first)
    room, suspend = asyncio.Event(), asyncio.Event()

    async def deliver() -> str:
        await room.wait()
        await asyncio.sleep(0)  # more than one suspension
        return "in"

    first = deliver()
    waiting = asyncio.create_task(wait_first(first, suspend.wait()))
    await asyncio.sleep(0.01)
    room.set()
    results = await asyncio.wait_for(waiting, 1)
    assert results.done == [first]  # the caller's coroutine, not the wrapper
    assert results.results == ["in"]


async def test_an_error_in_the_delivery_propagates_eager_or_not(svc: Svc) -> None:
    wait_first = eager_wait_first(svc.wait_first)
    room = asyncio.Event()

    async def fails_at_once() -> None:
        raise ValueError("bad")

    async def fails_later() -> None:
        await room.wait()
        raise KeyError("later")

    suspend = asyncio.Event()
    with pytest.raises(ValueError, match="bad"):
        await wait_first(fails_at_once(), suspend.wait())
    later = asyncio.create_task(wait_first(fails_later(), suspend.wait()))
    await asyncio.sleep(0.01)
    room.set()
    with pytest.raises(KeyError, match="later"):
        await asyncio.wait_for(later, 1)


async def test_other_calls_go_to_the_original_unchanged(svc: Svc) -> None:
    calls: list[tuple[Any, ...]] = []

    async def original(*coros: Any, timeout: Any = None) -> Any:
        calls.append((coros, timeout))
        for c in coros:
            if asyncio.iscoroutine(c):
                c.close()
        return "original"

    wait_first = eager_wait_first(original)
    event = asyncio.Event()
    assert await wait_first(event, timeout=1.0) == "original"
    assert await wait_first(event.wait(), timeout=2.0) == "original"  # a timeout: as is
    assert [t for _c, t in calls] == [1.0, 2.0]


def test_faust_looks_wait_first_up_on_the_consumer_per_message() -> None:
    """What install() relies on: ``_drain_messages`` calls ``self.wait_first`` with the
    delivery first and ``suspend_flow.wait()`` second, looked up on each message."""
    source = inspect.getsource(Consumer._drain_messages)
    assert "await self.wait_first(\n" in source or "await self.wait_first(" in source
    assert "callback(message), self.suspend_flow.wait()" in source

    class Fake:
        async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:
            return None

    fake = Fake()
    install(fake)
    assert "wait_first" in vars(fake)
    plain = Fake()
    install(plain, enabled=False)
    assert "wait_first" not in vars(plain)
