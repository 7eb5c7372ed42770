"""Settings: the one configuration object of orders_app.

Rule: every knob comes from the environment with the prefix ``ORDERS_`` (pydantic-settings);
the embedded stack only fills defaults.  Settings are read when the app is *configured*
(``app.on_configured``) or when a CLI command starts, never at import time.

A bad value is reported as one line naming the variable and what is allowed
(:func:`load_settings_or_exit`), with exit status 2 and no traceback.
"""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "ORDERS_"


class Settings(BaseSettings):
    """Every setting of the app; the env name is ``ORDERS_`` + the upper-cased field name."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    app_id: str = Field(
        "orders_app",
        pattern=r"^[A-Za-z0-9_.-]{1,100}$",
        description="Faust app id / consumer group",
    )
    broker_url: str = Field(
        "kafka://127.0.0.1:9092", description="Kafka bootstrap server(s), kafka://host:port[;...]"
    )
    store_url: str = Field("rocksdb://", description="Faust table store: rocksdb:// or memory://")
    data_dir: Path = Field(Path(".data/worker"), description="worker state (RocksDB tables)")
    postgres_dsn: str = Field(
        "postgresql://postgres@127.0.0.1:5432/orders", description="PostgreSQL (source of truth)"
    )
    web_host: str = Field("127.0.0.1", description="interface the worker's web server binds")
    web_port: int = Field(6066, ge=1, le=65535, description="worker web port")
    partitions: int = Field(4, ge=1, le=256, description="partitions of every app topic")
    replication_factor: int = Field(1, ge=1, le=5, description="replication of app topics")
    api_token: str | None = Field(None, description="bearer token required for writes when set")
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once", description="exactly_once needs real Kafka (transactions)"
    )
    session_timeout: float = Field(
        4.0,
        gt=0,
        le=300,
        description="consumer group session timeout (s); Tansu holds JoinGroup for half",
    )
    heartbeat_interval: float = Field(1.0, gt=0, le=60, description="consumer heartbeat (s)")
    fetch_wait_ms: int = Field(
        20,
        ge=1,
        le=30000,
        description="longest a fetch waits for data (ms); Tansu holds fetches long",
    )
    cdc_poll_interval: float = Field(
        0.5, gt=0, le=60, description="longest pause of the embedded CDC reader when idle (s)"
    )
    cdc_slot: str = Field(
        "orders_cdc", pattern=r"^[a-z0-9_]{1,63}$", description="replication slot"
    )
    cdc_enabled: bool = Field(
        True, description="run the embedded CDC reader inside `orders-app run`"
    )
    cdc: Literal["debezium", "builtin"] | None = Field(
        None,
        description="CDC of `orders-app run`: debezium (real, needs Java) or builtin; "
        "unset: debezium when Java is found",
    )
    fraud_max_total: Decimal = Field(Decimal("5000"), gt=0, description="reject orders above this")
    fraud_velocity_count: int = Field(5, ge=1, description="max orders per customer per minute")
    fraud_velocity_amount: Decimal = Field(
        Decimal("2000"), gt=0, description="max spend per customer per minute"
    )
    fraud_blocked_countries: Annotated[frozenset[str], NoDecode] = Field(
        frozenset(), description="comma-separated ISO country codes to reject"
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop", description="the worker's event loop: uvloop (faster), or asyncio"
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="worker log lines: text, or json (one JSON object per line)"
    )
    generator_rate: float = Field(
        20.0, ge=0, le=100000, description="orders/s of the load generator"
    )
    max_body_bytes: int = Field(65536, ge=1024, description="largest accepted HTTP body")
    skip_guard: bool = Field(
        True,
        description="guard Faust against the offset skips after an assignment (skip_guard.py)",
    )
    broker_compat: Literal["auto", "on", "off"] = Field(
        "auto",
        description="the embedded broker's work-arounds (orders_app/broker_compat/): on, off, "
        "or auto = when the broker is Tansu (probed by `orders-app worker`; on when unprobed)",
    )
    eager_delivery: bool = Field(
        True,
        description="the consumer hands a message to its agents without a task race when "
        "the handoff need not wait (orders_app/faust_patches/eager_delivery.py)",
    )
    changelog_cache: bool = Field(
        True,
        description="one changelog record per table row between two commits, as Kafka "
        "Streams' record cache (orders_app/faust_patches/changelog_cache.py)",
    )
    lean_monitor: bool = Field(
        True,
        description="Faust's Prometheus sensor with its labelled children looked up once, "
        "same metrics (orders_app/faust_patches/lean_monitor.py)",
    )
    cython_optimizations: bool = Field(
        False,
        description="Faust's repaired Cython fast paths (stream iterator, conductor)",
    )
    sink_enabled: bool = Field(
        True,
        description="write order outcomes and country totals into Postgres (outcome sink)",
    )
    batch_max: int = Field(
        2000, ge=1, le=100000, description="most events a batching agent takes at once"
    )
    order_retention: timedelta = Field(
        timedelta(days=7),
        description="per-order state expires this long after its last change "
        "(seconds, or 7d, 12h, 30m, P7D)",
    )
    redrive_after: float = Field(
        20.0,
        ge=0,
        le=3600,
        description="re-send what an order waits for (fraud check, stock replies) when it has "
        "not moved for this long (s) while later orders finished; 0 = never",
    )
    embedded_broker_pid: int | None = Field(
        None,
        ge=1,
        description="pid of the embedded broker (set by orders-app run): its RSS in /metrics",
    )

    @field_validator("fraud_blocked_countries", mode="before")
    @classmethod
    def _split_countries(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(c.strip().upper() for c in value.split(",") if c.strip())
        return value

    @field_validator("order_retention", mode="before")
    @classmethod
    def _retention_seconds(cls, value: object) -> object:
        # A bare number is seconds (as Kafka's retention.ms is a number), a number with
        # s/m/h/d/w a duration; pydantic reads "7 days", "12:00:00" and ISO 8601 itself.
        if isinstance(value, str):
            found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", value)
            if found:
                unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
                return timedelta(seconds=float(found.group(1)) * unit[found.group(2)])
        return value

    @field_validator("order_retention")
    @classmethod
    def _retention_positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0:
            raise ValueError("must be longer than 0 seconds")
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_broker(cls, value: str) -> str:
        for part in value.split(";"):
            scheme, sep, rest = part.partition("://")
            if not sep or scheme not in {"kafka", "aiokafka"} or ":" not in rest:
                raise ValueError("expected kafka://host:port (several separated by ';')")
        return value

    @field_validator("postgres_dsn")
    @classmethod
    def _check_dsn(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("expected postgresql://user[:password]@host:port/database")
        return value

    @field_validator("store_url")
    @classmethod
    def _check_store(cls, value: str) -> str:
        if not value.startswith(("rocksdb://", "memory://")):
            raise ValueError("expected rocksdb:// or memory://")
        return value

    @property
    def kafka_bootstrap(self) -> str:
        """The broker URL as aiokafka wants it (``host:port,host:port``)."""
        return ",".join(p.partition("://")[2] for p in self.broker_url.split(";"))


def describe_error(err: ValidationError) -> str:
    """One line naming the first bad variable, the bad value and what is allowed."""
    first = err.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "?"
    name = ENV_PREFIX + field.upper()
    value = first.get("input")
    message = first["msg"]
    field_info = Settings.model_fields.get(field)
    allowed = f" ({field_info.description})" if field_info and field_info.description else ""
    return f"invalid setting {name}={value!r}: {message}{allowed}"


def load_settings_or_exit() -> Settings:
    """Read settings from the environment; on a bad value print one line and exit 2."""
    try:
        return Settings()
    except ValidationError as err:
        print(f"orders-app: {describe_error(err)}", file=sys.stderr)
        raise SystemExit(2) from None
