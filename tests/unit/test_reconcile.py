"""Reconciliation after recovery: tables/rebuild.py (``corrections``, ``rebuild``),
``rows`` (tables/outside_stream.py) and the corrections it leaves for the agents and views
(tables/corrections.py).  No broker: table reads are monkeypatched and the module-global
``pending`` is reset after every test.  The archive cases of ``corrections`` are in
tests/unit/test_retention_rules.py.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

import tables.corrections as corrections
import tables.rebuild as reconcile
from agents.analytics_rules import apply_change
from orders_app.ledgers import stats_from_ledger
from orders_app.records import OrderStatus, StatusChanged
from tables import dumps_stamped, outside_stream
from tables.country_stats import country_stats
from tables.outside_stream import rows
from tables.rebuild import corrections as find_corrections
from tables.stock import stock

Row = tuple[str, float | None, dict[str, Any]]


@pytest.fixture(autouse=True)
def fresh_pending() -> Iterator[None]:
    corrections.pending.stock, corrections.pending.countries = {}, {}
    yield
    corrections.pending.stock, corrections.pending.countries = {}, {}


def _stock(reserved: int, total: int = 10, **extra: Any) -> dict[str, Any]:
    return {"available": max(0, total - reserved), "reserved": reserved, "total": total, **extra}


def _entry(key: str, quantity: int, state: str = "reserved", at: float | None = None) -> Row:
    return (key, at, {"state": state, "quantity": quantity})


def _terminal(oid: str, country: str = "DE", total: str = "10.00") -> dict[str, Any]:
    """The analytics ledger entry of an order counted as fulfilled."""
    change = StatusChanged(
        order_id=oid,
        customer_id="c",
        country=country,
        currency="EUR",
        total=Decimal(total),
        status=OrderStatus.FULFILLED,
        previous=OrderStatus.PAID,
        terminal=True,
        reasons=[],
        created_at=1_700_000_000.0,
        at=1_700_000_000.0,
    )
    _stats, ledger, _changed = apply_change(None, None, change)
    return ledger


# -- rows -------------------------------------------------------------------------------


class _MemoryTable(dict[str, Any]):
    """A table on the memory store: objects, no stamps, no partitions here."""

    data: dict[str, Any] = {}


def test_rows_of_a_memory_store_are_unstamped() -> None:
    table = _MemoryTable({"SKU-1": _stock(2), "SKU-2": _stock(0)})
    assert rows(table) == [("SKU-1", None, _stock(2)), ("SKU-2", None, _stock(0))]


def test_rows_of_a_raw_store_are_the_owned_partitions_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored = {
        0: [(b"SKU-1|o1", dumps_stamped({"state": "reserved", "quantity": 2}, 1700.5))],
        1: [(b"SKU-9|o9", dumps_stamped({"state": "reserved", "quantity": 9}, 1.0))],
        2: [(b"SKU-2|o2", b'{"state":"released","quantity":1}')],  # written before stamps
    }
    table = object()
    monkeypatch.setattr(outside_stream, "has_raw_store", lambda t: t is table)
    monkeypatch.setattr(outside_stream, "active_partitions", lambda t: [0, 2])  # 1: a standby
    monkeypatch.setattr(outside_stream, "raw_items", lambda t, p: iter(stored[p]))
    assert rows(table) == [
        ("SKU-1|o1", 1700.5, {"state": "reserved", "quantity": 2}),
        ("SKU-2|o2", None, {"state": "released", "quantity": 1}),
    ]


# -- corrections: stock -----------------------------------------------------------------


def test_stock_counters_are_corrected_to_the_ledger_sum() -> None:
    ledger = [
        _entry("SKU-1|o1", 2),
        _entry("SKU-1|o2", 3),
        _entry("SKU-1|o3", 4, state="released"),
        _entry("SKU-1|o4", 1, state="failed"),
        _entry("SKU-2|o1", 1),
    ]
    stocks: list[Row] = [
        ("SKU-1", None, _stock(9)),  # a crash kept the counter of o3's reserve only
        ("SKU-2", None, _stock(1)),  # right
    ]
    found = find_corrections(ledger, stocks, [], [])
    assert found.stock == {"SKU-1": 5}
    assert found.countries == {}


def test_all_released_reservations_correct_to_zero() -> None:
    ledger = [_entry("SKU-1|o1", 2, state="released")]
    found = find_corrections(ledger, [("SKU-1", None, _stock(2))], [], [])
    assert found.stock == {"SKU-1": 0}


def test_a_sku_with_ledger_entries_but_no_counter_is_not_corrected() -> None:
    # only failed reservations (unknown sku): there is no record to correct
    ledger = [_entry("SKU-X|o1", 1, state="failed"), _entry("SKU-Y|o2", 3)]
    found = find_corrections(ledger, [], [], [])
    assert found.stock == {}


def test_the_sku_is_the_ledger_key_before_its_last_bar() -> None:
    ledger = [_entry("SKU|A|o1", 2), _entry("SKU|A|o2", 2)]
    found = find_corrections(ledger, [("SKU|A", None, _stock(1))], [], [])
    assert found.stock == {"SKU|A": 4}


def test_an_archived_sku_without_live_entries_is_rebuilt_from_its_archive() -> None:
    record = _stock(1, archived=3, archived_before=100.0)
    found = find_corrections([], [("SKU-1", 200.0, record)], [], [])
    assert found.stock == {"SKU-1": 3}
    # entries stamped before the watermark are already in the archive: not counted again
    ledger = [_entry("SKU-1|old", 2, at=50.0), _entry("SKU-1|new", 2, at=150.0)]
    found = find_corrections(ledger, [("SKU-1", 200.0, record)], [], [])
    assert found.stock == {"SKU-1": 5}


# -- corrections: country stats ---------------------------------------------------------


def test_country_stats_behind_the_ledger_are_corrected() -> None:
    ledger: list[Row] = [(oid, None, _terminal(oid)) for oid in ("a", "b", "c")]
    lagging = stats_from_ledger([_terminal("a"), _terminal("b")])["DE"]
    right = stats_from_ledger([_terminal("a"), _terminal("b"), _terminal("c")])["DE"]
    found = find_corrections([], [], ledger, [("DE", None, lagging)])
    assert found.countries == {"DE": right}
    assert right["orders"] == 3 and right["revenue"] == "30.00"
    assert find_corrections([], [], ledger, [("DE", None, right)]).countries == {}


def test_a_country_with_ledger_entries_but_no_stats_gets_them() -> None:
    ledger: list[Row] = [("a", None, _terminal("a", country="FR", total="4.50"))]
    found = find_corrections([], [], ledger, [])
    assert found.countries == {"FR": stats_from_ledger([ledger[0][2]])["FR"]}
    assert found.stock == {}


def test_uncounted_entries_and_entries_without_country_are_ignored() -> None:
    ledger: list[Row] = [
        ("a", None, {"counted": False, "terminal": None}),
        ("b", None, {"counted": True, "terminal": "FULFILLED", "total": "1.00"}),
    ]
    stats = stats_from_ledger([_terminal("z")])["DE"]
    assert find_corrections([], [], ledger, [("DE", None, stats)]).countries == {}


def test_each_country_is_rebuilt_from_its_own_entries() -> None:
    ledger: list[Row] = [
        ("a", None, _terminal("a", country="DE")),
        ("b", None, _terminal("b", country="FR", total="7.00")),
    ]
    de = stats_from_ledger([_terminal("a", country="DE")])["DE"]
    found = find_corrections([], [], ledger, [("DE", None, de)])
    assert set(found.countries) == {"FR"}
    assert found.countries["FR"]["revenue"] == "7.00"


# -- rebuild ----------------------------------------------------------------------------


async def test_rebuild_on_a_memory_store_scans_on_the_loop_and_sets_pending(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tables.country_stats import analytics_ledger
    from tables.stock import stock_ledger

    ledger = [_entry("SKU-1|o1", 2), _entry("SKU-1|o2", 2)]
    country_ledger: list[Row] = [("a", None, _terminal("a"))]
    data: dict[Any, list[Row]] = {
        stock_ledger: ledger,
        stock: [("SKU-1", None, _stock(2))],
        analytics_ledger: country_ledger,
        country_stats: [],
    }
    scans: list[tuple[str, bool]] = []

    def scanned(table: Any) -> list[Row]:
        scans.append((threading.current_thread().name, corrections.scan_lock.locked()))
        return data[table]

    monkeypatch.setattr(reconcile, "has_raw_store", lambda table: False)
    monkeypatch.setattr(reconcile, "rows", scanned)
    corrections.pending.stock = {"SKU-OLD": 1}  # left by an earlier rebalance
    with caplog.at_level(logging.WARNING, logger=reconcile.__name__):
        await reconcile.rebuild(None)
    assert scans == [(threading.current_thread().name, True)] * 4
    assert not corrections.scan_lock.locked()
    assert corrections.pending.stock == {"SKU-1": 4}  # replaced, not merged
    assert corrections.pending.countries == {"DE": stats_from_ledger([_terminal("a")])["DE"]}
    assert "1 sku(s) and 1 country(ies) differ" in caplog.text


async def test_rebuild_with_nothing_to_correct_clears_pending_quietly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(reconcile, "has_raw_store", lambda table: False)
    monkeypatch.setattr(reconcile, "rows", lambda table: [])
    corrections.pending.stock = {"SKU-OLD": 1}
    corrections.pending.countries = {"DE": {"orders": 1}}
    with caplog.at_level(logging.WARNING, logger=reconcile.__name__):
        await reconcile.rebuild(None)
    assert corrections.pending.stock == {} and corrections.pending.countries == {}
    assert "differ from their ledgers" not in caplog.text


# -- tables/corrections: taking and viewing ---------------------------------------------


@pytest.fixture
def stock_rows(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    monkeypatch.setattr(stock, "get", lambda key, default=None: rows.get(key))
    return rows


@pytest.fixture
def country_rows(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    monkeypatch.setattr(country_stats, "get", lambda key, default=None: rows.get(key))
    return rows


def test_take_stock_fix_returns_the_corrected_counters_once(
    stock_rows: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    stock_rows["SKU-1"] = _stock(5, total=10, archived=2, archived_before=9.0)
    corrections.pending.stock = {"SKU-1": 3, "SKU-2": 1}
    with caplog.at_level(logging.WARNING, logger=corrections.__name__):
        fixed = corrections.take_stock_fix("SKU-1")
    assert fixed == _stock(3, total=10, archived=2, archived_before=9.0)
    assert fixed is not None and fixed["available"] == 7
    assert "reserved 5 -> 3" in caplog.text
    assert corrections.pending.stock == {"SKU-2": 1}
    assert corrections.take_stock_fix("SKU-1") is None  # taken


def test_take_stock_fix_without_a_difference_or_a_record_drops_it(
    stock_rows: dict[str, Any],
) -> None:
    assert corrections.take_stock_fix("SKU-1") is None  # nothing pending
    stock_rows["SKU-1"] = _stock(3)
    corrections.pending.stock = {"SKU-1": 3, "SKU-GONE": 2}
    assert corrections.take_stock_fix("SKU-1") is None  # the counter caught up meanwhile
    assert corrections.take_stock_fix("SKU-GONE") is None  # no record (any more)
    assert corrections.pending.stock == {}


def test_available_never_goes_below_zero(stock_rows: dict[str, Any]) -> None:
    stock_rows["SKU-1"] = _stock(2, total=4)
    corrections.pending.stock = {"SKU-1": 6}
    assert corrections.take_stock_fix("SKU-1") == {"available": 0, "reserved": 6, "total": 4}


def test_stock_view_serves_the_correction_without_taking_it(stock_rows: dict[str, Any]) -> None:
    stock_rows["SKU-1"] = _stock(5)
    stock_rows["SKU-2"] = _stock(1)
    corrections.pending.stock = {"SKU-1": 3, "SKU-GONE": 1}
    assert corrections.stock_view("SKU-1") == _stock(3)
    assert corrections.pending.stock == {"SKU-1": 3, "SKU-GONE": 1}
    assert corrections.stock_view("SKU-2") == _stock(1)  # nothing pending: as stored
    assert corrections.stock_view("SKU-GONE") is None
    assert corrections.stock_view("SKU-NONE") is None


def test_take_country_fix_and_country_view(
    country_rows: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    stored = stats_from_ledger([_terminal("a")])["DE"]
    rebuilt = stats_from_ledger([_terminal("a"), _terminal("b")])["DE"]
    country_rows["DE"] = stored
    country_rows["FR"] = {"country": "FR", "orders": 0}
    corrections.pending.countries = {"DE": rebuilt}
    assert corrections.country_view("DE") == rebuilt  # served while pending
    assert corrections.country_view("FR") == country_rows["FR"]
    assert corrections.country_view("IT") is None
    with caplog.at_level(logging.WARNING, logger=corrections.__name__):
        assert corrections.take_country_fix("DE") == rebuilt
    assert "country stats of DE corrected" in caplog.text
    assert corrections.pending.countries == {}
    assert corrections.take_country_fix("DE") is None
    assert corrections.country_view("DE") == stored  # taken: the table's value again


def test_take_country_fix_equal_to_the_table_is_dropped(country_rows: dict[str, Any]) -> None:
    stats = stats_from_ledger([_terminal("a")])["DE"]
    country_rows["DE"] = stats
    corrections.pending.countries = {"DE": dict(stats)}
    assert corrections.take_country_fix("DE") is None
    assert corrections.pending.countries == {}
