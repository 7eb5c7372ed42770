"""Eager delivery: the consumer hands a message to its agents' channels without four
tasks and an ``asyncio.wait`` per message, when the handoff does not have to wait.

Rule: behaviour is Faust's; only the per-message scheduling changes.  Behind
``ORDERS_EAGER_DELIVERY`` (default on), installed on the worker's consumer before it
starts.

faust-streaming 0.15.3 (``faust/transport/consumer.py``, ``Consumer._drain_messages``)
delivers every fetched message as::

    await self.wait_first(callback(message), self.suspend_flow.wait())

``mode.Service.wait_first`` wraps both coroutines and the service's ``stopped`` and
``crashed`` events in four tasks, waits for the first with ``asyncio.wait`` and cancels
the other three: about 21 µs per message on this machine with uvloop
(tests/unit/test_eager_delivery.py measures neither; bench/PROFILE.md has the figures),
where the delivery itself (``Conductor.on_message``: decode once, ``put_nowait`` on each
subscribed channel's queue) is about 0.5 µs and almost never waits.  The race only
matters when the delivery *does* wait - a channel queue full, the producer's buffer
over its limit, flow control stopped for a rebalance - so that a rebalance's
``suspend_flow`` can interrupt it.

Patch: the delivery coroutine is first run eagerly up to its first suspension (as
Python 3.12's ``eager_task_factory`` runs a task's first step).  If it completes without
suspending, that is the whole delivery: the other coroutine (``suspend_flow.wait()``) is
closed unstarted and the result is what ``wait_first`` would have returned.  If it
suspends, the rest of it (:class:`_Rest`, which resumes the same coroutine where it
stopped) races the others exactly as before, through the original ``wait_first``.  Any
other call of the consumer's ``wait_first`` (with a timeout, or not a coroutine first)
goes to the original unchanged.

Upstream shape: the same test in ``Consumer._drain_messages`` (deliver eagerly, fall back
to ``wait_first`` when the delivery suspends), or ``wait_first`` with an eager first step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from mode.services import WaitResults

WaitFirst = Callable[..., Awaitable[WaitResults]]


class _Rest:
    """Awaitable: the rest of a coroutine already run up to its first suspension
    (``yielded``: what it yielded there, the future it waits on)."""

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self._coro, self._yielded
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - thrown in by the task, passed on
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def _finish(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    return await _Rest(coro, yielded)


def eager_wait_first(original: WaitFirst) -> WaitFirst:
    """``wait_first`` that runs its first coroutine eagerly (see the module docstring)."""

    async def wait_first(*coros: Any, timeout: Any = None) -> WaitResults:
        if timeout is not None or not coros or not asyncio.iscoroutine(coros[0]):
            return await original(*coros, timeout=timeout)
        first = coros[0]
        try:
            yielded = first.send(None)
        except BaseException as exc:  # done (StopIteration) or raised: close the others
            for other in coros[1:]:
                if asyncio.iscoroutine(other):
                    other.close()  # never started: nothing to cancel
            if isinstance(exc, StopIteration):
                return WaitResults([first], [exc.value], False)
            raise
        rest = _finish(first, yielded)
        results = await original(rest, *coros[1:])
        done = [first if c is rest else c for c in results.done]
        return WaitResults(done, results.results, results.stopped)

    return wait_first


def install(consumer: Any, *, enabled: bool = True) -> None:
    """Deliver eagerly on this (not yet started) consumer: ``_drain_messages`` looks
    ``self.wait_first`` up per message, so an instance attribute takes its place."""
    if enabled:
        consumer.wait_first = eager_wait_first(consumer.wait_first)
