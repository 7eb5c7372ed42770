"""Guards against faust-streaming defects that skip records silently after an
assignment (the range skip of issue 13), and one that hangs a rebalance.

Rule: every record the consumer hands to the agents is processed or redelivered; none is
counted as read, acknowledged through a "gap" and committed past without reaching its
agent.

Defects 1 and 3 strike a worker that starts behind a backlog, with no rebalance, as the
SIGKILL crash test's replacement worker does; its loss (48 consecutive ``order_validated``
records of one partition the payment agent never saw) fits defect 3 best.

Defect 1 (faust-streaming 0.15.3 with mode-streaming 0.7.1).  After every assignment, the
first included, ``Recovery.on_recovery_completed``
(``faust/tables/recovery.py``, ``_resume_streams`` likewise) runs::

    consumer.resume_partitions(<stream partitions>)
    await consumer.perform_seek()        # one committed-offset request per partition
    self.app.flow_control.resume()
    consumer.resume_flow()

Flow control is already active then (recovery resumed it), so records are fetched and
delivered into the agents' channel queues during ``perform_seek``'s walk over every
partition.  ``FlowControlEvent.resume`` (``mode/utils/queues.py``) then *clears* every
channel queue (they are ``clear_on_resume=True``) without checking that the flow was ever
suspended: events of the current generation, already counted as read, vanish unprocessed
and unacknowledged.  ``perform_seek`` has meanwhile reset the read offsets to the committed
ones, so the next delivery looks like a jump and ``Consumer._drain_messages`` passes the
range to ``_add_gap``, which the next commit skips (``_new_offset``).  The lost range is
whatever sat in an agent's queue at that instant: no error, no dead letter, no rebalance
needed (reproduced in tests/integration/test_range_skip.py).  A shorter fetch wait
delivers more during the walk, so it loses more often.
Guard: ``resume`` clears the queues only when it ends a suspension (upstream: the same
test in ``FlowControlEvent.resume``, or Faust calling ``resume`` only when suspended).
The same walk leaves a second hole: ``perform_seek`` ends by resetting every read offset to
the committed one, below the records it delivered meanwhile, so the next delivery still
becomes a gap, and a commit can pass records still waiting in a queue (a crash then loses
them).  Guard: that reset does not move a read offset back below a delivery of the same
assignment (the revoke pops them all, so every one left was delivered since); the
refetched duplicates are dropped as already read, and nothing becomes a gap.

Defect 2 (``faust/transport/consumer.py``, ``Consumer._drain_messages``)::

    await self.wait_first(callback(message), self.suspend_flow.wait())
    set_read_offset(tp, offset)

A rebalance pops the revoked partitions' read offsets (``on_partitions_revoked``), then
stops the flow.  A delivery waiting at that moment (its agent's buffer full) is cancelled
by ``wait_first``, yet its offset ``M`` is stored as read *after* the pop.  The revoke
clears the agents' buffers and commits only what they acknowledged, so the committed
offset ``C`` is below ``M``.  If the partition comes back to this worker, records ``C ..
M-1`` refetched during ``perform_seek``'s walk are dropped by ``offset >= r_offset``
(``DROPPED MESSAGE ROFF``, a dev-level log line), aiokafka moves past them, and the reset
read offset turns the next delivery into a gap that is committed past.
Guard: a read offset records only a delivery that completed (upstream::

    delivery = callback(message)
    results = await self.wait_first(delivery, self.suspend_flow.wait())
    if delivery in results.done:
        set_read_offset(tp, offset)

).  Here, without copying ``_drain_messages``: the consumer's callback marks each message
pending until its delivery completes, and the read-offset mapping ignores the one write
``_drain_messages`` makes for a message whose delivery did not complete.  Both are
installed before the fetcher starts (``_drain_messages`` binds them when it starts).

Defect 3 (faust-streaming with aiokafka 0.14): Faust passes its *live* set of active
partitions to ``Fetcher.fetched_records`` (``AIOKafkaConsumerThread._fetch_records``), and
aiokafka reads an empty set as "every partition" (``if partitions and tp not in
partitions``).  When the set empties while a fetch waits (recovery pausing the changelogs
while the stream partitions are still paused), aiokafka hands out the paused partitions'
records and moves past them; ``Consumer.getmany`` drops them as not active.  The seek to
the committed offsets repairs that only if nothing of the partition was delivered before
its seek; otherwise the refetched records are dropped as already read (seen: 58
``order_validated`` records of one partition, detected by orders_app/faust_patches/gaps.py).
Guard: aiokafka is given a view of the live set that is never "empty" to it, so a paused
partition's records stay in its buffer (upstream: Faust passes no empty set, or aiokafka
takes ``None``, not an empty set, for "every partition").

Defect 4 (``FlowControlEvent.clear`` with ``Consumer.wait_empty``).  A message read by two
agents (``order_created``: the fraud repartition and the status agent) is counted twice
(``message.incref(2)`` in the conductor).  The revoke clears the channel queues; when one
copy is cleared while the other is being processed, the processed copy's ack brings the
count to 1, never 0, and the message stays in ``_unacked_messages``, which the
processing stream's ``current_event`` keeps alive.  ``wait_empty`` then loops until the
session times out: the worker hangs in the rebalance (faust-streaming #133's symptom;
seen once in six SIGKILL runs of tests/e2e/test_supervised_run.py).  A copy blocked on
a full queue when the flow stops is lost the same way, outside any queue.
Guard: a cleared copy releases its count, and when the message's last count goes the
consumer forgets it without acknowledging it; past ``WAIT_EMPTY_LIMIT_S`` a revoke
forgets whatever is still counted.  ``wait_empty`` still waits for copies being
processed (up to the limit), and forgotten offsets stay uncommitted, so those messages
are redelivered after the assignment (at-least-once) instead of committed past.

Defect 5 (``Consumer.on_partitions_revoked`` with the streams' skip path).  The revoke
pops the revoked partitions' committed offsets before the streams have drained; a stream
that finds the flow inactive acknowledges the event it skips (Faust's iterator, and a
batch taken just before), and ``_new_offset`` with no committed offset has no head-gap
check, so the revoke's commit can pass records that were never processed.
Guard: while the flow is suspended an acknowledgement forgets the message instead
(redelivered, not committed).

Behaviour changes only where the defects bite: interrupted or cleared deliveries are
processed (or redelivered after a rebalance, at-least-once) instead of skipped.
:func:`install` applies all five; ``enabled=False`` (the caller's setting) leaves Faust
as it is.

Reads/writes: the app's ``flow_control.resume`` and ``clear``; the Faust consumer's
``ack``, ``wait_empty``, ``callback`` and ``_read_offset``; the aiokafka fetcher's
``fetched_records`` (once started).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from mode.utils.futures import notify

log = logging.getLogger(__name__)

__all__ = [
    "LivePartitions",
    "ReadOffsets",
    "guard_fetched_records",
    "guard_flow_clear",
    "guard_flow_resume",
    "guard_read_offsets",
    "install",
]


class ReadOffsets(defaultdict[Any, int | None]):
    """Faust's read offsets (``defaultdict(lambda: None)``) that refuse to record a
    message whose delivery is still pending (interrupted), and that ``perform_seek``'s
    reset does not move back below a delivery of the current assignment."""

    def __init__(self, pending: set[tuple[Any, int]]) -> None:
        super().__init__(_none)
        self.pending = pending
        self.refused = 0

    def __setitem__(self, tp: Any, offset: int | None) -> None:
        if offset is not None and (tp, offset) in self.pending:
            self.pending.discard((tp, offset))
            self.refused += 1
            log.info(
                "delivery of %s[%s]@%s interrupted by a rebalance: not recorded as read",
                tp.topic,
                tp.partition,
                offset,
            )
            return
        super().__setitem__(tp, offset)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # Only Consumer.perform_seek updates in bulk: the committed offsets it sought to.
        for tp, offset in dict(*args, **kwargs).items():
            current = self.get(tp)
            if offset is not None and current is not None and current >= offset:
                continue  # delivered at or past the committed offset since the assignment
            super().__setitem__(tp, offset)


def _none() -> None:
    return None


def guard_read_offsets(consumer: Any) -> ReadOffsets:
    """Install the guard on a Faust consumer that has not started fetching yet."""
    current = consumer._read_offset
    if isinstance(current, ReadOffsets):
        return current
    pending: set[tuple[Any, int]] = set()
    offsets = ReadOffsets(pending)
    offsets.update(current)
    consumer._read_offset = offsets
    deliver: Callable[[Any], Awaitable[None]] = consumer.callback

    async def tracked(message: Any) -> None:
        key = (message.tp, message.offset)
        pending.add(key)
        await deliver(message)  # cancelled: the key stays pending, the write is refused
        pending.discard(key)

    consumer.callback = tracked
    return offsets


def guard_flow_resume(flow_control: Any) -> None:
    """Make ``flow_control.resume()`` clear the queues only when it ends a suspension."""
    if getattr(flow_control, "_resume_guarded", False):
        return
    resume: Callable[[], None] = flow_control.resume

    def resume_guarded() -> None:
        if flow_control.is_active():
            # Already flowing: the queues hold this assignment's deliveries, not stale
            # ones from before a suspension.
            return
        resume()

    flow_control.resume = resume_guarded
    flow_control._resume_guarded = True


#: How long a revoke (or a stop) waits for the events being processed before it forgets
#: the messages still counted (defect 4): they stay uncommitted and are redelivered.
WAIT_EMPTY_LIMIT_S = 3.0


def guard_flow_clear(
    flow_control: Any, consumer: Any, *, wait_limit: float = WAIT_EMPTY_LIMIT_S
) -> None:
    """Defects 4 and 5: cleared or skipped events are forgotten, never acknowledged for
    a commit, and a revoke's wait for the events in flight is bounded."""
    if getattr(flow_control, "_clear_guarded", False):
        return
    clear: Callable[[], None] = flow_control.clear
    ack: Callable[[Any], bool] = consumer.ack
    wait_empty: Callable[[], Awaitable[None]] = consumer.wait_empty
    dropped: weakref.WeakSet[Any] = weakref.WeakSet()

    def forget(message: Any) -> None:
        # Out of the unacked set (so wait_empty ends), not in the acked offsets (so no
        # commit passes it): the message is redelivered after the assignment.
        message.acked = True
        consumer._unacked_messages.discard(message)
        notify(consumer._waiting_for_ack)

    def ack_guarded(message: Any) -> bool:
        if message in dropped:
            dropped.discard(message)
            forget(message)
            return False
        if not flow_control.is_active():
            # Defect 5: while a revoke (or a stop) has the flow suspended, an ack may be
            # of an event skipped unprocessed (Faust's stream acks what it skips then),
            # and the revoked partitions' committed offsets are already popped, so the
            # commit would pass records never processed.  What finished meanwhile is
            # redelivered instead (at-least-once; the agents are idempotent).
            forget(message)
            return False
        return ack(message)

    def clear_guarded() -> None:
        copies: dict[int, tuple[Any, int]] = {}
        for queue in list(flow_control._queues):
            for event in list(queue._queue):
                message = getattr(event, "message", None)
                if message is not None and not message.acked:
                    _, n = copies.get(id(message), (message, 0))
                    copies[id(message)] = (message, n + 1)
        clear()
        for message, n in copies.values():
            dropped.add(message)
            if not message.decref(n):
                ack_guarded(message)
        if copies:
            log.info("%d queued messages cleared: left unacknowledged for redelivery", len(copies))

    async def wait_empty_bounded() -> None:
        # A copy can also be lost outside the queues (a delivery blocked on a full
        # queue when the flow stopped): past the limit, what is still counted is
        # forgotten, and Faust's own loop then ends and commits what was acknowledged.
        task = asyncio.ensure_future(wait_empty())
        done, _ = await asyncio.wait({task}, timeout=wait_limit)
        if not done:
            stuck = list(consumer._unacked_messages)
            for message in stuck:
                forget(message)
            if stuck:
                log.warning(
                    "%d messages still counted %.0f s into a revoke: left for redelivery",
                    len(stuck),
                    wait_limit,
                )
        await task

    consumer.ack = ack_guarded
    consumer.wait_empty = wait_empty_bounded
    flow_control.clear = clear_guarded
    flow_control._clear_guarded = True


class LivePartitions:
    """Faust's live set of active partitions as aiokafka must read it: never "empty"
    (aiokafka's word for every partition), membership as the live set says now."""

    __slots__ = ("live",)

    def __init__(self, live: Any) -> None:
        self.live = live

    def __bool__(self) -> bool:
        return True

    def __contains__(self, tp: object) -> bool:
        return tp in self.live

    def __iter__(self) -> Any:
        return iter(self.live)


def guard_fetched_records(client: Any) -> None:
    """Wrap a started ``AIOKafkaConsumer``'s fetcher so an emptied live partition set
    hands out nothing."""
    fetcher = client._fetcher
    if getattr(fetcher, "_live_guarded", False):
        return
    fetched_records = fetcher.fetched_records

    async def guarded(partitions: Any, timeout: float = 0, max_records: Any = None) -> Any:
        if partitions is not None and not isinstance(partitions, LivePartitions):
            partitions = LivePartitions(partitions)
        return await fetched_records(partitions, timeout=timeout, max_records=max_records)

    fetcher.fetched_records = guarded
    fetcher._live_guarded = True


def on_client_started(consumer: Any, hook: Callable[[Any], object]) -> None:
    """Call ``hook(client)`` on the aiokafka consumer a Faust consumer creates, once
    that client has started (its fetcher exists only then)."""
    thread = consumer._thread  # creates the aiokafka consumer when it starts
    create = thread._create_consumer

    def create_hooked(*args: Any, **kwargs: Any) -> Any:
        client = create(*args, **kwargs)
        start = client.start

        async def start_hooked() -> None:
            await start()
            hook(client)

        client.start = start_hooked
        return client

    thread._create_consumer = create_hooked


def install(app: Any, consumer: Any, *, enabled: bool = True) -> None:
    """Apply the guards to a worker's app and its (not yet started) consumer."""
    if not enabled:
        return
    guard_flow_resume(app.flow_control)
    guard_flow_clear(app.flow_control, consumer)
    guard_read_offsets(consumer)
    on_client_started(consumer, guard_fetched_records)
