"""``GET /metrics``: Faust's sensors and the business metrics in the Prometheus text format."""

from __future__ import annotations

from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from orders_app.app import app


@app.page("/metrics")
class Metrics(View):
    async def get(self, request: Request) -> Response:
        body = generate_latest(app.metrics.registry)
        return self.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])
