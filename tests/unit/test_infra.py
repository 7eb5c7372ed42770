"""The production stack's files: compose validates against the compose-spec schema, every
service has a healthcheck and waits on healthy dependencies, no default passwords, the
Prometheus config scrapes the workers, and the Grafana dashboard uses the provisioned
datasource and only metrics the app exports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from orders_app.metrics import BusinessMetrics

INFRA = Path(__file__).resolve().parents[2] / "infra"
BIN = Path(sys.executable).parent


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_compose_file_validates_against_the_compose_spec() -> None:
    result = subprocess.run(
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(INFRA / "compose.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_service_has_a_healthcheck_and_healthy_dependencies() -> None:
    services = load(INFRA / "compose.yml")["services"]
    assert {
        "kafka",
        "postgres",
        "connect",
        "register-connector",
        "worker",
        "prometheus",
        "grafana",
        "kafka-ui",
    } <= set(services)
    for name, svc in services.items():
        assert "healthcheck" in svc and svc["healthcheck"]["test"], name
        for dep, cond in svc.get("depends_on", {}).items():
            assert dep in services, (name, dep)
            assert cond["condition"] in {"service_healthy", "service_completed_successfully"}, (
                name,
                dep,
            )
    kafka_env = services["kafka"]["environment"]
    assert (
        "KAFKA_ZOOKEEPER_CONNECT" not in kafka_env
        and "controller" in kafka_env["KAFKA_PROCESS_ROLES"]
    )
    assert "wal_level=logical" in services["postgres"]["command"]


def test_no_default_passwords() -> None:
    text = (INFRA / "compose.yml").read_text()
    secrets = re.findall(r"\$\{([A-Z_]*(?:PASSWORD|TOKEN|USER)[A-Z_]*)(:?[?-][^}]*)?\}", text)
    assert secrets
    for name, modifier in secrets:
        assert modifier.startswith(":?"), f"{name} must be required, not defaulted ({modifier!r})"


def test_connect_registers_the_documented_debezium_config() -> None:
    services = load(INFRA / "compose.yml")["services"]
    reg = services["register-connector"]
    assert "./debezium:/debezium:ro" in reg["volumes"]
    assert reg["entrypoint"][-1] == "/debezium/orders-connector.json"
    assert (INFRA / "debezium" / "orders-connector.json").exists()


def test_prometheus_scrapes_every_worker() -> None:
    config = load(INFRA / "prometheus" / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker = jobs["orders-workers"]
    assert worker["metrics_path"] == "/metrics"
    sd = worker["dns_sd_configs"][0]
    assert sd["names"] == ["worker"] and sd["port"] == 6066 and sd["type"] == "A"
    assert re.fullmatch(r"\d+[smh]", config["global"]["scrape_interval"])


def dashboard_exprs() -> list[str]:
    dash = json.loads((INFRA / "grafana" / "dashboards" / "orders.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def dashboard_metric_names() -> set[str]:
    names = set()
    for expr in dashboard_exprs():
        for token in re.findall(r"[a-z_][a-z0-9_]*(?=\s*[\[{)\-]|\s*$)", expr):
            if token.startswith(("orders_", "faust_")):
                names.add(token)
    return names


def test_grafana_dashboard_uses_the_provisioned_datasource() -> None:
    ds = load(INFRA / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"][
        0
    ]
    dash = json.loads((INFRA / "grafana" / "dashboards" / "orders.json").read_text())
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for needed in ("status", "revenue", "fraud", "p99", "lag", "dead letters"):
        assert needed in titles, needed
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == ds["uid"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == ds["uid"]
    provider = load(INFRA / "grafana" / "provisioning" / "dashboards" / "orders.yml")["providers"][
        0
    ]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboard_business_metrics_are_defined_by_the_app() -> None:
    exported = {m.name for m in BusinessMetrics().registry.collect()}
    for name in dashboard_metric_names():
        if name.startswith("orders_"):
            base = re.sub(r"_(total|bucket|sum|count)$", "", name)
            assert base in exported, (name, exported)
