"""Inventory: stock per sku, all-or-nothing per order across sku partitions.

- ``inventory-stock`` (this agent; input ``orders_app-stock-commands``, key sku): the only
  writer of the ``stock`` table; applies reserve / release / restock idempotently (ledger
  per sku and order, ``stock_ledger``) and replies on ``orders_app-stock-replies`` (key
  order_id).  Restocks come from the cdc agent; ``restore`` (a recorded order's
  reservation held again after a restart, no reply) from the order agent.  A reserve
  for a sku this partition has no record of yet (orders overtaking the products
  snapshot on a cold start) takes the sku's catalogue level from Postgres first; only
  a sku the catalogue does not have is out of stock.
- The order side of the saga (start it on a successful charge, collect the replies, emit
  ``inventory_updated`` ``reserved`` | ``out_of_stock`` + releases | ``released``) is a
  step of the order agent (:mod:`agents.order_flow`): the saga state lives in the order's
  document, so it costs no agent and no table of its own.
Rules: :mod:`agents.inventory_rules`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from agents.cdc import recorded_retrying
from agents.inventory_rules import (
    Stock,
    needs_level,
    release,
    reserve,
    restore,
    set_total,
)
from orders_app.app import app
from orders_app.db import catalogue_level
from orders_app.records import StockCommand, StockReply
from orders_app.streams import dead_letter, decoded, guarded, send
from orders_app.topics import STOCK_COMMANDS, STOCK_REPLIES
from tables.corrections import take_stock_fix
from tables.stock import stock, stock_ledger

log = logging.getLogger(__name__)


async def catalogue_stock(sku: str, current: Stock | None) -> Stock | None:
    """``current`` (no record, or one only restored reservations made) with the sku's
    catalogue level from Postgres; ``current`` unchanged for a sku the catalogue does
    not have.  The restock CDC delivers later sets the same total (absolute), so nothing
    is counted twice.  Postgres unreachable is waited for as the cdc agent waits
    (``recorded_retrying``), then the error dead-letters the command."""
    async for attempt in recorded_retrying():
        with attempt:
            async with app.db.acquire() as conn:
                level = await catalogue_level(conn, sku)
    if level is None:
        return current
    log.info("stock of %s not delivered by CDC yet: catalogue level %d from Postgres", sku, level)
    return set_total(current, level)


@app.agent(STOCK_COMMANDS, name="inventory-stock")
async def stock_commands(stream: Any) -> None:
    async for event, cmd in decoded(stream, StockCommand, "inventory"):
        async with guarded(event, "inventory"):
            fixed = take_stock_fix(cmd.sku)
            if fixed is not None:
                stock[cmd.sku] = fixed
            if cmd.op == "restock":
                stock[cmd.sku] = set_total(stock.get(cmd.sku), cmd.quantity)
                continue
            ledger_key = f"{cmd.sku}|{cmd.order_id}"
            if cmd.op == "restore":
                # A recorded order's reservation held again (agents.order_flow): no reply.
                new_stock, entry = restore(
                    stock.get(cmd.sku), stock_ledger.get(ledger_key), cmd.quantity
                )
                if new_stock is not None:
                    stock[cmd.sku] = new_stock
                stock_ledger[ledger_key] = entry
                continue
            if cmd.op == "reserve":
                current, before = stock.get(cmd.sku), stock_ledger.get(ledger_key)
                if needs_level(current) and before is None:
                    # The sku's catalogue level has not come through CDC yet (a cold
                    # start: orders can overtake the products snapshot): Postgres has it.
                    current = await catalogue_stock(cmd.sku, current)
                new_stock, entry, ok = reserve(current, before, cmd.quantity)
                if current is None and before is None:
                    log.warning(
                        "reserve %s x%d for %s refused: the catalogue has no such sku",
                        cmd.sku,
                        cmd.quantity,
                        cmd.order_id,
                    )
            elif cmd.op == "release":
                new_stock, entry = release(stock.get(cmd.sku), stock_ledger.get(ledger_key))
                ok = True
            else:
                await dead_letter(event, f"unknown stock command op {cmd.op!r}", "inventory")
                continue
            if new_stock is not None:
                stock[cmd.sku] = new_stock
            stock_ledger[ledger_key] = entry
            await send(
                STOCK_REPLIES,
                cmd.order_id,
                StockReply(
                    op=cmd.op,
                    order_id=cmd.order_id,
                    sku=cmd.sku,
                    quantity=cmd.quantity,
                    ok=ok,
                    lines_total=cmd.lines_total,
                    at=time.time(),
                ),
            )
