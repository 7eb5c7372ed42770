"""Pre-flight checks: reach the broker and Postgres before a worker starts, and report a
failure as one line naming the setting (no traceback wall)."""

from __future__ import annotations

import asyncio

import asyncpg

from orders_app.embedded.servers import StackError, wait_for_kafka
from orders_app.settings import Settings


async def check_broker(settings: Settings, timeout: float = 5.0) -> str | None:
    try:
        await wait_for_kafka(settings.kafka_bootstrap, timeout=timeout)
    except StackError as err:
        return f"cannot reach the broker (ORDERS_BROKER_URL={settings.broker_url}): {err}"
    return None


async def check_postgres(settings: Settings, timeout: float = 5.0) -> str | None:
    try:
        conn = await asyncio.wait_for(asyncpg.connect(settings.postgres_dsn), timeout)
        await conn.close()
    except (OSError, asyncpg.PostgresError, TimeoutError, ValueError) as err:
        return f"cannot reach Postgres (ORDERS_POSTGRES_DSN={settings.postgres_dsn}): {err}"
    return None


async def broker_cluster_id(settings: Settings, timeout: float = 5.0) -> str | None:
    """The broker's cluster id (DescribeCluster), or None when it does not say."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        await asyncio.wait_for(admin.start(), timeout)
        described = await asyncio.wait_for(admin.describe_cluster(), timeout)
    except Exception:  # noqa: BLE001 - an old broker without DescribeCluster: not probed
        return None
    finally:
        await admin.close()
    cluster = described.get("cluster_id") if isinstance(described, dict) else None
    return str(cluster) if cluster else None


async def preflight(settings: Settings) -> list[str]:
    results = await asyncio.gather(check_broker(settings), check_postgres(settings))
    return [r for r in results if r]
