"""The dashboard's figures without a broker: quantiles from histogram buckets, per-worker
deltas, throughput buckets from country totals, dead letters per minute, lag per agent,
and the coalesced stream writing at most once per interval."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from web import dashboard
from web.dashboard import (
    DeadLetterMinutes,
    Latency,
    Throughput,
    agent_lag,
    bucket_delta,
    bucket_sum,
    coalesce_seconds,
    histogram_quantile,
    merge_lag,
)

INF = math.inf


def hist(*counts: float, bounds: tuple[float, ...] = (0.1, 0.5, 1.0, INF)) -> list:
    """Cumulative buckets from per-bucket counts."""
    total, out = 0.0, []
    for bound, n in zip(bounds, counts, strict=True):
        total += n
        out.append((bound, total))
    return out


def test_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    buckets = hist(10, 10, 0, 0)  # 10 in (0, 0.1], 10 in (0.1, 0.5]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.3)
    assert histogram_quantile(0.99, hist(0, 0, 0, 5)) == 1.0  # +Inf: the highest bound
    assert histogram_quantile(0.5, hist(0, 0, 0, 0)) is None
    assert histogram_quantile(0.5, []) is None


@given(st.lists(st.integers(0, 50), min_size=4, max_size=4), st.floats(0.01, 0.99))
def test_quantiles_grow_with_q_and_stay_within_the_bounds(counts: list[int], q: float) -> None:
    buckets = hist(*counts)
    low, high = histogram_quantile(q, buckets), histogram_quantile(min(1.0, q + 0.01), buckets)
    if sum(counts) == 0:
        assert low is None
        return
    assert low is not None and high is not None
    assert 0.0 <= low <= high <= 1.0


def test_bucket_delta_and_sum() -> None:
    assert bucket_delta(hist(3, 2, 0, 0), hist(1, 1, 0, 0)) == hist(2, 1, 0, 0)
    assert bucket_delta(hist(3, 2, 0, 0), None) is None  # no baseline yet
    assert bucket_delta(hist(1, 0, 0, 0), hist(3, 2, 0, 0)) is None  # the worker restarted
    assert bucket_delta(hist(1, 0, bounds=(1, INF)), hist(1, 0, 0, 0)) is None
    assert bucket_sum([hist(1, 0, 0, 0), hist(0, 2, 0, 1)]) == hist(1, 2, 0, 1)
    assert bucket_sum([]) == []


def test_latency_adds_what_each_worker_grew_over_the_window() -> None:
    latency = Latency(window_s=10)
    first = latency.observe(100.0, {"a": hist(5, 0, 0, 0), "b": hist(0, 5, 0, 0)})
    assert first == {"p50": None, "p99": None, "count": 0}  # baselines only
    second = latency.observe(101.0, {"a": hist(15, 0, 0, 0), "b": hist(0, 15, 0, 0)})
    assert second["count"] == 20 and second["p50"] == pytest.approx(0.1)
    # worker b restarts (its counts drop): a new baseline, not a negative count
    third = latency.observe(102.0, {"a": hist(15, 0, 0, 0), "b": hist(0, 1, 0, 0)})
    assert third["count"] == 20
    assert latency.observe(111.5, {"a": hist(15, 0, 0, 0)})["count"] == 0  # out of window


def test_lag_per_agent_over_the_assigned_partitions() -> None:
    agents = {"status": ("order_created", "order_validated"), "fraud": ("by_customer",)}
    assigned = [("order_created", 0), ("order_validated", 1), ("by_customer", 0), ("x", 0)]
    end = {("order_created", 0): 100, ("order_validated", 1): 50, ("by_customer", 0): 9}
    read = {("order_created", 0): 89}  # next to read: 90
    committed = {("order_validated", 1): 45, ("by_customer", 0): 9}
    assert agent_lag(agents, assigned, end, read, committed) == {"status": 15, "fraud": 0}
    # a partition without a high water mark yet counts 0, an agent with none assigned is absent
    assert agent_lag(agents, [("by_customer", 0)], {}, {}, {}) == {"fraud": 0}
    assert merge_lag([{"status": 3, "fraud": 1}, {"status": 4}]) == {"fraud": 1, "status": 7}


def country(code: str, at: float, **by_status: int) -> dict[str, Any]:
    return {"country": code, "by_status": by_status, "at": at, "orders": sum(by_status.values())}


def test_throughput_counts_growth_at_the_emit_time_in_buckets() -> None:
    t = Throughput(keep_s=600, bucket_s=2)
    t.baseline(country("DE", 990.0, FULFILLED=100))  # seen mid-stream: not a rate
    t.observe(country("DE", 1000.5, FULFILLED=104, REJECTED=1), now=1001)
    t.observe(country("FR", 1001.0, FULFILLED=2), now=1001)  # first FR: all of it is new
    t.observe(country("DE", 1003.0, FULFILLED=103), now=1003)  # a correction down: no rate
    t.observe(country("DE", 100.0, FULFILLED=110), now=1003)  # older than kept: dropped
    points = dict((start, rates) for start, rates in t.points(now=1006.5))
    assert sorted(points) == [1000, 1002, 1004]  # complete buckets, from the first order
    assert points[1000] == {"CANCELLED": 0, "FULFILLED": 3.0, "PAYMENT_FAILED": 0, "REJECTED": 0.5}
    assert points[1002]["FULFILLED"] == 0
    assert [p[0] for p in t.points(now=1006.5, since=1003)] == [1002, 1004]
    assert Throughput().points(now=5.0) == []


def test_dead_letters_per_minute_counted_once() -> None:
    d = DeadLetterMinutes(minutes=3)
    letter = {"topic": "t", "partition": 0, "offset": 7, "at": 125.0}
    d.observe(letter, now=130)
    d.observe(letter, now=130)  # the same letter again (the feed's deque, then the stream)
    d.observe({"topic": "t", "partition": 0, "offset": 8, "at": 60.0}, now=130)
    d.observe({"topic": "t", "partition": 1, "offset": 8}, now=190)  # no time: now
    assert d.points(now=190) == [[60, 1], [120, 1], [180, 1]]
    assert d.points(now=250) == [[120, 1], [180, 1], [240, 0]]


def test_coalesce_parameter() -> None:
    assert coalesce_seconds(None) is None
    assert coalesce_seconds("250") == 0.25
    assert coalesce_seconds("") == 0.25
    assert coalesce_seconds("nope") == 0.25
    assert coalesce_seconds("nan") == 0.25
    assert coalesce_seconds("1") == 0.05
    assert coalesce_seconds("1e9") == 5.0


class FakeFeed:
    def __init__(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        self.events = events

    async def subscribe(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        for item in self.events:
            yield item
        await asyncio.Event().wait()  # a live feed never ends


class FakePulse:
    async def subscribe(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        yield "pipeline_history", {"samples": []}
        await asyncio.Event().wait()


async def test_live_stream_writes_each_country_once_per_flush(monkeypatch) -> None:
    events = [("country", {"country": "DE", "orders": n}) for n in range(1, 500)]
    events += [("dead_letter", {"offset": n}) for n in range(30)]
    events += [("country", {"country": "FR", "orders": 1})]
    monkeypatch.setattr(dashboard, "app", SimpleNamespace(feed=FakeFeed(events)))
    monkeypatch.setattr(dashboard, "pulse", FakePulse())
    writes: list[bytes] = []

    async def write(chunk: bytes) -> None:
        writes.append(chunk)

    task = asyncio.ensure_future(dashboard.live_stream(write, 0.05, pipeline=True))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(writes) == 1  # everything arrived at once: one write
    sent = [
        (block.split("\n")[0][7:], orjson.loads(block.split("\n")[1][6:]))
        for block in writes[0].decode().strip().split("\n\n")
    ]
    kinds = [kind for kind, _ in sent]
    assert kinds[0] == "pipeline_history"
    countries = [d for kind, d in sent if kind == "country"]
    assert countries == [{"country": "DE", "orders": 499}, {"country": "FR", "orders": 1}]
    letters = [d["offset"] for kind, d in sent if kind == "dead_letter"]
    assert letters == list(range(10, 30))  # the newest LETTERS_PER_FLUSH
