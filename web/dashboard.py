"""The live dashboard: the page, its static files and the figures behind its charts.

- ``GET /``: ``web/static/dashboard.html`` (plain HTML, ``dashboard.js``/``.css``, charts
  drawn with uPlot, vendored from npm into ``web/static/vendor/`` by ``make vendor``:
  nothing is fetched from a CDN).  The page reads ``/analytics/stream?coalesce=250&
  pipeline=1``, looks orders up with ``GET /orders/{id}`` and places test orders with
  ``POST /orders``.
- ``GET /static/{name}``: those files, from an allowlist (nothing else on disk is served).
- ``GET /dashboard/local``: this worker's own figures (its end-to-end latency histogram,
  the consumer lag of its agents); the worker serving a page gathers them from its peers.
- :class:`Pulse`, one per worker: every ``TICK_S`` it samples the whole pipeline (terminal
  orders per second by status and dead letters per minute from the worker's feed, which
  reads every partition; latency p50/p99 and lag per agent summed over every worker that
  answers) into a ten-minute history, and pushes each sample to its subscribers.
- :func:`live_stream`: the coalesced ``/analytics/stream`` (``?coalesce=<ms>``, optionally
  ``&pipeline=1``): the latest totals of each changed country, the newest dead letters and
  the pipeline samples, written at most once per interval however fast orders flow.
- :func:`event_stream`: the server-sent-events response under every stream (aiohttp-sse):
  a ``: connected`` comment first, a ``: ping`` comment every ``PING_INTERVAL_S`` so
  proxies keep an idle stream open, and a client that went away is noticed by the next
  ping (its subscriptions end) instead of at the next event, which may never come.

The rules (quantiles from histogram buckets, bucket deltas, throughput buckets, lag per
agent) are plain functions and small classes, tested without a broker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from importlib import resources
from typing import Any

import orjson
from aiohttp import ClientTimeout
from aiohttp import web as aioweb
from aiohttp_sse import EventSourceResponse, sse_response
from faust.web import Request, Response, View

from orders_app.app import app
from orders_app.records import TERMINAL_STATUSES

log = logging.getLogger(__name__)

TICK_S = 1.0  # one pipeline sample per second
HISTORY_S = 600  # what a page that connects receives first
BUCKET_S = 2  # terminal orders are counted in 2 s buckets of their analytics time
RECENT_BUCKETS = 8  # each sample repeats the last buckets (late events revise them)
LATENCY_WINDOW_S = 10.0  # p50/p99 of the orders that finished in the last 10 s
DEAD_LETTER_MINUTES = 15
PEER_TIMEOUT_S = 0.8
WATCH_GRACE_S = 600.0  # peers are asked while a page is open and for 10 minutes after
COALESCE_DEFAULT_MS = 250
COALESCE_RANGE_MS = (50, 5000)
LETTERS_PER_FLUSH = 20
SUBSCRIBER_QUEUE = 16
# Idle connections are cut by proxies and load balancers after 30-60 s (nginx's
# proxy_read_timeout is 60 s); a comment every 15 s keeps a quiet stream open.  Read at
# each request, so a test can shorten it.
PING_INTERVAL_S = 15.0
TERMINAL = tuple(sorted(TERMINAL_STATUSES))

Buckets = list[tuple[float, float]]  # cumulative (upper bound, count), +Inf last


# -- rules ---------------------------------------------------------------------------------


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """The ``q`` quantile of a cumulative histogram, interpolated linearly inside the
    bucket it falls in (as Prometheus' ``histogram_quantile``); None when empty.  A
    quantile in the +Inf bucket reports the highest finite bound."""
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def bucket_delta(now: Buckets, before: Buckets | None) -> Buckets | None:
    """``now - before`` bucket by bucket; None when there is no baseline, the bounds
    differ, or a count went down (the worker restarted: ``now`` is the new baseline)."""
    if before is None or len(now) != len(before):
        return None
    out: Buckets = []
    for (bound, count), (bound0, count0) in zip(now, before, strict=True):
        if bound != bound0 or count < count0:
            return None
        out.append((bound, count - count0))
    return out


def bucket_sum(parts: Iterable[Buckets]) -> Buckets:
    """Bucket-wise sum of histograms with the same bounds (others are left out)."""
    out: Buckets = []
    for part in parts:
        if not out:
            out = list(part)
        elif [b for b, _ in part] == [b for b, _ in out]:
            out = [(b, c + part[i][1]) for i, (b, c) in enumerate(out)]
    return out


def agent_lag(
    agents: Mapping[str, Iterable[str]],
    assigned: Iterable[tuple[str, int]],
    end_offsets: Mapping[tuple[str, int], int],
    read_offsets: Mapping[tuple[str, int], int],
    committed: Mapping[tuple[str, int], int],
) -> dict[str, int]:
    """Records not yet read per agent, over the partitions assigned here: the high
    water mark minus the next offset to read (the last read + 1, else the committed
    offset).  A partition with no known high water mark counts 0."""
    by_topic: dict[str, list[str]] = collections.defaultdict(list)
    for name, topics in agents.items():
        for topic in topics:
            by_topic[topic].append(name)
    lag: dict[str, int] = {}
    for tp in assigned:
        for name in by_topic.get(tp[0], ()):
            end = end_offsets.get(tp)
            if tp in read_offsets:
                position: int | None = read_offsets[tp] + 1
            else:
                position = committed.get(tp)
            behind = max(0, end - position) if end is not None and position is not None else 0
            lag[name] = lag.get(name, 0) + behind
    return lag


def merge_lag(parts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Lag per agent over several workers (each owns different partitions)."""
    out: dict[str, int] = {}
    for part in parts:
        for name, n in part.items():
            out[name] = out.get(name, 0) + int(n)
    return dict(sorted(out.items()))


class Throughput:
    """Terminal orders per status in ``BUCKET_S`` buckets, from the country totals the
    feed delivers: each country update adds what grew since that country's previous one,
    at the time the analytics agent emitted it (so a replay lands at the original
    times).  The first update of a country seen mid-stream is only a baseline."""

    def __init__(self, keep_s: float = HISTORY_S, bucket_s: int = BUCKET_S) -> None:
        self.keep_s = keep_s
        self.bucket_s = bucket_s
        self.previous: dict[str, dict[str, int]] = {}
        self.buckets: dict[int, dict[str, int]] = {}

    def baseline(self, country: Mapping[str, Any]) -> None:
        self.previous[str(country["country"])] = _by_status(country)

    def observe(self, country: Mapping[str, Any], now: float) -> None:
        code = str(country["country"])
        counts = _by_status(country)
        before = self.previous.get(code, {})
        self.previous[code] = counts
        at = country.get("at")
        when = float(at) if isinstance(at, int | float) else now
        if when < now - self.keep_s:
            return
        start = int(when // self.bucket_s * self.bucket_s)
        for status in TERMINAL:
            grown = counts.get(status, 0) - before.get(status, 0)
            if grown > 0:  # a correction downwards (reconcile) is not a negative rate
                bucket = self.buckets.setdefault(start, {})
                bucket[status] = bucket.get(status, 0) + grown

    def points(self, now: float, since: float | None = None) -> list[list[Any]]:
        """``[[bucket start, {status: orders/s}], ...]`` from the first bucket with orders
        (or ``since``, when later) up to the last complete bucket, oldest first, empty
        buckets included; nothing before the first order."""
        horizon = now - self.keep_s
        for start in [s for s in self.buckets if s < horizon]:
            del self.buckets[start]
        if not self.buckets:
            return []
        last = int(now // self.bucket_s * self.bucket_s) - self.bucket_s
        first = int(max(min(self.buckets), since if since is not None else horizon, horizon))
        first = first // self.bucket_s * self.bucket_s
        out: list[list[Any]] = []
        for start in range(first, last + 1, self.bucket_s):
            counts = self.buckets.get(start, {})
            rates = {s: round(counts.get(s, 0) / self.bucket_s, 3) for s in TERMINAL}
            out.append([start, rates])
        return out


def _by_status(country: Mapping[str, Any]) -> dict[str, int]:
    raw = country.get("by_status")
    if not isinstance(raw, dict):
        return {}
    return {str(k): int(v) for k, v in raw.items() if isinstance(v, int | float)}


class DeadLetterMinutes:
    """Dead letters per minute (of the letter's own time), each counted once."""

    def __init__(self, minutes: int = DEAD_LETTER_MINUTES) -> None:
        self.minutes = minutes
        self.seen: collections.OrderedDict[tuple[Any, ...], None] = collections.OrderedDict()
        self.per_minute: dict[int, int] = {}

    def observe(self, letter: Mapping[str, Any], now: float) -> None:
        key = (letter.get("topic"), letter.get("partition"), letter.get("offset"))
        if key in self.seen:
            return
        self.seen[key] = None
        while len(self.seen) > 10_000:
            self.seen.popitem(last=False)
        at = letter.get("at")
        when = float(at) if isinstance(at, int | float) else now
        minute = int(when // 60 * 60)
        if minute >= now - self.minutes * 60:
            self.per_minute[minute] = self.per_minute.get(minute, 0) + 1

    def points(self, now: float) -> list[list[int]]:
        """``[[minute start, letters], ...]`` for the last ``minutes`` minutes, oldest
        first, the current (partial) minute last."""
        current = int(now // 60 * 60)
        first = current - (self.minutes - 1) * 60
        for minute in [m for m in self.per_minute if m < first]:
            del self.per_minute[minute]
        return [[m, self.per_minute.get(m, 0)] for m in range(first, current + 1, 60)]


class Latency:
    """p50/p99 over the last ``window_s`` seconds, from the cumulative histograms of
    several workers (keyed by worker URL): each sample adds what each worker's histogram
    grew since its previous sample."""

    def __init__(self, window_s: float = LATENCY_WINDOW_S) -> None:
        self.window_s = window_s
        self.previous: dict[str, Buckets] = {}
        self.recent: collections.deque[tuple[float, Buckets]] = collections.deque()

    def observe(self, now: float, histograms: Mapping[str, Buckets]) -> dict[str, Any]:
        grown: list[Buckets] = []
        for worker, buckets in histograms.items():
            delta = bucket_delta(buckets, self.previous.get(worker))
            self.previous[worker] = buckets
            if delta is not None:
                grown.append(delta)
        if grown:
            self.recent.append((now, bucket_sum(grown)))
        while self.recent and self.recent[0][0] <= now - self.window_s:
            self.recent.popleft()
        window = bucket_sum(b for _t, b in self.recent)
        count = int(window[-1][1]) if window else 0
        p50, p99 = histogram_quantile(0.5, window), histogram_quantile(0.99, window)
        return {
            "p50": None if p50 is None else round(p50, 4),
            "p99": None if p99 is None else round(p99, 4),
            "count": count,
        }


def coalesce_seconds(raw: str | None) -> float | None:
    """``?coalesce=<ms>`` as seconds, clamped to a sane range; None when absent."""
    if raw is None:
        return None
    try:
        ms = float(raw) if raw.strip() else float(COALESCE_DEFAULT_MS)
    except ValueError:
        ms = float(COALESCE_DEFAULT_MS)
    if ms != ms:  # NaN
        ms = float(COALESCE_DEFAULT_MS)
    low, high = COALESCE_RANGE_MS
    return min(max(ms, low), high) / 1000.0


def sse(kind: str, data: Any) -> bytes:
    """One event as :meth:`EventSourceResponse.send` frames it (``sep="\\n"``), for
    writing a batch of events in one write."""
    return f"event: {kind}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


# -- this worker's figures -------------------------------------------------------------------


def local_histogram() -> Buckets:
    """This worker's end-to-end (commit -> terminal) histogram, cumulative."""
    out: Buckets = []
    for metric in app.metrics.end_to_end.collect():
        for sample in metric.samples:
            if sample.name.endswith("_bucket"):
                out.append((float(sample.labels["le"]), float(sample.value)))
    return sorted(out)


def local_lag() -> dict[str, int]:
    """Lag per agent over the partitions this worker is assigned, from Faust's monitor
    (what ``/metrics`` exports as ``faust_topic_partition_end_offset`` and friends)."""
    consumer = getattr(app, "_consumer", None)
    monitor = app.monitor
    if consumer is None or monitor is None:
        return {}
    try:
        assigned = [(tp.topic, tp.partition) for tp in consumer.assignment()]
    except Exception:  # noqa: BLE001 - not started, or between two generations
        return {}
    agents = {
        name: tuple(getattr(agent.channel, "topics", ()) or ())
        for name, agent in app.agents.items()
    }

    def plain(offsets: Mapping[Any, int] | None) -> dict[tuple[str, int], int]:
        return {(tp.topic, tp.partition): int(v) for tp, v in (offsets or {}).items()}

    return agent_lag(
        agents,
        assigned,
        plain(monitor.tp_end_offsets),
        plain(monitor.tp_read_offsets),
        plain(monitor.tp_committed_offsets),
    )


def own_url() -> str:
    return str(app.conf.canonical_url).rstrip("/")


def local_figures() -> dict[str, Any]:
    return {
        "worker": own_url(),
        "at": time.time(),
        "latency_buckets": [[b if math.isfinite(b) else "+Inf", c] for b, c in local_histogram()],
        "lag": local_lag(),
    }


def _buckets(raw: Any) -> Buckets:
    if not isinstance(raw, list):
        return []
    return [(float(b), float(c)) for b, c in raw]  # float("+Inf") is inf


def peer_urls() -> list[str]:
    """Every other worker the partition assignor knows (hosts holding any partitions)."""
    own = own_url()
    try:
        hosts = app.router.tables_metadata().keys()
    except Exception:  # noqa: BLE001 - no assignment yet
        return []
    return sorted({str(h).rstrip("/") for h in hosts} - {own})


async def _peer(url: str) -> dict[str, Any] | None:
    try:
        async with app.http_client.get(
            f"{url}/dashboard/local", timeout=ClientTimeout(total=PEER_TIMEOUT_S)
        ) as resp:
            resp.raise_for_status()
            data: dict[str, Any] = orjson.loads(await resp.read())
            return data
    except Exception:  # noqa: BLE001 - a peer down or restarting: the sample goes without it
        return None


# -- the per-worker sampler ------------------------------------------------------------------


class Pulse:
    """The pipeline's figures over time, sampled once a tick, pushed to subscribers."""

    def __init__(self) -> None:
        self.throughput = Throughput()
        self.dead_letters = DeadLetterMinutes()
        self.latency = Latency()
        self.samples: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=int(HISTORY_S / TICK_S)
        )
        self.subscribers: set[asyncio.Queue[tuple[str, dict[str, Any]]]] = set()
        self.watched_at = -math.inf

    # feed: every country total and dead letter, from all partitions
    def on_feed(self, kind: str, data: dict[str, Any], now: float, snapshot: bool) -> None:
        if kind == "country" and isinstance(data.get("country"), str):
            if snapshot:
                self.throughput.baseline(data)
            else:
                self.throughput.observe(data, now)
        elif kind == "dead_letter":
            self.dead_letters.observe(data, now)

    async def watch_feed(self) -> None:
        feed = app.feed
        for letter in list(feed.dead_letters):
            self.dead_letters.observe(letter, time.time())
        snapshot = len(feed.latest)
        async for kind, data in feed.subscribe():
            self.on_feed(kind, data, time.time(), snapshot > 0)
            snapshot = max(0, snapshot - 1)

    async def sample(self, now: float) -> dict[str, Any]:
        parts = [local_figures()]
        if self.subscribers or time.monotonic() - self.watched_at < WATCH_GRACE_S:
            answers = await asyncio.gather(*(_peer(url) for url in peer_urls()))
            parts += [a for a in answers if a is not None]
        histograms = {str(p.get("worker")): _buckets(p.get("latency_buckets")) for p in parts}
        figures = {
            "at": round(now, 3),
            "workers": len(parts),
            "latency": self.latency.observe(now, histograms),
            "lag": merge_lag(p.get("lag") or {} for p in parts),
        }
        self.samples.append(figures)
        return {
            **figures,
            "throughput": self.throughput.points(now, since=now - RECENT_BUCKETS * BUCKET_S),
            "dead_letters": self.dead_letters.points(now),
        }

    def history(self, now: float) -> dict[str, Any]:
        return {
            "tick_s": TICK_S,
            "bucket_s": BUCKET_S,
            "statuses": list(TERMINAL),
            "samples": list(self.samples),
            "throughput": self.throughput.points(now),
            "dead_letters": self.dead_letters.points(now),
        }

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        for queue in list(self.subscribers):
            with contextlib.suppress(asyncio.QueueFull):  # a stalled page skips a sample
                queue.put_nowait((kind, data))

    async def subscribe(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The history first (``pipeline_history``), then every sample (``pipeline``)."""
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self.subscribers.add(queue)
        self.watched_at = time.monotonic()
        try:
            yield "pipeline_history", self.history(time.time())
            while True:
                yield await queue.get()
        finally:
            self.subscribers.discard(queue)
            self.watched_at = time.monotonic()

    async def run(self) -> None:
        feed = asyncio.ensure_future(self.watch_feed())
        try:
            next_tick = time.monotonic()
            while True:
                next_tick += TICK_S
                try:
                    self.publish("pipeline", await self.sample(time.time()))
                except Exception:  # a bad sample must not stop the charts
                    log.exception("dashboard: sampling the pipeline failed")
                await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
                if feed.done() and not feed.cancelled() and feed.exception() is not None:
                    log.warning("dashboard: feed watcher stopped: %r", feed.exception())
                    feed = asyncio.ensure_future(self.watch_feed())
        finally:
            feed.cancel()


pulse = Pulse()


@app.task  # type: ignore[untyped-decorator]
async def _run_pulse() -> None:
    await pulse.run()


# -- the coalesced stream --------------------------------------------------------------------


async def live_stream(
    write: Callable[[bytes], Awaitable[None]], interval: float, pipeline: bool
) -> None:
    """Write the feed (and the pipeline samples) to ``write``, at most once per
    ``interval``: of a country only its latest totals, of dead letters the newest
    ``LETTERS_PER_FLUSH``.  Returns when a source ends; raises what ``write`` raises."""
    countries: dict[str, dict[str, Any]] = {}
    letters: collections.deque[dict[str, Any]] = collections.deque(maxlen=LETTERS_PER_FLUSH)
    samples: list[tuple[str, dict[str, Any]]] = []
    ready = asyncio.Event()

    async def from_feed() -> None:
        async for kind, data in app.feed.subscribe():
            if kind == "country":
                countries.pop(data["country"], None)  # re-inserted last: newest order
                countries[data["country"]] = data
            else:
                letters.append(data)
            ready.set()

    async def from_pulse() -> None:
        async for item in pulse.subscribe():
            samples.append(item)
            ready.set()

    sources = [asyncio.ensure_future(from_feed())]
    if pipeline:
        sources.append(asyncio.ensure_future(from_pulse()))
    try:
        while True:
            await ready.wait()
            ready.clear()
            for source in sources:
                if source.done():
                    source.result()  # raises what the source raised
                    return
            events = [
                *samples,
                *(("country", c) for c in countries.values()),
                *(("dead_letter", d) for d in letters),
            ]
            samples.clear()
            countries.clear()
            letters.clear()
            await write(b"".join(sse(kind, data) for kind, data in events))
            await asyncio.sleep(interval)
    finally:
        for source in sources:
            source.cancel()


Pump = Callable[[EventSourceResponse], Awaitable[None]]


async def send_event(resp: EventSourceResponse, kind: str, data: Any) -> None:
    """One event; orjson never writes a raw line break, so ``data`` is a single line."""
    await resp.send(orjson.dumps(data).decode(), event=kind)


async def event_stream(request: aioweb.Request, pump: Pump) -> EventSourceResponse:
    """Serve what ``pump`` sends as server-sent events until it returns, or the client
    goes away (a write or a ping fails: ``pump`` is cancelled).  An error of ``pump``
    other than a lost connection is raised."""
    # "\n" between lines, not the library's "\r\n": the bytes stay what they were
    # before aiohttp-sse, and what the batched writes (:func:`sse`) produce.
    async with sse_response(request, sep="\n", ping_interval=PING_INTERVAL_S) as resp:
        await resp.write(b": connected\n\n")
        pumping = asyncio.ensure_future(pump(resp))
        # resp.wait() returns when the ping task ends: a ping could not be written.
        gone = asyncio.ensure_future(resp.wait())
        # A stopping worker ends its streams at once: aiohttp's shutdown would otherwise
        # wait for each open one until its next event or ping (up to PING_INTERVAL_S).
        stopping = asyncio.ensure_future(app.wait_until_stopped())
        try:
            await asyncio.wait((pumping, gone, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pumping, gone, stopping):
                task.cancel()
            await asyncio.gather(pumping, gone, stopping, return_exceptions=True)
        error = None if pumping.cancelled() else pumping.exception()
        if error is not None and not isinstance(error, ConnectionResetError):
            raise error
    return resp


# -- views ------------------------------------------------------------------------------------

STATIC: dict[str, tuple[str, str]] = {
    "dashboard.js": ("static/dashboard.js", "text/javascript"),
    "dashboard.css": ("static/dashboard.css", "text/css"),
    "uPlot.iife.min.js": ("static/vendor/uPlot.iife.min.js", "text/javascript"),
    "uPlot.min.css": ("static/vendor/uPlot.min.css", "text/css"),
}


def page_html() -> str:
    html = resources.files("web").joinpath("static/dashboard.html").read_text()
    required = "true" if app.settings.api_token else "false"
    return html.replace('data-token-required="false"', f'data-token-required="{required}"', 1)


@app.page("/")
class Dashboard(View):
    async def get(self, request: Request) -> Response:
        return self.html(page_html(), headers={"Cache-Control": "no-cache"})


@app.page("/static/{name}")
class Static(View):
    async def get(self, request: Request, name: str) -> Response:
        entry = STATIC.get(name)
        if entry is None:
            return self.error(404, f"no static file {name}")
        path, content_type = entry
        try:
            body = resources.files("web").joinpath(path).read_bytes()
        except FileNotFoundError:
            hint = " (run `make vendor`)" if "vendor/" in path else ""
            return self.error(404, f"static file {name} is missing{hint}")
        return self.bytes(body, content_type=content_type, headers={"Cache-Control": "no-cache"})


@app.page("/dashboard/local")
class LocalFigures(View):
    async def get(self, request: Request) -> Response:
        return self.json(local_figures())
