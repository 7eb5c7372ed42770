"""The two retry policies (tenacity), driven with a fake operation and a sleep that only
records what it was asked to wait, so nothing here waits:

- ``agents.cdc.recorded_retrying``: Postgres unreachable is waited for 0.5, 1, 2, 4, 8,
  16 s (seven attempts), then the last error itself is raised (the change is
  dead-lettered); any other error at once.
- ``orders_app.sink.write_retrying``: a transient error is retried forever, 1 s doubling
  to 30 s, unless the service is stopping; what Postgres refuses is never retried.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from tenacity import AsyncRetrying

import agents.cdc
import orders_app.sink
from agents.cdc import recorded_retrying
from orders_app.metrics import BusinessMetrics
from orders_app.sink import REFUSED, OutcomeSink, write_retrying
from orders_app.sink_rules import Batch


class Flaky:
    """Raises ``errors`` one per call, then returns ``"ok"``."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


async def run(policy: AsyncRetrying, op: Flaky) -> str:
    async for attempt in policy:
        with attempt:
            return await op()
    raise AssertionError("unreachable")


# -- recorded() in agents/cdc.py -------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
        asyncpg.ConnectionDoesNotExistError("connection was closed"),
    ],
)
async def test_recorded_waits_for_postgres_and_then_answers(error: Exception) -> None:
    sleeps, op = Sleeps(), Flaky(*[error] * 6)
    assert await run(recorded_retrying(sleep=sleeps), op) == "ok"
    assert op.calls == 7
    assert sleeps == [0.5, 1, 2, 4, 8, 16]


async def test_recorded_gives_up_after_about_thirty_seconds_with_the_error_itself() -> None:
    sleeps, op = Sleeps(), Flaky(*[ConnectionRefusedError(111, "refused")] * 7)
    with pytest.raises(ConnectionRefusedError):
        await run(recorded_retrying(sleep=sleeps), op)
    assert op.calls == 7
    assert 30 <= sum(sleeps) <= 32


async def test_recorded_does_not_wait_on_other_errors() -> None:
    sleeps, op = Sleeps(), Flaky(asyncpg.UndefinedTableError("no table"))
    with pytest.raises(asyncpg.UndefinedTableError):
        await run(recorded_retrying(sleep=sleeps), op)
    assert (op.calls, sleeps) == (1, [])


# -- OutcomeSink._retrying in orders_app/sink.py ---------------------------------------------


def never() -> bool:
    return False


def sink(should_stop: Callable[[], bool] = never, sleeps: Sleeps | None = None) -> AsyncRetrying:
    return write_retrying(should_stop, rows=3, sleep=sleeps if sleeps is not None else Sleeps())


async def test_sink_retries_a_lost_connection_with_backoff_capped_at_thirty_seconds() -> None:
    sleeps = Sleeps()
    op = Flaky(*[ConnectionResetError()] * 8)
    assert await run(sink(sleeps=sleeps), op) == "ok"
    assert op.calls == 9
    assert sleeps == [1, 2, 4, 8, 16, 30, 30, 30]


async def test_sink_retries_without_a_limit() -> None:
    # "forever": far more attempts than any stop_after_attempt default would allow
    op = Flaky(*[asyncpg.CannotConnectNowError("starting up")] * 200)
    assert await run(sink(), op) == "ok"
    assert op.calls == 201


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.NumericValueOutOfRangeError("too big"),  # a DataError
        asyncpg.UniqueViolationError("dup"),  # an IntegrityConstraintViolationError
        ValueError("bad row"),
    ],
)
async def test_sink_never_retries_what_postgres_refuses(error: Exception) -> None:
    # Postgres' refusals are PostgresErrors too (the transient kind): refusal wins.
    assert isinstance(error, REFUSED)
    sleeps, op = Sleeps(), Flaky(error)
    with pytest.raises(type(error)):
        await run(sink(sleeps=sleeps), op)
    assert (op.calls, sleeps) == (1, [])


async def test_sink_raises_other_errors_at_once() -> None:
    op = Flaky(RuntimeError("a bug"))
    with pytest.raises(RuntimeError):
        await run(sink(), op)
    assert op.calls == 1


async def test_sink_stops_retrying_when_the_service_stops() -> None:
    stopping = False

    def should_stop() -> bool:
        return stopping

    sleeps = Sleeps()
    op = Flaky(*[ConnectionResetError()] * 10)

    async def op_that_stops_the_service() -> str:
        nonlocal stopping
        if op.calls == 2:
            stopping = True  # the service is asked to stop during the third attempt
        return await op()

    with pytest.raises(ConnectionResetError):
        async for attempt in sink(should_stop, sleeps):
            with attempt:
                await op_that_stops_the_service()
    assert op.calls == 3
    assert sleeps == [1, 2]


async def test_sink_logs_each_retry(caplog: pytest.LogCaptureFixture) -> None:
    op = Flaky(ConnectionResetError("gone"))
    with caplog.at_level("WARNING", logger="orders_app.sink"):
        assert await run(sink(), op) == "ok"
    assert [r.getMessage() for r in caplog.records] == [
        "outcome sink: writing 3 rows failed (gone); retry"
    ]


# -- the wiring: the real functions use these policies ----------------------------------------


class FlakyPool:
    """``acquire()`` fails with ``errors`` one per call, then yields a dummy connection."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[object]:
        if self.errors:
            raise self.errors.pop(0)
        yield object()


async def test_recorded_uses_its_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = Sleeps()

    async def document(_conn: object, order_id: str) -> dict[str, Any]:
        return {"order_id": order_id}

    monkeypatch.setattr(
        agents.cdc, "recorded_retrying", functools.partial(recorded_retrying, sleeps)
    )
    monkeypatch.setattr(agents.cdc, "recorded_document", document)
    pool = FlakyPool(ConnectionRefusedError(111, "refused"), TimeoutError())
    monkeypatch.setattr(agents.cdc, "app", SimpleNamespace(db=pool))
    assert await agents.cdc.recorded("o-1") == {"order_id": "o-1"}
    assert sleeps == [0.5, 1]


async def test_outcome_sink_write_uses_its_policy_and_counts_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sleeps = Sleeps()
    writes: list[Batch] = []

    async def write_batch(_conn: object, batch: Batch) -> None:
        writes.append(batch)

    monkeypatch.setattr(
        orders_app.sink, "write_retrying", functools.partial(write_retrying, sleep=sleeps)
    )
    monkeypatch.setattr(orders_app.sink, "write_batch", write_batch)
    metrics = BusinessMetrics()
    service = SimpleNamespace(
        should_stop=False,
        db=FlakyPool(ConnectionResetError(), OSError("no route")),
        metrics=metrics,
    )
    batch = Batch({}, {"DE": object()}, {}, {})  # type: ignore[dict-item]
    await OutcomeSink._retrying(service, batch)  # type: ignore[arg-type]
    assert writes == [batch] and sleeps == [1, 2]
    assert (
        metrics.registry.get_sample_value("orders_sink_rows_total", {"table": "country_stats_view"})
        == 1
    )
    assert metrics.registry.get_sample_value("orders_sink_batch_seconds_count") == 1
