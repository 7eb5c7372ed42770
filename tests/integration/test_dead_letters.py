"""Poison input: malformed JSON and schema-invalid events on every input topic land in
``dead_letters`` (one each, with the source position, reason and raw bytes) while valid
orders keep flowing to their terminal status."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections import Counter
from decimal import Decimal

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from orders_app.records import OrderCreated, OrderLine, encode
from tests.support import ahttp, eventually, read_topic

pytestmark = pytest.mark.integration

INPUT_TOPICS = [
    "order_created",
    "orders_app-orders-by-customer",
    "order_validated",
    "fraud_alerts",
    "orders_app-stock-commands",
    "orders_app-stock-replies",
    # payment_successful, payment_failed, inventory_updated, payment_refunded and
    # notification_sent are outputs only: the order agent applies them in the step that
    # emits them (agents/order_flow.py, issue 12), so no agent reads them back.
    "orders_db.public.orders",
    "orders_db.public.products",
]

BAD_PAYLOADS = [
    b"{not json",
    b'{"order_id": 42, "unexpected": true}',
    b"[1, 2, 3]",
]

BAD_ENVELOPES = [
    # a well-formed envelope whose row is wrong, and an update with no "after"
    orjson.dumps(
        {
            "before": None,
            "after": {"id": "x", "customer_id": 1, "lines": "[]"},
            "op": "c",
            "ts_ms": 1,
            "source": {
                "version": "2",
                "connector": "postgresql",
                "name": "orders_db",
                "ts_ms": 1,
                "snapshot": "false",
                "db": "orders",
                "sequence": None,
                "schema": "public",
                "table": "orders",
                "txId": 1,
                "lsn": 1,
                "xmin": None,
            },
        }
    ),
    orjson.dumps({"before": None, "after": None, "op": "u", "ts_ms": 1, "source": {}}),
]


async def test_poison_messages_go_to_dead_letters(stack, workers, cdc) -> None:
    worker = workers.start()
    await workers.wait_ready(worker)
    sent: list[tuple[str, bytes]] = []
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap)
    await producer.start()
    good = []
    try:
        for i, topic in enumerate(INPUT_TOPICS):
            payloads = BAD_PAYLOADS + (BAD_ENVELOPES if topic.startswith("orders_db.") else [])
            for j, payload in enumerate(payloads):
                await producer.send_and_wait(topic, key=f"bad-{i}-{j}".encode(), value=payload)
                sent.append((topic, payload))
            order = OrderCreated(
                order_id=f"good-{i}",
                customer_id=f"c-good-{i}",
                country="FR",
                currency="EUR",
                total=Decimal("11.99"),
                lines=[OrderLine(sku="SKU-0001", quantity=1, unit_price=Decimal("11.99"))],
                payment_method="tok_visa",
                created_at=time.time(),
            )
            await producer.send_and_wait(
                "order_created", key=order.order_id.encode(), value=encode(order)
            )
            good.append(order.order_id)
    finally:
        await producer.stop()

    for oid in good:
        status, body, _ = await ahttp(
            "GET", f"{worker.url}/orders/{oid}?wait=terminal&timeout=60", timeout=70
        )
        assert status == 200 and body["status"] == "FULFILLED", (oid, body)

    letters: list[dict] = []

    async def all_letters() -> bool:
        nonlocal letters
        letters = [
            orjson.loads(m.value)
            for m in await read_topic(stack.bootstrap, "dead_letters", idle=1.0)
        ]
        return len(letters) >= len(sent)

    with contextlib.suppress(AssertionError):  # timed out: the assertion below names the rest
        await eventually(all_letters, 30, 1.0)
    assert len(letters) == len(sent), (
        Counter(t for t, _ in sent) - Counter(d["topic"] for d in letters),
        Counter(d["topic"] for d in letters) - Counter(t for t, _ in sent),
    )
    got = Counter((d["topic"], base64.b64decode(d["payload_b64"])) for d in letters)
    assert got == Counter(sent)
    for d in letters:
        assert d["error"] and d["agent"] and d["offset"] >= 0 and d["key"].startswith("bad-")
    assert worker.proc.poll() is None  # no agent crashed the worker


def _poison(rng, topic: str, i: int) -> bytes:  # type: ignore[no-untyped-def]
    source = {
        "version": "2.7.3.Final",
        "connector": "postgresql",
        "name": "orders_db",
        "ts_ms": 1,
        "snapshot": "false",
        "db": "orders",
        "sequence": None,
        "schema": "public",
        "table": "orders",
        "txId": 1,
        "lsn": 1,
        "xmin": None,
    }
    kinds = [
        lambda: b"{" + str(i).encode(),
        lambda: b"\xff\xfe" + bytes(rng.randrange(256) for _ in range(8)),
        lambda: orjson.dumps({"order_id": i, "total": [1]}),
        lambda: orjson.dumps([i]),
        lambda: orjson.dumps({"order_id": f"x{i}", "lines": "nope", "total": "1.0"}),
    ]
    if topic.startswith("orders_db."):
        kinds += [
            lambda: orjson.dumps(
                {
                    "before": None,
                    "after": {"id": f"u{i}"},
                    "op": "c",
                    "ts_ms": 1,
                    "source": {**source, "table": "unknown_table"},
                }
            ),
            lambda: orjson.dumps({"before": None, "op": "c", "ts_ms": 1, "source": source}),
            lambda: orjson.dumps(
                {
                    "before": None,
                    "after": {"sku": 5, "stock": "many", "id": 7},
                    "op": "c",
                    "ts_ms": "x",
                    "source": source,
                }
            ),
        ]
    return rng.choice(kinds)()


async def test_thousand_poison_messages_exactly_thousand_dead_letters(stack, workers, cdc) -> None:
    import random

    rng = random.Random(99)
    worker = workers.start()
    await workers.wait_ready(worker)
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=5)
    await producer.start()
    good = []
    try:
        futs = []
        for i in range(1000):
            topic = INPUT_TOPICS[i % len(INPUT_TOPICS)]
            futs.append(
                await producer.send(topic, key=f"poison-{i}".encode(), value=_poison(rng, topic, i))
            )
            if i % 50 == 0:  # valid traffic interleaved
                order = OrderCreated(
                    order_id=f"ok-{i}",
                    customer_id=f"c-ok-{i}",
                    country="DE",
                    currency="EUR",
                    total=Decimal("11.99"),
                    lines=[OrderLine(sku="SKU-0001", quantity=1, unit_price=Decimal("11.99"))],
                    payment_method="tok_visa",
                    created_at=time.time(),
                )
                futs.append(
                    await producer.send(
                        "order_created", key=order.order_id.encode(), value=encode(order)
                    )
                )
                good.append(order.order_id)
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    for oid in good:
        status, body, _ = await ahttp(
            "GET", f"{worker.url}/orders/{oid}?wait=terminal&timeout=60", timeout=70
        )
        assert status == 200 and body["status"] == "FULFILLED", (oid, body)

    async def thousand() -> bool:
        return len(await read_topic(stack.bootstrap, "dead_letters", idle=1.0)) >= 1000

    await eventually(thousand, 60, 1.0, what="1,000 dead letters")
    await asyncio.sleep(2)  # room for a wrong extra letter to show
    letters = await read_topic(stack.bootstrap, "dead_letters", idle=1.0)
    keys = Counter(m.key for m in letters)
    assert len(letters) == 1000, (len(letters), [k for k, n in keys.items() if n > 1][:5])
    assert set(keys) == {f"poison-{i}".encode() for i in range(1000)}
    assert all(orjson.loads(m.value)["error"] for m in letters)
    assert worker.proc.poll() is None
    assert "Traceback" not in worker.log.read_text()


async def test_an_order_whose_rule_raises_is_a_dead_letter_and_the_agent_goes_on(
    stack, workers, cdc
) -> None:
    """Two orders of one customer with total 9E+999999: the first counted is rejected on
    its total; adding the second to the velocity window overflows Decimal inside
    ``fraud_rules.add_to_window``.  That order becomes one dead letter naming the step and
    the error, ``orders_processing_errors_total{step="fraud"}`` counts it, and the fraud
    agent goes on with the next order."""
    worker = workers.start()
    await workers.wait_ready(worker)

    def order(oid: str, customer: str, total: Decimal, price: Decimal) -> OrderCreated:
        return OrderCreated(
            order_id=oid,
            customer_id=customer,
            country="FR",
            currency="EUR",
            total=total,
            lines=[OrderLine(sku="SKU-0001", quantity=1, unit_price=price)],
            payment_method="tok_visa",
            created_at=time.time(),
        )

    huge = Decimal("9E+999999")
    orders = [
        order("ovf-1", "c-ovf", huge, huge),
        order("ovf-2", "c-ovf", huge, huge),
        order("after-ovf", "c-fine", Decimal("11.99"), Decimal("11.99")),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap)
    await producer.start()
    try:
        for o in orders:
            await producer.send_and_wait("order_created", key=o.order_id.encode(), value=encode(o))
    finally:
        await producer.stop()

    status, body, _ = await ahttp(
        "GET", f"{worker.url}/orders/after-ovf?wait=terminal&timeout=60", timeout=70
    )
    assert status == 200 and body["status"] == "FULFILLED", body

    every: list[dict] = []
    letters: list[dict] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not letters:
        every = [
            orjson.loads(m.value)
            for m in await read_topic(stack.bootstrap, "dead_letters", idle=1.0)
        ]
        letters = [d for d in every if d["agent"] != "sink"]
    assert len(letters) == 1, letters
    # The outcome sink cannot store a total of 9E+999999 in Postgres either: it
    # dead-letters those two orders' documents (orders_app/sink.py), nothing else.
    assert {(d["topic"], d["key"]) for d in every if d["agent"] == "sink"} <= {
        ("orders_app-order_status-changelog", "ovf-1"),
        ("orders_app-order_status-changelog", "ovf-2"),
    }
    letter = letters[0]
    assert letter["agent"] == "fraud"
    assert letter["error"].startswith("fraud failed: Overflow"), letter["error"]
    assert letter["key"] == "c-ovf"  # the repartitioned event's key
    # The two reach the by-customer topic in either order (they come from two
    # partitions of order_created): the first is rejected, the second overflows.
    payload = orjson.loads(base64.b64decode(letter["payload_b64"]))
    assert payload["order_id"] in {"ovf-1", "ovf-2"}
    first = ({"ovf-1", "ovf-2"} - {payload["order_id"]}).pop()
    status, body, _ = await ahttp(
        "GET", f"{worker.url}/orders/{first}?wait=terminal&timeout=30", timeout=40
    )
    assert status == 200 and body["status"] == "REJECTED", body
    _, text, _ = await ahttp("GET", f"{worker.url}/metrics")
    assert 'orders_processing_errors_total{step="fraud"} 1.0' in text
    assert worker.proc.poll() is None
