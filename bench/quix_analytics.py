"""The analytics stage in Quix Streams, for ``make bench`` only (not part of the app).

Same input as this project's ``analytics`` agent (``StatusChanged`` JSON keyed by
country, on the same broker) and the same aggregation, written the idiomatic Quix way:
per-country totals (orders, revenue of fulfilled orders, terminal statuses) in a
stateful ``apply``, and 1-minute tumbling windows (orders, revenue) by the order's
commit time, each emitted per event (``current()``).  Revenue is Decimal, as in ours.
Unlike ours it keeps no per-order ledger, so a redelivered event is counted twice.

Usage: python -m bench.quix_analytics BOOTSTRAP SOURCE TOTALS WINDOWS STATE_DIR GROUP
"""

from __future__ import annotations

import sys
from datetime import timedelta
from decimal import Decimal
from typing import Any

from quixstreams import Application, State
from quixstreams.dataframe.windows import Count, Reduce


def count_totals(change: dict[str, Any], state: State) -> dict[str, Any]:
    totals = state.get("totals") or {"orders": 0, "revenue": "0", "by_status": {}}
    totals["orders"] += 1
    if change["terminal"]:
        by_status = totals["by_status"]
        by_status[change["status"]] = by_status.get(change["status"], 0) + 1
        if change["status"] == "FULFILLED":
            totals["revenue"] = str(Decimal(totals["revenue"]) + Decimal(change["total"]))
    state.set("totals", totals)
    return {"country": change["country"], **totals}


def revenue_of(change: dict[str, Any]) -> str:
    return change["total"] if change["status"] == "FULFILLED" else "0"


def add_revenue(revenue: str, change: dict[str, Any]) -> str:
    return str(Decimal(revenue) + Decimal(revenue_of(change)))


def main(bootstrap: str, source: str, totals: str, windows: str, state_dir: str, group: str):
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
    )
    src = app.topic(
        source,
        key_deserializer="string",
        value_deserializer="json",
        timestamp_extractor=lambda value, _h, _ts, _tt: int(value["created_at"] * 1000),
    )
    # Tansu's DescribeConfigs leaves out retention.ms, which Quix needs to derive its
    # changelog topics' config.
    config = src.broker_config
    config.extra_config.setdefault("retention.ms", "-1")
    src.broker_config = config
    out_totals = app.topic(totals, key_serializer="string", value_serializer="json")
    out_windows = app.topic(windows, key_serializer="string", value_serializer="json")
    sdf = app.dataframe(src)
    sdf.apply(count_totals, stateful=True).to_topic(out_totals)
    sdf.tumbling_window(timedelta(minutes=1)).agg(
        orders=Count(), revenue=Reduce(add_revenue, revenue_of)
    ).current().to_topic(out_windows)
    app.run()


if __name__ == "__main__":
    main(*sys.argv[1:7])
