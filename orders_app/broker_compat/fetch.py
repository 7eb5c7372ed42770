"""Shorter fetch waits for the embedded broker.

Rule: a Kafka broker answers a waiting Fetch as soon as data arrives; Tansu holds it far
longer (measured produce -> consume, one message every 50 ms: median 400 ms with a
1,500 ms wait, 133 ms with 500 ms, 13 ms with 100 ms).  Faust hard-codes 1,500 ms,
which put about a second of waiting on every order's path through its ten hops.  The
worker's consumer and the app's own tailing consumers use ``ORDERS_FETCH_WAIT_MS``
(default 20 ms; 500 ms on Kafka, where it costs no latency).  Even at 20 ms Tansu's
answer comes later the more topics a Fetch names (send -> consumed, bare aiokafka: 5.5
ms p50 with one topic, 8.9 ms with the worker's ten; bench/PROFILE.md).

aiokafka's prefetch backoff follows the wait: while a partition still holds records the
app has not taken, aiokafka sends no new fetch to that broker for up to
``prefetch_backoff`` (100 ms by default, which on a one-broker stack is every
partition).  It is cut to the fetch wait when that is shorter, never raised above
aiokafka's default.

Shorter waits (20 ms) once lost a range of one partition in the SIGKILL crash test.  The
cause was Faust, not the wait: after an assignment Faust empties the agents' queues of
records it delivered while seeking to the committed offsets, and commits past them; a
shorter wait only delivers more in that window.  The 100 ms default loses too under the
same conditions (tests/integration/test_range_skip.py).
orders_app/faust_patches/skip_guard.py fixes it; orders_app/faust_patches/gaps.py detects
any such skip.

Reads: the Faust consumer's thread (``_create_consumer``); writes: the aiokafka consumer's
``_fetch_max_wait_ms`` and its fetcher's ``_prefetch_backoff``.
"""

from __future__ import annotations

from typing import Any

# aiokafka's Fetcher default (seconds)
AIOKAFKA_PREFETCH_BACKOFF = 0.1


def prefetch_backoff_for(wait_ms: int) -> float:
    """The prefetch backoff (seconds) that goes with a fetch wait."""
    return min(AIOKAFKA_PREFETCH_BACKOFF, wait_ms / 1000)


def use_fetch_wait(consumer: Any, wait_ms: int) -> None:
    """Make a Faust consumer create its aiokafka consumer with ``fetch_max_wait_ms`` and
    a prefetch backoff no longer than that wait."""
    thread = consumer._thread  # created with the Faust consumer, started later
    create = thread._create_consumer

    def create_with_wait(*args: Any, **kwargs: Any) -> Any:
        client = create(*args, **kwargs)
        # read by AIOKafkaConsumer.start() when it builds its Fetcher
        client._fetch_max_wait_ms = wait_ms
        start = client.start

        async def start_with_backoff() -> None:
            await start()
            # the Fetcher exists once started; it reads the backoff at each fetch
            client._fetcher._prefetch_backoff = prefetch_backoff_for(wait_ms)

        client.start = start_with_backoff
        return client

    thread._create_consumer = create_with_wait
