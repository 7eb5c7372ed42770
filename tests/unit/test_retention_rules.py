"""Retention: write stamps (tables), expiry and the ledger folds that keep the rebuild
after recovery exact (agents/retention_rules.py, tables/rebuild.corrections)."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from agents.analytics_rules import apply_change
from agents.inventory_rules import reserve, set_total
from agents.retention_rules import (
    expired,
    fold_country,
    fold_stock,
    sweep_interval,
)
from orders_app.ledgers import reserved_with_archive, stats_with_archive
from orders_app.records import OrderStatus, StatusChanged
from orders_app.stock_levels import with_reserved
from tables import Stamped, StampedJson, dumps_stamped, loads_value, stamp_of
from tables.rebuild import corrections


def test_stamp_round_trip_and_unstamped_values() -> None:
    raw = dumps_stamped({"state": "reserved", "quantity": 2}, 1732450000.1234)
    assert stamp_of(raw) == 1732450000.123
    assert loads_value(raw) == {"state": "reserved", "quantity": 2}
    assert stamp_of(b'{"state":"x"}') is None
    assert loads_value(b'{"state":"x"}') == {"state": "x"}
    assert loads_value(dumps_stamped(["velocity"], 5.0)) == ["velocity"]
    assert stamp_of(None) is None


def test_one_stamp_per_write_gives_identical_bytes() -> None:
    # The store and the changelog serialize the same Stamped object: same bytes.
    codec = StampedJson()
    value = Stamped({"a": 1}, time.time())
    first = codec.dumps(value)
    time.sleep(0.002)
    assert codec.dumps(value) == first
    assert codec.loads(first) == {"a": 1}


def test_sweep_interval_bounds() -> None:
    assert sweep_interval(7 * 86400) == 3600.0
    assert sweep_interval(3.0) == 0.5
    assert sweep_interval(80.0) == 10.0


def test_expired() -> None:
    assert expired(99.0, 100.0)
    assert not expired(100.0, 100.0)
    assert not expired(None, 100.0)


def _ledger(
    n: int, at: float, state: str = "reserved"
) -> list[tuple[str, float | None, dict[str, Any]]]:
    return [(f"SKU-1|o-{at}-{i}", at, {"state": state, "quantity": 2}) for i in range(n)]


def test_stock_fold_then_rebuild_is_exact_even_if_the_deletes_were_lost() -> None:
    stock = {"available": 80, "reserved": 20, "total": 100}
    old, recent = _ledger(6, 10.0), _ledger(4, 500.0)
    old_failed = _ledger(3, 11.0, state="failed")
    assert reserved_with_archive(stock, old + recent + old_failed) == 20
    folded = fold_stock(stock, old + old_failed, cutoff=100.0)
    assert folded == {**stock, "archived": 12, "archived_before": 100.0}
    # deletes done: archive + what is left
    assert reserved_with_archive(folded, recent) == 20
    # a crash kept the folded record and lost the tombstones: not counted twice
    assert reserved_with_archive(folded, old + recent + old_failed) == 20
    # a second sweep over leftovers below the watermark folds nothing again
    again = fold_stock(folded, old, cutoff=200.0)
    assert again is not None and again["archived"] == 12 and again["archived_before"] == 200.0
    assert fold_stock(None, old, cutoff=100.0) is None


def test_stock_rules_keep_the_archive() -> None:
    stock = {"available": 8, "reserved": 2, "total": 10, "archived": 2, "archived_before": 5.0}
    assert set_total(stock, 15)["archived"] == 2
    assert with_reserved(stock, 4)["archived_before"] == 5.0
    new, _entry, ok = reserve(stock, None, 1)
    assert ok and new is not None and new["archived"] == 2


def _change(oid: str, status: str, previous: str | None, total: str = "10.00") -> StatusChanged:
    return StatusChanged(
        order_id=oid,
        customer_id="c",
        country="DE",
        currency="EUR",
        total=Decimal(total),
        status=status,
        previous=previous,
        terminal=status in {OrderStatus.FULFILLED, OrderStatus.REJECTED},
        reasons=[],
        created_at=1_700_000_000.0,
        at=1_700_000_000.0,
    )


def _country_ledger(
    ids: list[str], at: float
) -> tuple[dict[str, Any] | None, list[tuple[str, float | None, dict[str, Any]]]]:
    stats: dict[str, Any] | None = None
    rows = []
    for oid in ids:
        stats, ledger, _ = apply_change(stats, None, _change(oid, OrderStatus.CREATED, None))
        stats, ledger, _ = apply_change(
            stats, ledger, _change(oid, OrderStatus.FULFILLED, OrderStatus.PAID)
        )
        rows.append((oid, at, ledger))
    return stats, rows


def test_country_fold_then_rebuild_is_exact() -> None:
    stats, rows = _country_ledger([f"o{i}" for i in range(7)], at=10.0)
    old, recent = rows[:5], [(k, 500.0, v) for k, _at, v in rows[5:]]
    assert stats is not None
    folded = fold_country(stats, "DE", old, cutoff=100.0)
    assert folded is not None
    assert folded["archived"]["orders"] == 5
    assert folded["archived"]["revenue"] == "50.00"
    # the live figures are untouched
    assert {k: folded[k] for k in ("orders", "revenue", "by_status")} == {
        k: stats[k] for k in ("orders", "revenue", "by_status")
    }
    for left in (recent, old + recent):  # deletes done / deletes lost in a crash
        rebuilt = stats_with_archive("DE", folded, left)
        assert rebuilt == folded


def test_corrections_find_only_real_differences() -> None:
    stats, rows = _country_ledger(["a", "b", "c"], at=10.0)
    assert stats is not None
    folded = fold_country(stats, "DE", rows[:2], cutoff=100.0)
    stock = {"available": 6, "reserved": 4, "total": 10}
    stock_rows = _ledger(1, 10.0) + _ledger(1, 500.0)
    stock_folded = fold_stock(stock, stock_rows[:1], cutoff=100.0)
    found = corrections(
        stock_rows[1:],
        [("SKU-1", 1.0, stock_folded)],  # type: ignore[list-item]
        [(k, 500.0, v) for k, _at, v in rows[2:]],
        [("DE", 1.0, folded)],  # type: ignore[list-item]
    )
    assert found.stock == {} and found.countries == {}
    # a crash lost the counter write of the last order: corrected from ledger + archive
    lagging = {**stock_folded, "reserved": 2}  # type: ignore[dict-item]
    found = corrections(stock_rows[1:], [("SKU-1", 1.0, lagging)], [], [])
    assert found.stock == {"SKU-1": 4}


async def test_the_rebuild_scans_in_a_thread_not_in_the_event_loop(
    monkeypatch: Any,
) -> None:
    import threading

    import tables.rebuild as reconcile

    seen: list[str] = []

    def rows(table: Any) -> list[Any]:
        seen.append(threading.current_thread().name)
        return []

    monkeypatch.setattr(reconcile, "rows", rows)
    await reconcile.rebuild(None)
    assert len(seen) == 4
    assert threading.main_thread().name not in seen
