"""Health views: ``GET /health`` (process up) and ``GET /ready`` (broker and Postgres
reachable, partitions assigned)."""

from __future__ import annotations

from faust.web import Request, Response, View

from orders_app.app import app


@app.page("/health")
class Health(View):
    async def get(self, request: Request) -> Response:
        return self.json({"status": "ok"})


@app.page("/ready")
class Ready(View):
    async def get(self, request: Request) -> Response:
        assigned = len(app.assignor.assigned_actives()) if app.assignor else 0
        broker = bool(app.consumer and app.consumer.assignment() is not None) and not (
            app.rebalancing
        )
        postgres = await app.db.ping()
        checks = {"broker": broker, "postgres": postgres, "partitions_assigned": assigned}
        ok = broker and postgres and assigned > 0
        return self.json({"ready": ok, "checks": checks}, status=200 if ok else 503)
