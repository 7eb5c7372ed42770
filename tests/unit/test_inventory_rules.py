"""agents.inventory_rules: per-sku reserve/release/restock and the all-or-nothing saga."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.inventory_rules import (
    merge_lines,
    missing_skus,
    release,
    reserve,
    saga_released,
    saga_reply,
    saga_start,
    set_total,
)


def stock(available: int, reserved: int = 0) -> dict[str, int]:
    return {"available": available, "reserved": reserved, "total": available + reserved}


# --- merge_lines -----------------------------------------------------------------------


def test_merge_lines_sums_duplicate_skus_in_first_seen_order(mk) -> None:
    lines = [
        mk.line("B", 2),
        mk.line("A", 1),
        mk.line("B", 3),
        mk.line("C", 1),
        mk.line("A", 4),
    ]
    merged = merge_lines(lines)
    assert merged == {"B": 5, "A": 5, "C": 1}
    assert list(merged) == ["B", "A", "C"]


def test_merge_lines_single_and_empty(mk) -> None:
    assert merge_lines([mk.line("X", 7)]) == {"X": 7}
    assert merge_lines([]) == {}


# --- reserve ---------------------------------------------------------------------------


def test_reserve_takes_from_available() -> None:
    before = stock(10)
    new, entry, ok = reserve(before, None, 3)
    assert ok is True
    assert new == {"available": 7, "reserved": 3, "total": 10}
    assert entry == {"state": "reserved", "quantity": 3, "ok": True}
    assert before == stock(10), "input stock must not be mutated"


def test_reserve_exactly_all_available() -> None:
    new, entry, ok = reserve(stock(3), None, 3)
    assert ok
    assert new == {"available": 0, "reserved": 3, "total": 3}
    assert entry["state"] == "reserved"


def test_reserve_insufficient_stock_fails_and_changes_nothing() -> None:
    before = stock(2, reserved=5)
    new, entry, ok = reserve(before, None, 3)
    assert ok is False
    assert new == before
    assert entry == {"state": "failed", "quantity": 3, "ok": False}


def test_reserve_unknown_sku_is_out_of_stock() -> None:
    new, entry, ok = reserve(None, None, 1)
    assert ok is False
    assert new is None
    assert entry["state"] == "failed"
    assert entry["ok"] is False


def test_reserve_non_positive_quantity_fails() -> None:
    for qty in (0, -1):
        new, entry, ok = reserve(stock(5), None, qty)
        assert ok is False
        assert new == stock(5)
        assert entry["state"] == "failed"


def test_reserve_replay_of_success_returns_same_outcome_without_changing_stock() -> None:
    after_first, entry, ok = reserve(stock(10), None, 4)
    assert ok
    again, entry2, ok2 = reserve(after_first, entry, 4)
    assert ok2 is True
    assert again == after_first == {"available": 6, "reserved": 4, "total": 10}
    assert entry2 == entry


def test_reserve_replay_of_failure_stays_failed_even_after_restock() -> None:
    _, entry, ok = reserve(stock(1), None, 5)
    assert not ok
    restocked = set_total(stock(1), 100)
    again, entry2, ok2 = reserve(restocked, entry, 5)
    assert ok2 is False
    assert again == restocked
    assert entry2 == entry


def test_reserve_replay_after_release_reports_original_success_and_keeps_stock() -> None:
    s, entry, _ = reserve(stock(10), None, 4)
    s, released = release(s, entry)
    assert s == stock(10)
    again, entry2, ok = reserve(s, released, 4)
    assert ok is True
    assert again == stock(10), "a replayed reserve must not re-reserve released stock"
    assert entry2 == released


# --- release ---------------------------------------------------------------------------


def test_release_gives_reservation_back() -> None:
    s, entry, _ = reserve(stock(10), None, 4)
    new, entry2 = release(s, entry)
    assert new == {"available": 10, "reserved": 0, "total": 10}
    assert entry2 == {"state": "released", "quantity": 4, "ok": True}


def test_release_is_idempotent() -> None:
    s, entry, _ = reserve(stock(10), None, 4)
    once, entry1 = release(s, entry)
    twice, entry2 = release(once, entry1)
    assert twice == once == stock(10)
    assert entry2 == entry1


def test_release_of_failed_reservation_changes_no_stock() -> None:
    before = stock(1)
    _, failed, _ = reserve(before, None, 5)
    new, entry = release(before, failed)
    assert new == before
    assert entry == failed


def test_release_without_reservation_changes_no_stock_and_blocks_later_reserve() -> None:
    before = stock(5)
    new, entry = release(before, None)
    assert new == before
    assert entry == {"state": "released", "quantity": 0, "ok": False}
    # a reserve arriving after that release must not take stock
    again, _, ok = reserve(new, entry, 2)
    assert ok is False
    assert again == before


def test_release_of_unknown_sku_keeps_ledger() -> None:
    entry = {"state": "reserved", "quantity": 2, "ok": True}
    new, entry2 = release(None, entry)
    assert new is None
    assert entry2 == entry


def test_release_never_makes_reserved_negative_after_restock_lowering() -> None:
    s, entry, _ = reserve(stock(5), None, 5)
    s = set_total(s, 0)  # catalogue lowered below what is reserved
    assert s["available"] == 0
    s, _ = release(s, entry)
    assert s["reserved"] == 0
    assert s["available"] >= 0
    assert s["available"] + s["reserved"] == s["total"]


# --- set_total -------------------------------------------------------------------------


def test_set_total_creates_unknown_sku() -> None:
    assert set_total(None, 12) == {"available": 12, "reserved": 0, "total": 12}


def test_set_total_negative_is_clamped_to_zero() -> None:
    assert set_total(None, -3) == {"available": 0, "reserved": 0, "total": 0}


def test_set_total_is_absolute_and_idempotent() -> None:
    s, _, _ = reserve(stock(10), None, 4)  # available 6, reserved 4
    once = set_total(s, 15)
    assert once == {"available": 11, "reserved": 4, "total": 15}
    assert set_total(once, 15) == once
    assert set_total(set_total(once, 15), 15) == once


def test_set_total_lowering_takes_from_available() -> None:
    s, _, _ = reserve(stock(10), None, 4)  # 6 / 4 / 10
    assert set_total(s, 7) == {"available": 3, "reserved": 4, "total": 7}


def test_set_total_lowering_below_reserved_never_makes_available_negative() -> None:
    s, _, _ = reserve(stock(10), None, 8)  # 2 / 8 / 10
    new = set_total(s, 3)
    assert new["available"] == 0
    assert new["reserved"] == 8
    assert new["available"] + new["reserved"] == new["total"]
    # and a replay of that same level is still idempotent
    assert set_total(new, 3) == new


def test_set_total_accepts_numeric_string_level() -> None:
    assert set_total(None, "4") == {"available": 4, "reserved": 0, "total": 4}  # type: ignore[arg-type]


# --- saga ------------------------------------------------------------------------------


def test_saga_start_records_wanted_and_lines(mk) -> None:
    lines = [mk.line("A", 1, "1.50"), mk.line("B", 2, "2.00"), mk.line("A", 3, "1.50")]
    saga = saga_start("ord-9", lines)
    assert saga == {
        "order_id": "ord-9",
        "state": "pending",
        "wanted": {"A": 4, "B": 2},
        "lines": [
            {"sku": "A", "quantity": 1, "unit_price": "1.50"},
            {"sku": "B", "quantity": 2, "unit_price": "2.00"},
            {"sku": "A", "quantity": 3, "unit_price": "1.50"},
        ],
        "replies": {},
        "released": [],
    }


def _saga(mk: Any, *skus: str) -> dict[str, Any]:
    return saga_start("ord-1", [mk.line(s, 1) for s in skus])


def test_saga_all_ok_is_reserved(mk) -> None:
    saga = _saga(mk, "A", "B", "C")
    saga, decision, rel = saga_reply(saga, "A", True)
    assert (decision, rel, saga["state"]) == (None, [], "pending")
    saga, decision, rel = saga_reply(saga, "C", True)
    assert (decision, rel) == (None, [])
    saga, decision, rel = saga_reply(saga, "B", True)
    assert decision == "reserved"
    assert rel == []
    assert saga["state"] == "reserved"
    assert missing_skus(saga) == []


def test_saga_single_failure_is_out_of_stock_and_releases_the_ok_skus(mk) -> None:
    saga = _saga(mk, "A", "B", "C")
    saga, _, _ = saga_reply(saga, "A", True)
    saga, _, _ = saga_reply(saga, "B", False)
    saga, decision, rel = saga_reply(saga, "C", True)
    assert decision == "out_of_stock"
    assert sorted(rel) == ["A", "C"]
    assert saga["state"] == "out_of_stock"
    assert missing_skus(saga) == ["B"]


def test_saga_decides_only_when_every_distinct_sku_replied(mk) -> None:
    saga = saga_start("o", [mk.line("A", 1), mk.line("A", 2), mk.line("B", 1)])
    saga, decision, _ = saga_reply(saga, "A", False)
    assert decision is None, "a failure alone must not decide before every sku replied"
    saga, decision, rel = saga_reply(saga, "B", True)
    assert decision == "out_of_stock"
    assert rel == ["B"]


def test_saga_all_failed_releases_nothing(mk) -> None:
    saga = _saga(mk, "A", "B")
    saga, _, _ = saga_reply(saga, "A", False)
    saga, decision, rel = saga_reply(saga, "B", False)
    assert decision == "out_of_stock"
    assert rel == []
    assert sorted(missing_skus(saga)) == ["A", "B"]


def test_saga_duplicate_reply_is_ignored(mk) -> None:
    saga = _saga(mk, "A", "B")
    saga, _, _ = saga_reply(saga, "A", True)
    dup, decision, rel = saga_reply(saga, "A", False)  # a contradicting duplicate
    assert dup is saga
    assert (decision, rel) == (None, [])
    assert dup["replies"] == {"A": True}


def test_saga_reply_for_unknown_sku_is_ignored(mk) -> None:
    saga = _saga(mk, "A")
    same, decision, rel = saga_reply(saga, "Z", False)
    assert same is saga
    assert (decision, rel) == (None, [])


def test_saga_replies_after_decision_change_nothing(mk) -> None:
    saga = _saga(mk, "A")
    saga, decision, _ = saga_reply(saga, "A", True)
    assert decision == "reserved"
    again, decision, rel = saga_reply(saga, "A", True)
    assert again is saga
    assert (decision, rel) == (None, [])


def test_saga_reply_does_not_mutate_input(mk) -> None:
    saga = _saga(mk, "A", "B")
    saga_reply(saga, "A", True)
    assert saga["replies"] == {}
    assert saga["state"] == "pending"


def _out_of_stock(mk: Any) -> dict[str, Any]:
    saga = _saga(mk, "A", "B", "C")
    saga, _, _ = saga_reply(saga, "A", True)
    saga, _, _ = saga_reply(saga, "B", True)
    saga, decision, _ = saga_reply(saga, "C", False)
    assert decision == "out_of_stock"
    return saga


def test_saga_released_completes_once_every_ok_sku_is_released(mk) -> None:
    saga = _out_of_stock(mk)
    saga, done = saga_released(saga, "B")
    assert done is False
    assert saga["state"] == "out_of_stock"
    saga, done = saga_released(saga, "A")
    assert done is True
    assert saga["state"] == "released"
    assert sorted(saga["released"]) == ["A", "B"]


def test_saga_released_duplicate_ack_is_ignored(mk) -> None:
    saga = _out_of_stock(mk)
    saga, _ = saga_released(saga, "A")
    same, done = saga_released(saga, "A")
    assert same is saga
    assert done is False
    assert saga["released"] == ["A"]


def test_saga_released_completes_only_once(mk) -> None:
    saga = _out_of_stock(mk)
    saga, _ = saga_released(saga, "A")
    saga, done = saga_released(saga, "B")
    assert done is True
    again, done = saga_released(saga, "B")
    assert done is False
    assert again is saga


def test_saga_released_ignored_unless_out_of_stock(mk) -> None:
    pending = _saga(mk, "A")
    assert saga_released(pending, "A") == (pending, False)
    reserved, _, _ = saga_reply(pending, "A", True)
    assert saga_released(reserved, "A") == (reserved, False)


# --- property: stock invariants ----------------------------------------------------------

SKUS = ["A", "B", "C"]
ORDERS = ["o1", "o2", "o3", "o4"]

operation = st.one_of(
    st.tuples(
        st.just("reserve"),
        st.sampled_from(SKUS),
        st.sampled_from(ORDERS),
        st.integers(min_value=-1, max_value=8),
    ),
    st.tuples(st.just("release"), st.sampled_from(SKUS), st.sampled_from(ORDERS), st.just(0)),
    st.tuples(
        st.just("set_total"),
        st.sampled_from(SKUS),
        st.just(""),
        st.integers(min_value=-3, max_value=20),
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(operation, max_size=60))
def test_stock_never_negative_and_available_plus_reserved_is_total(
    ops: list[tuple[str, str, str, int]],
) -> None:
    stocks: dict[str, dict[str, int] | None] = dict.fromkeys(SKUS)
    ledger: dict[tuple[str, str], dict[str, Any]] = {}
    for op, sku, order_id, n in ops:
        before = stocks[sku]
        if op == "reserve":
            new, entry, ok = reserve(before, ledger.get((sku, order_id)), n)
            ledger[(sku, order_id)] = entry
            if ok and entry is not None and before is not None and new != before:
                assert new is not None
                assert new["available"] == before["available"] - n
        elif op == "release":
            new, entry = release(before, ledger.get((sku, order_id)))
            ledger[(sku, order_id)] = entry
        else:
            new = set_total(before, n)
        stocks[sku] = new
        for s in stocks.values():
            if s is None:
                continue
            assert s["available"] >= 0
            assert s["reserved"] >= 0
            assert s["total"] >= 0
            assert s["available"] + s["reserved"] == s["total"]
    # what is reserved equals what the ledger still holds as reserved
    for sku in SKUS:
        held = sum(
            e["quantity"] for (k, _), e in ledger.items() if k == sku and e["state"] == "reserved"
        )
        s = stocks[sku]
        assert (s["reserved"] if s is not None else 0) == held


def test_reserved_from_ledger_sums_only_live_reservations() -> None:
    from orders_app.ledgers import reserved_from_ledger
    from orders_app.stock_levels import with_reserved

    entries = [
        ("SKU-1|o1", {"state": "reserved", "quantity": 2}),
        ("SKU-1|o2", {"state": "released", "quantity": 5}),
        ("SKU-1|o3", {"state": "failed", "quantity": 9}),
        ("SKU-2|o1", {"state": "reserved", "quantity": 1}),
        ("SKU-3|o4", {"state": "released", "quantity": 1}),
    ]
    assert reserved_from_ledger(entries) == {"SKU-1": 2, "SKU-2": 1, "SKU-3": 0}
    fixed = with_reserved({"available": 90, "reserved": 6, "total": 100}, 2)
    assert fixed == {"available": 98, "reserved": 2, "total": 100}


# --- restore (a recorded order's reservation held again) --------------------------------


def test_restore_holds_against_a_known_sku_and_is_idempotent() -> None:
    from agents.inventory_rules import restore

    new, entry = restore(stock(10), None, 3)
    assert new == stock(7, 3) and entry["state"] == "reserved" and entry["quantity"] == 3
    assert restore(new, entry, 3) == (new, entry)


def test_restore_before_the_catalogue_level_ends_at_level_minus_held() -> None:
    from agents.inventory_rules import needs_level, restore

    held, _ = restore(None, None, 4)
    assert held == {"available": 0, "reserved": 4, "total": 4, "level_unknown": True}
    assert needs_level(held) and needs_level(None) and not needs_level(stock(10))
    assert set_total(held, 10) == stock(6, 4)  # the level known now: the mark goes
    assert not needs_level(set_total(held, 10))
    # a second restored order on the same record keeps the mark
    assert needs_level(restore(held, None, 1)[0])
    # the other way round gives the same
    assert restore(set_total(None, 10), None, 4)[0] == stock(6, 4)
