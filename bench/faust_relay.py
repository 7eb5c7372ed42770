"""A bare Faust relay for ``bench/hop_latency.py``: one agent on topics ``x`` and ``y``
(raw bytes) sends each message on to the other topic until ``HOPS``; every hop's latency
(ms, from the sender's timestamp in the value) is written to ``$LAT_FILE`` every second.
Run as a worker: ``python -m bench.faust_relay worker -l warn`` with ``BROKER`` (a
``kafka://`` URL), ``LAT_FILE``, ``RELAY_WAIT`` (the fetch wait, ms) and ``EAGER``
(``1``: the app's eager delivery patch) set; the app's own fetch-wait setting applies."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import faust
import orjson

from orders_app.broker_compat.fetch import use_fetch_wait
from orders_app.faust_patches import eager_delivery

HOPS = 6


class RelayApp(faust.App):
    def _new_consumer(self) -> Any:
        consumer = super()._new_consumer()
        use_fetch_wait(consumer, int(os.environ.get("RELAY_WAIT", "20")))
        eager_delivery.install(consumer, enabled=os.environ.get("EAGER") == "1")
        return consumer


app = RelayApp(
    "relay",
    broker=os.environ.get("BROKER", "kafka://127.0.0.1:9092"),
    store="memory://",
    web_enabled=False,
    broker_session_timeout=4.0,
    broker_heartbeat_interval=1.0,
    topic_partitions=4,
)
RAW: dict[str, Any] = dict(
    key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
)
x = app.topic("x", **RAW)
y = app.topic("y", **RAW)
latencies: list[float] = []


@app.agent(app.topic("x", "y", **RAW))
async def relay(stream: Any) -> None:
    async for event in stream.events():
        v = orjson.loads(event.value)
        latencies.append((time.time() - v["t"]) * 1000)
        if v["hop"] + 1 < HOPS:
            on = y if event.message.topic == "x" else x
            sent = {"chain": v["chain"], "hop": v["hop"] + 1, "t": time.time()}
            await on.send(key=event.key, value=orjson.dumps(sent))


@app.timer(1.0)
async def dump() -> None:
    Path(os.environ["LAT_FILE"]).write_bytes(orjson.dumps(latencies))


if __name__ == "__main__":
    import uvloop

    uvloop.install()
    app.main()
