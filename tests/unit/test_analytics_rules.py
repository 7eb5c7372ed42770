"""Per-country analytics rules: a batch gives what one-at-a-time gives."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.analytics_rules import (
    WINDOW_S,
    apply_batch,
    apply_change,
    counts,
)
from orders_app.ledgers import WINDOW_RETENTION_S, stats_from_ledger
from orders_app.records import StatusChanged

STATUSES = [("CREATED", False), ("PAID", False), ("FULFILLED", True), ("REJECTED", True)]


def change(order: int, status: int, country: str, minute: int, cents: int) -> StatusChanged:
    name, terminal = STATUSES[status]
    return StatusChanged(
        order_id=f"o-{order}",
        status=name,
        previous=None,
        terminal=terminal,
        customer_id="c",
        country=country,
        currency="EUR",
        total=Decimal(cents) / 100,
        reasons=[],
        created_at=float(minute * WINDOW_S + 1),
        at=0.0,
    )


changes_st = st.lists(
    st.builds(
        change,
        st.integers(0, 15),
        st.integers(0, 3),
        st.sampled_from(["DE", "FR", "JP"]),
        st.integers(0, 200),  # minutes: windows expire after 60
        st.integers(1, 100_000),
    ),
    max_size=60,
)


def one_at_a_time(
    stats: dict[str, Any], ledgers: dict[str, Any], changes: list[StatusChanged]
) -> None:
    for ch in changes:
        new, ledger, changed = apply_change(stats.get(ch.country), ledgers.get(ch.order_id), ch)
        if changed:
            stats[ch.country] = new
            ledgers[ch.order_id] = ledger


@settings(max_examples=300, deadline=None)
@given(changes_st, changes_st)
def test_batch_equals_one_at_a_time(before: list[StatusChanged], batch: list[StatusChanged]):
    stats: dict[str, Any] = {}
    ledgers: dict[str, Any] = {}
    one_at_a_time(stats, ledgers, before)
    frozen = copy.deepcopy((stats, ledgers))

    result = apply_batch(stats, ledgers, batch)

    assert (stats, ledgers) == frozen  # inputs untouched
    one_at_a_time(stats, ledgers, batch)
    assert {c: stats[c] for c in result.stats} == result.stats
    assert {o: ledgers[o] for o in result.ledgers} == result.ledgers
    # nothing changed outside what the batch reports
    assert {c: s for c, s in stats.items() if c not in result.stats} == {
        c: s for c, s in frozen[0].items() if c not in result.stats
    }
    for country, start in result.window.items():
        assert start in {
            int(ch.created_at // WINDOW_S) * WINDOW_S for ch in batch if ch.country == country
        }


def of_order(order: int, status: int) -> StatusChanged:
    """As the pipeline makes them: an order's country, commit time and total never change."""
    return change(order, status, ["DE", "FR", "JP"][order % 3], order * 13 % 200, order * 7 + 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.builds(of_order, st.integers(0, 40), st.integers(0, 3)), max_size=80))
def test_batch_counts_each_order_once_and_matches_ledger_rebuild(batch: list[StatusChanged]):
    result = apply_batch({}, {}, batch + batch)  # every event redelivered
    for country, stats in result.stats.items():
        orders = {ch.order_id for ch in batch if ch.country == country}
        assert stats["orders"] == len(orders)
        assert sum(stats["by_status"].values()) <= len(orders)
        newest = max(int(k) for k in stats["windows"])
        assert all(int(k) > newest - WINDOW_RETENTION_S for k in stats["windows"])
    assert stats_from_ledger(list(result.ledgers.values())) == result.stats


def test_revenue_is_decimal_exact_across_a_batch() -> None:
    batch = [change(i, 2, "DE", 0, 1) for i in range(1000)]  # 1000 x 0.01
    result = apply_batch({}, {}, batch)
    assert result.stats["DE"]["revenue"] == "10.00"
    assert result.stats["DE"]["windows"]["0"] == {"orders": 1000, "revenue": "10.00"}
    assert result.stats["DE"]["by_status"] == {"FULFILLED": 1000}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.builds(of_order, st.integers(0, 40), st.integers(0, 3)), max_size=80),
    st.lists(st.sampled_from([2, 3]), min_size=41, max_size=41),
)
def test_only_terminal_changes_move_the_final_figures(
    batch: list[StatusChanged], ends: list[int]
) -> None:
    """What the repartition drops (``counts`` false) changes no figure once every order
    has reached its terminal status (the pipeline ends every order in exactly one)."""
    first: set[str] = set()
    marked = []
    for ch in batch:
        ch.previous = None if ch.order_id not in first else "CREATED"
        first.add(ch.order_id)
        marked.append(ch)
    for oid in sorted(first):
        n = int(oid.removeprefix("o-"))
        marked.append(of_order(n, ends[n]))
    every = apply_batch({}, {}, marked)
    kept = apply_batch({}, {}, [ch for ch in marked if counts(ch)])
    assert kept.stats == every.stats


def test_counts_only_terminal_changes() -> None:
    assert not counts(change(1, 0, "DE", 0, 1))  # CREATED: the terminal one counts it
    later = change(1, 1, "DE", 0, 1)
    later.previous = "CREATED"
    assert not counts(later)
    done = change(1, 2, "DE", 0, 1)
    done.previous = "PAID"
    assert counts(done)
    assert counts(change(1, 3, "DE", 0, 1))  # REJECTED straight from CREATED


def test_empty_batch_changes_nothing() -> None:
    result = apply_batch({"DE": None}, {}, [])
    assert result.stats == {} and result.ledgers == {} and result.window == {}
