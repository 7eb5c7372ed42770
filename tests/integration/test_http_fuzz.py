"""Property-based HTTP tests: well over 1,000 generated requests against every endpoint
never get a 5xx; oversized bodies get 413; with ORDERS_API_TOKEN set, writes without the
token get 401 and write nothing."""

from __future__ import annotations

import asyncio
import urllib.parse

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import http
from web.orders import STATUSES

pytestmark = pytest.mark.integration

TOKEN = "fuzz-token"
FAST = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=10), kids, max_size=4)
    ),
    max_leaves=12,
)
line = st.fixed_dictionaries(
    {
        "sku": st.one_of(st.sampled_from(["SKU-0001", "SKU-0002"]), st.text(max_size=12)),
        "quantity": st.one_of(st.integers(-5, 50), json_scalars),
        "unit_price": st.one_of(
            st.sampled_from(["1.00", "19.99", "-1", "abc", "1e400"]), json_scalars
        ),
    }
)
order_like = st.fixed_dictionaries(
    {
        "customer_id": st.one_of(st.text(max_size=70), json_scalars),
        "country": st.one_of(st.sampled_from(["DE", "FR", "XX", "de", ""]), json_scalars),
        "currency": st.one_of(st.sampled_from(["EUR", "USD", "XYZ"]), json_scalars),
        "lines": st.one_of(st.lists(line, max_size=3), json_values),
        "payment_method": st.one_of(
            st.sampled_from(["tok_visa", "tok_chargeDeclined", "visa"]), json_scalars
        ),
    },
    optional={"extra": json_values},
)
segment = st.text(min_size=1, max_size=40).map(lambda s: urllib.parse.quote(s, safe=""))


async def count_rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM orders"))
    finally:
        await conn.close()


async def test_generated_requests_never_5xx(stack, workers) -> None:
    worker = workers.start({"ORDERS_API_TOKEN": TOKEN})
    await workers.wait_ready(worker)
    base = worker.url
    auth = {"Authorization": f"Bearer {TOKEN}"}
    seen: list[int] = []

    def check(status: int, what: str) -> None:
        seen.append(status)
        assert 0 < status < 500, what

    @FAST
    @given(body=st.one_of(order_like, json_values), key=st.one_of(st.none(), st.text(max_size=300)))
    def post_orders(body, key) -> None:  # type: ignore[no-untyped-def]
        headers = dict(auth)
        if key is not None:
            # printable header values only (http.client refuses control characters)
            headers["Idempotency-Key"] = "".join(c for c in key if 32 <= ord(c) < 127)[:300] or "k"
        status, resp, _ = http("POST", f"{base}/orders", body, headers, timeout=30)
        check(status, f"POST {body!r} -> {status} {resp!r}")

    @FAST
    @given(raw=st.binary(max_size=300))
    def post_raw(raw: bytes) -> None:
        status, resp, _ = http("POST", f"{base}/orders", raw, auth, timeout=30)
        check(status, f"POST raw {raw!r} -> {status} {resp!r}")

    @FAST
    @given(
        oid=segment,
        wait=st.one_of(st.none(), st.text(max_size=12), st.sampled_from([*STATUSES, "terminal"])),
        timeout=st.one_of(st.none(), st.sampled_from(["0", "0.05", "-1", "abc", "nan", "1e9"])),
    )
    def get_orders(oid: str, wait: str | None, timeout: str | None) -> None:
        query = {}
        if wait is not None:
            query["wait"] = wait
            query["timeout"] = timeout if timeout not in (None, "1e9") else "0.05"
        qs = ("?" + urllib.parse.urlencode(query)) if query else ""
        status, resp, _ = http("GET", f"{base}/orders/{oid}{qs}", timeout=30)
        if status == 504:  # the documented answer when ?wait runs out
            assert wait is not None and (wait.lower() == "terminal" or wait.upper() in STATUSES)
            status = 200
        check(status, f"GET /orders/{oid}{qs} -> {status} {resp!r}")

    @FAST
    @given(path=st.sampled_from(["/inventory/", "/analytics/countries/"]), value=segment)
    def get_keyed(path: str, value: str) -> None:
        status, resp, _ = http("GET", f"{base}{path}{value}", timeout=30)
        check(status, f"GET {path}{value} -> {status} {resp!r}")

    before = await count_rows(stack.dsn)
    await asyncio.to_thread(post_orders)
    await asyncio.to_thread(post_raw)
    await asyncio.to_thread(get_orders)
    await asyncio.to_thread(get_keyed)
    for path in ("/health", "/ready", "/metrics", "/", "/analytics/countries", "/dead-letters"):
        status, _r, _h = await asyncio.to_thread(http, "GET", base + path)
        check(status, path)
    assert len(seen) >= 1000
    assert any(s == 422 for s in seen) and any(s == 404 for s in seen)
    assert worker.proc.poll() is None

    body = {
        "customer_id": "c",
        "country": "DE",
        "currency": "EUR",
        "lines": [{"sku": "SKU-0001", "quantity": 1, "unit_price": "1.00"}],
        "payment_method": "tok_visa",
    }
    status, _r, _h = await asyncio.to_thread(http, "POST", f"{base}/orders", body, auth)
    assert status == 201
    # oversized bodies: 413, nothing written
    rows = await count_rows(stack.dsn)
    status, _r, _h = await asyncio.to_thread(http, "POST", f"{base}/orders", b"x" * 70_000, auth)
    assert status == 413
    # writes without the token: 401 and nothing written
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}):
        status, _r, _h = await asyncio.to_thread(http, "POST", f"{base}/orders", body, headers)
        assert status == 401
    assert await count_rows(stack.dsn) == rows
    assert rows > before
