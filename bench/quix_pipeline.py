"""The whole order pipeline in Quix Streams, for ``make bench`` only (not part of the app).

What is compared (``pipeline_vs_quix`` in ``bench/__main__.py``): the same N orders, as
Debezium envelopes (JSON converter, schemas disabled, as the embedded CDC writes them) on
``orders_db.public.orders``, each processed to a terminal status by this module in one
Quix process, and by this project's one worker (its ``cdc`` agent reads the same topic);
orders/s from the first envelope produced until every order is counted terminal on the
per-country analytics output.  Each side has a fresh broker and reads the products
snapshot (``orders_db.public.products``) for its initial stock.

The rules are literally this project's (``agents.*_rules``): envelope decoding
(``cdc_rules.order_change``, either converter shape), fraud (``FraudLimits`` defaults,
``add_to_window``/``evaluate`` over the customer's 1-minute window by the order's commit
time, kept 10 minutes), the simulated gateway (``payment_rules.gateway_charge``), stock
(``inventory_rules.reserve``/``release``/``set_total`` per sku, ``saga_reply`` per order:
all or nothing), the notification templates and ids, and per-country totals with
1-minute windows (``analytics_rules``).  Outputs are the seed topics with a ``quix_``
prefix, same keys (order id, country for analytics) and the same record fields.

Written the idiomatic Quix way, one ``Application``:

- envelopes -> ``apply`` (decode) -> ``group_by`` customer -> stateful ``apply`` (velocity
  window in ``State``, with an event-time TTL as the window's expiry) -> branches:
  rejected -> ``fraud_alerts`` + terminal; passed -> ``order_validated``, charge ->
  ``payment_successful`` | ``payment_failed`` (+ terminal), reserve commands per distinct
  sku (``expand``) -> ``quix_stock_commands`` (key sku);
- ``quix_stock_commands`` -> stateful ``apply`` (stock per sku) -> ``group_by`` order id ->
  stateful ``apply`` (the saga, only while an order waits for more than one sku) ->
  ``inventory_updated`` and FULFILLED, or out of stock: release commands back to
  ``quix_stock_commands``, ``payment_refunded`` and CANCELLED; ``released`` once every
  release is acknowledged;
- every terminal status -> ``notification_sent`` and ``quix_status_by_country`` (key
  country) -> stateful ``apply`` (totals, per-minute windows with a 1-hour TTL) ->
  ``order_analytics``.

Stock commands are a named topic rather than a ``group_by`` because restocks (from the
products envelopes), reserves and releases must all reach the same per-sku state, which
Quix ties to one input stream; that is what ``group_by`` does underneath.  Values between
steps are plain dicts carrying the order (Quix's JSON serialisation, no schema check);
the order is validated into an ``OrderCreated`` once, where the fraud rules need it.

Not like ours, by design of an idiomatic Quix app: at-least-once with no per-order
ledgers (charge, reservation, notification, analytics count), so a redelivered message
after a crash may charge, reserve, notify or count again (ours is idempotent per order
id; the fraud window, listing the orders it counted, is idempotent on both sides); no
per-order status table or CDC replay guard (no ``GET /orders/{id}``, no history, no
``cdc_seen``), the status travels with the message; analytics emits one update per
terminal order (ours one per country per batch); undecodable envelopes are logged and
skipped, not dead-lettered; no web server, metrics or retention sweeper in the process.
The bench's orders are all one-sku and fulfilled, so the saga's multi-sku and release
paths (checked by hand on mixed orders) are not in the timed run on either side.

Usage: python -m bench.quix_pipeline BOOTSTRAP STATE_DIR GROUP [PARTITIONS]
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from quixstreams import Application, State
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.models import TopicConfig
from quixstreams.models.topics import Topic

from agents.analytics_rules import window_start
from agents.cdc_rules import is_tombstone, order_change, parse_time, product_change, unwrap
from agents.fraud_rules import FraudLimits, add_to_window, evaluate, reason, score, window_as_of
from agents.inventory_rules import (
    merge_lines,
    missing_skus,
    release,
    reserve,
    saga_released,
    saga_reply,
    set_total,
)
from agents.notification_rules import TEMPLATES, notification_id
from agents.payment_rules import gateway_charge
from orders_app.country_totals import WINDOW_S, average_order_value
from orders_app.ledgers import WINDOW_RETENTION_S
from orders_app.records import DecodeError, OrderCreated, OrderStatus, from_dict

log = logging.getLogger("bench.quix_pipeline")

PREFIX = "quix_"
ORDERS_CDC = "orders_db.public.orders"
PRODUCTS_CDC = "orders_db.public.products"
OUTPUTS = (
    "order_validated",
    "fraud_alerts",
    "payment_successful",
    "payment_failed",
    "inventory_updated",
    "payment_refunded",
    "notification_sent",
    "order_analytics",
)
STOCK_COMMANDS = PREFIX + "stock_commands"
STATUS_BY_COUNTRY = PREFIX + "status_by_country"
LIMITS = FraudLimits()
# tables/customer_spend.py: 1-minute tumbling windows by commit time, kept 10 minutes
VELOCITY_WINDOW_S = 60
VELOCITY_TTL = timedelta(minutes=10)
ANALYTICS_WINDOW_TTL = timedelta(seconds=WINDOW_RETENTION_S)
DECODE_ERRORS = (DecodeError, TypeError, ValueError, ArithmeticError, KeyError)


def commit_time_ms(value: Any, _headers: Any, timestamp: int, _type: Any) -> int:
    """Event time of an orders envelope: the row's ``created_at`` (its commit), as ours
    stamps ``order_created``; the broker's timestamp for anything undecodable."""
    try:
        return int(parse_time(unwrap(value)["after"]["created_at"]) * 1000)
    except (*DECODE_ERRORS, AttributeError):
        return timestamp


def order_json(order: OrderCreated) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "customer_id": order.customer_id,
        "country": order.country,
        "currency": order.currency,
        "total": str(order.total),
        "lines": [
            {"sku": ln.sku, "quantity": ln.quantity, "unit_price": str(ln.unit_price)}
            for ln in order.lines
        ],
        "payment_method": order.payment_method,
        "created_at": order.created_at,
    }


def decode_order(value: Any, key: Any, _ts: int, _headers: Any) -> dict[str, Any] | None:
    """An orders envelope -> the order it creates (None: tombstone, update, delete, junk)."""
    try:
        if is_tombstone(value):
            return None
        _change, order = order_change(key, value)
    except DECODE_ERRORS as err:
        log.warning("skipping an undecodable orders envelope: %s", err)
        return None
    return None if order is None else order_json(order)


def restock_command(value: Any, key: Any, _ts: int, _headers: Any) -> dict[str, Any] | None:
    try:
        if is_tombstone(value):
            return None
        _change, level = product_change(key, value)
    except DECODE_ERRORS as err:
        log.warning("skipping an undecodable products envelope: %s", err)
        return None
    if level is None:
        return None
    sku, quantity = level
    return {"op": "restock", "sku": sku, "quantity": quantity}


def check_fraud(order: dict[str, Any], state: State[str, Any]) -> dict[str, Any]:
    """The customer's velocity window (state keyed by customer) -> the fraud decision."""
    record = from_dict(OrderCreated, order)
    key = f"velocity:{int(record.created_at // VELOCITY_WINDOW_S) * VELOCITY_WINDOW_S}"
    before = state.get(key)
    window = add_to_window(before, record)
    if window != before:
        state.set(key, window, ttl=VELOCITY_TTL)
    rules = evaluate(record, window_as_of(window, record.order_id), LIMITS)
    return {"order": order, "rules": rules, "wanted": merge_lines(record.lines), "at": time.time()}


def fraud_alert(checked: dict[str, Any]) -> dict[str, Any]:
    order, rules = checked["order"], checked["rules"]
    return {
        "order_id": order["order_id"],
        "customer_id": order["customer_id"],
        "country": order["country"],
        "rules": rules,
        "score": score(rules),
        "reason": reason(rules),
        "at": checked["at"],
    }


def order_validated(checked: dict[str, Any]) -> dict[str, Any]:
    order = checked["order"]
    return {"order_id": order["order_id"], "order": order, "validated_at": checked["at"]}


def charge(checked: dict[str, Any]) -> dict[str, Any]:
    order = checked["order"]
    result = gateway_charge(order["order_id"], order["payment_method"], Decimal(order["total"]))
    return {**checked, "paid": result.ok, "charge_id": result.charge_id, "reason": result.reason}


def payment_outcome(charged: dict[str, Any]) -> dict[str, Any]:
    order, now = charged["order"], time.time()
    common = {
        "order_id": order["order_id"],
        "amount": order["total"],
        "currency": order["currency"],
    }
    if charged["paid"]:
        return {**common, "charge_id": charged["charge_id"], "order": order, "at": now}
    return {**common, "reason": charged["reason"], "at": now}


def reserve_commands(charged: dict[str, Any]) -> list[dict[str, Any]]:
    """One reserve per distinct sku; each carries the order, so the reply can finish it."""
    wanted = charged["wanted"]
    context = {"order": charged["order"], "charge_id": charged["charge_id"], "wanted": wanted}
    return [
        {"op": "reserve", "sku": sku, "quantity": qty, "order_id": context["order"]["order_id"]}
        | context
        for sku, qty in wanted.items()
    ]


def apply_stock(cmd: dict[str, Any], state: State[str, Any]) -> dict[str, Any] | None:
    """Stock of one sku (state keyed by sku) -> the reply to a reserve or release."""
    stock = state.get("stock")
    op = cmd["op"]
    if op == "restock":
        state.set("stock", set_total(stock, cmd["quantity"]))
        return None
    if op == "reserve":
        new, _entry, ok = reserve(stock, None, cmd["quantity"])
    elif op == "release":
        new, _entry = release(stock, {"state": "reserved", "quantity": cmd["quantity"]})
        ok = True
    else:
        log.warning("unknown stock command %r", op)
        return None
    if new is not stock and new is not None:
        state.set("stock", new)
    return {**cmd, "ok": ok}


def on_reply(reply: dict[str, Any], state: State[str, Any]) -> dict[str, Any] | None:
    """An order's saga (state keyed by order id, kept only while it waits for more
    replies or releases) -> its decision: reserved | out_of_stock | released."""
    saga = state.get("saga")
    stored = saga is not None
    if saga is None and reply["op"] == "release":
        log.warning("release of %s for an order with no saga", reply["order_id"])
        return None
    if saga is None:
        saga = {
            "order_id": reply["order_id"],
            "state": "pending",
            "wanted": reply["wanted"],
            "replies": {},
            "released": [],
        }
    if reply["op"] == "release":
        saga, done = saga_released(saga, reply["sku"])
        if not done:
            state.set("saga", saga)
            return None
        state.delete("saga")
        return {**reply, "decision": "released", "missing": [], "release": {}}
    saga, decision, to_release = saga_reply(saga, reply["sku"], reply["ok"])
    if decision is None or to_release:
        state.set("saga", saga)
    elif stored:
        state.delete("saga")
    if decision is None:
        return None
    return {
        **reply,
        "decision": decision,
        "missing": missing_skus(saga),
        "release": {sku: saga["wanted"][sku] for sku in to_release},
    }


def inventory_updated(decided: dict[str, Any]) -> dict[str, Any]:
    return {
        "order_id": decided["order_id"],
        "status": decided["decision"],
        "lines": decided["order"]["lines"],
        "missing": decided["missing"],
        "at": time.time(),
    }


def release_commands(decided: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"op": "release", "sku": sku, "quantity": qty, "order_id": decided["order_id"]}
        | {"order": decided["order"], "charge_id": decided["charge_id"], "wanted": {}}
        for sku, qty in decided["release"].items()
    ]


def payment_refunded(decided: dict[str, Any]) -> dict[str, Any]:
    order = decided["order"]
    return {
        "order_id": order["order_id"],
        "charge_id": decided["charge_id"],
        "amount": order["total"],
        "currency": order["currency"],
        "reason": "out_of_stock",
        "at": time.time(),
    }


def status_change(
    status: str, previous: str, reasons: Callable[[dict[str, Any]], list[str]]
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """-> a function making an order's terminal ``StatusChanged`` (the analytics input)."""

    def change(value: dict[str, Any]) -> dict[str, Any]:
        order = value["order"]
        return {
            "order_id": order["order_id"],
            "status": status,
            "previous": previous,
            "terminal": True,
            "customer_id": order["customer_id"],
            "country": order["country"],
            "currency": order["currency"],
            "total": order["total"],
            "reasons": reasons(value),
            "created_at": order["created_at"],
            "at": time.time(),
        }

    return change


def notification(change: dict[str, Any]) -> dict[str, Any]:
    template = TEMPLATES[change["status"]]
    return {
        "notification_id": notification_id(change["order_id"], template),
        "order_id": change["order_id"],
        "customer_id": change["customer_id"],
        "status": change["status"],
        "channel": "email",
        "template": template,
        "at": time.time(),
    }


def count_country(change: dict[str, Any], state: State[str, Any]) -> dict[str, Any]:
    """Per-country totals and the order's 1-minute window (state keyed by country)."""
    totals = state.get("totals") or {"orders": 0, "revenue": "0", "by_status": {}}
    start = window_start(change["created_at"])
    window_key = f"window:{start}"
    window = state.get(window_key) or {"orders": 0, "revenue": "0"}
    totals["orders"] += 1
    window["orders"] += 1
    by_status = totals["by_status"]
    by_status[change["status"]] = by_status.get(change["status"], 0) + 1
    if change["status"] == OrderStatus.FULFILLED:
        total = Decimal(change["total"])
        totals["revenue"] = str(Decimal(totals["revenue"]) + total)
        window["revenue"] = str(Decimal(window["revenue"]) + total)
    state.set("totals", totals)
    state.set(window_key, window, ttl=ANALYTICS_WINDOW_TTL)
    return {
        "country": change["country"],
        "orders": totals["orders"],
        "revenue": totals["revenue"],
        "by_status": by_status,
        "average_order_value": str(average_order_value(totals)),
        "window_start": float(start),
        "window_end": float(start + WINDOW_S),
        "window_orders": window["orders"],
        "window_revenue": window["revenue"],
        "at": time.time(),
    }


def order_id(value: dict[str, Any]) -> str:
    return str(value["order_id"])


def sku_of(value: dict[str, Any]) -> str:
    return str(value["sku"])


def not_none(value: Any) -> bool:
    return value is not None


def build(app: Application, partitions: int) -> None:
    """Declare the topics and the dataframes of the pipeline on ``app``."""

    def topic(name: str, **kwargs: Any) -> Topic:
        out = app.topic(
            name,
            **{"key_serializer": "str", "key_deserializer": "str", **kwargs},
            config=TopicConfig(num_partitions=partitions, replication_factor=1),
        )
        # Tansu's DescribeConfigs leaves out retention.ms, which Quix needs to derive
        # the changelog and repartition topics' config from a stateful input's.
        config = out.broker_config
        config.extra_config.setdefault("retention.ms", "-1")
        out.broker_config = config
        return out

    orders_cdc = topic(ORDERS_CDC, key_deserializer="json", timestamp_extractor=commit_time_ms)
    products_cdc = topic(PRODUCTS_CDC, key_deserializer="json")
    out = {name: topic(PREFIX + name) for name in OUTPUTS}
    stock_commands = topic(STOCK_COMMANDS)
    status_by_country = topic(STATUS_BY_COUNTRY)

    def finish(changes: StreamingDataFrame) -> None:
        """A terminal status: the analytics input, and the order's one notification."""
        changes.to_topic(status_by_country, key=lambda c: str(c["country"]))
        changes.apply(notification).to_topic(out["notification_sent"], key=order_id)

    restocks = app.dataframe(products_cdc).apply(restock_command, metadata=True).filter(not_none)
    restocks.to_topic(stock_commands, key=sku_of)

    orders = app.dataframe(orders_cdc).apply(decode_order, metadata=True).filter(not_none)
    by_customer = orders.group_by("customer_id", key_serializer="str", key_deserializer="str")
    checked = by_customer.apply(check_fraud, stateful=True)

    rejected = checked.filter(lambda c: bool(c["rules"]))
    rejected.apply(fraud_alert).to_topic(out["fraud_alerts"], key=order_id)
    fraud_reasons = status_change(
        OrderStatus.REJECTED, OrderStatus.CREATED, lambda c: [f"fraud:{r}" for r in c["rules"]]
    )
    finish(rejected.apply(fraud_reasons))

    passed = checked.filter(lambda c: not c["rules"])
    passed.apply(order_validated).to_topic(out["order_validated"], key=order_id)
    charged = passed.apply(charge)
    charged.apply(payment_outcome).to_topic(
        lambda v, _k, _t, _h: out["payment_successful" if "charge_id" in v else "payment_failed"],
        key=order_id,
    )
    declined = charged.filter(lambda c: not c["paid"])
    finish(
        declined.apply(
            status_change(
                OrderStatus.PAYMENT_FAILED,
                OrderStatus.VALIDATED,
                lambda c: [f"payment:{c['reason']}"],
            )
        )
    )
    paid = charged.filter(lambda c: c["paid"])
    paid.apply(reserve_commands, expand=True).to_topic(stock_commands, key=sku_of)

    stock = app.dataframe(stock_commands).apply(apply_stock, stateful=True).filter(not_none)
    replies = stock.group_by("order_id", key_serializer="str", key_deserializer="str")
    decided = replies.apply(on_reply, stateful=True).filter(not_none)
    decided.apply(inventory_updated).to_topic(out["inventory_updated"], key=order_id)
    fulfilled = decided.filter(lambda d: d["decision"] == "reserved")
    finish(fulfilled.apply(status_change(OrderStatus.FULFILLED, OrderStatus.PAID, lambda d: [])))
    cancelled = decided.filter(lambda d: d["decision"] == "out_of_stock")
    cancelled.apply(release_commands, expand=True).to_topic(stock_commands, key=sku_of)
    cancelled.apply(payment_refunded).to_topic(out["payment_refunded"], key=order_id)
    out_of_stock = status_change(
        OrderStatus.CANCELLED,
        OrderStatus.PAID,
        lambda d: [f"out_of_stock:{s}" for s in d["missing"]] + ["refunded:out_of_stock"],
    )
    finish(cancelled.apply(out_of_stock))

    analytics = app.dataframe(status_by_country).apply(count_country, stateful=True)
    analytics.to_topic(out["order_analytics"])


def main(bootstrap: str, state_dir: str, group: str, partitions: str = "4") -> None:
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
        # Tansu holds JoinGroup for session_timeout/2 (librdkafka's 45 s: 22 s before the
        # first event); our workers use 4 s (orders_app.settings).  Start-up only: the
        # bench times the orders produced once a first order has gone through.
        consumer_extra_config={"session.timeout.ms": 4000, "heartbeat.interval.ms": 1000},
    )
    build(app, int(partitions))
    app.run()


if __name__ == "__main__":
    main(*sys.argv[1:5])
