"""orders_app.sink_rules: the rows the outcome sink upserts, newest per key."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from orders_app.sink_rules import Source, batch_rows, columns, order_row, split
from tables import dumps_stamped

CHANGELOG = "orders_app-order_status-changelog"


def doc(status: str, history: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "order_id": "o-1",
        "status": status,
        "customer_id": "c-1",
        "country": "DE",
        "currency": "EUR",
        "total": "12.50",
        "lines": [],
        "reasons": extra.pop("reasons", []),
        "history": [{"status": s, "at": 100.0 + i} for i, s in enumerate(history)],
        **extra,
    }


def msg(value: bytes | None, offset: int = 0, topic: str = CHANGELOG) -> Source:
    return Source(topic, 0, offset, b"o-1", value)


def stats(country: str, orders: int, at: float, window_start: float = 60.0) -> bytes:
    return orjson.dumps(
        {
            "country": country,
            "orders": orders,
            "revenue": "10.00",
            "by_status": {"FULFILLED": orders},
            "average_order_value": "5.00",
            "window_start": window_start,
            "window_end": window_start + 60,
            "window_orders": orders,
            "window_revenue": "10.00",
            "at": at,
        }
    )


def test_an_order_row_has_the_outcome_and_the_document() -> None:
    d = doc("FULFILLED", ["CREATED", "VALIDATED", "PAID", "FULFILLED"], payment={"x": 1})
    row = order_row(dumps_stamped(d, 123.5))
    assert row is not None
    assert (row.order_id, row.status, row.country, row.total) == (
        "o-1",
        "FULFILLED",
        "DE",
        Decimal("12.50"),
    )
    assert row.version == 4
    assert row.terminal_at == datetime.fromtimestamp(103.0, UTC)
    assert row.written_at == datetime.fromtimestamp(123.5, UTC)
    assert orjson.loads(row.document)["payment"] == {"x": 1}
    assert [h["status"] for h in orjson.loads(row.history)][-1] == "FULFILLED"


def test_a_non_terminal_order_has_no_terminal_time_and_a_tombstone_no_row() -> None:
    row = order_row(dumps_stamped(doc("PAID", ["CREATED", "VALIDATED", "PAID"]), 1.0))
    assert row is not None and row.terminal_at is None
    assert order_row(None) is None and order_row(b"") is None
    assert order_row(dumps_stamped(doc("", []), 1.0)) is None  # details before any status


def test_a_batch_keeps_the_newest_value_of_each_key() -> None:
    older = dumps_stamped(doc("PAID", ["CREATED", "VALIDATED", "PAID"]), 2.0)
    newer = dumps_stamped(doc("FULFILLED", ["CREATED", "VALIDATED", "PAID", "FULFILLED"]), 3.0)
    batch, bad = batch_rows([msg(older, 1), msg(newer, 2), msg(older, 3), msg(None, 4)])
    assert bad == []
    assert batch.orders["o-1"].status == "FULFILLED"
    assert batch.sources[("order", "o-1")].offset == 2
    # the same number of transitions: the later write wins (a release after CANCELLED)
    first = dumps_stamped(doc("CANCELLED", ["CREATED", "CANCELLED"], saga="a"), 5.0)
    later = dumps_stamped(doc("CANCELLED", ["CREATED", "CANCELLED"], saga="b"), 6.0)
    batch, _ = batch_rows([msg(first), msg(later)])
    assert orjson.loads(batch.orders["o-1"].document)["saga"] == "b"


def test_country_updates_give_totals_and_their_window() -> None:
    batch, bad = batch_rows(
        [
            msg(stats("DE", 5, at=10.0), topic="order_analytics"),
            msg(stats("DE", 3, at=9.0), topic="order_analytics"),  # older, later in the log
            msg(stats("FR", 1, at=11.0, window_start=120.0), topic="order_analytics"),
        ]
    )
    assert bad == []
    assert batch.countries["DE"].orders == 5
    assert batch.countries["FR"].revenue == Decimal("10.00")
    assert {k[0] for k in batch.windows} == {"DE", "FR"}
    assert batch.rows == 4
    assert [len(c) for c in columns(list(batch.countries.values()))] == [2] * 6
    assert len(split(batch)) == 4


def test_unreadable_values_are_reported_not_raised() -> None:
    batch, bad = batch_rows(
        [
            msg(b"{not json"),
            msg(orjson.dumps({"country": "DE"}), topic="order_analytics"),
            msg(dumps_stamped(doc("PAID", ["CREATED"], total="x"), 1.0)),
        ]
    )
    assert batch.rows == 0
    assert [m.offset for m, _why in bad] == [0, 0, 0] and len(bad) == 3
    assert all("outcome sink cannot read it" in why for _m, why in bad)


def test_only_the_last_document_of_each_order_is_kept_and_every_country_update() -> None:
    from orders_app.sink_rules import latest_documents

    msgs = [
        Source(CHANGELOG, 0, 1, b"o-1", b"a"),
        Source("order_analytics", 2, 1, b"DE", b"x"),
        Source(CHANGELOG, 0, 2, b"o-1", b"b"),
        Source(CHANGELOG, 1, 1, b"o-2", b"c"),
        Source("order_analytics", 2, 2, b"DE", b"y"),
    ]
    assert [m.value for m in latest_documents(msgs)] == [b"x", b"b", b"c", b"y"]
