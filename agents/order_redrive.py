"""Re-drive of stalled orders: what a waiting order is owed is sent again.

Rule: at-least-once covers a crash (an input not acknowledged is delivered again and its
step re-sends what it sent), but not a message the broker acknowledged and then never
hands out: the embedded broker was seen to leave a one-offset hole in a Fetch answer of
``orders_app-orders-by-customer`` under load (logged by
:mod:`orders_app.faust_patches.gaps`), and that order waited for its fraud decision for
ever.  So, as a saga coordinator retries a step that timed out: the order agent notes
after every step whether the order waits for another step's answer
(:func:`agents.order_flow.waiting`) and when it last moved (:class:`OpenOrders`); an
order that has not moved for ``ORDERS_REDRIVE_AFTER`` seconds *while an order that moved
after it has finished* (overtaken: lost, not merely queued behind a backlog) gets what it
waits for sent again (:func:`agents.order_flow.awaited`): its fraud repartition, the
``reserve`` commands of skus that did not reply, the unacknowledged ``release`` commands.
Every receiver answers a repeat as it answered the first time, so a re-send that was not
needed costs a duplicate answer, never a second charge, reservation or notification.

The index is in memory, per worker: after each rebalance it starts afresh and a scan of
the local ``order_status`` partitions (in a thread, beside the agents) adds the orders
waiting there, so an order stalled on a worker that died is re-driven by its new owner.
Input: the order agent's documents.  Output: ``orders_app-orders-by-customer`` (key
customer_id), ``orders_app-stock-commands`` (key sku); one WARNING line and
``orders_redriven_total{topic}`` per re-send.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from agents.order_flow import Out, awaited, waiting
from orders_app import records
from orders_app.app import app
from orders_app.topics import BY_NAME
from tables.order_status import order_status
from tables.outside_stream import has_raw_store, rows

log = logging.getLogger(__name__)


@dataclass
class OpenOrders:
    """Waiting orders -> when each last moved; and the latest such time among orders
    that have finished waiting since (what "overtaken" compares with)."""

    since: dict[str, float] = field(default_factory=dict)
    finished: float = 0.0

    def moved(self, order_id: str, doc: dict[str, Any] | None, now: float) -> None:
        if waiting(doc):
            self.since[order_id] = now
            return
        was = self.since.pop(order_id, None)
        if was is not None and was > self.finished:
            self.finished = was

    def due(self, now: float, after: float) -> list[str]:
        """Orders still for ``after`` seconds that a later-moving order overtook."""
        return [o for o, t in self.since.items() if now - t >= after and t < self.finished]

    def reset(self, waiting_ids: list[str], now: float) -> None:
        self.since = dict.fromkeys(waiting_ids, now)
        self.finished = 0.0

    def add(self, waiting_ids: list[str], now: float) -> None:
        """Orders found waiting by a scan (kept when already noted since)."""
        for order_id in waiting_ids:
            self.since.setdefault(order_id, now)


open_orders = OpenOrders()


async def emit(out: Out) -> None:
    await BY_NAME[out.topic].send(
        key=out.key.encode(), value=records.encode(out.record), timestamp=out.timestamp
    )


async def redrive_once(now: float, after: float) -> int:
    """Send again what each due order waits for; -> orders re-driven."""
    n = 0
    for order_id in open_orders.due(now, after):
        doc = order_status.get(order_id)
        sends = awaited(doc, now)
        if not sends:
            open_orders.moved(order_id, doc, now)
            continue
        log.warning(
            "order %s has not moved for %.0f s (status %s): %s sent again",
            order_id,
            now - open_orders.since[order_id],
            (doc or {}).get("status"),
            ", ".join(sorted({out.topic for out in sends})),
            extra={"order_id": order_id},
        )
        for out in sends:
            await emit(out)
            app.metrics.redriven.labels(out.topic).inc()
        open_orders.since[order_id] = now
        n += 1
    return n


def _waiting_ids() -> list[str]:
    return [key for key, _at, doc in rows(order_status) if waiting(doc)]


async def reindex() -> None:
    """Note the orders waiting on the partitions this worker owns now."""
    started = time.time()
    try:
        if has_raw_store(order_status):
            found = await asyncio.to_thread(_waiting_ids)
        else:
            found = _waiting_ids()
    except Exception:  # the next rebalance scans again; the agents go on meanwhile
        log.exception("re-drive: could not scan the order documents")
        return
    open_orders.add(found, started)


_scans: set[asyncio.Task[None]] = set()


@app.on_rebalance_complete.connect  # type: ignore[arg-type]
async def on_rebalance_complete(sender: Any, **kwargs: Any) -> None:
    """Start afresh: what was noted may belong to another worker now.  The scan of the
    order documents runs beside the agents (Faust awaits this handler before it resumes
    them; nothing here needs to be ready by then), and what it finds is added to what
    the order agent notes meanwhile."""
    open_orders.reset([], time.time())
    scan = asyncio.create_task(reindex())
    _scans.add(scan)
    scan.add_done_callback(_scans.discard)


@app.task  # type: ignore[untyped-decorator]
async def redrive_stalled() -> None:
    after = app.settings.redrive_after
    if after <= 0:
        return
    interval = max(0.5, after / 4)
    while not app.should_stop:
        await asyncio.sleep(interval)
        if app.rebalancing or getattr(app, "in_recovery", False):
            continue
        try:
            await redrive_once(time.time(), after)
        except Exception:  # a failed round is tried again next time; the worker goes on
            log.exception("re-drive of stalled orders failed; retrying in %.0f s", interval)
