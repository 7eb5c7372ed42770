"""``GET /``: the live dashboard (plain HTML + JS, no build step), fed by
``/analytics/stream`` (server-sent events)."""

from __future__ import annotations

from importlib import resources

from faust.web import Request, Response, View

from orders_app.app import app


@app.page("/")
class Dashboard(View):
    async def get(self, request: Request) -> Response:
        html = resources.files("web").joinpath("static/dashboard.html").read_text()
        return self.html(html)
