"""POST /orders: validation (422 naming the field, 413 for oversized bodies), no row for
a rejected request, Idempotency-Key, bearer token."""

from __future__ import annotations

import asyncpg
import pytest

from tests.support import ahttp

pytestmark = pytest.mark.integration

VALID = {
    "customer_id": "c-42",
    "country": "DE",
    "currency": "EUR",
    "lines": [{"sku": "SKU-0001", "quantity": 2, "unit_price": "19.99"}],
    "payment_method": "tok_visa",
}


def with_(**changes):  # type: ignore[no-untyped-def]
    body = {**VALID, **changes}
    return {k: v for k, v in body.items() if v is not ...}


def line(**changes):  # type: ignore[no-untyped-def]
    return with_(lines=[{**VALID["lines"][0], **changes}])


BAD = [
    ("missing field", with_(customer_id=...), "customer_id"),
    ("bad country", with_(country="XX"), "country"),
    ("lower-case country", with_(country="de"), "country"),
    ("zero quantity", line(quantity=0), "lines.0.quantity"),
    ("negative price", line(unit_price="-1.00"), "lines.0.unit_price"),
    ("non-decimal price", line(unit_price="abc"), "lines.0.unit_price"),
    ("float price", line(unit_price=19.99), "lines.0.unit_price"),
    ("unknown currency", with_(currency="XYZ"), "currency"),
    ("no lines", with_(lines=[]), "lines"),
    ("unknown field", with_(coupon="FREE"), "coupon"),
]


async def count_orders(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM orders"))
    finally:
        await conn.close()


async def test_bad_bodies_get_4xx_naming_the_field_and_write_nothing(stack, workers) -> None:
    worker = workers.start()
    await workers.wait_ready(worker)
    url = f"{worker.url}/orders"
    for name, body, field in BAD:
        status, resp, _ = await ahttp("POST", url, body)
        assert status == 422, (name, status, resp)
        assert field in {e["field"] for e in resp["errors"]}, (name, resp)
        assert all(e["message"] for e in resp["errors"])
    status, resp, _ = await ahttp("POST", url, b"{not json")
    assert status == 422 and resp["error"] == "invalid JSON"
    status, resp, _ = await ahttp("POST", url, b'{"x": "' + b"a" * 70_000 + b'"}')
    assert status == 413, resp
    assert await count_orders(stack.dsn) == 0

    status, created, headers = await ahttp("POST", url, VALID)
    assert status == 201 and created["total"] == "39.98" and created["status"] == "CREATED"
    assert headers["Location"] == f"/orders/{created['order_id']}"
    assert await count_orders(stack.dsn) == 1


async def test_idempotency_key_gives_one_row_and_the_same_response(stack, workers) -> None:
    worker = workers.start()
    await workers.wait_ready(worker)
    url = f"{worker.url}/orders"
    first = await ahttp("POST", url, VALID, {"Idempotency-Key": "same-key"})
    second = await ahttp("POST", url, VALID, {"Idempotency-Key": "same-key"})
    assert first[0] == second[0] == 201
    assert first[1] == second[1]
    assert second[2].get("Idempotent-Replayed") == "true"
    assert await count_orders(stack.dsn) == 1
    third = await ahttp("POST", url, VALID, {"Idempotency-Key": "other-key"})
    assert third[1]["order_id"] != first[1]["order_id"]
    assert await count_orders(stack.dsn) == 2


async def test_api_token_is_required_for_writes_when_set(stack, workers) -> None:
    worker = workers.start({"ORDERS_API_TOKEN": "s3cret"})
    await workers.wait_ready(worker)
    url = f"{worker.url}/orders"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        status, resp, hdrs = await ahttp("POST", url, VALID, headers)
        assert status == 401, (headers, resp)
        assert hdrs.get("WWW-Authenticate") == "Bearer"
    assert await count_orders(stack.dsn) == 0
    status, _resp, _ = await ahttp("POST", url, VALID, {"Authorization": "Bearer s3cret"})
    assert status == 201
    assert await count_orders(stack.dsn) == 1
    status, _body, _ = await ahttp("GET", f"{worker.url}/health")
    assert status == 200  # reads stay open
