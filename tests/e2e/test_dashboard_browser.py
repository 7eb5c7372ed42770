"""The dashboard (``GET /``) in a real browser: Playwright driving Debian's chromium against
two real workers (broker, Postgres, CDC, orders from the load generator).  The charts render
and change while orders flow, every chart has data from the whole pipeline, the lookup shows
a known order's lines and history, and the form places an order (bearer token required) that
reaches a terminal status on the page.  Refreshes the README screenshot (docs/dashboard.png).

Set-up: ``make test`` installs chromium (``make browser``) and vendors uPlot
(``make vendor``); this test fails, and says so, when either is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from orders_app.embedded.generator import generate_direct, generate_postgres
from tests.conftest import ROOT
from tests.support import ahttp

pytestmark = pytest.mark.integration

CHROMIUM = Path(os.environ.get("ORDERS_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "dashboard-test-token"
SCREENSHOT = ROOT / "docs" / "dashboard.png"
CHARTS = ("throughput", "latency", "lag", "dead", "revenue")


@pytest_asyncio.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    """A fresh chromium profile; the test fails (never skips) when chromium is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: the dashboard test drives Debian's chromium. "
            "`make test` installs it (`make browser`, apt-get as root); or install it with "
            "`apt-get install chromium`, or point ORDERS_TEST_CHROMIUM at a Chromium binary."
        )
    vendored = ROOT / "web" / "static" / "vendor" / "uPlot.iife.min.js"
    if not vendored.exists():
        pytest.fail(f"{vendored} is missing: run `make vendor` (part of `make test`)")
    try:
        from playwright.async_api import async_playwright
    except ImportError as err:
        pytest.fail(f"playwright is not installed ({err}): pip install -e '.[test]'")
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            yield context
        finally:
            await context.close()


async def canvas(page: Any, chart: str) -> str:
    data: str = await page.eval_on_selector(
        f"#chart-{chart} canvas", "c => c.toDataURL('image/png')"
    )
    return data


async def post_order(url: str, body: dict[str, Any]) -> dict[str, Any]:
    status, created, _ = await ahttp(
        "POST", f"{url}/orders", body, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 201, created
    result: dict[str, Any] = created
    return result


async def test_dashboard_charts_lookup_and_test_order_in_chromium(browser, stack, workers, cdc):
    started = time.monotonic()
    env = {"ORDERS_API_TOKEN": TOKEN}
    w1, w2 = workers.start(env), workers.start(env)
    await asyncio.gather(workers.wait_ready(w1), workers.wait_ready(w2))
    generator = asyncio.create_task(generate_postgres(stack.dsn, rate=40, count=None, seed=17))
    page = None
    try:
        known = await post_order(
            w1.url,
            {
                "customer_id": "c-known",
                "country": "NZ",
                "currency": "NZD",
                "lines": [{"sku": "SKU-0003", "quantity": 3, "unit_price": "25.99"}],
                "payment_method": "tok_visa",
            },
        )
        status, final, _ = await ahttp(
            "GET", f"{w1.url}/orders/{known['order_id']}?wait=terminal&timeout=30", timeout=40
        )
        assert status == 200 and final["status"] == "FULFILLED", final

        page = await browser.new_page()
        errors: list[str] = []  # script errors
        failed: list[str] = []  # HTTP answers >= 400
        foreign: list[str] = []  # anything not from the worker (a CDN, ...)
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.on(
            "console",
            lambda msg: (
                errors.append(msg.text)
                if msg.type == "error" and not msg.text.startswith("Failed to load resource")
                else None
            ),
        )
        page.on(
            "response",
            lambda r: (
                failed.append(f"{r.request.method} {r.url} {r.status}") if r.status >= 400 else None
            ),
        )
        page.on(
            "request",
            lambda req: None if req.url.startswith(w2.url) else foreign.append(req.url),
        )
        await page.goto(w2.url + "/")  # the second worker: lookups are routed to the owner

        # every chart draws, with data from the whole pipeline (both workers)
        for chart in CHARTS:
            await page.wait_for_selector(f"#chart-{chart} canvas", timeout=10_000)
        await page.wait_for_function(
            "() => document.getElementById('workers').textContent === '2'"
            " && samples.some(s => s.latency.p99 !== null)"
            " && charts['chart-lag'].labels.includes('status')"
            " && revenueNames.length >= 10"
            " && [...throughput.values()].some(r => r.FULFILLED > 0)",
            timeout=20_000,
        )
        before = {chart: await canvas(page, chart) for chart in ("throughput", "revenue")}
        updates = int(await page.get_attribute("#chart-throughput", "data-updates") or 0)
        await page.wait_for_function(
            f"() => Number(document.getElementById('chart-throughput').dataset.updates) > {updates + 3}",
            timeout=10_000,
        )
        await asyncio.sleep(2.5)  # a new 2 s throughput bucket, new revenue
        for chart, image in before.items():
            assert await canvas(page, chart) != image, f"the {chart} chart did not change"
        cards = await page.inner_text("#cards")
        assert "orders" in cards

        # an unknown order says so
        await page.fill("#lookup-id", "no-such-order")
        await page.click("#lookup button")
        await page.wait_for_selector("#lookup-view .error", timeout=10_000)

        # lookup: the known order's lines and its history as a timeline
        await page.fill("#lookup-id", known["order_id"])
        await page.click("#lookup button")
        await page.wait_for_selector("#lookup-view[data-status=FULFILLED]", timeout=10_000)
        view = await page.inner_text("#lookup-view")
        assert "SKU-0003" in view and "c-known" in view and "NZD" in view, view
        steps = await page.eval_on_selector_all(
            "#lookup-view .timeline .badge", "els => els.map(e => e.textContent)"
        )
        assert steps[0] == "CREATED" and steps[-1] == "FULFILLED" and len(steps) >= 3, steps
        assert [h["status"] for h in final["history"]] == steps

        # the form: the API needs a token (the field is shown); without it, a 401 message
        assert await page.is_visible("#place .token")
        await page.fill("#place [name=country]", "IE")
        await page.fill("#place [name=quantity]", "1")
        await page.click("#place button")
        await page.wait_for_selector("#place-view .error", timeout=10_000)
        assert "bearer token" in await page.inner_text("#place-view")
        await page.fill("#place [name=token]", TOKEN)
        await page.click("#place button")
        await page.wait_for_selector("#place-view[data-status=FULFILLED]", timeout=30_000)
        placed = (await page.inner_text("#place-view .id")).strip()
        status, doc, _ = await ahttp("GET", f"{w1.url}/orders/{placed}")
        assert status == 200 and doc["status"] == "FULFILLED" and doc["country"] == "IE", doc

        assert not errors, errors
        assert not foreign, f"the page fetched from elsewhere: {foreign}"
        expected = (  # the unknown order, the POST without a token, the wait for CDC
            f"GET {w2.url}/orders/no-such-order 404",
            f"POST {w2.url}/orders 401",
            f"GET {w2.url}/orders/{placed} 404",
        )
        assert set(failed) <= set(expected), failed

        await page.evaluate("window.scrollTo(0, 0)")
        SCREENSHOT.parent.mkdir(exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT), full_page=True)
    finally:
        generator.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await generator
        if page is not None:
            await page.close()
    assert time.monotonic() - started < 90


async def read_stream(url: str, seconds: float) -> list[tuple[float, str, Any]]:
    """(arrival time, event, data) of an SSE stream for ``seconds``."""
    events: list[tuple[float, str, Any]] = []
    kind = ""
    timeout = aiohttp.ClientTimeout(total=seconds + 10)
    with contextlib.suppress(asyncio.TimeoutError):
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            async with asyncio.timeout(seconds):
                async for raw in resp.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        events.append((time.monotonic(), kind, orjson.loads(line[6:])))
    return events


async def test_one_worker_serves_page_and_a_coalesced_stream_with_pipeline_samples(stack, workers):
    worker = workers.start()  # no ORDERS_API_TOKEN: the page shows no token field
    await workers.wait_ready(worker)
    status, html, _ = await ahttp("GET", worker.url + "/")
    assert status == 200 and 'data-token-required="false"' in html
    for name in ("dashboard.js", "dashboard.css", "uPlot.iife.min.js", "uPlot.min.css"):
        status, _body, headers = await ahttp("GET", f"{worker.url}/static/{name}")
        assert status == 200, name
        assert headers["Content-Type"].startswith(("text/javascript", "text/css")), headers
    for name in ("dashboard.html", "..%2Fdashboard.py", "vendor%2FuPlot.LICENSE"):
        status, _body, _ = await ahttp("GET", f"{worker.url}/static/{name}")
        assert status == 404, name

    # Straight to order_created (no CDC, so no stock: the orders end CANCELLED, which is
    # all this test needs: orders reaching a terminal status at a steady rate).
    generator = asyncio.create_task(generate_direct(stack.bootstrap, rate=80, count=None, seed=5))
    try:
        await asyncio.sleep(4)
        raw, coalesced = await asyncio.gather(
            read_stream(f"{worker.url}/analytics/stream", 5),
            read_stream(f"{worker.url}/analytics/stream?coalesce=1000&pipeline=1", 5),
        )
    finally:
        generator.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await generator

    kinds = [kind for _t, kind, _d in coalesced]
    assert kinds[0] == "pipeline_history", kinds[:3]
    history = coalesced[0][2]
    assert history["statuses"] == ["CANCELLED", "FULFILLED", "PAYMENT_FAILED", "REJECTED"]
    samples = [d for _t, kind, d in coalesced if kind == "pipeline"]
    assert 3 <= len(samples) <= 7, len(samples)
    assert all(s["workers"] == 1 for s in samples)
    assert "status" in samples[-1]["lag"] and "fraud-check" in samples[-1]["lag"]
    assert any(s["latency"]["p50"] is not None and s["latency"]["count"] > 0 for s in samples), [
        s["latency"] for s in samples
    ]
    assert any(sum(r.values()) > 0 for s in samples for _t, r in s["throughput"]), samples
    assert len(samples[-1]["dead_letters"]) == 15

    # coalesced: a country at most about once a second; the raw stream has every change
    per_country = Counter(d["country"] for _t, kind, d in coalesced if kind == "country")
    raw_countries = [d for _t, kind, d in raw if kind == "country"]
    assert per_country and max(per_country.values()) <= 7, per_country
    assert len(raw_countries) > sum(per_country.values()), (len(raw_countries), per_country)
