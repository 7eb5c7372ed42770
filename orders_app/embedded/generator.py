"""Load generator: realistic orders into Postgres (default) or straight to ``order_created``.

Rule: the Postgres path is the real one (row committed -> CDC -> Kafka); ``--direct``
produces ``OrderCreated`` keyed by order_id for broker-only runs and benchmarks.  The mix:
mostly normal orders over 24 countries, some declined cards, a few large orders (fraud),
and a few orders for scarce skus (out of stock).  Rate-limited, bounded by ``count``.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal

from orders_app.db import DEMO_CATALOGUE, NewOrder, insert_order
from orders_app.records import OrderCreated, OrderLine, encode

COUNTRIES = (
    "DE",
    "FR",
    "GB",
    "US",
    "NL",
    "ES",
    "IT",
    "PL",
    "SE",
    "NO",
    "DK",
    "FI",
    "AT",
    "CH",
    "BE",
    "IE",
    "PT",
    "CZ",
    "JP",
    "CA",
    "AU",
    "BR",
    "MX",
    "IN",
)
CURRENCY = {
    "GB": "GBP",
    "US": "USD",
    "SE": "SEK",
    "NO": "NOK",
    "DK": "DKK",
    "CH": "CHF",
    "PL": "PLN",
    "CZ": "CZK",
    "JP": "JPY",
    "CA": "CAD",
    "AU": "AUD",
    "BR": "BRL",
    "MX": "MXN",
    "IN": "INR",
}
TOKENS_OK = ("tok_visa", "tok_mastercard", "tok_amex")
TOKENS_DECLINED = (
    "tok_chargeDeclined",
    "tok_chargeDeclinedInsufficientFunds",
    "tok_chargeDeclinedExpiredCard",
)


def make_order(rng: random.Random, customers: int = 500) -> NewOrder:
    catalogue = DEMO_CATALOGUE
    plentiful = [c for c in catalogue if c[3] > 100]
    scarce = [c for c in catalogue if c[3] <= 100]
    country = rng.choice(COUNTRIES)
    roll = rng.random()
    n_lines = rng.choice((1, 1, 1, 2, 3))
    picks = rng.sample(plentiful, n_lines)
    if roll < 0.03 and scarce:
        picks.append(rng.choice(scarce))
    lines = [
        {"sku": sku, "quantity": rng.randint(1, 3), "unit_price": price}
        for sku, _n, price, _s in picks
    ]
    if roll > 0.98:
        lines[0]["quantity"] = 80  # big order: over the fraud limit
    total = sum(
        (Decimal(str(ln["unit_price"])) * int(str(ln["quantity"])) for ln in lines), Decimal("0")
    )
    token = rng.choice(TOKENS_DECLINED) if 0.03 <= roll < 0.08 else rng.choice(TOKENS_OK)
    return NewOrder(
        customer_id=f"c-{rng.randrange(customers)}",
        country=country,
        currency=CURRENCY.get(country, "EUR"),
        total=total.quantize(Decimal("0.01")),
        lines=lines,
        payment_method=token,
        idempotency_key=None,
    )


def to_event(
    order: NewOrder, order_id: str | None = None, created_at: float | None = None
) -> OrderCreated:
    return OrderCreated(
        order_id=order_id or order.order_id or str(uuid.uuid4()),
        customer_id=order.customer_id,
        country=order.country,
        currency=order.currency,
        total=order.total,
        lines=[
            OrderLine(
                sku=ln["sku"],
                quantity=int(ln["quantity"]),
                unit_price=Decimal(str(ln["unit_price"])),
            )
            for ln in order.lines
        ],
        payment_method=order.payment_method,
        created_at=created_at if created_at is not None else time.time(),
    )


async def paced(rate: float, count: int | None, emit: Callable[[int], Awaitable[None]]) -> int:
    """Call ``emit(i)`` ``count`` times (forever when None) at ``rate``/s; returns calls."""
    start = time.monotonic()
    i = 0
    while count is None or i < count:
        await emit(i)
        i += 1
        if rate > 0:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    return i


async def generate_postgres(
    dsn: str, rate: float, count: int | None, seed: int | None = None
) -> int:
    import asyncpg

    rng = random.Random(seed)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:

        async def emit(_i: int) -> None:
            async with pool.acquire() as conn:
                await insert_order(conn, make_order(rng))

        return await paced(rate, count, emit)
    finally:
        await pool.close()


async def generate_direct(
    bootstrap: str, rate: float, count: int | None, seed: int | None = None
) -> int:
    from aiokafka import AIOKafkaProducer

    rng = random.Random(seed)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:

        async def emit(_i: int) -> None:
            event = to_event(make_order(rng))
            await producer.send(
                "order_created",
                key=event.order_id.encode(),
                value=encode(event),
                timestamp_ms=int(event.created_at * 1000),
            )

        sent = await paced(rate, count, emit)
        await producer.flush()
        return sent
    finally:
        await producer.stop()
