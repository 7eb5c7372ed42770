"""Topic administration: create every registry topic with the configured partitions.

Rule: topics are created before anything produces to them, so a producer never triggers
broker-side auto-creation with a different partition count (which would break
co-partitioning).  Existing topics are left as they are.
"""

from __future__ import annotations

import logging

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


def registry_topic_names() -> list[str]:
    from orders_app.topics import SPECS

    return [s.name for s in SPECS]
