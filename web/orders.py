"""Order views: ``POST /orders`` (insert into Postgres, no Kafka write) and
``GET /orders/{id}`` (status document, routed to the worker owning the key).

Rule: POST commits the row before it answers 201; the event reaches Kafka only through
CDC (no dual write).  ``Idempotency-Key`` returns the first order for a repeated key.
``Authorization: Bearer <token>`` is required when ``ORDERS_API_TOKEN`` is set.
GET waits with ``?wait=<STATUS|terminal>&timeout=<s>`` (504 when it runs out).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from decimal import Decimal
from typing import Any

import orjson
from faust.web import Request, Response, View
from pydantic import ValidationError

from orders_app.app import app
from orders_app.db import NewOrder, insert_order
from orders_app.records import TERMINAL_STATUSES
from tables.order_status import order_status
from web.orders_rules import OrderIn, field_errors
from web.routing import routed
from web.views import order_view

MAX_WAIT_S = 60.0
STATUSES = ("CREATED", "VALIDATED", "PAID", *sorted(TERMINAL_STATUSES))
# ``orders.total`` is numeric(14, 2): a larger total would fail the INSERT (a 500).
MAX_TOTAL = Decimal("1e12")


def authorized(request: Request) -> bool:
    token = app.settings.api_token
    if not token:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


def unstorable(order: OrderIn) -> list[dict[str, str]]:
    """What the model admits but Postgres cannot store: a NUL character in a text value,
    a total beyond the column's range."""
    errors = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, str) and "\x00" in value:
            errors.append({"field": path, "message": "must not contain NUL characters"})
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{path}.{i}")

    walk(order.model_dump(mode="json"), "")
    if order.total >= MAX_TOTAL:
        errors.append({"field": "lines", "message": f"order total must be below {MAX_TOTAL:f}"})
    return errors


def order_body(row: dict[str, Any], status: str = "CREATED") -> dict[str, Any]:
    return {
        "order_id": row["id"],
        "status": status,
        "customer_id": row["customer_id"],
        "country": row["country"],
        "currency": row["currency"],
        "total": str(row["total"]),
        "lines": row["lines"],
        "payment_method": row["payment_method"],
        "created_at": row["created_at"].isoformat(),
        "idempotency_key": row["idempotency_key"],
    }


@app.page("/orders")
class Orders(View):
    async def post(self, request: Request) -> Response:
        if not authorized(request):
            return self.json(
                {"error": "missing or wrong bearer token"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        limit = app.settings.max_body_bytes
        length = request.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > limit:
            return self.error(413, f"body larger than {limit} bytes")
        raw = await request.read()
        if len(raw) > limit:
            return self.error(413, f"body larger than {limit} bytes")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            return self.json(
                {"error": "invalid JSON", "errors": [{"field": "body", "message": str(err)}]},
                status=422,
            )
        try:
            order = OrderIn.model_validate(data)
        except ValidationError as err:
            return self.json({"error": "invalid order", "errors": field_errors(err)}, status=422)
        errors = unstorable(order)
        if errors:
            return self.json({"error": "invalid order", "errors": errors}, status=422)
        key = request.headers.get("Idempotency-Key")
        if key is not None and not (0 < len(key) <= 255):
            return self.json(
                {
                    "error": "invalid order",
                    "errors": [{"field": "Idempotency-Key", "message": "1 to 255 characters"}],
                },
                status=422,
            )
        new = NewOrder(
            customer_id=order.customer_id,
            country=order.country,
            currency=order.currency,
            total=order.total,
            lines=[ln.model_dump(mode="json") for ln in order.lines],
            payment_method=order.payment_method,
            idempotency_key=key,
        )
        async with app.db.acquire() as conn:
            row, created = await insert_order(conn, new)
        body = order_body(row)
        headers = {"Location": f"/orders/{row['id']}"}
        if not created:
            # Same key, same response (as payment APIs do), flagged as a replay.
            headers["Idempotent-Replayed"] = "true"
        return self.json(body, status=201, headers=headers)


def _satisfied(doc: dict[str, Any] | None, wait: str) -> bool:
    if doc is None or doc.get("status") is None:
        return False
    if wait.lower() == "terminal":
        return doc["status"] in TERMINAL_STATUSES
    return any(h["status"] == wait.upper() for h in doc["history"]) or (
        doc["status"] in TERMINAL_STATUSES
    )


@app.page("/orders/{order_id}")
class OrderDetail(View):
    @routed(order_status, "order_id")
    async def get(self, request: Request, order_id: str) -> Response:
        wait = request.query.get("wait")
        doc = order_status.get(order_id)
        if wait is not None:
            if wait.lower() != "terminal" and wait.upper() not in STATUSES:
                return self.json(
                    {
                        "error": "invalid query",
                        "errors": [
                            {
                                "field": "wait",
                                "message": f"one of {', '.join(STATUSES)} or terminal",
                            }
                        ],
                    },
                    status=422,
                )
            try:
                timeout = min(float(request.query.get("timeout", "10")), MAX_WAIT_S)
                if timeout != timeout:  # NaN
                    raise ValueError("nan")
            except ValueError:
                return self.json(
                    {
                        "error": "invalid query",
                        "errors": [{"field": "timeout", "message": "must be a number of seconds"}],
                    },
                    status=422,
                )
            deadline = time.monotonic() + max(timeout, 0.0)
            while not _satisfied(doc, wait):
                if time.monotonic() >= deadline:
                    return self.error(504, f"order {order_id} did not reach {wait} in {timeout}s")
                await asyncio.sleep(0.05)
                doc = order_status.get(order_id)
        if doc is None or doc.get("status") is None:
            return self.error(404, f"order {order_id} not found")
        return self.json(order_view(doc))
