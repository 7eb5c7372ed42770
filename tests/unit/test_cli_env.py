"""``orders-app run`` hands its workers the embedded broker's pid (issue 13): each worker's
``/metrics`` then has the broker's memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from orders_app.cli import _stack_env, _worker_specs
from orders_app.settings import Settings


def test_every_worker_gets_the_embedded_broker_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _stack_env(
        {"PATH": "/usr/bin"},
        broker_url="kafka://127.0.0.1:9",
        dsn="postgresql://x",
        broker_pid=4321,
    )
    specs = _worker_specs(2, env, tmp_path, 7000)
    assert [(s.env or {}).get("ORDERS_EMBEDDED_BROKER_PID") for s in specs] == ["4321", "4321"]
    for spec in specs:
        assert spec.env is not None
        assert spec.env["ORDERS_BROKER_URL"] == "kafka://127.0.0.1:9"
        assert spec.env["PATH"] == "/usr/bin"
    # ... in the form a worker's settings read it
    monkeypatch.setenv("ORDERS_EMBEDDED_BROKER_PID", env["ORDERS_EMBEDDED_BROKER_PID"])
    assert Settings().embedded_broker_pid == 4321


def test_no_pid_without_an_embedded_broker(tmp_path: Path) -> None:
    env = _stack_env({}, broker_url="kafka://kafka:9092", dsn="postgresql://x", broker_pid=None)
    assert "ORDERS_EMBEDDED_BROKER_PID" not in env
    assert "ORDERS_EMBEDDED_BROKER_PID" not in (_worker_specs(1, env, tmp_path, 7000)[0].env or {})
