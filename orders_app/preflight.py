"""Pre-flight checks: reach the broker and Postgres before a worker starts, and report a
failure as one line naming the setting (no traceback wall)."""

from __future__ import annotations

import asyncio

import asyncpg

from orders_app.embedded import StackError, wait_for_kafka
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


async def preflight(settings: Settings) -> list[str]:
    results = await asyncio.gather(check_broker(settings), check_postgres(settings))
    return [r for r in results if r]
