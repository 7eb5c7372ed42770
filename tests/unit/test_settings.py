"""orders_app.settings: ORDERS_* environment, defaults, one-line errors, exit status 2."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from orders_app.settings import Settings, describe_error, load_settings_or_exit


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ORDERS_* variable from the outer environment leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("ORDERS_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    s = Settings()
    assert s.app_id == "orders_app"
    assert s.broker_url == "kafka://127.0.0.1:9092"
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.store_url == "rocksdb://"
    assert s.data_dir == Path(".data/worker")
    assert s.postgres_dsn == "postgresql://postgres@127.0.0.1:5432/orders"
    assert s.web_host == "127.0.0.1"
    assert s.web_port == 6066
    assert s.partitions == 4
    assert s.replication_factor == 1
    assert s.api_token is None
    assert s.processing_guarantee == "at_least_once"
    assert s.cdc_enabled is True
    assert s.fraud_max_total == Decimal("5000")
    assert isinstance(s.fraud_max_total, Decimal)
    assert s.fraud_velocity_count == 5
    assert s.fraud_velocity_amount == Decimal("2000")
    assert s.fraud_blocked_countries == frozenset()
    assert s.log_format == "text"
    assert s.max_body_bytes == 65536


def test_values_come_from_orders_prefixed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERS_WEB_PORT", "8081")
    monkeypatch.setenv("ORDERS_FRAUD_MAX_TOTAL", "123.45")
    monkeypatch.setenv("ORDERS_CDC_ENABLED", "false")
    monkeypatch.setenv("WEB_PORT", "1")  # no prefix: ignored
    s = Settings()
    assert s.web_port == 8081
    assert s.fraud_max_total == Decimal("123.45")
    assert isinstance(s.fraud_max_total, Decimal)
    assert s.cdc_enabled is False


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.web_port = 1  # type: ignore[misc]


def test_bad_port_raises_validation_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERS_WEB_PORT", "abc")
    with pytest.raises(ValidationError):
        Settings()


def test_describe_error_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERS_WEB_PORT", "abc")
    with pytest.raises(ValidationError) as info:
        Settings()
    line = describe_error(info.value)
    assert "\n" not in line
    assert "ORDERS_WEB_PORT" in line
    assert "'abc'" in line
    assert "worker web port" in line  # what is allowed (the field description)


@pytest.mark.parametrize("port", ["0", "65536", "-1"])
def test_out_of_range_port_rejected(monkeypatch: pytest.MonkeyPatch, port: str) -> None:
    monkeypatch.setenv("ORDERS_WEB_PORT", port)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert "ORDERS_WEB_PORT" in describe_error(info.value)


def test_load_settings_or_exit_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ORDERS_WEB_PORT", "abc")
    with pytest.raises(SystemExit) as info:
        load_settings_or_exit()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("orders-app: invalid setting ORDERS_WEB_PORT=")
    assert "Traceback" not in err
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ is True


def test_load_settings_or_exit_returns_settings_when_valid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORDERS_WEB_PORT", "7000")
    assert load_settings_or_exit().web_port == 7000


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("de, fr", {"DE", "FR"}),
        ("DE", {"DE"}),
        (" us ,, gb ,", {"US", "GB"}),
        ("", set()),
    ],
)
def test_fraud_blocked_countries_parses_comma_list(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: set[str]
) -> None:
    monkeypatch.setenv("ORDERS_FRAUD_BLOCKED_COUNTRIES", raw)
    assert Settings().fraud_blocked_countries == frozenset(expected)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9092",
        "127.0.0.1:9092",
        "kafka://localhost",
        "kafka://a:1;b:2",
        "kafka://a:1;",
    ],
)
def test_bad_broker_url_rejected(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("ORDERS_BROKER_URL", url)
    with pytest.raises(ValidationError) as info:
        Settings()
    line = describe_error(info.value)
    assert "ORDERS_BROKER_URL" in line
    assert "\n" not in line


@pytest.mark.parametrize(
    ("url", "bootstrap"),
    [
        ("kafka://broker:9092", "broker:9092"),
        ("kafka://a:1;aiokafka://b:2", "a:1,b:2"),
    ],
)
def test_good_broker_url_and_bootstrap(
    monkeypatch: pytest.MonkeyPatch, url: str, bootstrap: str
) -> None:
    monkeypatch.setenv("ORDERS_BROKER_URL", url)
    assert Settings().kafka_bootstrap == bootstrap


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ORDERS_POSTGRES_DSN", "mysql://x@y/z"),
        ("ORDERS_STORE_URL", "redis://"),
        ("ORDERS_APP_ID", "bad id!"),
        ("ORDERS_PROCESSING_GUARANTEE", "maybe"),
        ("ORDERS_FRAUD_MAX_TOTAL", "0"),
        ("ORDERS_FRAUD_VELOCITY_COUNT", "0"),
        ("ORDERS_PARTITIONS", "257"),
        ("ORDERS_CDC_SLOT", "Bad-Slot"),
        ("ORDERS_LOG_FORMAT", "xml"),
        ("ORDERS_FETCH_WAIT_MS", "0"),
        ("ORDERS_FETCH_WAIT_MS", "soon"),
        ("ORDERS_BATCH_MAX", "0"),
        ("ORDERS_EVENT_LOOP", "trio"),
        ("ORDERS_ORDER_RETENTION", "0"),
        ("ORDERS_ORDER_RETENTION", "a week"),
        ("ORDERS_EMBEDDED_BROKER_PID", "0"),
    ],
)
def test_other_bad_values_name_their_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        Settings()
    line = describe_error(info.value)
    assert line.startswith(f"invalid setting {name}=")
    assert "\n" not in line


def test_performance_settings_defaults() -> None:
    settings = Settings()
    assert settings.fetch_wait_ms == 20
    assert settings.order_retention.total_seconds() == 7 * 86400
    assert settings.batch_max == 2000
    assert settings.event_loop == "uvloop"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("7d", 604800.0), ("12h", 43200.0), ("90", 90.0), ("2.5", 2.5), ("P1D", 86400.0)],
)
def test_order_retention_forms(monkeypatch: pytest.MonkeyPatch, value: str, seconds: float) -> None:
    monkeypatch.setenv("ORDERS_ORDER_RETENTION", value)
    assert Settings().order_retention.total_seconds() == seconds


def test_settings_reach_faust_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    import faust
    from faust.utils.optin import cython_optimizations_enabled

    from orders_app.app import apply_settings

    monkeypatch.setenv("ORDERS_CYTHON_OPTIMIZATIONS", "true")
    monkeypatch.setenv("ORDERS_SESSION_TIMEOUT", "6")
    probe = faust.App("settings-probe", broker="kafka://127.0.0.1:1")
    apply_settings(probe.conf, Settings())
    assert cython_optimizations_enabled(probe.conf)
    assert probe.conf.broker_session_timeout == 6.0
    assert probe.conf.consumer_auto_offset_reset == "earliest"


def test_side_readers_fetch_less_often_than_the_agents() -> None:
    """The feed and the outcome sink need not wake every ``fetch_wait_ms``: each Fetch answer
    costs a decode of all their partitions (orders_app/app.py), so they wait longer -
    unless the setting asks for longer still."""
    from orders_app.app import FEED_FETCH_WAIT_MS, SINK_FETCH_WAIT_MS, OrdersApp

    app = OrdersApp("side-readers-20")
    app.use_settings(Settings(fetch_wait_ms=20))
    assert app.feed.fetch_wait_ms == FEED_FETCH_WAIT_MS == 100
    assert app.sink.fetch_wait_ms == SINK_FETCH_WAIT_MS == 250
    slow = OrdersApp("side-readers-500")
    slow.use_settings(Settings(fetch_wait_ms=500))
    assert slow.feed.fetch_wait_ms == 500
    assert slow.sink.fetch_wait_ms == 500
