"""ORDERS_LOG_FORMAT=json: one JSON object per line, with the order context when known."""

from __future__ import annotations

import logging
import logging.config
from decimal import Decimal

import orjson

from orders_app.logs import JsonFormatter, logging_config


def test_json_lines_carry_order_id_topic_and_partition(capsys) -> None:  # type: ignore[no-untyped-def]
    logging.config.dictConfig(logging_config("INFO"))
    try:
        log = logging.getLogger("orders.test")
        log.warning(
            "dead letter %s",
            "x",
            extra={"order_id": "o-1", "topic": "order_created", "partition": 3},
        )
        log.info("plain")
        lines = capsys.readouterr().err.strip().splitlines()
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    first, second = (orjson.loads(line) for line in lines[-2:])
    assert first["message"] == "dead letter x" and first["level"] == "WARNING"
    assert (first["order_id"], first["topic"], first["partition"]) == ("o-1", "order_created", 3)
    assert second["message"] == "plain" and "order_id" not in second
    assert first["ts"].endswith("+00:00")


def test_exceptions_are_kept_in_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: boom" in orjson.loads(line)["exc"]


def test_fixed_fields_and_timestamp_in_utc_milliseconds() -> None:
    record = logging.LogRecord("orders.x", logging.INFO, __file__, 1, "n=%d", (5,), None)
    record.created = 1_700_000_000.1234
    doc = orjson.loads(JsonFormatter().format(record))
    assert doc == {
        "ts": "2023-11-14T22:13:20.123+00:00",
        "level": "INFO",
        "logger": "orders.x",
        "message": "n=5",
        "pid": record.process,
    }


def test_extra_fields_kept_none_left_out_and_odd_values_as_text() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "dead letter", None, None)
    record.__dict__.update(
        {"order_id": None, "topic": "order_created", "offset": 7, "amount": Decimal("1.10")}
    )
    doc = orjson.loads(JsonFormatter().format(record))
    assert "order_id" not in doc
    assert (doc["topic"], doc["offset"], doc["amount"]) == ("order_created", 7, "1.10")
