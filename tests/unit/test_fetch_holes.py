"""orders_app/broker_compat/holes.py: a Fetch answer with a hole is cut before the hole
(real v2 batches from aiokafka's builder), other answers pass untouched, and a hole
that outlives GIVE_UP_S is let through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiokafka.protocol.fetch import FetchRequest

from orders_app.broker_compat.holes import GIVE_UP_S, HoleCutter, cut_at_hole
from tests.support import record_batch

TOPIC = "orders_app-orders-by-customer"


batch = record_batch


def request(*parts: tuple[str, int, int]) -> Any:
    by_topic: dict[str, list[Any]] = {}
    for topic, partition, offset in parts:
        by_topic.setdefault(topic, []).append((partition, offset, 1 << 20))
    return FetchRequest(20, 1, 1 << 20, 0, list(by_topic.items()))


@dataclass
class Answer:
    topics: list[Any]


def test_contiguous_answers_are_untouched() -> None:
    raw = batch(320, 3) + batch(323, 1) + batch(324, 5)
    assert cut_at_hole(320, raw) == (raw, None)
    assert cut_at_hole(322, raw) == (raw, None)  # from inside the first batch
    assert cut_at_hole(0, b"") == (b"", None)


def test_an_answer_is_cut_before_the_batch_after_a_hole() -> None:
    before, after = batch(320, 3), batch(324, 5)  # 323 not stored yet
    assert cut_at_hole(320, before + after) == (before, 323)
    assert cut_at_hole(323, after) == (b"", 323)  # nothing before it: an empty answer
    partial = (before + after)[:-7]  # the last batch cut by the size limit
    assert cut_at_hole(320, partial) == (before, 323)


def test_cutter_rewrites_only_the_partition_with_the_hole() -> None:
    cutter = HoleCutter(clock=lambda: 100.0)
    good, gap = batch(10, 2), batch(20, 2) + batch(23, 1)
    answer = Answer([(TOPIC, [(0, 0, 12, 12, 0, [], good), (1, 0, 24, 24, 0, [], gap)])])
    cutter.on_answer(request((TOPIC, 0, 10), (TOPIC, 1, 20)), answer)
    [(topic, parts)] = answer.topics
    assert topic == TOPIC
    assert parts[0][-1] == good
    assert parts[1][:-1] == (1, 0, 24, 24, 0, [])
    assert parts[1][-1] == batch(20, 2)
    assert cutter.cut == 1


def test_a_hole_that_outlives_give_up_is_let_through() -> None:
    now = [0.0]
    cutter = HoleCutter(clock=lambda: now[0])
    raw = batch(20, 2) + batch(23, 1)

    def answer() -> Answer:
        return Answer([(TOPIC, [(1, 0, 24, 24, 0, [], raw)])])

    first = answer()
    cutter.on_answer(request((TOPIC, 1, 20)), first)
    assert first.topics[0][1][0][-1] == batch(20, 2)
    now[0] = GIVE_UP_S  # still waiting: still cut
    held = answer()
    cutter.on_answer(request((TOPIC, 1, 22)), held)
    assert held.topics[0][1][0][-1] == batch(20, 2)  # the same hole (offset 22)
    now[0] = GIVE_UP_S + 0.5
    through = answer()
    cutter.on_answer(request((TOPIC, 1, 22)), through)
    assert through.topics[0][1][0][-1] == raw
    assert cutter.waiting == {}
