"""Quick exit: Faust's worker, closing its event loop as soon as its work is gathered.

Rule: a stopping worker stops every service, gathers its tasks and then every asyncio
future (``mode.Worker._shutdown_loop``, mode-streaming 0.7), and only then closes the loop -
after a "sentinel" task that sleeps a fixed second (``mode.Worker._sentinel_task``), so
callbacks the last cancellations scheduled (a transport's ``connection_lost``) run first.
Those take a loop turn or two, not a second; the second was a third to a half of every
clean stop of this worker (~2 s: the outcome sink's drain, then the sentinel), which a
rolling restart, ``orders-app run``'s Ctrl-C and every test that stops a worker wait out.
Here the sentinel sleeps :data:`SETTLE_S`; everything before it is unchanged, so a stop
still commits, flushes and leaves the group first.

The app's ``Worker`` (``conf.Worker``, set in ``orders_app/app.py``); pinned by
tests/unit/test_quick_exit.py (mode still ends its shutdown with the sentinel, and ours is
the one the app's worker runs).  Upstream shape: a class attribute for the sentinel's
sleep in mode's ``Worker``.
"""

from __future__ import annotations

import asyncio

import faust

__all__ = ["SETTLE_S", "QuickExitWorker"]

#: Loop turns for late callbacks before the loop closes (mode's sentinel: 1 s).
SETTLE_S = 0.1


class QuickExitWorker(faust.Worker):
    """``faust.Worker`` whose last shutdown step waits :data:`SETTLE_S`, not 1 s."""

    async def _sentinel_task(self) -> None:
        await asyncio.sleep(SETTLE_S)
