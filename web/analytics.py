"""Analytics views.

- ``GET /analytics/countries``: every country's totals, gathered from every worker that
  holds partitions of ``country_stats`` (``?local=1`` answers from this worker only).
- ``GET /analytics/countries/{code}``: totals plus the last per-minute windows, routed to
  the worker owning the country.
- ``GET /analytics/stream``: server-sent events, current totals first, then every change
  (from the worker's :class:`orders_app.feed.Feed`).  ``?coalesce=<ms>`` sends at most one
  batch per interval (each changed country's latest totals, the newest dead letters);
  ``&pipeline=1`` adds the dashboard's ``pipeline_history`` (first) and ``pipeline``
  (every second) events, see :mod:`web.dashboard`.  Every stream is aiohttp-sse's
  (:func:`web.dashboard.event_stream`): a ``: ping`` comment every 15 s on a quiet one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import orjson
from aiohttp import ClientTimeout
from aiohttp import web as aioweb
from aiohttp_sse import EventSourceResponse
from faust.web import Request, Response, View

from orders_app.app import app
from tables.corrections import country_view, pending
from tables.country_stats import country_stats
from web.dashboard import (
    COALESCE_DEFAULT_MS,
    coalesce_seconds,
    event_stream,
    live_stream,
    send_event,
)
from web.routing import routed
from web.views import merge_totals, totals_view, windows_view

FANOUT_TIMEOUT_S = 5.0


def local_totals() -> dict[str, Any]:
    countries = {country: country_view(country) for country in country_stats}
    countries.update(pending.countries)
    return {country: totals_view(stats) for country, stats in countries.items() if stats}


async def _fetch(url: str) -> dict[str, Any]:
    async with app.http_client.get(url, timeout=ClientTimeout(total=FANOUT_TIMEOUT_S)) as resp:
        resp.raise_for_status()
        data: dict[str, Any] = orjson.loads(await resp.read())
        return data


@app.page("/analytics/countries")
class Countries(View):
    async def get(self, request: Request) -> Response:
        mine = {"countries": local_totals()}
        if request.query.get("local"):
            return self.json(mine)
        own = str(app.conf.canonical_url).rstrip("/")
        others = [
            str(host).rstrip("/")
            for host, topics in app.router.table_metadata(country_stats.name).items()
            if str(host).rstrip("/") != own and any(topics.values())
        ]
        try:
            parts = await asyncio.gather(
                *(_fetch(f"{host}/analytics/countries?local=1") for host in others)
            )
        except Exception as err:  # noqa: BLE001 - a peer down or rebalancing
            return self.json(
                {"error": f"could not gather every worker's partitions: {err!r}"},
                status=503,
                headers={"Retry-After": "1"},
            )
        return self.json({"countries": merge_totals([mine, *parts])})


@app.page("/analytics/countries/{code}")
class Country(View):
    @routed(country_stats, "code")
    async def get(self, request: Request, code: str) -> Response:
        stats = country_view(code.upper())
        if stats is None:
            return self.error(404, f"no orders for country {code}")
        return self.json(
            {
                "country": code.upper(),
                **totals_view(stats),
                "windows": windows_view(stats, time.time()),
            }
        )


@app.page("/analytics/stream")
class Stream(View):
    async def get(self, request: Request) -> Any:
        interval = coalesce_seconds(request.query.get("coalesce"))
        pipeline = request.query.get("pipeline", "") not in ("", "0", "false")

        async def pump(resp: EventSourceResponse) -> None:
            if interval is None and not pipeline:
                async for kind, data in app.feed.subscribe():
                    await send_event(resp, kind, data)
            else:
                await live_stream(resp.write, interval or COALESCE_DEFAULT_MS / 1000, pipeline)

        # Faust's aiohttp driver hands views aiohttp's own request (faust.web.Request is
        # only the abstract type), which is what aiohttp-sse prepares the response on.
        return await event_stream(cast(aioweb.Request, request), pump)


@app.page("/dead-letters")
class DeadLetters(View):
    async def get(self, request: Request) -> Response:
        return self.json({"dead_letters": list(app.feed.dead_letters)})
