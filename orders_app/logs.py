"""Structured logging: ``ORDERS_LOG_FORMAT=json`` turns every log record into one JSON
line (python-json-logger, serialized with orjson) with ``ts`` (UTC, milliseconds),
``level``, ``logger``, ``message``, ``pid``, ``exc`` (the traceback, as one string) when
there is one, and every field the record carries through ``extra=`` (``order_id``,
``topic``, ``partition``, ``offset``, ``agent`` ...) whose value is not None."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.core import LogData
from pythonjsonlogger.orjson import OrjsonFormatter


class JsonFormatter(OrjsonFormatter):
    """The library's formatter with this app's field names and timestamp."""

    def __init__(self) -> None:
        super().__init__(
            ["asctime", "levelname", "name", "message", "process"],
            rename_fields={
                "asctime": "ts",
                "levelname": "level",
                "name": "logger",
                "process": "pid",
                "exc_info": "exc",
            },
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # ISO 8601 in UTC (``2026-01-02T03:04:05.678+00:00``), not logging's local time.
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")

    def process_log_record(self, log_data: LogData) -> LogData:
        # An ``extra=`` field that is None (a dead letter without a key) is left out, as
        # a field that is not there: consumers of the lines test for presence.
        return {k: v for k, v in log_data.items() if v is not None}


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for JSON lines on stderr (Faust's ``logging_config``)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "orders_app.logs.JsonFormatter"}},
        "handlers": {
            "json": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["json"]},
    }
