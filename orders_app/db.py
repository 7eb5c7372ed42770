"""Postgres access: schema migration, demo catalogue, order inserts, and the pool service.

Rule: Postgres is the source of truth.  ``orders`` and ``products`` are in the CDC
publication (``dbz_publication``, the name Debezium's ``publication.autocreate.mode``
uses); projections the app writes back (``order_status_view``, ``country_stats_view``,
``country_window_view``, written by the outcome sink: orders_app/sink.py) are not, so
nothing loops.  Migrations are idempotent and run by the app, never by hand.
An order insert commits before the caller answers; the event reaches Kafka only
through CDC (no dual write).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from mode import Service

Conn = asyncpg.Connection | PoolConnectionProxy  # type: ignore[type-arg]

PUBLICATION = "dbz_publication"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS orders (
    id              text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    customer_id     text NOT NULL,
    country         char(2) NOT NULL,
    currency        char(3) NOT NULL,
    total           numeric(14, 2) NOT NULL CHECK (total >= 0),
    lines           jsonb NOT NULL,
    payment_method  text NOT NULL DEFAULT 'tok_visa',
    created_at      timestamptz NOT NULL DEFAULT now(),
    idempotency_key text UNIQUE
);
CREATE TABLE IF NOT EXISTS products (
    sku   text PRIMARY KEY,
    name  text NOT NULL,
    price numeric(14, 2) NOT NULL CHECK (price >= 0),
    stock integer NOT NULL CHECK (stock >= 0)
);
CREATE TABLE IF NOT EXISTS order_status_view (
    order_id   text PRIMARY KEY,
    status     text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS country_stats_view (
    country    char(2) PRIMARY KEY,
    orders     bigint NOT NULL,
    revenue    numeric(18, 2) NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- What the outcome sink (orders_app/sink.py) writes; added to the first schema, so an
-- older database gets them too.
ALTER TABLE order_status_view
    ADD COLUMN IF NOT EXISTS customer_id text,
    ADD COLUMN IF NOT EXISTS country     char(2),
    ADD COLUMN IF NOT EXISTS currency    char(3),
    ADD COLUMN IF NOT EXISTS total       numeric(14, 2),
    ADD COLUMN IF NOT EXISTS reasons     jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN IF NOT EXISTS history     jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN IF NOT EXISTS terminal_at timestamptz,
    ADD COLUMN IF NOT EXISTS version     integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS written_at  timestamptz NOT NULL DEFAULT 'epoch',
    ADD COLUMN IF NOT EXISTS document    jsonb;
ALTER TABLE country_stats_view
    ADD COLUMN IF NOT EXISTS by_status           jsonb NOT NULL DEFAULT '{{}}',
    ADD COLUMN IF NOT EXISTS average_order_value numeric(18, 2) NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS at                  timestamptz NOT NULL DEFAULT 'epoch';
CREATE TABLE IF NOT EXISTS country_window_view (
    country      char(2) NOT NULL,
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    orders       bigint NOT NULL,
    revenue      numeric(18, 2) NOT NULL,
    at           timestamptz NOT NULL,
    PRIMARY KEY (country, window_start)
);
-- Full before-images in update/delete events, as Debezium users expect.
ALTER TABLE orders REPLICA IDENTITY FULL;
ALTER TABLE products REPLICA IDENTITY FULL;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = '{PUBLICATION}') THEN
        CREATE PUBLICATION {PUBLICATION} FOR TABLE orders, products;
    END IF;
END
$$;
"""

# A small demo catalogue; a few skus are scarce so out-of-stock cancellations happen.
DEMO_CATALOGUE: tuple[tuple[str, str, str, int], ...] = tuple(
    (f"SKU-{i:04d}", f"Demo product {i}", f"{(i * 7) % 90 + 4.99:.2f}", 5 if i > 20 else 100_000)
    for i in range(1, 25)
)


async def migrate(conn: Conn) -> None:
    """Create the schema and publication if missing (safe to run on every start)."""
    # Serialise concurrent migrators (several workers starting at once).
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(727274)")
        await conn.execute(SCHEMA)


async def seed_catalogue(
    conn: Conn, catalogue: tuple[tuple[str, str, str, int], ...] = DEMO_CATALOGUE
) -> int:
    """Insert the demo products only when ``products`` is empty; returns rows inserted."""
    async with conn.transaction():
        await conn.execute("LOCK TABLE products IN EXCLUSIVE MODE")
        if await conn.fetchval("SELECT count(*) FROM products"):
            return 0
        await conn.executemany(
            "INSERT INTO products (sku, name, price, stock) VALUES ($1, $2, $3::numeric, $4)",
            list(catalogue),
        )
        return len(catalogue)


@dataclass(frozen=True)
class NewOrder:
    customer_id: str
    country: str
    currency: str
    total: Decimal
    lines: list[dict[str, Any]]
    payment_method: str
    idempotency_key: str | None = None
    order_id: str | None = None


INSERT_ORDER = """
INSERT INTO orders (id, customer_id, country, currency, total, lines, payment_method,
                    idempotency_key)
VALUES (COALESCE($1, gen_random_uuid()::text), $2, $3, $4, $5, $6::jsonb, $7, $8)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id, customer_id, country, currency, total, lines::text AS lines, payment_method,
          created_at, idempotency_key
"""

SELECT_BY_KEY = """
SELECT id, customer_id, country, currency, total, lines::text AS lines, payment_method,
       created_at, idempotency_key
FROM orders WHERE idempotency_key = $1
"""


def lines_json(lines: list[dict[str, Any]]) -> str:
    return json.dumps(lines, default=str, separators=(",", ":"))


async def insert_order(conn: Conn, order: NewOrder) -> tuple[dict[str, Any], bool]:
    """Insert one order; returns (row, created).  The same idempotency key twice returns the
    first row and ``created=False``; never a second row."""
    row = await conn.fetchrow(
        INSERT_ORDER,
        order.order_id,
        order.customer_id,
        order.country,
        order.currency,
        order.total,
        lines_json(order.lines),
        order.payment_method,
        order.idempotency_key,
    )
    if row is not None:
        return _row_dict(row), True
    existing = await conn.fetchrow(SELECT_BY_KEY, order.idempotency_key)
    assert existing is not None  # the conflict row exists: the key is unique
    return _row_dict(existing), False


def _row_dict(row: asyncpg.Record | Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["lines"] = json.loads(out["lines"])
    return out


class Database(Service):
    """The worker's asyncpg pool; migrates the schema when it starts."""

    pool: asyncpg.Pool | None = None

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10, **kwargs: Any) -> None:
        self.dsn = dsn
        self.min_size = min_size
        self.max_size = max_size
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        self.pool = await asyncpg.create_pool(
            self.dsn, min_size=self.min_size, max_size=self.max_size, command_timeout=30
        )
        async with self.pool.acquire() as conn:
            await migrate(conn)

    async def on_stop(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    def acquire(self) -> Any:
        if self.pool is None:
            raise RuntimeError("database pool is not started")
        return self.pool.acquire()

    async def ping(self) -> bool:
        if self.pool is None:
            return False
        try:
            async with self.pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")
            return True
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False


async def catalogue_level(conn: Conn, sku: str) -> int | None:
    """The sku's catalogue stock level (``products.stock``: initial + restocks so far), or
    None for a sku the catalogue does not have."""
    level = await conn.fetchval("SELECT stock FROM products WHERE sku = $1", sku)
    return None if level is None else int(level)


async def recorded_document(conn: Conn, order_id: str) -> dict[str, Any] | None:
    """The order's document as the outcome sink recorded it (``order_status_view``), or
    None when Postgres has no outcome for it."""
    raw = await conn.fetchval(
        "SELECT document FROM order_status_view WHERE order_id = $1", order_id
    )
    if raw is None:
        return None
    document = json.loads(raw)
    return document if isinstance(document, dict) else None


async def drop_idle_slot(dsn: str, slot: str, *, wait_s: float = 0.0) -> bool:
    """Drop replication slot ``slot`` of this database once nothing reads it (waiting up to
    ``wait_s`` for the walsender of a just-stopped reader to let go); True if dropped.

    A slot nobody reads holds back WAL forever."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            active = await conn.fetchval(
                "SELECT active FROM pg_replication_slots "
                "WHERE slot_name = $1 AND database = current_database()",
                slot,
            )
            if active is None:
                return False
            if not active:
                await conn.execute("SELECT pg_drop_replication_slot($1)", slot)
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
