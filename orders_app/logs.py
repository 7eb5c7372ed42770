"""Structured logging: ``ORDERS_LOG_FORMAT=json`` turns every log record into one JSON
line with ``ts``, ``level``, ``logger``, ``message`` and, when the record carries them
(``extra=``), ``order_id``, ``topic``, ``partition``, ``offset``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

CONTEXT_FIELDS = ("order_id", "topic", "partition", "offset", "agent")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


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
