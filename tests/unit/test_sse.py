"""The server-sent-events plumbing under ``/analytics/stream`` (web.dashboard.event_stream,
aiohttp-sse) on a real aiohttp server in this process, no broker: the headers, the
framing of an event (the same bytes a batched write produces), a ``: ping`` comment on
an idle stream, and a client that goes away ending the stream's subscription.

The ping interval is shortened through the module constant the view reads per request
(``fast_pings``); the waits below only guard against a hang, they do not measure speed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp_sse import EventSourceResponse

from web import dashboard

HANG_GUARD_S = 30.0
DEFAULT_PING_S = dashboard.PING_INTERVAL_S  # before fast_pings shortens it


@pytest.fixture(autouse=True)
def fast_pings(monkeypatch: pytest.MonkeyPatch) -> None:
    # Also lets a handler whose client left end at once (the next ping fails), so the
    # servers stop without waiting for it.
    monkeypatch.setattr(dashboard, "PING_INTERVAL_S", 0.05)


class Idle:
    """A pump that sends ``events`` and then waits forever, as a quiet feed does."""

    def __init__(self, *events: tuple[str, object]) -> None:
        self.events = events
        self.started = asyncio.Event()
        self.ended = asyncio.Event()

    async def __call__(self, resp: EventSourceResponse) -> None:
        self.started.set()
        try:
            for kind, data in self.events:
                await dashboard.send_event(resp, kind, data)
            await asyncio.Event().wait()
        finally:
            self.ended.set()


class Servers:
    """In-process aiohttp servers whose one route is ``event_stream(request, pump)``;
    what a handler raised is kept in ``errors``.  Run as Faust runs its web server
    (``AppRunner(app, access_log=None)``): aiohttp does not cancel a handler whose
    client went away (aiohttp's TestServer would, hiding what the pings are for)."""

    def __init__(self) -> None:
        self.running: list[web.AppRunner] = []
        self.errors: list[BaseException] = []

    async def start(self, pump: dashboard.Pump) -> str:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                return await dashboard.event_stream(request, pump)
            except Exception as err:
                self.errors.append(err)
                raise

        app = web.Application()
        app.router.add_get("/stream", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self.running.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}/stream"


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    harness = Servers()
    yield harness
    for runner in harness.running:
        await runner.cleanup()


async def read_until(resp: aiohttp.ClientResponse, wanted: bytes) -> list[bytes]:
    lines: list[bytes] = []
    async with asyncio.timeout(HANG_GUARD_S):
        async for line in resp.content:
            lines.append(line)
            if line.rstrip(b"\n") == wanted:
                return lines
    raise AssertionError(f"stream ended without {wanted!r}: {lines}")


async def test_headers_and_event_framing(servers: Servers) -> None:
    data = {"country": "DE", "orders": 2, "revenue": "19.98", "by_status": {"FULFILLED": 2}}
    url = await servers.start(Idle(("country", data), ("dead_letter", {"offset": 7})))
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["Cache-Control"] == "no-cache"
        assert resp.headers["X-Accel-Buffering"] == "no"
        lines = await read_until(resp, b'data: {"offset":7}')
    body = b"".join(lines) + b"\n"
    assert body == (
        b": connected\n\n"
        + dashboard.sse("country", data)
        + dashboard.sse("dead_letter", {"offset": 7})
    )


async def test_an_idle_stream_gets_pings(servers: Servers) -> None:
    url = await servers.start(Idle())
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        lines = await read_until(resp, b": ping")
        lines += await read_until(resp, b": ping")  # and again: pings keep coming
    assert lines[0] == b": connected\n"
    assert all(line in (b": connected\n", b": ping\n", b"\n") for line in lines), lines


def test_pings_default_to_every_fifteen_seconds() -> None:
    assert DEFAULT_PING_S == 15.0


async def test_a_client_that_goes_away_ends_the_subscription(servers: Servers) -> None:
    # Nothing is ever sent: only the pings can notice the client has gone.
    pump = Idle()
    url = await servers.start(pump)
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        await read_until(resp, b": connected")
        assert pump.started.is_set() and not pump.ended.is_set()
    async with asyncio.timeout(HANG_GUARD_S):
        await pump.ended.wait()


async def test_an_error_of_the_pump_is_raised(servers: Servers) -> None:
    async def broken(resp: EventSourceResponse) -> None:
        raise RuntimeError("feed broke")

    url = await servers.start(broken)
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        # the response had started: the error can only cut the stream short
        with contextlib.suppress(aiohttp.ClientPayloadError):
            async with asyncio.timeout(HANG_GUARD_S):
                await resp.read()
    assert [str(e) for e in servers.errors] == ["feed broke"]


async def test_a_stopping_worker_ends_its_open_streams(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without this a worker's stop waited for each open stream's next ping (15 s)."""

    class Stopping:
        def __init__(self) -> None:
            self.stopped = asyncio.Event()

        async def wait_until_stopped(self) -> None:
            await self.stopped.wait()

    worker = Stopping()
    monkeypatch.setattr(dashboard, "app", worker)
    monkeypatch.setattr(dashboard, "PING_INTERVAL_S", 3600.0)  # no ping to end it
    pump = Idle()
    url = await servers.start(pump)
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        await read_until(resp, b": connected")
        worker.stopped.set()
        async with asyncio.timeout(HANG_GUARD_S):
            await pump.ended.wait()
            rest = await resp.read()  # the server ended the response
    assert rest in (b"", b"\n")
