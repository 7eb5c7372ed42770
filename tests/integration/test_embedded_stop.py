"""The embedded PostgreSQL is stopped whatever ``pg_ctl stop`` says: a server left running
would outlive ``orders-app run`` and the tests (a full-suite run once found one alive
after ``orders-app run`` had exited 0, its log without a shutdown request).  And
``orders-app run`` reports a part that fails to stop and still stops the others."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from orders_app.embedded.servers import EmbeddedPostgres, StackError, _alive, _live_pid

pytestmark = pytest.mark.integration


def postmaster(pgdata: Path) -> int | None:
    return _live_pid(pgdata / "postmaster.pid")


async def test_a_failing_pg_ctl_stop_still_stops_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg")
    await pg.start()
    pid = postmaster(pg.pgdata)
    assert pid is not None
    run = pg._run

    def failing_stop(*args: str, **kw: Any) -> None:
        if args[0] == "pg_ctl" and "stop" in args:
            raise StackError("pg_ctl failed: (made to fail by the test)")
        run(*args, **kw)

    monkeypatch.setattr(pg, "_run", failing_stop)
    with caplog.at_level(logging.WARNING, logger="orders_app.embedded.servers"):
        await pg.stop()
    assert postmaster(pg.pgdata) is None
    assert not _alive(pid)  # gone, or a zombie its new parent has not reaped yet
    assert "stopping the postmaster by signal" in caplog.text


async def test_a_server_nobody_stopped_is_found_and_stopped(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg")
    await pg.start()
    assert postmaster(pg.pgdata) is not None
    # Another handle on the same data directory, as `orders-app run` after a stop that
    # never reached the server.
    other = EmbeddedPostgres(tmp_path / "pg")
    assert other.ensure_stopped() is True
    assert postmaster(pg.pgdata) is None
    assert other.ensure_stopped() is False
    await pg.stop()  # nothing left to stop: no error


async def test_run_reports_a_part_that_fails_to_stop_and_stops_the_rest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from orders_app.cli import _stop_reporting

    stopped: list[str] = []

    async def broken() -> None:
        raise RuntimeError("boom")

    async def fine() -> None:
        stopped.append("fine")

    await _stop_reporting("DebeziumConnect", broken)
    await _stop_reporting("EmbeddedPostgres", fine)
    assert stopped == ["fine"]
    err = capsys.readouterr().err
    assert err.strip() == "orders-app: stopping DebeziumConnect failed: RuntimeError('boom')"
