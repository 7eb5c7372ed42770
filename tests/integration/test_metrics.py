"""GET /metrics on a real worker after a pipeline run: Prometheus text format, business
counters equal to what was processed, and every metric the Grafana dashboard queries is
there."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_analytics import add_zero_stock_sku, make_orders, produce
from tests.support import ahttp
from tests.unit.test_infra import dashboard_metric_names

pytestmark = pytest.mark.integration


def samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def total(found: dict[str, list], name: str, **labels: str) -> float:
    return sum(
        s.value for s in found.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())
    )


def exported(metric: str, names: set[str]) -> bool:
    """Whether ``metric`` (a name the dashboard queries) is among the exported samples."""
    return metric in names or any(
        re.fullmatch(re.escape(metric) + r"(_total|_bucket|_count|_sum)?", n) for n in names
    )


async def test_metrics_count_what_was_processed(stack, workers, cdc) -> None:
    await add_zero_stock_sku(stack.dsn)
    worker = workers.start()
    await workers.wait_ready(worker)
    orders, expected = make_orders(300, seed=5, prefix="m")
    await produce(stack.bootstrap, orders)
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap)
    await producer.start()
    await producer.send_and_wait("order_created", key=b"poison", value=b"{oops")
    await producer.stop()

    want = Counter(expected.values())
    dashboard = dashboard_metric_names()
    deadline = time.monotonic() + 120
    found: dict[str, list] = {}
    # (a loop, not eventually(): every reading is asserted, and the checks below name
    # what is short after the last one)
    while time.monotonic() < deadline:
        status, text, headers = await ahttp("GET", f"{worker.url}/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        found = samples(text)
        if (
            total(found, "orders_notifications_sent_total") >= len(orders)
            and total(found, "orders_dead_letters_total") >= 1
            # Faust exports the committed-offset gauges (the dashboard's lag panel) from
            # the first offset commit on, which can come after the last order
            and all(exported(metric, set(found)) for metric in dashboard)
        ):
            break
        await asyncio.sleep(1)

    for status_name, n in want.items():
        assert total(found, "orders_terminal_total", status=status_name) == n, status_name
    assert total(found, "orders_notifications_sent_total") == len(orders)
    assert total(found, "orders_end_to_end_seconds_count") == len(orders)
    assert total(found, "orders_fraud_rejections_total", rule="max_total") == want["REJECTED"]
    assert (
        total(found, "orders_fraud_checks_total", result="passed") == len(orders) - want["REJECTED"]
    )
    assert (
        total(found, "orders_payments_total", result="succeeded")
        == want["FULFILLED"] + want["CANCELLED"]
    )
    assert total(found, "orders_payments_total", result="failed") == want["PAYMENT_FAILED"]
    assert total(found, "orders_payments_total", result="refunded") == want["CANCELLED"]
    assert (
        total(found, "orders_inventory_reservations_total", result="reserved") == want["FULFILLED"]
    )
    assert (
        total(found, "orders_inventory_reservations_total", result="out_of_stock")
        == want["CANCELLED"]
    )
    assert total(found, "orders_dead_letters_total", topic="order_created") == 1
    assert total(found, "orders_cdc_events_total", table="products", op="r") == 24
    revenue = sum(o.total for o in orders if expected[o.order_id] == "FULFILLED")
    assert abs(total(found, "orders_revenue_total") - float(revenue)) < 0.01

    names = set(found)
    for metric in dashboard:
        assert exported(metric, names), metric
