"""Foundation: a real worker on the real broker consumes order_created and its effect is
visible through a Faust web view; bad settings fail with one line and exit 2."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from decimal import Decimal

import pytest
from aiokafka import AIOKafkaProducer

from orders_app.records import OrderCreated, OrderLine, encode
from orders_app.topics import FRAUD_REQUESTED
from tests.conftest import ROOT, free_port
from tests.support import ahttp, eventually, read_topic

pytestmark = pytest.mark.integration


def order(
    order_id: str, sku: str = "SKU-0001", qty: int = 2, token: str = "tok_visa"
) -> OrderCreated:
    return OrderCreated(
        order_id=order_id,
        customer_id=f"cust-{order_id}",
        country="DE",
        currency="EUR",
        total=Decimal("11.99") * qty,
        lines=[OrderLine(sku=sku, quantity=qty, unit_price=Decimal("11.99"))],
        payment_method=token,
        created_at=time.time(),
    )


async def produce(bootstrap: str, *events: OrderCreated) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for ev in events:
            await producer.send_and_wait(
                "order_created", key=ev.order_id.encode(), value=encode(ev)
            )
    finally:
        await producer.stop()


async def test_worker_consumes_order_created_and_web_view_shows_it(stack, workers, cdc) -> None:
    worker = workers.start()
    await workers.wait_ready(worker)
    status, before, _ = await ahttp("GET", f"{worker.url}/inventory/SKU-0001?x=1")
    # Stock arrives through the products snapshot; wait for it.
    deadline = time.monotonic() + 30
    while status != 200 and time.monotonic() < deadline:
        status, before, _ = await ahttp("GET", f"{worker.url}/inventory/SKU-0001")
    assert status == 200, before

    await produce(
        stack.bootstrap,
        order("o-foundation-1", qty=2),
        order("o-foundation-2", token="tok_chargeDeclined"),
    )

    status, body, _ = await ahttp(
        "GET", f"{worker.url}/orders/o-foundation-1?wait=terminal&timeout=30", timeout=40
    )
    assert status == 200, body
    assert body["status"] == "FULFILLED"
    assert [h["status"] for h in body["history"]] == ["CREATED", "VALIDATED", "PAID", "FULFILLED"]
    assert body["total"] == "23.98" and body["country"] == "DE"

    status, body, _ = await ahttp(
        "GET", f"{worker.url}/orders/o-foundation-2?wait=terminal&timeout=30", timeout=40
    )
    assert status == 200 and body["status"] == "PAYMENT_FAILED"
    assert body["reasons"] == ["payment:card_declined"]

    status, after, _ = await ahttp("GET", f"{worker.url}/inventory/SKU-0001")
    assert after["reserved"] == before["reserved"] + 2
    assert after["available"] == before["available"] - 2

    status, body, _ = await ahttp("GET", f"{worker.url}/orders/does-not-exist")
    assert status == 404
    status, body, _ = await ahttp(
        "GET", f"{worker.url}/orders/does-not-exist?wait=terminal&timeout=0.5"
    )
    assert status == 504


async def test_a_posted_orders_fraud_check_is_asked_for_once_by_the_cdc_agent(
    stack, workers, cdc
) -> None:
    """Through HTTP, Postgres and CDC: the cdc agent sends the order to the fraud
    repartition beside ``order_created`` (which carries the header saying so), the order
    agent does not ask a second time, and the order's history reads as always."""
    worker = workers.start()
    await workers.wait_ready(worker)
    body = {
        "customer_id": "c-fraud-once",
        "country": "DE",
        "currency": "EUR",
        "lines": [{"sku": "SKU-0001", "quantity": 1, "unit_price": "11.99"}],
        "payment_method": "tok_visa",
    }
    status, created, _ = await ahttp("POST", f"{worker.url}/orders", body)
    assert status == 201, created
    oid = created["order_id"]
    status, final, _ = await ahttp(
        "GET", f"{worker.url}/orders/{oid}?wait=terminal&timeout=60", timeout=70
    )
    assert status == 200 and final["status"] == "FULFILLED", final
    assert [h["status"] for h in final["history"]] == ["CREATED", "VALIDATED", "PAID", "FULFILLED"]

    asked = [
        m
        for m in await read_topic(stack.bootstrap, "orders_app-orders-by-customer", idle=1.0)
        if m.key == b"c-fraud-once"
    ]
    assert len(asked) == 1, asked
    [placed] = [
        m
        for m in await read_topic(stack.bootstrap, "order_created", idle=1.0)
        if m.key == oid.encode()
    ]
    assert (FRAUD_REQUESTED, b"1") in list(placed.headers)


def _cli(
    env_extra: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERS_")}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "orders_app.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_bad_setting_is_one_line_and_exit_2() -> None:
    result = _cli({"ORDERS_WEB_PORT": "abc"}, "worker")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "ORDERS_WEB_PORT" in lines[0] and "abc" in lines[0]
    assert "Traceback" not in result.stderr


def test_unreachable_broker_is_one_line_naming_the_setting() -> None:
    port = free_port()
    result = _cli(
        {
            "ORDERS_BROKER_URL": f"kafka://127.0.0.1:{port}",
            "ORDERS_POSTGRES_DSN": f"postgresql://postgres@127.0.0.1:{free_port()}/x",
        },
        "worker",
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "ORDERS_BROKER_URL" in lines[0]


async def test_plain_faust_cli_starts_the_same_worker(stack, tmp_path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "ORDERS_BROKER_URL": stack.broker_url,
        "ORDERS_POSTGRES_DSN": stack.dsn,
        "ORDERS_WEB_PORT": str(port),
        "ORDERS_DATA_DIR": str(tmp_path / "state"),
    }
    faust_bin = os.path.join(os.path.dirname(sys.executable), "faust")
    proc = subprocess.Popen(
        [faust_bin, "-A", "orders_app.app", "worker", "-l", "info"],
        env=env,
        cwd=ROOT,
        stdout=(tmp_path / "w.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    status = 0

    async def ready() -> bool:
        nonlocal status
        status, _body, _ = await ahttp("GET", f"http://127.0.0.1:{port}/ready", timeout=2)
        return status == 200

    try:
        with contextlib.suppress(AssertionError):  # timed out: the assertion below shows the log
            await eventually(ready, 60, 0.3)
        assert status == 200, (tmp_path / "w.log").read_text()[-3000:]
        await produce(stack.bootstrap, order("o-faust-cli", token="tok_chargeDeclined"))
        status, body, _ = await ahttp(
            "GET",
            f"http://127.0.0.1:{port}/orders/o-faust-cli?wait=terminal&timeout=30",
            timeout=40,
        )
        assert status == 200 and body["status"] == "PAYMENT_FAILED"
    finally:
        proc.terminate()
        proc.wait(20)
