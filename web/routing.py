"""Routing of keyed reads to the worker that owns the key (Faust ``table_route``), made
robust for the moments when no owner is known yet (start-up, rebalance): the request
waits up to ``ROUTE_WAIT_S`` for an assignment and answers 503 with ``Retry-After`` if
there is still none, instead of a 500."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from faust.exceptions import SameNode
from faust.web import Request, Response, View

from orders_app.app import app

ROUTE_WAIT_S = 10.0

Handler = Callable[..., Awaitable[Response]]


def routed(table: Any, match_info: str) -> Callable[[Handler], Handler]:
    def decorate(fun: Handler) -> Handler:
        @wraps(fun)
        async def get(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
            key = request.match_info[match_info]
            if request.query.get("local"):
                return await fun(view, request, *args, **kwargs)
            deadline = time.monotonic() + ROUTE_WAIT_S
            while True:
                try:
                    if app.rebalancing:
                        raise LookupError("rebalancing")
                    return await app.router.route_req(table.name, key, view.web, request)
                except SameNode:
                    return await fun(view, request, *args, **kwargs)
                except Exception as err:  # noqa: BLE001 - no owner known yet, or owner gone
                    if time.monotonic() >= deadline:
                        return view.json(
                            {"error": f"no worker owns {match_info}={key} yet: {err!r}"},
                            status=503,
                            headers={"Retry-After": "1"},
                        )
                    await asyncio.sleep(0.2)

        return get

    return decorate
