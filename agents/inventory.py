"""Inventory agents: payment_successful -> inventory_updated (reserved | out_of_stock |
released), all-or-nothing per order across sku partitions.

- ``inventory-order`` (key order_id): starts the order's reservation saga and sends one
  ``reserve`` command per distinct sku to ``orders_app-stock-commands`` (key sku).
- ``inventory-stock`` (key sku): the only writer of the ``stock`` table; applies
  reserve / release / restock idempotently (ledger per sku and order) and replies on
  ``orders_app-stock-replies`` (key order_id).  Restocks come from the cdc agent.
- ``inventory-replies`` (key order_id): collects replies; when every sku answered it
  emits ``reserved``, or ``out_of_stock`` and releases what was reserved, then
  ``released`` once every release is acknowledged.
Rules: :mod:`agents.inventory_rules`.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Any

from agents.inventory_rules import (
    missing_skus,
    release,
    reserve,
    saga_released,
    saga_reply,
    saga_start,
    set_total,
)
from agents.reconcile import take_stock_fix
from orders_app.app import app
from orders_app.records import (
    InventoryUpdated,
    OrderLine,
    PaymentSucceeded,
    StockCommand,
    StockReply,
)
from orders_app.streams import dead_letter, decoded, guarded, send
from orders_app.topics import INVENTORY_UPDATED, PAYMENT_SUCCESSFUL, STOCK_COMMANDS, STOCK_REPLIES
from tables.stock import reservations, stock, stock_ledger

log = logging.getLogger(__name__)


def _lines(saga: dict[str, Any]) -> list[OrderLine]:
    return [
        OrderLine(sku=ln["sku"], quantity=int(ln["quantity"]), unit_price=Decimal(ln["unit_price"]))
        for ln in saga["lines"]
    ]


async def _command(op: str, sku: str, quantity: int, order_id: str, skus: int) -> None:
    await send(
        STOCK_COMMANDS,
        sku,
        StockCommand(
            op=op, sku=sku, quantity=quantity, order_id=order_id, lines_total=skus, at=time.time()
        ),
    )


async def _updated(saga: dict[str, Any], status: str, missing: list[str]) -> None:
    await send(
        INVENTORY_UPDATED,
        saga["order_id"],
        InventoryUpdated(
            order_id=saga["order_id"],
            status=status,
            lines=_lines(saga),
            missing=missing,
            at=time.time(),
        ),
    )


@app.agent(PAYMENT_SUCCESSFUL, name="inventory-order")
async def reserve_order(stream: Any) -> None:
    async for event, paid in decoded(stream, PaymentSucceeded, "inventory"):
        async with guarded(event, "inventory"):
            saga = reservations.get(paid.order_id)
            if saga is None:
                saga = saga_start(paid.order_id, paid.order.lines)
                reservations[paid.order_id] = saga
            if saga["state"] == "pending":
                # Also on redelivery: the stock side answers a repeated command the same way.
                for sku, qty in saga["wanted"].items():
                    if sku not in saga["replies"]:
                        await _command("reserve", sku, qty, paid.order_id, len(saga["wanted"]))
            elif saga["state"] == "reserved":
                await _updated(saga, "reserved", [])
            else:
                await _updated(saga, "out_of_stock", missing_skus(saga))


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
            if cmd.op == "reserve":
                new_stock, entry, ok = reserve(
                    stock.get(cmd.sku), stock_ledger.get(ledger_key), cmd.quantity
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


@app.agent(STOCK_REPLIES, name="inventory-replies")
async def collect_replies(stream: Any) -> None:
    async for event, reply in decoded(stream, StockReply, "inventory"):
        async with guarded(event, "inventory"):
            saga = reservations.get(reply.order_id)
            if saga is None:
                log.warning("stock reply for unknown order %s", reply.order_id)
                continue
            if reply.op == "reserve":
                if saga["state"] != "pending" and reply.sku in saga["replies"]:
                    # A repeated reply after the decision: emit the decision again (a crash
                    # may have kept the saga record and lost the inventory_updated one).
                    decided = "reserved" if saga["state"] == "reserved" else "out_of_stock"
                    await _updated(saga, decided, missing_skus(saga))
                    if saga["state"] == "out_of_stock":  # releases not all acknowledged yet
                        for sku, good in saga["replies"].items():
                            if good and sku not in saga["released"]:
                                await _command(
                                    "release",
                                    sku,
                                    saga["wanted"][sku],
                                    reply.order_id,
                                    len(saga["wanted"]),
                                )
                    continue
                saga, decision, to_release = saga_reply(saga, reply.sku, reply.ok)
                reservations[reply.order_id] = saga
                if decision is not None:
                    app.metrics.reservations.labels(decision).inc()
                if decision == "reserved":
                    await _updated(saga, "reserved", [])
                elif decision == "out_of_stock":
                    await _updated(saga, "out_of_stock", missing_skus(saga))
                    for sku in to_release:
                        await _command(
                            "release", sku, saga["wanted"][sku], reply.order_id, len(saga["wanted"])
                        )
            elif reply.op == "release":
                saga, done = saga_released(saga, reply.sku)
                reservations[reply.order_id] = saga
                if done:
                    app.metrics.reservations.labels("released").inc()
                    await _updated(saga, "released", [])
