"""CDC agent: Debezium envelopes -> domain events.

Input ``orders_db.public.orders`` (key ``{"id": ...}``) -> ``order_created`` (key
order_id); input ``orders_db.public.products`` (key ``{"sku": ...}``) ->
``orders_app-stock-commands`` restock (key sku).  Works identically on Debezium's and the
embedded reader's events.  Idempotent on replays (snapshot/stream overlap, redelivery):
an order already emitted from another change is not emitted again (``cdc_seen``: order
id -> LSN, written from the orders CDC stream); a redelivery of the same change emits
again (downstream is idempotent per order id), so a crash between the two writes loses
nothing.  Tombstones are skipped; anything undecodable is dead-lettered.
Rules: :mod:`agents.cdc_rules`.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from agents.cdc_rules import CREATE_OPS, envelope, order_from_row, product_level
from orders_app.app import app
from orders_app.records import ChangeEvent, DecodeError, StockCommand
from orders_app.streams import dead_letter, send
from orders_app.topics import ORDER_CREATED, ORDERS_CDC, PRODUCTS_CDC, STOCK_COMMANDS
from tables import json_table

cdc_seen = json_table(
    "cdc_seen",
    help="order id -> LSN of the change already turned into order_created",
)


def expect_table(change: ChangeEvent, table: str) -> None:
    if change.source.table != table:
        raise DecodeError(f"source.table: {change.source.table!r} on the {table} topic")


def observe(table: str, op: str, source_ts_ms: int) -> None:
    app.metrics.cdc_events.labels(table, op).inc()
    if op != "r":  # snapshot reads are not behind the database
        app.metrics.cdc_lag.set(max(0.0, time.time() - source_ts_ms / 1000))


def _parse(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise DecodeError(f"invalid JSON: {err}") from err


@app.agent(ORDERS_CDC, name="cdc-orders")
async def orders_changes(stream: Any) -> None:
    async for event in stream.events():
        if event.value is None:
            continue  # tombstone after a delete
        try:
            change = envelope(_parse(event.value))
            expect_table(change, "orders")
            observe(change.source.table, change.op, change.source.ts_ms)
            if change.op not in CREATE_OPS:
                continue
            assert change.after is not None
            order = order_from_row(change.after)
        except (DecodeError, TypeError, ValueError, ArithmeticError) as err:
            await dead_letter(event, str(err), "cdc")
            continue
        lsn = change.source.lsn or 0
        seen = cdc_seen.get(order.order_id)
        if seen is not None and seen != lsn:
            continue  # the same order from another change (snapshot/stream overlap)
        # First time, or a redelivery of the very same change: emit (again), since a
        # crash may have kept the cdc_seen record and lost the order_created one.
        cdc_seen[order.order_id] = lsn
        await send(ORDER_CREATED, order.order_id, order, timestamp=order.created_at)


@app.agent(PRODUCTS_CDC, name="cdc-products")
async def products_changes(stream: Any) -> None:
    async for event in stream.events():
        if event.value is None:
            continue
        try:
            change = envelope(_parse(event.value))
            expect_table(change, "products")
            observe(change.source.table, change.op, change.source.ts_ms)
            if change.op not in {"c", "r", "u"}:
                continue
            assert change.after is not None
            sku, level = product_level(change.after)
        except (DecodeError, TypeError, ValueError, ArithmeticError) as err:
            await dead_letter(event, str(err), "cdc")
            continue
        await send(
            STOCK_COMMANDS,
            sku,
            StockCommand(
                op="restock", sku=sku, quantity=level, order_id="", lines_total=0, at=time.time()
            ),
        )
