"""Inventory rules (pure): per-sku reserve/release/restock and the all-or-nothing saga.

Per sku (stock table value ``{"available", "reserved", "total"}``): a reserve succeeds
only when enough is available (unknown sku = out of stock); stock never goes negative and
available + reserved == total (initial + restocks).  The ledger entry per (sku, order)
makes reserve and release idempotent.  Per order (saga): when every distinct sku has
replied, all ok -> ``reserved``; any failure -> ``out_of_stock`` and the successful lines
are released.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from orders_app.records import OrderLine

Stock = dict[str, Any]  # available, reserved, total (+ the retention archive)

#: Marks a stock record made by restored reservations before the sku's catalogue level
#: arrived (its total is only what is reserved); :func:`set_total` removes it.
LEVEL_UNKNOWN = "level_unknown"


def merge_lines(lines: list[OrderLine]) -> dict[str, int]:
    """Quantity per distinct sku, in first-seen order."""
    out: OrderedDict[str, int] = OrderedDict()
    for line in lines:
        out[line.sku] = out.get(line.sku, 0) + line.quantity
    return dict(out)


def reserve(
    stock: Stock | None, ledger: dict[str, Any] | None, quantity: int
) -> tuple[Stock | None, dict[str, Any], bool]:
    """-> (new stock, new ledger entry, ok).  A replay returns the first outcome unchanged."""
    if ledger is not None:
        return stock, ledger, ledger["state"] == "reserved" or ledger.get("ok", False)
    if stock is None or quantity <= 0 or stock["available"] < quantity:
        return stock, {"state": "failed", "quantity": quantity, "ok": False}, False
    new = dict(stock)
    new["available"] -= quantity
    new["reserved"] += quantity
    return new, {"state": "reserved", "quantity": quantity, "ok": True}, True


def release(
    stock: Stock | None, ledger: dict[str, Any] | None
) -> tuple[Stock | None, dict[str, Any]]:
    """Give a reservation back once; releasing what was never reserved changes no stock."""
    if ledger is None:
        return stock, {"state": "released", "quantity": 0, "ok": False}
    if ledger["state"] != "reserved" or stock is None:
        return stock, ledger
    qty = int(ledger["quantity"])
    new = dict(stock)
    new["available"] += qty
    new["reserved"] -= qty
    return new, {**ledger, "state": "released"}


def restore(
    stock: Stock | None, ledger: dict[str, Any] | None, quantity: int
) -> tuple[Stock | None, dict[str, Any]]:
    """Hold again what a recorded order held (a restart on a fresh broker, issue 16): the
    reservation is a fact, not a request, so it never fails and emits nothing.  A sku
    not yet known (its catalogue level not read yet) holds it against a total of what
    is reserved; the level, when it comes (:func:`set_total`), adds what is available.
    Idempotent: a ledger entry that exists already changes nothing."""
    if ledger is not None:
        return stock, ledger
    # A record made here has no catalogue level yet (``LEVEL_UNKNOWN``, until set_total).
    current = stock or {"available": 0, "reserved": 0, "total": 0, LEVEL_UNKNOWN: True}
    available = max(0, current["available"] - quantity)
    reserved = current["reserved"] + quantity
    new = {**current, "available": available, "reserved": reserved, "total": available + reserved}
    return new, {"state": "reserved", "quantity": quantity, "ok": True, "restored": True}


def needs_level(stock: Stock | None) -> bool:
    """Whether the sku's catalogue level has not reached this record yet: no record, or
    one only restored reservations made (a reserve then reads the level elsewhere)."""
    return stock is None or bool(stock.get(LEVEL_UNKNOWN))


def set_total(stock: Stock | None, total: int) -> Stock:
    """Apply a catalogue stock level (initial + restocks so far) from Postgres.

    Absolute, so replays and snapshot/stream overlap are idempotent; lowering the
    total takes from what is available but never below zero."""
    total = max(0, int(total))
    if stock is None:
        return {"available": total, "reserved": 0, "total": total}
    delta = total - stock["total"]
    available = max(0, stock["available"] + delta)
    new = {
        **stock,  # the retention archive (agents.retention_rules) stays with the record
        "available": available,
        "reserved": stock["reserved"],
        "total": available + stock["reserved"],
    }
    new.pop(LEVEL_UNKNOWN, None)
    return new


def saga_start(order_id: str, lines: list[OrderLine]) -> dict[str, Any]:
    merged = merge_lines(lines)
    return {
        "order_id": order_id,
        "state": "pending",
        "wanted": merged,
        "lines": [
            {"sku": ln.sku, "quantity": ln.quantity, "unit_price": str(ln.unit_price)}
            for ln in lines
        ],
        "replies": {},
        "released": [],
    }


def saga_reply(
    saga: dict[str, Any], sku: str, ok: bool
) -> tuple[dict[str, Any], str | None, list[str]]:
    """Record one reserve reply -> (saga, decision or None, skus to release)."""
    if saga["state"] != "pending" or sku not in saga["wanted"] or sku in saga["replies"]:
        return saga, None, []
    replies = {**saga["replies"], sku: ok}
    new = {**saga, "replies": replies}
    if len(replies) < len(saga["wanted"]):
        return new, None, []
    if all(replies.values()):
        new["state"] = "reserved"
        return new, "reserved", []
    new["state"] = "out_of_stock"
    return new, "out_of_stock", [s for s, good in replies.items() if good]


def missing_skus(saga: dict[str, Any]) -> list[str]:
    return [s for s, good in saga["replies"].items() if not good]


def saga_released(saga: dict[str, Any], sku: str) -> tuple[dict[str, Any], bool]:
    """Record a release ack -> (saga, all releases done now)."""
    if saga["state"] != "out_of_stock" or sku in saga["released"]:
        return saga, False
    released = [*saga["released"], sku]
    new = {**saga, "released": released}
    to_release = [s for s, good in saga["replies"].items() if good]
    if set(released) >= set(to_release):
        new["state"] = "released"
        return new, True
    return new, False
