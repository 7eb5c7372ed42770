"""Graceful group exit on the embedded broker.

Rule: aiokafka sends LeaveGroup on stop only when the group generation is above 0, and
Tansu starts generations at 0; without it, a stopped worker's partitions stay with it
until its session times out.  When the worker's consumer thread stops, this sends the
LeaveGroup itself for generation 0 (a best-effort request, as aiokafka's own), so the
other workers take the partitions over at once.  On Kafka (generation >= 1) aiokafka's
own LeaveGroup is sent and this does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.errors import KafkaError
from aiokafka.protocol.group import JoinGroupRequest, LeaveGroupRequest

log = logging.getLogger(__name__)


async def leave_generation_zero(coordinator: Any) -> bool:
    """Send LeaveGroup for a generation-0 member; True when it was sent and accepted."""
    if (
        coordinator is None
        or coordinator.generation != 0
        or coordinator.member_id == JoinGroupRequest.UNKNOWN_MEMBER_ID
        or getattr(coordinator, "_group_instance_id", None) is not None
    ):
        return False
    try:
        await coordinator._send_req(LeaveGroupRequest(coordinator.group_id, coordinator.member_id))
    except (KafkaError, OSError) as err:
        log.warning("LeaveGroup (generation 0) failed: %s", err)
        return False
    log.info("LeaveGroup (generation 0) sent: partitions hand over now")
    return True


def leave_group_on_stop(consumer: Any) -> None:
    """Wrap a Faust consumer's thread stop so a generation-0 member leaves the group."""
    thread = getattr(consumer, "_thread", None)
    if thread is None:
        return
    original: Callable[[], Awaitable[None]] = thread.on_thread_stop

    async def on_thread_stop() -> None:
        inner = getattr(thread, "_consumer", None)
        if inner is not None:
            await leave_generation_zero(getattr(inner, "_coordinator", None))
        await original()

    thread.on_thread_stop = on_thread_stop
