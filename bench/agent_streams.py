"""Which agents read which stream: ``python -m bench.agent_streams`` prints a JSON object
mapping each Prometheus stream label (as Faust's sensor writes it in
``faust_total_events_per_stream_total{stream="stream.<label>.events"}``) to the names of
the agents whose stream has that label, so the bench can name the agents behind each
per-stream delivery counter.

Run in a subprocess with the worker's environment (the app reads its settings from it);
it imports and discovers the app (agents, tables, web) and starts nothing.

The label is the one ``faust.sensors.prometheus.PrometheusMonitor._stream_label`` makes
from ``Stream.shortlabel`` (``"Stream: Topic: a,b"`` for an agent reading topics ``a`` and
``b``): ``lstrip("Stream:")``, Faust's ``RE_NORMALIZE`` -> ``_``, ``strip("_")``, lower
case.  Several agents reading the same topics share one label (and one counter).
"""

from __future__ import annotations

import json
import sys

from faust.sensors.monitor import RE_NORMALIZE, RE_NORMALIZE_SUBSTITUTION


def stream_label(channel: str, kind: str = "Topic") -> str:
    """The sensor's label of a stream over ``channel`` (``str()`` of an agent's channel:
    its topic names joined by ``,``) of type ``kind``."""
    short = f"Stream: {kind}: {channel}"
    return RE_NORMALIZE.sub(RE_NORMALIZE_SUBSTITUTION, short.lstrip("Stream:")).strip("_").lower()


def agent_streams() -> dict[str, list[str]]:
    from orders_app.app import app

    app.finalize()
    app.discover()
    out: dict[str, list[str]] = {}
    for agent in app.agents.values():
        label = stream_label(str(agent.channel), type(agent.channel).__name__)
        out.setdefault(label, []).append(str(agent.name).rsplit(".", 1)[-1])
    return {label: sorted(names) for label, names in sorted(out.items())}


if __name__ == "__main__":
    sys.stdout.write(json.dumps(agent_streams()) + "\n")
