"""Shorter fetch waits for the embedded broker.

Rule: a Kafka broker answers a waiting Fetch as soon as data arrives; Tansu holds it far
longer (measured produce -> consume, one message every 50 ms: median 400 ms with a
1,500 ms wait, 133 ms with 500 ms, 13 ms with 100 ms).  Faust hard-codes 1,500 ms,
which put about a second of waiting on every order's path through its ten hops.  The
worker's consumer and the app's own tailing consumer use ``ORDERS_FETCH_WAIT_MS``
(default 100 ms; 500 ms on Kafka, where it costs no latency).

Shorter still (20 ms, with aiokafka's 100 ms prefetch backoff cut to match) cut the
latency to a third again in the benchmark, but the SIGKILL crash test lost a range of
one partition once in three runs with it, and the cause was not found; it is not the
default.
"""

from __future__ import annotations

from typing import Any


def use_fetch_wait(consumer: Any, wait_ms: int) -> None:
    """Make a Faust consumer create its aiokafka consumer with ``fetch_max_wait_ms``."""
    thread = consumer._thread  # created with the Faust consumer, started later
    create = thread._create_consumer

    def create_with_wait(*args: Any, **kwargs: Any) -> Any:
        client = create(*args, **kwargs)
        # read by AIOKafkaConsumer.start() when it builds its Fetcher
        client._fetch_max_wait_ms = wait_ms
        return client

    thread._create_consumer = create_with_wait
