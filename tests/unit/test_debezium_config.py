"""The Debezium connector config is the one the design names: pgoutput, filtered
publication, topic prefix orders_db, string decimals, JSON without schemas."""

from __future__ import annotations

import json
from pathlib import Path

from orders_app.db import PUBLICATION

CONFIG = Path(__file__).resolve().parents[2] / "infra" / "debezium" / "orders-connector.json"


def test_connector_config_matches_the_embedded_cdc_contract() -> None:
    config = json.loads(CONFIG.read_text())["config"]
    assert config["connector.class"] == "io.debezium.connector.postgresql.PostgresConnector"
    assert config["plugin.name"] == "pgoutput"
    assert config["publication.autocreate.mode"] == "filtered"
    assert config["publication.name"] == PUBLICATION
    assert config["topic.prefix"] == "orders_db"
    assert config["decimal.handling.mode"] == "string"
    assert config["key.converter.schemas.enable"] == "false"
    assert config["value.converter.schemas.enable"] == "false"
    assert config["value.converter"].endswith("JsonConverter")
    assert int(config["heartbeat.interval.ms"]) > 0
    assert set(config["table.include.list"].split(",")) == {"public.orders", "public.products"}
