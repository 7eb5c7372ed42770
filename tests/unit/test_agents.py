"""The agents driven through Faust's ``agent.test_context()`` (issue 15), no broker.

Each test feeds raw bytes to one agent, as the broker would deliver them, and checks what
it does: what it sends (topic, key, record, message timestamp) and what its tables hold.

How the app runs here (the ``pipeline`` fixture, undone after every test):

- ``test_context()`` clones the agent onto an in-memory channel; events are put on it
  with the source topic, partition and offset a consumer would give them (the order
  agent dispatches on the topic).  No consumer fetches, no worker starts.
- Sends are *not* replaced by Faust's test context: ``Topic.send`` serializes the
  message and hands it to ``app.producer``.  That outbound producer is the one thing
  replaced (:class:`RecordingProducer`: it keeps every message, broker-free); table
  changelog writes (``send_soon``) are kept apart.
- Every table gets a fresh ``memory://`` store (tables are written only from a stream:
  the events' partition is the changelog partition); the settings (fraud limits),
  metrics, the correction buffer and the app's consumer / flow control are per test.
- A test waits for an event to be *done* (the agent asked for the next one), not merely
  handed to the agent: a sensor counts ``on_stream_event_out`` (:class:`Done`).
- Postgres: only the cdc agent's snapshot path reads it (``recorded()``);
  ``app.db`` is then a small fake holding ``order_status_view`` documents
  (:class:`RecordedOutcomes`), read through the real ``recorded_document`` query code.

Not here: the retention sweeper (agents/retention.py) is an ``app.task`` over RocksDB
partitions this worker owns, not an agent: ``test_context`` does not apply (on a memory
store it sees no partitions); its rules are in test_retention_rules.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.types import TP, AgentT, EventT, StreamT
from faust.types.tuples import Message, RecordMetadata

from agents.analytics import aggregate
from agents.cdc import orders_changes, products_changes
from agents.fraud import check
from agents.inventory import stock_commands
from agents.order_redrive import _scans, on_rebalance_complete, open_orders, redrive_once
from agents.payment_rules import charge_id_for
from agents.status import track
from orders_app import records
from orders_app.app import app
from orders_app.faust_patches.changelog_cache import ChangelogCache
from orders_app.metrics import BusinessMetrics
from orders_app.records import (
    CountryStats,
    DeadLetter,
    FraudAlert,
    InventoryUpdated,
    NotificationSent,
    OrderCreated,
    OrderLine,
    OrderRestored,
    OrderValidated,
    PaymentFailed,
    PaymentRefunded,
    PaymentSucceeded,
    StatusChanged,
    StockCommand,
    StockReply,
)
from orders_app.settings import Settings
from orders_app.topics import FRAUD_REQUESTED, SPECS
from tables import corrections, loads_value, stamp_of
from tables.cdc_seen import cdc_seen
from tables.country_stats import analytics_ledger, country_stats
from tables.order_status import order_status
from tables.stock import stock, stock_ledger

VALUE_OF: dict[str, type[faust.Record]] = {spec.name: spec.value for spec in SPECS}
SAMPLES: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "data/debezium/samples.json").read_text()
)
SETTLE_TIMEOUT_S = 5.0

ORDER_CREATED = "order_created"
ORDER_VALIDATED = "order_validated"
FRAUD_ALERTS = "fraud_alerts"
STOCK_REPLIES = "orders_app-stock-replies"
STOCK_COMMANDS = "orders_app-stock-commands"
BY_CUSTOMER = "orders_app-orders-by-customer"
BY_COUNTRY = "orders_app-status-by-country"
CHANGELOG = "orders_app-order_status-changelog"


# --- the harness -------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One message the app handed to its producer."""

    topic: str
    key: str
    value: bytes
    timestamp: float | None
    headers: Any = None

    def record(self) -> Any:
        """The value decoded (strictly) as the record its topic carries (topics.SPECS)."""
        return records.decode(VALUE_OF[self.topic], self.value)


class RecordingProducer:
    """The app's outbound producer, broker-free: keeps what is sent, acknowledges it."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.changelog: list[faust.types.FutureMessage] = []
        self.partitions: dict[str, list[int | None]] = defaultdict(list)  # by topic
        self._offsets: dict[str, int] = defaultdict(int)

    async def maybe_start(self) -> None:
        return None

    def _keep(
        self, topic: str, key: bytes, value: bytes, timestamp: float | None, headers: Any = None
    ) -> Any:
        self.sent.append(Sent(topic, key.decode(), value, timestamp, headers))
        offset = self._offsets[topic]
        self._offsets[topic] += 1
        return RecordMetadata(topic, 0, TP(topic, 0), offset, timestamp or 0.0, 0)

    async def send(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        partition: int | None = None,
        timestamp: float | None = None,
        headers: Any = None,
        **kwargs: Any,
    ) -> asyncio.Future[Any]:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.partitions[topic].append(partition)
        done.set_result(self._keep(topic, key, value, timestamp, headers))
        return done

    async def send_and_wait(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        partition: int | None = None,
        timestamp: float | None = None,
        headers: Any = None,
        **kwargs: Any,
    ) -> Any:
        return self._keep(topic, key, value, timestamp, headers)

    def send_soon(self, fut: faust.types.FutureMessage) -> None:
        self.changelog.append(fut)

    async def flush(self) -> None:
        return None


class Done(faust.Sensor):
    """Counts the events a stream is done with (the agent asked for the next one)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.changed = asyncio.Event()

    def on_stream_event_out(
        self,
        tp: TP,
        offset: int,
        stream: StreamT[Any],
        event: EventT[Any],
        state: dict[str, Any] | None = None,
    ) -> None:
        self.count += 1
        self.changed.set()


@dataclass
class Pipeline:
    producer: RecordingProducer
    done: Done
    offsets: dict[TP, int] = field(default_factory=lambda: defaultdict(int))

    @asynccontextmanager
    async def run(self, agent: AgentT[Any]) -> AsyncIterator[Driver]:
        async with agent.test_context() as test_agent:
            yield Driver(self, test_agent)

    # what was sent -------------------------------------------------------------------

    def sent(self, topic: str | None = None) -> list[Sent]:
        return [s for s in self.producer.sent if topic is None or s.topic == topic]

    def topics(self) -> list[str]:
        return [s.topic for s in self.producer.sent]

    def clear(self) -> None:
        self.producer.sent.clear()

    def dead_letters(self) -> list[DeadLetter]:
        return [s.record() for s in self.sent("dead_letters")]


@dataclass
class Driver:
    pipeline: Pipeline
    agent: Any  # the AgentTestWrapper

    async def deliver(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int = 0,
        timestamp: float | None = None,
        headers: Any = None,
    ) -> int:
        """Put one message on the agent's channel as a consumer would; -> its offset."""
        tp = TP(topic, partition)
        offset = self.pipeline.offsets[tp]
        self.pipeline.offsets[tp] += 1
        message = Message(
            topic=topic,
            partition=partition,
            offset=offset,
            timestamp=time.time() if timestamp is None else timestamp,
            timestamp_type=0,
            headers=headers,
            key=key,
            value=value,
            checksum=None,
            generation_id=app.consumer_generation_id,
        )
        channel = self.agent.stream().channel
        await channel.put(await channel.decode(message))
        return offset

    async def settle(self, events: int) -> None:
        """Wait until the agent is done with ``events`` events in all."""
        done = self.pipeline.done
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while done.count < events:
            if self.agent._crash_reason is not None:
                raise self.agent._crash_reason
            left = deadline - time.monotonic()
            assert left > 0, f"the agent finished {done.count} of {events} events"
            done.changed.clear()
            try:
                await asyncio.wait_for(done.changed.wait(), timeout=min(left, 0.1))
            except TimeoutError:
                pass
        assert done.count == events

    async def process(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int = 0,
        timestamp: float | None = None,
        headers: Any = None,
    ) -> int:
        """Deliver one message and wait until the agent is done with it."""
        offset = await self.deliver(
            topic, key, value, partition=partition, timestamp=timestamp, headers=headers
        )
        await self.settle(self.pipeline.done.count + 1)
        return offset


def agent_settings() -> Settings:
    """The defaults, with the limits the tests count on fixed (not from ORDERS_*)."""
    return Settings(
        fraud_max_total=Decimal("5000"),
        fraud_velocity_count=5,
        fraud_velocity_amount=Decimal("2000"),
        fraud_blocked_countries=frozenset(),
        batch_max=2000,
    )


@pytest.fixture
def pipeline(monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    """The app with a recording producer and empty memory tables; undone afterwards."""
    producer = RecordingProducer()
    done = Done()
    monkeypatch.setattr(app, "_orders_settings", agent_settings())
    monkeypatch.setattr(app, "_producer", producer)
    monkeypatch.setattr(app, "_metrics", BusinessMetrics())
    monkeypatch.setattr(app, "_database", None)
    # The consumer (created by the first stream, with the app's guards and gap sensor)
    # and the flow control (test_context resumes it) are this test's own.
    monkeypatch.setattr(app, "_consumer", None)
    flow_control = app.__dict__.pop("flow_control", None)
    monkeypatch.setattr(corrections, "pending", corrections.Pending())
    monkeypatch.setattr(open_orders, "since", {})
    monkeypatch.setattr(open_orders, "finished", 0.0)
    for table in app.tables.values():
        monkeypatch.setattr(table, "_data", table._new_store_by_url("memory://"))
        monkeypatch.setattr(table, "_partition_timestamps", defaultdict(list))
        monkeypatch.setattr(table, "_partition_timestamp_keys", defaultdict(set))
        monkeypatch.setattr(table, "_partition_latest_timestamp", defaultdict(int))
    sensors = set(app.sensors)
    app.sensors.add(done)
    try:
        yield Pipeline(producer, done)
    finally:
        for sensor in set(app.sensors) - sensors:
            app.sensors.remove(sensor)
        app.__dict__.pop("flow_control", None)
        if flow_control is not None:
            app.__dict__["flow_control"] = flow_control


def data(table: Any) -> dict[str, Any]:
    """The table's rows (its memory store)."""
    return dict(table.data.data)


# --- builders ----------------------------------------------------------------------------


def line(sku: str, quantity: int = 1, unit_price: str = "10.00") -> OrderLine:
    return OrderLine(sku=sku, quantity=quantity, unit_price=Decimal(unit_price))


def order(
    order_id: str = "ord-1",
    *,
    lines: list[OrderLine] | None = None,
    customer_id: str = "cust-1",
    country: str = "DE",
    payment_method: str = "tok_visa",
    created_at: float | None = None,
) -> OrderCreated:
    lines = lines if lines is not None else [line("SKU-A", 2), line("SKU-B", 1, "5.50")]
    return OrderCreated(
        order_id=order_id,
        customer_id=customer_id,
        country=country,
        currency="EUR",
        total=sum((ln.unit_price * ln.quantity for ln in lines), Decimal("0")),
        lines=lines,
        payment_method=payment_method,
        created_at=time.time() if created_at is None else created_at,
    )


def validated(o: OrderCreated) -> OrderValidated:
    return OrderValidated(order_id=o.order_id, order=o, validated_at=o.created_at + 0.1)


def alert(o: OrderCreated) -> FraudAlert:
    """Fraud's rejection of ``o`` (the total limit)."""
    return FraudAlert(
        order_id=o.order_id,
        customer_id=o.customer_id,
        country=o.country,
        rules=["max_total"],
        score=0.9,
        reason="order total above the limit",
        at=o.created_at + 0.1,
    )


def reply(o: OrderCreated, sku: str, quantity: int, ok: bool, op: str = "reserve") -> StockReply:
    return StockReply(
        op=op, order_id=o.order_id, sku=sku, quantity=quantity, ok=ok, lines_total=2, at=1.0
    )


def command(op: str, sku: str, quantity: int, order_id: str = "ord-1") -> StockCommand:
    return StockCommand(op=op, sku=sku, quantity=quantity, order_id=order_id, lines_total=1, at=1.0)


def enc(record: faust.Record) -> bytes:
    return records.encode(record)


# --- the order agent ("status") ----------------------------------------------------------


async def test_order_created_goes_to_fraud_by_customer_and_is_recorded(
    pipeline: Pipeline,
) -> None:
    o = order()
    async with pipeline.run(track) as agent:
        await agent.process(ORDER_CREATED, b"ord-1", enc(o))

    [out] = pipeline.sent()
    assert (out.topic, out.key, out.timestamp) == (BY_CUSTOMER, "cust-1", o.created_at)
    assert out.record() == o
    doc = data(order_status)["ord-1"]
    assert doc["status"] == "CREATED"
    assert doc.get("fraud") is None
    # The document's changelog record: key plain UTF-8, in the event's partition.
    [change] = pipeline.producer.changelog
    assert change.message.channel.get_topic_name() == "orders_app-order_status-changelog"
    assert change.message.key == b"ord-1"
    assert change.message.partition == 0


async def test_order_created_whose_fraud_check_the_cdc_agent_asked_for_is_only_recorded(
    pipeline: Pipeline,
) -> None:
    """The cdc agent sends a new order to the fraud repartition itself and says so in a
    header: the order agent records the order and does not ask a second time (also on a
    redelivery); the fraud decision then moves it as usual."""
    o = order()
    asked = [(FRAUD_REQUESTED, b"1")]
    async with pipeline.run(track) as agent:
        await agent.process(ORDER_CREATED, b"ord-1", enc(o), headers=asked)
        await agent.process(ORDER_CREATED, b"ord-1", enc(o), headers=asked)
        assert pipeline.topics() == []
        assert data(order_status)["ord-1"]["status"] == "CREATED"
        await agent.process(ORDER_VALIDATED, b"ord-1", enc(validated(o)))
    assert data(order_status)["ord-1"]["status"] == "PAID"
    assert BY_CUSTOMER not in pipeline.topics()


async def test_validated_order_is_charged_once_and_reserves_each_sku(pipeline: Pipeline) -> None:
    o = order(lines=[line("SKU-A", 2), line("SKU-B", 1, "5.50"), line("SKU-A", 1)])
    async with pipeline.run(track) as agent:
        await agent.process(ORDER_CREATED, b"ord-1", enc(o))
        pipeline.clear()
        await agent.process(ORDER_VALIDATED, b"ord-1", enc(validated(o)))
        first = list(pipeline.sent())
        doc = data(order_status)["ord-1"]
        pipeline.clear()
        # At-least-once: the same input again re-sends the recorded outcome, no new charge.
        await agent.process(ORDER_VALIDATED, b"ord-1", enc(validated(o)))
        again = list(pipeline.sent())

    assert [s.topic for s in first] == ["payment_successful", STOCK_COMMANDS, STOCK_COMMANDS]
    paid = first[0].record()
    assert isinstance(paid, PaymentSucceeded)
    assert (first[0].key, paid.charge_id, paid.amount) == (
        "ord-1",
        charge_id_for("ord-1"),
        Decimal("35.50"),
    )
    reserves = [(s.key, s.record()) for s in first[1:]]
    assert [(key, c.op, c.sku, c.quantity, c.order_id) for key, c in reserves] == [
        ("SKU-A", "reserve", "SKU-A", 3, "ord-1"),
        ("SKU-B", "reserve", "SKU-B", 1, "ord-1"),
    ]
    assert all(c.lines_total == 2 for _key, c in reserves)
    assert doc["status"] == "PAID"
    assert doc["fraud"] == "passed"
    assert doc["payment"]["charge_id"] == charge_id_for("ord-1")
    assert doc["saga"]["state"] == "pending"
    # the redelivery: the same charge (same id) and the commands not yet answered
    assert [s.topic for s in again] == [s.topic for s in first]
    assert again[0].record().charge_id == paid.charge_id
    assert data(order_status)["ord-1"] == doc


async def test_all_stock_replies_ok_fulfil_the_order(pipeline: Pipeline) -> None:
    o = order()
    async with pipeline.run(track) as agent:
        await agent.process(ORDER_CREATED, b"ord-1", enc(o))
        await agent.process(ORDER_VALIDATED, b"ord-1", enc(validated(o)))
        pipeline.clear()
        await agent.process(STOCK_REPLIES, b"ord-1", enc(reply(o, "SKU-A", 2, ok=True)))
        assert pipeline.sent() == []  # undecided until every sku has answered
        await agent.process(STOCK_REPLIES, b"ord-1", enc(reply(o, "SKU-B", 1, ok=True)))

    assert pipeline.topics() == ["inventory_updated", BY_COUNTRY, "notification_sent"]
    updated, change, note = (s.record() for s in pipeline.sent())
    assert isinstance(updated, InventoryUpdated)
    assert (updated.status, updated.missing) == ("reserved", [])
    assert isinstance(change, StatusChanged)
    by_country = pipeline.sent(BY_COUNTRY)[0]
    assert (by_country.key, by_country.timestamp) == ("DE", o.created_at)
    assert (change.status, change.terminal, change.total) == ("FULFILLED", True, o.total)
    assert isinstance(note, NotificationSent)
    assert (note.order_id, note.status) == ("ord-1", "FULFILLED")
    doc = data(order_status)["ord-1"]
    assert doc["status"] == "FULFILLED"
    assert doc["saga"]["state"] == "reserved"


async def test_with_the_changelog_cache_an_order_is_one_changelog_record(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """orders_app/faust_patches/changelog_cache.py through tables.StampedTable: the four
    writes of the order's document are kept, not sent; the producer's flush (what Faust
    awaits before committing) sends one record, the last document, in the event's
    partition, with the write stamp the local store has."""
    cache = ChangelogCache(interval=60.0)
    monkeypatch.setattr(app, "_changelog_cache", cache)
    cache.attach(pipeline.producer)
    o = order()
    async with pipeline.run(track) as agent:
        await agent.process(ORDER_CREATED, b"ord-1", enc(o), partition=3)
        await agent.process(ORDER_VALIDATED, b"ord-1", enc(validated(o)), partition=3)
        await agent.process(
            STOCK_REPLIES, b"ord-1", enc(reply(o, "SKU-A", 2, ok=True)), partition=3
        )
        await agent.process(
            STOCK_REPLIES, b"ord-1", enc(reply(o, "SKU-B", 1, ok=True)), partition=3
        )
        assert pipeline.producer.changelog == []  # Faust's path (send_soon) not taken
        assert pipeline.sent(CHANGELOG) == [] and cache.pending == 1 and cache.writes == 4
        await pipeline.producer.flush()

    [record] = pipeline.sent(CHANGELOG)
    assert record.key == "ord-1"
    assert cache.pending == 0 and cache.sent == 1
    assert loads_value(record.value) == data(order_status)["ord-1"]
    assert loads_value(record.value)["status"] == "FULFILLED"
    assert stamp_of(record.value) is not None
    assert pipeline.producer.partitions[CHANGELOG] == [3]


async def test_one_refused_sku_releases_the_others_and_refunds(pipeline: Pipeline) -> None:
    o = order()
    async with pipeline.run(track) as agent:
        await agent.process(ORDER_CREATED, b"ord-1", enc(o))
        await agent.process(ORDER_VALIDATED, b"ord-1", enc(validated(o)))
        await agent.process(STOCK_REPLIES, b"ord-1", enc(reply(o, "SKU-A", 2, ok=True)))
        pipeline.clear()
        await agent.process(STOCK_REPLIES, b"ord-1", enc(reply(o, "SKU-B", 1, ok=False)))

    topics = pipeline.topics()
    assert topics[0] == "inventory_updated"
    updated = pipeline.sent("inventory_updated")[0].record()
    assert (updated.status, updated.missing) == ("out_of_stock", ["SKU-B"])
    [release] = pipeline.sent(STOCK_COMMANDS)
    assert (release.key, release.record().op, release.record().quantity) == ("SKU-A", "release", 2)
    [refund] = pipeline.sent("payment_refunded")
    assert isinstance(refund.record(), PaymentRefunded)
    assert (refund.key, refund.record().charge_id, refund.record().amount) == (
        "ord-1",
        charge_id_for("ord-1"),
        o.total,
    )
    [change] = [s.record() for s in pipeline.sent(BY_COUNTRY)]
    assert (change.status, change.terminal) == ("CANCELLED", True)
    assert data(order_status)["ord-1"]["status"] == "CANCELLED"
    assert data(order_status)["ord-1"]["payment"]["refunded"] is True


async def test_declined_card_fails_the_payment_without_reserving(pipeline: Pipeline) -> None:
    o = order(payment_method="tok_chargeDeclined")
    async with pipeline.run(track) as agent:
        await agent.process(ORDER_CREATED, b"ord-1", enc(o))
        pipeline.clear()
        await agent.process(ORDER_VALIDATED, b"ord-1", enc(validated(o)))

    assert pipeline.topics() == ["payment_failed", BY_COUNTRY, "notification_sent"]
    failed = pipeline.sent("payment_failed")[0].record()
    assert isinstance(failed, PaymentFailed)
    assert failed.reason == "card_declined"
    assert pipeline.sent(BY_COUNTRY)[0].record().status == "PAYMENT_FAILED"
    assert data(order_status)["ord-1"]["status"] == "PAYMENT_FAILED"
    assert "saga" not in data(order_status)["ord-1"]


async def test_fraud_alert_rejects_and_a_later_validation_is_ignored(pipeline: Pipeline) -> None:
    o = order()
    async with pipeline.run(track) as agent:
        await agent.process(ORDER_CREATED, b"ord-1", enc(o))
        pipeline.clear()
        await agent.process(FRAUD_ALERTS, b"ord-1", enc(alert(o)))
        rejected = list(pipeline.sent())
        doc = data(order_status)["ord-1"]
        pipeline.clear()
        await agent.process(ORDER_VALIDATED, b"ord-1", enc(validated(o)))

    assert [s.topic for s in rejected] == [BY_COUNTRY, "notification_sent"]
    change = rejected[0].record()
    assert (change.status, change.reasons) == ("REJECTED", ["fraud:max_total"])
    assert (doc["status"], doc["fraud"]) == ("REJECTED", "rejected")
    # the first decision stands: no charge, nothing sent, the document unchanged
    assert pipeline.sent() == []
    assert data(order_status)["ord-1"] == doc


async def test_order_agent_dead_letters_what_it_cannot_decode(pipeline: Pipeline) -> None:
    async with pipeline.run(track) as agent:
        offset = await agent.process(ORDER_CREATED, b"ord-9", b'{"order_id": "ord-9"}')
        await agent.process(ORDER_CREATED, b"ord-1", enc(order()))  # and goes on

    [letter] = pipeline.dead_letters()
    assert pipeline.sent("dead_letters")[0].key == "ord-9"
    assert (letter.topic, letter.partition, letter.offset) == (ORDER_CREATED, 0, offset)
    assert (letter.key, letter.agent) == ("ord-9", "status")
    assert letter.payload == b'{"order_id": "ord-9"}'
    assert "missing" in letter.error
    assert set(data(order_status)) == {"ord-1"}


REDRIVE_AFTER = 20.0


async def test_an_overtaken_order_waiting_for_fraud_is_sent_to_fraud_again(
    pipeline: Pipeline,
) -> None:
    """Its fraud repartition was lost (a broker hole): once a later order has finished and
    it has not moved for ORDERS_REDRIVE_AFTER, the same order goes to fraud again."""
    lost, later = order("ord-1"), order("ord-2", lines=[line("SKU-A", 1)], customer_id="c-2")
    async with pipeline.run(track) as agent:
        await agent.process(ORDER_CREATED, b"ord-1", enc(lost))
        pipeline.clear()  # the orders-by-customer record never reaches fraud
        now = time.time()
        # nothing is due while no later order has finished (it may only be queued)
        assert await redrive_once(now + REDRIVE_AFTER, REDRIVE_AFTER) == 0
        await agent.process(ORDER_CREATED, b"ord-2", enc(later))
        await agent.process(ORDER_VALIDATED, b"ord-2", enc(validated(later)))
        await agent.process(STOCK_REPLIES, b"ord-2", enc(reply(later, "SKU-A", 1, ok=True)))
        assert data(order_status)["ord-2"]["status"] == "FULFILLED"
        pipeline.clear()
        assert await redrive_once(now + REDRIVE_AFTER / 2, REDRIVE_AFTER) == 0  # not yet
        assert await redrive_once(now + REDRIVE_AFTER + 1, REDRIVE_AFTER) == 1
        [again] = pipeline.sent()
        assert (again.topic, again.key, again.timestamp) == (BY_CUSTOMER, "cust-1", lost.created_at)
        assert again.record() == lost
        # asked again: not again before another ORDERS_REDRIVE_AFTER
        pipeline.clear()
        assert await redrive_once(now + REDRIVE_AFTER + 2, REDRIVE_AFTER) == 0
        # the decision arrives: the order goes on and waits for its stock replies
        await agent.process(ORDER_VALIDATED, b"ord-1", enc(validated(lost)))
        assert [s.topic for s in pipeline.sent()] == [
            "payment_successful",
            STOCK_COMMANDS,
            STOCK_COMMANDS,
        ]
    assert "ord-1" in open_orders.since


async def test_an_overtaken_order_waiting_for_stock_asks_the_silent_skus_again(
    pipeline: Pipeline,
) -> None:
    o, later = order("ord-1"), order("ord-2", lines=[line("SKU-A", 1)], customer_id="c-2")
    async with pipeline.run(track) as agent:
        await agent.process(ORDER_CREATED, b"ord-1", enc(o))
        await agent.process(ORDER_VALIDATED, b"ord-1", enc(validated(o)))
        await agent.process(STOCK_REPLIES, b"ord-1", enc(reply(o, "SKU-A", 2, ok=True)))
        now = time.time()  # SKU-B's reserve (or its reply) is lost
        for step in (ORDER_CREATED, ORDER_VALIDATED):
            rec = later if step == ORDER_CREATED else validated(later)
            await agent.process(step, b"ord-2", enc(rec))
        await agent.process(STOCK_REPLIES, b"ord-2", enc(reply(later, "SKU-A", 1, ok=True)))
        pipeline.clear()
        assert await redrive_once(now + REDRIVE_AFTER + 1, REDRIVE_AFTER) == 1
        [again] = pipeline.sent()
        cmd = again.record()
        assert (again.topic, again.key) == (STOCK_COMMANDS, "SKU-B")
        assert (cmd.op, cmd.sku, cmd.quantity, cmd.order_id) == ("reserve", "SKU-B", 1, "ord-1")
        # the reply comes: the order is fulfilled and waits for nothing more
        await agent.process(STOCK_REPLIES, b"ord-1", enc(reply(o, "SKU-B", 1, ok=True)))
    assert data(order_status)["ord-1"]["status"] == "FULFILLED"
    assert open_orders.since == {}


async def test_after_a_rebalance_the_waiting_orders_are_found_in_the_table(
    pipeline: Pipeline,
) -> None:
    """A worker that takes over a partition re-drives the orders stalled there."""
    waiting, done = order("ord-1"), order("ord-2", lines=[line("SKU-A", 1)], customer_id="c-2")
    async with pipeline.run(track) as agent:
        await agent.process(ORDER_CREATED, b"ord-1", enc(waiting))
        await agent.process(ORDER_CREATED, b"ord-2", enc(done))
        await agent.process(FRAUD_ALERTS, b"ord-2", enc(alert(done)))
    open_orders.since = {"elsewhere": 1.0}  # noted before the rebalance
    await on_rebalance_complete(None)
    await asyncio.gather(*_scans)
    assert set(open_orders.since) == {"ord-1"}


async def test_restored_order_is_not_run_again(pipeline: Pipeline) -> None:
    """A snapshot of an order Postgres records: its state is taken, its stock held
    again, the terminal change counted; no charge and no notification."""
    o = order()
    async with pipeline.run(track) as agent:
        for topic, record in [
            (ORDER_CREATED, o),
            (ORDER_VALIDATED, validated(o)),
            (STOCK_REPLIES, reply(o, "SKU-A", 2, ok=True)),
            (STOCK_REPLIES, reply(o, "SKU-B", 1, ok=True)),
        ]:
            await agent.process(topic, b"ord-1", enc(record))
    recorded = data(order_status)["ord-1"]
    assert recorded["status"] == "FULFILLED"

    # a fresh broker and state: the same order comes back as a restore
    order_status.data.data.clear()
    pipeline.clear()
    restored = OrderRestored(order_id="ord-1", document=recorded, at=time.time())
    async with pipeline.run(track) as agent:
        await agent.process("orders_app-order-restores", b"ord-1", enc(restored))

    assert sorted(pipeline.topics()) == sorted([STOCK_COMMANDS, STOCK_COMMANDS, BY_COUNTRY])
    holds = sorted(
        (s.key, s.record().op, s.record().quantity) for s in pipeline.sent(STOCK_COMMANDS)
    )
    assert holds == [("SKU-A", "restore", 2), ("SKU-B", "restore", 1)]
    assert pipeline.sent(BY_COUNTRY)[0].record().status == "FULFILLED"
    doc = data(order_status)["ord-1"]
    assert doc["status"] == "FULFILLED"
    assert doc["payment"] == recorded["payment"]


# --- fraud ("fraud-check") ---------------------------------------------------------------


async def test_fraud_rejects_an_order_over_the_limit(pipeline: Pipeline) -> None:
    big = order("ord-big", lines=[line("SKU-A", 1, "5000.01")])
    # another customer (the first one's minute holds 5000.01 spent already)
    small = order("ord-small", lines=[line("SKU-A", 1, "1999.99")], customer_id="cust-2")
    async with pipeline.run(check) as agent:
        await agent.process(BY_CUSTOMER, b"cust-1", enc(big), timestamp=big.created_at)
        await agent.process(BY_CUSTOMER, b"cust-2", enc(small), timestamp=small.created_at)

    assert pipeline.topics() == [FRAUD_ALERTS, ORDER_VALIDATED]
    alert, ok = (s.record() for s in pipeline.sent())
    assert pipeline.sent()[0].key == "ord-big"
    assert isinstance(alert, FraudAlert)
    # above the limit, and so above the minute's spend too
    assert (alert.order_id, alert.customer_id) == ("ord-big", "cust-1")
    assert alert.rules == ["max_total", "velocity_amount"]
    assert pipeline.sent()[1].key == "ord-small"
    assert isinstance(ok, OrderValidated)
    assert ok.order == small


async def test_fraud_velocity_counts_a_redelivered_order_once(pipeline: Pipeline) -> None:
    """Five orders a minute pass, the sixth is rejected; the fifth delivered again is
    decided as the first time (passed), not counted as a seventh."""
    t0 = 1_700_000_000.0  # the start of a 1-minute window (event time)
    orders = [
        order(f"ord-{i}", lines=[line("SKU-A", 1, "1.00")], created_at=t0 + i) for i in range(6)
    ]
    async with pipeline.run(check) as agent:
        for o in orders:
            await agent.process(BY_CUSTOMER, b"cust-1", enc(o), timestamp=o.created_at)
        decided = [(s.topic, s.key) for s in pipeline.sent()]
        pipeline.clear()
        fifth = orders[4]
        await agent.process(BY_CUSTOMER, b"cust-1", enc(fifth), timestamp=fifth.created_at)

    assert decided == [(ORDER_VALIDATED, f"ord-{i}") for i in range(5)] + [(FRAUD_ALERTS, "ord-5")]
    assert [(s.topic, s.key) for s in pipeline.sent()] == [(ORDER_VALIDATED, "ord-4")]


# --- inventory ("inventory-stock") -------------------------------------------------------


async def test_stock_reserves_what_is_available_and_replies(pipeline: Pipeline) -> None:
    async with pipeline.run(stock_commands) as agent:
        await agent.process(STOCK_COMMANDS, b"SKU-A", enc(command("restock", "SKU-A", 5, "")))
        assert pipeline.sent() == []  # a restock has no reply
        await agent.process(STOCK_COMMANDS, b"SKU-A", enc(command("reserve", "SKU-A", 3)))
        after_first = data(stock)["SKU-A"]
        # a redelivered reserve: the same answer, nothing reserved twice
        await agent.process(STOCK_COMMANDS, b"SKU-A", enc(command("reserve", "SKU-A", 3)))
        # another order wants more than is left: refused, stock unchanged
        await agent.process(STOCK_COMMANDS, b"SKU-A", enc(command("reserve", "SKU-A", 3, "ord-2")))

    assert after_first == {"available": 2, "reserved": 3, "total": 5}
    assert data(stock)["SKU-A"] == after_first
    replies = [(s.key, s.record()) for s in pipeline.sent()]
    assert [(key, r.op, r.order_id, r.sku, r.quantity, r.ok) for key, r in replies] == [
        ("ord-1", "reserve", "ord-1", "SKU-A", 3, True),
        ("ord-1", "reserve", "ord-1", "SKU-A", 3, True),
        ("ord-2", "reserve", "ord-2", "SKU-A", 3, False),
    ]
    assert pipeline.topics() == [STOCK_REPLIES] * 3
    ledger = data(stock_ledger)
    assert ledger["SKU-A|ord-1"]["state"] == "reserved"
    assert ledger["SKU-A|ord-2"]["state"] == "failed"


class Catalogue:
    """Stands in for ``app.db`` for the stock agent: ``products.stock`` as a dict, read
    by the real ``orders_app.db.catalogue_level`` through ``acquire()``/``fetchval``."""

    def __init__(self, levels: dict[str, int]) -> None:
        self.levels = levels
        self.asked: list[str] = []

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Catalogue]:
        yield self

    async def fetchval(self, query: str, sku: str) -> int | None:
        assert "FROM products" in query
        self.asked.append(sku)
        return self.levels.get(sku)


async def test_a_reserve_before_the_catalogue_level_takes_it_from_postgres(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold start: an order's reserve overtook the products snapshot's restock on the
    sku's partition.  The level comes from Postgres, the order is served, and the
    restock that follows (the same absolute level) counts nothing twice."""
    catalogue = Catalogue({"SKU-A": 5})
    monkeypatch.setattr(app, "_database", catalogue)
    async with pipeline.run(stock_commands) as agent:
        await agent.process(STOCK_COMMANDS, b"SKU-A", enc(command("reserve", "SKU-A", 3)))
        assert data(stock)["SKU-A"] == {"available": 2, "reserved": 3, "total": 5}
        await agent.process(STOCK_COMMANDS, b"SKU-A", enc(command("restock", "SKU-A", 5, "")))
        await agent.process(STOCK_COMMANDS, b"SKU-A", enc(command("reserve", "SKU-A", 2, "ord-2")))

    answers = [(r.order_id, r.ok) for r in (s.record() for s in pipeline.sent(STOCK_REPLIES))]
    assert answers == [("ord-1", True), ("ord-2", True)]
    assert data(stock)["SKU-A"] == {"available": 0, "reserved": 5, "total": 5}
    assert catalogue.asked == ["SKU-A"]  # once: the sku has a record from then on


async def test_a_reserve_after_restored_holds_but_before_the_level_reads_it_too(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restart on a fresh broker: a recorded order's hold is restored before the
    products snapshot; a new order's reserve must not see "total = what is held"."""
    catalogue = Catalogue({"SKU-A": 10})
    monkeypatch.setattr(app, "_database", catalogue)
    async with pipeline.run(stock_commands) as agent:
        await agent.process(STOCK_COMMANDS, b"SKU-A", enc(command("restore", "SKU-A", 4)))
        await agent.process(STOCK_COMMANDS, b"SKU-A", enc(command("reserve", "SKU-A", 5, "ord-2")))
        await agent.process(STOCK_COMMANDS, b"SKU-A", enc(command("restock", "SKU-A", 10, "")))

    [answer] = [s.record() for s in pipeline.sent(STOCK_REPLIES)]
    assert (answer.order_id, answer.ok) == ("ord-2", True)
    assert data(stock)["SKU-A"] == {"available": 1, "reserved": 9, "total": 10}
    assert catalogue.asked == ["SKU-A"]


async def test_stock_refuses_an_unknown_sku_and_releases_once(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalogue = Catalogue({})  # the catalogue does not have SKU-X either
    monkeypatch.setattr(app, "_database", catalogue)
    async with pipeline.run(stock_commands) as agent:
        await agent.process(STOCK_COMMANDS, b"SKU-X", enc(command("reserve", "SKU-X", 1)))
        await agent.process(STOCK_COMMANDS, b"SKU-A", enc(command("restock", "SKU-A", 4, "")))
        await agent.process(STOCK_COMMANDS, b"SKU-A", enc(command("reserve", "SKU-A", 4)))
        await agent.process(STOCK_COMMANDS, b"SKU-A", enc(command("release", "SKU-A", 4)))
        await agent.process(STOCK_COMMANDS, b"SKU-A", enc(command("release", "SKU-A", 4)))

    answers = [(r.op, r.sku, r.ok) for r in (s.record() for s in pipeline.sent(STOCK_REPLIES))]
    assert answers == [
        ("reserve", "SKU-X", False),
        ("reserve", "SKU-A", True),
        ("release", "SKU-A", True),
        ("release", "SKU-A", True),
    ]
    assert "SKU-X" not in data(stock)
    assert catalogue.asked == ["SKU-X"]
    assert data(stock)["SKU-A"] == {"available": 4, "reserved": 0, "total": 4}
    assert data(stock_ledger)["SKU-A|ord-1"]["state"] == "released"


async def test_stock_dead_letters_an_unknown_command(pipeline: Pipeline) -> None:
    async with pipeline.run(stock_commands) as agent:
        await agent.process(STOCK_COMMANDS, b"SKU-A", enc(command("restock", "SKU-A", 4, "")))
        offset = await agent.process(STOCK_COMMANDS, b"SKU-A", enc(command("steal", "SKU-A", 4)))

    assert pipeline.topics() == ["dead_letters"]
    [letter] = pipeline.dead_letters()
    assert (letter.topic, letter.offset, letter.key, letter.agent) == (
        STOCK_COMMANDS,
        offset,
        "SKU-A",
        "inventory",
    )
    assert "unknown stock command op 'steal'" in letter.error
    assert data(stock)["SKU-A"] == {"available": 4, "reserved": 0, "total": 4}


# --- analytics ---------------------------------------------------------------------------


def terminal(
    order_id: str, status: str, total: str, created_at: float, country: str = "DE"
) -> StatusChanged:
    return StatusChanged(
        order_id=order_id,
        status=status,
        previous="PAID",
        terminal=True,
        customer_id="cust-1",
        country=country,
        currency="EUR",
        total=Decimal(total),
        reasons=[],
        created_at=created_at,
        at=created_at + 1,
    )


async def test_analytics_counts_a_terminal_change_once_under_redelivery(
    pipeline: Pipeline,
) -> None:
    t0 = 1_700_000_040.0
    fulfilled = enc(terminal("ord-1", "FULFILLED", "35.50", t0))
    async with pipeline.run(aggregate) as agent:
        await agent.process(BY_COUNTRY, b"DE", fulfilled)
        first = data(country_stats)["DE"]
        # again alone, then twice in one batch with another order
        await agent.process(BY_COUNTRY, b"DE", fulfilled)
        for value in (fulfilled, enc(terminal("ord-2", "CANCELLED", "9.00", t0)), fulfilled):
            await agent.deliver(BY_COUNTRY, b"DE", value)
        await agent.settle(5)

    assert (first["orders"], first["revenue"], first["by_status"]) == (
        1,
        "35.50",
        {"FULFILLED": 1},
    )
    stats = data(country_stats)["DE"]
    assert (stats["orders"], Decimal(stats["revenue"]), stats["by_status"]) == (
        2,
        Decimal("35.50"),
        {"FULFILLED": 1, "CANCELLED": 1},
    )
    assert set(data(analytics_ledger)) == {"ord-1", "ord-2"}
    # one update per batch that changed the country: the first, and the one with ord-2
    updates = pipeline.sent("order_analytics")
    assert [s.key for s in updates] == ["DE", "DE"]
    last = updates[-1].record()
    assert isinstance(last, CountryStats)
    assert (last.orders, last.revenue, last.by_status) == (
        2,
        Decimal("35.50"),
        {"FULFILLED": 1, "CANCELLED": 1},
    )
    assert (last.window_start, last.window_orders) == (t0 - t0 % 60, 2)
    assert pipeline.dead_letters() == []


async def test_analytics_dead_letters_a_bad_change_and_counts_the_rest(
    pipeline: Pipeline,
) -> None:
    t0 = 1_700_000_040.0
    async with pipeline.run(aggregate) as agent:
        await agent.deliver(BY_COUNTRY, b"DE", enc(terminal("ord-1", "FULFILLED", "10", t0)))
        bad = await agent.deliver(BY_COUNTRY, b"DE", b"not json")
        await agent.deliver(BY_COUNTRY, b"FR", enc(terminal("ord-2", "FULFILLED", "7", t0, "FR")))
        await agent.settle(3)

    [letter] = pipeline.dead_letters()
    assert (letter.topic, letter.offset, letter.key, letter.agent) == (
        BY_COUNTRY,
        bad,
        "DE",
        "analytics",
    )
    assert data(country_stats)["DE"]["orders"] == 1
    assert data(country_stats)["FR"]["orders"] == 1
    assert {s.key for s in pipeline.sent("order_analytics")} == {"DE", "FR"}


# --- cdc ("cdc-orders", "cdc-products") --------------------------------------------------


def dbz(sample: str, shape: str = "schemas_disabled") -> tuple[bytes, bytes]:
    msg = SAMPLES[sample][shape]
    return json.dumps(msg["key"]).encode(), json.dumps(msg["value"]).encode()


class RecordedOutcomes:
    """Stands in for ``app.db``: ``order_status_view`` as a dict, read by the real
    ``orders_app.db.recorded_document`` through ``acquire()``/``fetchval``."""

    def __init__(self, documents: dict[str, dict[str, Any]]) -> None:
        self.documents = documents

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[RecordedOutcomes]:
        yield self

    async def fetchval(self, query: str, order_id: str) -> str | None:
        assert "order_status_view" in query
        doc = self.documents.get(order_id)
        return None if doc is None else json.dumps(doc)


@pytest.mark.parametrize("shape", ["schemas_disabled", "schemas_enabled"])
async def test_cdc_turns_an_insert_into_order_created(pipeline: Pipeline, shape: str) -> None:
    key, value = dbz("orders_create", shape)
    lsn = SAMPLES["orders_create"]["schemas_disabled"]["value"]["source"]["lsn"]
    async with pipeline.run(orders_changes) as agent:
        await agent.process("orders_db.public.orders", key, value)
        # a redelivery of the same change is emitted again (downstream is idempotent)
        await agent.process("orders_db.public.orders", key, value)

    # The fraud check is asked for here, beside order_created (which says so in a header).
    assert pipeline.topics() == [BY_CUSTOMER, ORDER_CREATED, BY_CUSTOMER, ORDER_CREATED]
    out = pipeline.sent(ORDER_CREATED)[0]
    assert out.headers == [(FRAUD_REQUESTED, b"1")]
    created = out.record()
    assert isinstance(created, OrderCreated)
    assert (out.key, created.order_id, created.customer_id, created.total) == (
        "dbz-ord-1",
        "dbz-ord-1",
        "c-42",
        Decimal("39.98"),
    )
    assert [(ln.sku, ln.quantity, ln.unit_price) for ln in created.lines] == [
        ("SKU-0001", 2, Decimal("19.99"))
    ]
    assert out.timestamp == created.created_at
    by_customer = pipeline.sent(BY_CUSTOMER)[0]
    assert (by_customer.key, by_customer.timestamp) == ("c-42", created.created_at)
    assert by_customer.record() == created
    assert data(cdc_seen) == {"dbz-ord-1": lsn}


async def test_cdc_skips_the_same_order_from_another_change(pipeline: Pipeline) -> None:
    key, value = dbz("orders_create")
    other = json.loads(value)
    other["source"]["lsn"] += 100  # the same row seen again by another change
    async with pipeline.run(orders_changes) as agent:
        await agent.process("orders_db.public.orders", key, value)
        await agent.process("orders_db.public.orders", key, json.dumps(other).encode())

    assert pipeline.topics() == [BY_CUSTOMER, ORDER_CREATED]


async def test_cdc_dead_letters_a_malformed_envelope_and_skips_tombstones(
    pipeline: Pipeline,
) -> None:
    key, value = dbz("orders_create")
    broken = json.loads(value)
    broken["after"]["total"] = "lots"
    async with pipeline.run(orders_changes) as agent:
        bad = await agent.process("orders_db.public.orders", key, json.dumps(broken).encode())
        await agent.process("orders_db.public.orders", key, None)  # tombstone
        await agent.process("orders_db.public.orders", key, b"{not json")

    assert pipeline.topics() == ["dead_letters", "dead_letters"]
    first, second = pipeline.dead_letters()
    assert (first.topic, first.offset, first.key, first.agent) == (
        "orders_db.public.orders",
        bad,
        key.decode(),
        "cdc",
    )
    assert "total" in first.error
    assert first.payload == json.dumps(broken).encode()
    assert second.offset == bad + 2
    assert data(cdc_seen) == {}


async def test_cdc_snapshot_of_a_recorded_order_is_restored_not_created(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = {"order_id": "dbz-ord-1", "status": "FULFILLED", "fraud": "passed"}
    monkeypatch.setattr(app, "_database", RecordedOutcomes({"dbz-ord-1": recorded}))
    key, value = dbz("orders_snapshot")
    async with pipeline.run(orders_changes) as agent:
        await agent.process("orders_db.public.orders", key, value)

    [out] = pipeline.sent()
    assert (out.topic, out.key) == ("orders_app-order-restores", "dbz-ord-1")
    restored = out.record()
    assert isinstance(restored, OrderRestored)
    assert restored.document == recorded
    assert "dbz-ord-1" in data(cdc_seen)


@pytest.mark.parametrize(
    "recorded",
    [
        None,
        # The fraud check runs beside the order's first step, so a rejection can be
        # recorded before the order's details (nothing published, no notification yet).
        # Restored as is after a restart on a fresh broker, the order would stay there
        # for good: it runs from the start instead, as an order recorded at CREATED does.
        {
            "order_id": "dbz-ord-1",
            "status": "REJECTED",
            "fraud": "rejected",
            "has_details": False,
            "published": None,
        },
    ],
    ids=["unrecorded", "recorded_before_its_details"],
)
async def test_cdc_snapshot_of_an_order_not_recorded_as_run_runs_it(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, recorded: dict[str, Any] | None
) -> None:
    outcomes = {} if recorded is None else {"dbz-ord-1": recorded}
    monkeypatch.setattr(app, "_database", RecordedOutcomes(outcomes))
    key, value = dbz("orders_snapshot")
    async with pipeline.run(orders_changes) as agent:
        await agent.process("orders_db.public.orders", key, value)

    assert [(s.topic, s.key) for s in pipeline.sent()] == [
        (BY_CUSTOMER, "c-42"),
        (ORDER_CREATED, "dbz-ord-1"),
    ]


async def test_cdc_product_change_becomes_a_restock_command(pipeline: Pipeline) -> None:
    key, value = dbz("products_update", "schemas_enabled")
    async with pipeline.run(products_changes) as agent:
        await agent.process("orders_db.public.products", key, value)
        await agent.process("orders_db.public.products", key, b"[]")

    assert pipeline.topics() == [STOCK_COMMANDS, "dead_letters"]
    restock = pipeline.sent()[0]
    cmd = restock.record()
    assert (restock.key, cmd.op, cmd.sku, cmd.quantity) == ("SKU-0001", "restock", "SKU-0001", 150)
    assert pipeline.dead_letters()[0].agent == "cdc"
