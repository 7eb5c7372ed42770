"""``GET /openapi.json``: the worker's HTTP API as an OpenAPI 3.1 document.

The document is data built in one place, :func:`document`, once per process:

- the ``POST /orders`` body schema is generated from the pydantic model that validates
  it (:class:`web.orders_rules.OrderIn`, its ``country``/``currency`` enumerations
  included); only ``unit_price`` is filled in here while the model's own schema for it
  admits numbers (its validator takes decimal strings only);
- every JSON answer is a pydantic model below (``*Out``), turned into
  ``components/schemas`` by pydantic;
- what depends on the worker's configuration follows it: bearer auth (and the 401) only
  when ``ORDERS_API_TOKEN`` is set, the largest body (``ORDERS_MAX_BODY_BYTES``), the
  table names Faust's ``/router`` and ``/table`` endpoints take, and those endpoints only
  while their Faust settings enable them.

Faust registers ``HEAD`` beside every view and answers it with ``GET`` (``HEAD`` of
``POST /orders`` answers 405); the document leaves ``HEAD`` out.

Kept true by ``tests/unit/test_openapi_routes.py`` (the (method, path) pairs the aiohttp
router serves, the query parameters each view reads, the request rules against the model)
and ``tests/integration/test_openapi.py`` (schemathesis against a live worker).
"""

from __future__ import annotations

import copy
import functools
from datetime import datetime
from typing import Annotated, Any, Literal

from faust.web import Request, Response, View
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema
from pydantic.json_schema import models_json_schema

from orders_app.app import app
from web.dashboard import COALESCE_DEFAULT_MS, COALESCE_RANGE_MS, STATIC
from web.orders import MAX_TOTAL, MAX_WAIT_S, STATUSES
from web.orders_rules import LineIn, OrderIn
from web.routing import ROUTE_WAIT_S

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"

# What a client may send as money: what ``parse_money`` accepts, in its plain form (at
# most ten integer digits and two decimals).  Answers carry ``str(Decimal)``.
MONEY_IN = r"^[0-9]{1,10}(\.[0-9]{1,2})?$"
MONEY_OUT = r"^-?[0-9]+(\.[0-9]+)?(E[+-][0-9]+)?$"
# Postgres text cannot hold NUL: ``POST /orders`` refuses it in any string (422).
NO_NUL = "^[^\\u0000]*$"

JSON = "application/json"


# -- the JSON answers ------------------------------------------------------------------------

Money = Annotated[str, Field(pattern=MONEY_OUT, examples=["19.99"])]
Status = Annotated[str, WithJsonSchema({"type": "string", "enum": list(STATUSES)})]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    """``{"error": ...}``; Faust's own errors add context fields (``name``, ``key``)."""

    error: str


class FieldErrorOut(_Shape):
    field: str = Field(description='dotted path such as "lines.0.quantity", or a header')
    message: str


class InvalidOut(_Shape):
    """422: every field that failed, by name."""

    error: str
    errors: list[FieldErrorOut]


class LineOut(_Shape):
    sku: str
    quantity: int
    unit_price: Money


class OrderCreatedOut(_Shape):
    """201 of ``POST /orders``: the committed row."""

    order_id: str
    status: Literal["CREATED"]
    customer_id: str
    country: str
    currency: str
    total: Money
    lines: list[LineOut]
    payment_method: str
    created_at: datetime
    idempotency_key: str | None


class HistoryOut(_Shape):
    status: Status
    at: float = Field(description="Unix time of the transition")


class OrderOut(_Shape):
    """``GET /orders/{order_id}``; the details are null until ``order_created`` was seen."""

    order_id: str
    status: Status
    customer_id: str | None
    country: str | None
    currency: str | None
    total: Money | None
    lines: list[LineOut]
    history: list[HistoryOut]
    reasons: list[str] = Field(description='rule ids such as "fraud:max_total"')


class StockOut(_Shape):
    sku: str
    available: int
    reserved: int
    total: int


class CountryTotalsOut(_Shape):
    orders: int
    revenue: Money
    by_status: dict[str, int]
    average_order_value: Money


class CountriesOut(_Shape):
    countries: dict[str, CountryTotalsOut]


class WindowOut(_Shape):
    start: int
    end: int
    orders: int
    revenue: Money
    closed: bool


class CountryOut(CountryTotalsOut):
    country: str
    windows: list[WindowOut] = Field(description="the last per-minute tumbling windows")


class DeadLetterOut(_Shape):
    topic: str | None
    partition: int | None
    offset: int | None
    key: str | None
    error: str | None
    agent: str | None
    at: float | None


class DeadLettersOut(_Shape):
    dead_letters: list[DeadLetterOut] = Field(description="the newest, oldest first")


class HealthOut(_Shape):
    status: Literal["ok"]


class ReadyChecksOut(_Shape):
    broker: bool
    postgres: bool
    partitions_assigned: int


class ReadyOut(_Shape):
    ready: bool
    checks: ReadyChecksOut


class LocalFiguresOut(_Shape):
    worker: str
    at: float
    latency_buckets: list[
        Annotated[list[float | Literal["+Inf"]], Field(min_length=2, max_length=2)]
    ] = Field(description="cumulative end-to-end latency histogram: [upper bound (s), count]")
    lag: dict[str, int] = Field(description="records not yet read, per agent")


class TableInfoOut(_Shape):
    name: str
    help: str


MODELS: tuple[type[BaseModel], ...] = (
    OrderIn,
    ErrorOut,
    InvalidOut,
    OrderCreatedOut,
    OrderOut,
    StockOut,
    CountriesOut,
    CountryOut,
    DeadLettersOut,
    HealthOut,
    ReadyOut,
    LocalFiguresOut,
    TableInfoOut,
)


# -- building blocks -------------------------------------------------------------------------


def ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def json_response(
    description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return json_response(description, ref(ErrorOut), headers)


def header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or {"type": "string"}}


RETRY_AFTER = {"Retry-After": header("seconds", {"type": "string", "pattern": "^[0-9]+$"})}
NO_OWNER = error(
    f"no worker owns the key yet (start-up, rebalance; waited {ROUTE_WAIT_S:g} s)",
    RETRY_AFTER,
)
INVALID = json_response("invalid request: every failing field, by name", ref(InvalidOut))


def path_param(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or {"type": "string", "minLength": 1},
    }


def query_param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


LOCAL = query_param(
    "local",
    "any non-empty value: answer from this worker's own partitions (no routing / fan-out)",
    {"type": "string"},
)


def operation(
    op_id: str,
    summary: str,
    tag: str,
    responses: dict[int, dict[str, Any]],
    parameters: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "tags": [tag],
        "responses": {str(code): resp for code, resp in sorted(responses.items())},
    }
    if parameters:
        out["parameters"] = parameters
    out.update(extra)
    return out


def component_schemas() -> dict[str, Any]:
    """``components/schemas``: every model above, the ``POST /orders`` body from
    :class:`OrderIn` plus what ``POST /orders`` checks beyond the model: no NUL in a
    string, the total's range; ``unit_price`` made the decimal string its validator
    takes."""
    _, top = models_json_schema([(m, "validation") for m in MODELS], ref_template=REF)
    schemas: dict[str, Any] = copy.deepcopy(top["$defs"])
    order = schemas[OrderIn.__name__]
    line = schemas[order["properties"]["lines"]["items"]["$ref"].rsplit("/", 1)[-1]]
    for model in (order, line):
        for prop in model["properties"].values():
            if prop.get("type") == "string" and "pattern" not in prop and "enum" not in prop:
                prop["pattern"] = NO_NUL
    quantity = line["properties"]["quantity"]
    if quantity.get("type") == "integer" and not _takes_integral_floats():
        quantity["description"] = "a JSON integer written without a fraction (2.0 is refused)"
    order["properties"]["lines"]["description"] = (
        f"the order's total (sum of quantity x unit_price) must be below {MAX_TOTAL:f}"
    )
    price = line["properties"]["unit_price"]
    if price.get("type") != "string" or "anyOf" in price:
        line["properties"]["unit_price"] = {
            "type": "string",
            "pattern": MONEY_IN,
            "description": "a decimal string, non-negative, at most two decimals (never a "
            "JSON number)",
            "examples": ["19.99"],
        }
    order["examples"] = [
        {
            "customer_id": "c-42",
            "country": "DE",
            "currency": "EUR",
            "lines": [{"sku": "SKU-0001", "quantity": 2, "unit_price": "19.99"}],
            "payment_method": "tok_visa",
        }
    ]
    return schemas


def _takes_integral_floats() -> bool:
    try:
        LineIn.model_validate({"sku": "S", "quantity": 2.0, "unit_price": "1"})
    except ValidationError:
        return False
    return True


# -- the routes ------------------------------------------------------------------------------


def order_paths(token: bool, max_body: int) -> dict[str, Any]:
    post_responses = {
        201: json_response(
            "committed (the event reaches Kafka through CDC); a repeated Idempotency-Key "
            "answers the first order again, with Idempotent-Replayed: true",
            ref(OrderCreatedOut),
            {
                "Location": header("/orders/{order_id}"),
                "Idempotent-Replayed": header("present on a replay", {"const": "true"}),
            },
        ),
        413: error(f"body larger than {max_body} bytes"),
        422: INVALID,
    }
    security: list[dict[str, list[str]]] = []
    if token:
        post_responses[401] = error(
            "missing or wrong bearer token", {"WWW-Authenticate": header("Bearer")}
        )
        security = [{"bearerAuth": []}]
    wait = query_param(
        "wait",
        "wait until the order reached this status (or any terminal one), or `terminal`",
        {"type": "string", "enum": [*STATUSES, "terminal"]},
    )
    timeout = query_param(
        "timeout",
        f"seconds to wait (with `wait`; larger values count as {MAX_WAIT_S:g})",
        {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S, "default": 10},
    )
    return {
        "/orders": {
            "post": operation(
                "createOrder",
                "Place an order (inserted into Postgres; no Kafka write)",
                "orders",
                post_responses,
                [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "same key, same order: never a second row",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                    }
                ],
                requestBody={
                    "required": True,
                    "content": {JSON: {"schema": ref(OrderIn)}},
                },
                security=security,
            )
        },
        "/orders/{order_id}": {
            "get": operation(
                "getOrder",
                "An order's status, history and reasons (routed to the key's owner)",
                "orders",
                {
                    200: json_response("the order", ref(OrderOut)),
                    404: error("unknown order"),
                    422: INVALID,
                    503: NO_OWNER,
                    504: error("`wait` ran out before the order reached that status"),
                },
                [path_param("order_id", "the order id"), wait, timeout, LOCAL],
            )
        },
    }


def read_paths() -> dict[str, Any]:
    coalesce_low, coalesce_high = COALESCE_RANGE_MS
    return {
        "/inventory/{sku}": {
            "get": operation(
                "getStock",
                "A sku's stock counters (routed to the key's owner)",
                "inventory",
                {
                    200: json_response("the counters", ref(StockOut)),
                    404: error("unknown sku"),
                    503: NO_OWNER,
                },
                [path_param("sku", "the product's sku"), LOCAL],
            )
        },
        "/analytics/countries": {
            "get": operation(
                "listCountries",
                "Every country's totals, gathered from every worker",
                "analytics",
                {
                    200: json_response("totals per ISO country code", ref(CountriesOut)),
                    503: error("a worker holding partitions did not answer", RETRY_AFTER),
                },
                [LOCAL],
            )
        },
        "/analytics/countries/{code}": {
            "get": operation(
                "getCountry",
                "A country's totals and its last per-minute windows (routed)",
                "analytics",
                {
                    200: json_response("the country", ref(CountryOut)),
                    404: error("no orders for this country"),
                    503: NO_OWNER,
                },
                [path_param("code", "ISO 3166-1 alpha-2 code (upper-cased)"), LOCAL],
            )
        },
        "/analytics/stream": {
            "get": operation(
                "streamAnalytics",
                "Server-sent events: `country` totals (current first, then every change) "
                "and `dead_letter`; with `pipeline`, `pipeline_history` then `pipeline` "
                "every second",
                "analytics",
                {
                    200: {
                        "description": "never ends; `: connected` and keep-alive comments "
                        "between the events",
                        "content": {"text/event-stream": {}},
                    }
                },
                [
                    query_param(
                        "coalesce",
                        f"send at most one batch per this many ms (clamped to "
                        f"{coalesce_low}..{coalesce_high}; empty or invalid: "
                        f"{COALESCE_DEFAULT_MS})",
                        {"type": "number"},
                    ),
                    query_param(
                        "pipeline",
                        "anything but empty, `0` or `false`: add the dashboard's pipeline "
                        "samples (coalesced)",
                        {"type": "string"},
                    ),
                ],
            )
        },
        "/dead-letters": {
            "get": operation(
                "listDeadLetters",
                "The newest dead letters this worker's feed has seen",
                "analytics",
                {200: json_response("the letters", ref(DeadLettersOut))},
            )
        },
    }


def ops_paths() -> dict[str, Any]:
    return {
        "/health": {
            "get": operation(
                "health",
                "The process is up",
                "operations",
                {200: json_response("up", ref(HealthOut))},
            )
        },
        "/ready": {
            "get": operation(
                "ready",
                "Broker and Postgres reachable, partitions assigned",
                "operations",
                {
                    200: json_response("ready", ref(ReadyOut)),
                    503: json_response("not ready: the checks say which part", ref(ReadyOut)),
                },
            )
        },
        "/metrics": {
            "get": operation(
                "metrics",
                "Faust's sensors and the business metrics, Prometheus text format",
                "operations",
                {200: {"description": "metrics", "content": {"text/plain": {}}}},
            )
        },
        "/openapi.json": {
            "get": operation(
                "openapi",
                "This document",
                "operations",
                {200: json_response("OpenAPI 3.1", {"type": "object"})},
            )
        },
        "/": {
            "get": operation(
                "dashboard",
                "The live dashboard page",
                "dashboard",
                {200: {"description": "the page", "content": {"text/html": {}}}},
            )
        },
        "/static/{name}": {
            "get": operation(
                "staticFile",
                "The dashboard's scripts and styles (an allowlist)",
                "dashboard",
                {
                    200: {
                        "description": "the file",
                        "content": {ctype: {} for ctype in sorted({c for _, c in STATIC.values()})},
                    },
                    404: error("not on the list, or a vendored file missing (`make vendor`)"),
                },
                [path_param("name", "file name", {"type": "string", "enum": sorted(STATIC)})],
            )
        },
        "/dashboard/local": {
            "get": operation(
                "localFigures",
                "This worker's latency histogram and lag per agent (the dashboard's peers)",
                "dashboard",
                {200: json_response("the figures", ref(LocalFiguresOut))},
            )
        },
    }


def faust_paths(router: bool, tables: bool, table_names: list[str]) -> dict[str, Any]:
    """Faust's built-in blueprints (``/router``: who owns what; ``/table``: table data),
    served while ``web_router_enabled`` / ``web_tables_enabled`` are on."""
    name = path_param("name", "a table's name", {"type": "string", "enum": table_names})
    key = path_param("key", "a key of that table")
    host_map = {
        "type": "object",
        "description": "worker URL -> topic -> partitions",
        "additionalProperties": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "integer"}},
        },
    }
    out: dict[str, Any] = {}
    if router:
        out |= {
            "/router/": {
                "get": operation(
                    "faustRouter",
                    "Partitions per worker, for every table",
                    "faust",
                    {200: json_response("the assignment", host_map)},
                )
            },
            "/router/topics": {
                "get": operation(
                    "faustRouterTopics",
                    "Partitions per worker, for every external topic",
                    "faust",
                    {200: json_response("the assignment", host_map)},
                )
            },
            "/router/{name}/": {
                "get": operation(
                    "faustRouterTable",
                    "Partitions per worker, for one table",
                    "faust",
                    {200: json_response("the assignment", host_map)},
                    [name],
                )
            },
            "/router/{name}/{key}/": {
                "get": operation(
                    "faustRouterKey",
                    "The URL of the worker that owns a key",
                    "faust",
                    {
                        200: json_response("worker URL", {"type": "string"}),
                        503: error("no owner known yet"),
                    },
                    [name, key],
                )
            },
        }
    if tables:
        out |= {
            "/table/": {
                "get": operation(
                    "faustTables",
                    "The tables",
                    "faust",
                    {
                        200: json_response(
                            "name and help", {"type": "array", "items": ref(TableInfoOut)}
                        )
                    },
                )
            },
            "/table/{name}/": {
                "get": operation(
                    "faustTable",
                    "One table",
                    "faust",
                    {200: json_response("name and help", ref(TableInfoOut)), 404: error("unknown")},
                    [name],
                )
            },
            "/table/{name}/{key}/": {
                "get": operation(
                    "faustTableKey",
                    "A table's value for a key, as stored (routed to the owner)",
                    "faust",
                    {
                        200: json_response("the stored value", {}),
                        404: error("no such key"),
                        503: error("no owner known yet"),
                    },
                    [name, key],
                )
            },
        }
    return out


def build(
    *,
    token: bool,
    max_body: int,
    router: bool,
    tables: bool,
    table_names: list[str],
) -> dict[str, Any]:
    """The document for a worker configured so."""
    paths = {
        **order_paths(token, max_body),
        **read_paths(),
        **ops_paths(),
        **faust_paths(router, tables, table_names),
    }
    components: dict[str, Any] = {"schemas": component_schemas()}
    if token:
        components["securitySchemes"] = {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "ORDERS_API_TOKEN; required for writes only",
            }
        }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "orders_app",
            "version": "1",
            "description": "The order pipeline's HTTP API (one worker's view). Every GET "
            "also answers HEAD.",
        },
        "paths": dict(sorted(paths.items())),
        "components": components,
    }


@functools.cache
def document() -> dict[str, Any]:
    """This worker's document (its settings and tables are fixed once it runs)."""
    conf = app.conf
    return build(
        token=bool(app.settings.api_token),
        max_body=app.settings.max_body_bytes,
        router=bool(conf.web_router_enabled),
        tables=bool(conf.web_tables_enabled),
        table_names=sorted(app.tables),
    )


@app.page("/openapi.json")
class OpenApi(View):
    async def get(self, request: Request) -> Response:
        return self.json(document())
