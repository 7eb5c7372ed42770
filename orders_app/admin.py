"""Topic administration: create every registry topic with the configured partitions.

Rule: topics are created before anything produces to them, so a producer never triggers
broker-side auto-creation with a different partition count (which would break
co-partitioning).  Existing topics are left as they are.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)


async def ensure_topics(
    bootstrap: str, names: list[str], partitions: int, replication: int = 1
) -> list[str]:
    """Create the missing topics; returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                await admin.create_topics([NewTopic(n, partitions, replication) for n in missing])
            except TopicAlreadyExistsError:
                pass
        return missing
    finally:
        await admin.close()


async def wait_for_topics(
    bootstrap: str, names: list[str], *, interval: float = 0.5, stop: Any = None
) -> None:
    """Wait until every topic in ``names`` exists, without creating any: a consumer that
    subscribes to a topic its owner has not created yet (a table's changelog, created by
    Faust at start-up) would have the broker auto-create it with the broker's default
    partition count, and the owner would then refuse it (``PartitionsMismatch``)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        while not (stop is not None and stop()):
            if set(names) <= set(await admin.list_topics()):
                return
            await asyncio.sleep(interval)
    finally:
        await admin.close()


def registry_topic_names() -> list[str]:
    from orders_app.topics import SPECS

    return [s.name for s in SPECS]
