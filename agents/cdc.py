"""CDC agent: Debezium envelopes -> domain events.

Input ``orders_db.public.orders`` (key ``{"id": ...}``) -> ``order_created`` (key
order_id, header ``FRAUD_REQUESTED``) and ``orders_app-orders-by-customer`` (key
customer_id: the order's fraud check starts here, beside the order agent's first step,
not after it - one broker hop less before the order is decided); input
``orders_db.public.products`` (key ``{"sku": ...}``) -> ``orders_app-stock-commands``
restock (key sku).  Works identically on Debezium's and the
embedded reader's events, with the JSON converter's schemas enabled
(``{"schema", "payload"}``) or disabled, keys and values alike.  Idempotent on replays
(snapshot/stream overlap, redelivery): an order already emitted from another change is
not emitted again (``cdc_seen``: order id -> LSN, written from the orders CDC stream); a
redelivery of the same change emits again (downstream is idempotent per order id), so a
crash between the two writes loses nothing.  A snapshot read (``op: "r"``) of an order
whose outcome Postgres records (``order_status_view``, written by the outcome sink) goes
to ``orders_app-order-restores`` instead: restored, not run again (issue 16).
Tombstones are skipped; anything undecodable, or whose step raises, is dead-lettered.
Rules: :mod:`agents.cdc_rules`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from agents.cdc_rules import is_tombstone, order_change, parse_json, product_change
from orders_app.app import app
from orders_app.db import recorded_document
from orders_app.records import ChangeEvent, DecodeError, OrderRestored, StockCommand
from orders_app.streams import dead_letter, guarded, send
from orders_app.topics import (
    FRAUD_REQUESTED,
    ORDER_CREATED,
    ORDER_RESTORES,
    ORDERS_BY_CUSTOMER,
    ORDERS_CDC,
    PRODUCTS_CDC,
    STOCK_COMMANDS,
)
from tables.cdc_seen import cdc_seen

# Postgres unreachable (through the pool); any other error is not waited for.
POSTGRES_DOWN = (TimeoutError, OSError, asyncpg.PostgresConnectionError)
Sleep = Callable[[float], Awaitable[None]]


def recorded_retrying(sleep: Sleep = asyncio.sleep) -> AsyncRetrying:
    """:func:`recorded`'s policy: seven attempts, 0.5 s doubling to 16 s between them
    (31.5 s of waiting), then the last error itself.  A new one per call: tenacity keeps
    the attempt's state in it."""
    return AsyncRetrying(
        retry=retry_if_exception_type(POSTGRES_DOWN),
        wait=wait_exponential(multiplier=0.5, exp_base=2),
        stop=stop_after_attempt(7),
        reraise=True,  # the dead letter names the real error, not tenacity's RetryError
        sleep=sleep,
    )


async def recorded(order_id: str) -> dict[str, Any] | None:
    """The order's recorded document; Postgres unreachable is waited for (up to ~30 s,
    :func:`recorded_retrying`, then the error dead-letters the change): running the order
    again instead could charge it twice."""
    async for attempt in recorded_retrying():
        with attempt:
            async with app.db.acquire() as conn:
                return await recorded_document(conn, order_id)
    raise AssertionError("unreachable: tenacity returns or raises")


def observe(change: ChangeEvent) -> None:
    app.metrics.cdc_events.labels(change.source.table, change.op).inc()
    if change.op != "r":  # snapshot reads are not behind the database
        app.metrics.cdc_lag.set(max(0.0, time.time() - change.source.ts_ms / 1000))


@app.agent(ORDERS_CDC, name="cdc-orders")
async def orders_changes(stream: Any) -> None:
    async for event in stream.events():
        async with guarded(event, "cdc"):
            try:
                value = parse_json(event.value)
                if is_tombstone(value):
                    continue  # the record after a delete
                change, order = order_change(parse_json(event.key), value)
            except (DecodeError, TypeError, ValueError, ArithmeticError) as err:
                await dead_letter(event, str(err), "cdc")
                continue
            observe(change)
            if order is None:
                continue  # updates and deletes of a placed order change nothing
            lsn = change.source.lsn or 0
            seen = cdc_seen.get(order.order_id)
            if seen is not None and seen != lsn:
                continue  # the same order from another change (snapshot/stream overlap)
            if change.op == "r":
                # A snapshot: the order may have run before (a restart on a fresh broker,
                # a new connector snapshot).  What Postgres records of it is restored,
                # not run again (issue 16); an order still at CREATED runs from the start,
                # as does one recorded with a fraud decision but not yet its details (the
                # decision came first and nothing of it was published: restored as is it
                # would never be).
                document = await recorded(order.order_id)
                if (
                    document is not None
                    and document.get("fraud") is not None
                    and document.get("has_details", True)
                ):
                    cdc_seen[order.order_id] = lsn
                    restored = OrderRestored(
                        order_id=order.order_id, document=document, at=time.time()
                    )
                    await send(ORDER_RESTORES, order.order_id, restored)
                    continue
            # First time, or a redelivery of the very same change: emit (again), since a
            # crash may have kept the cdc_seen record and lost the messages.
            cdc_seen[order.order_id] = lsn
            await send(ORDERS_BY_CUSTOMER, order.customer_id, order, timestamp=order.created_at)
            await send(
                ORDER_CREATED,
                order.order_id,
                order,
                timestamp=order.created_at,
                headers=[(FRAUD_REQUESTED, b"1")],
            )


@app.agent(PRODUCTS_CDC, name="cdc-products")
async def products_changes(stream: Any) -> None:
    async for event in stream.events():
        async with guarded(event, "cdc"):
            try:
                value = parse_json(event.value)
                if is_tombstone(value):
                    continue
                change, level = product_change(parse_json(event.key), value)
            except (DecodeError, TypeError, ValueError, ArithmeticError) as err:
                await dead_letter(event, str(err), "cdc")
                continue
            observe(change)
            if level is None:
                continue
            sku, quantity = level
            await send(
                STOCK_COMMANDS,
                sku,
                StockCommand(
                    op="restock",
                    sku=sku,
                    quantity=quantity,
                    order_id="",
                    lines_total=0,
                    at=time.time(),
                ),
            )
