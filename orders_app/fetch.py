"""Short fetch waits for the embedded broker.

Rule: a Kafka broker answers a waiting Fetch as soon as data arrives; Tansu holds it for
the whole ``fetch_max_wait_ms`` (measured: produce -> consume 400 ms median at 1500 ms,
13 ms at 100 ms, 6 ms at 20 ms).  Faust hard-codes 1500 ms, which put about a second of
idle waiting on every order's path through its ten hops.  The worker's consumer and the
app's own tailing consumers use ``ORDERS_FETCH_WAIT_MS`` instead (default 20 ms: an idle
consumer then polls 50 times a second; on Kafka, 500 ms is the usual value).
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
        start = client.start

        async def start_with_backoff() -> None:
            await start()
            # While any partition still holds unconsumed records, aiokafka sends no
            # new fetch to that broker for up to this long (default 100 ms, which is
            # every partition on a one-broker stack): keep it to the fetch wait.
            client._fetcher._prefetch_backoff = wait_ms / 1000

        client.start = start_with_backoff
        return client

    thread._create_consumer = create_with_wait
