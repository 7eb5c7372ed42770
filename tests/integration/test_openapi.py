"""schemathesis against a live worker: ``GET /openapi.json`` is served and valid, and
requests generated from it get answers the document describes (status code, content
type, body schema, documented headers), never an undocumented 5xx; schema-violating
order bodies are refused.

One order goes through the whole pipeline first (built-in CDC reader: no JVM), so the
keyed reads (``/orders/{order_id}``, ``/inventory/{sku}``, ``/analytics/countries/{code}``)
are also generated against keys that exist and their 200 bodies are checked, not only
their 404s.  Bounded so the test stays well under a minute on two cores: a fixed number of
examples per operation, derandomized, no example database.  Left out or narrowed:

- ``GET /analytics/stream`` (server-sent events) never ends: it is requested once by hand
  (status, content type, first line) instead, before any order (a closed stream's
  handler ends at the stream's next event or ping; the worker's stop waits for it).
- ``?timeout=`` of ``GET /orders/{order_id}`` is narrowed to at most 0.2 s here and
  always sent, so a generated ``?wait=`` costs at most that (the document says 0..60,
  default 10).
- Negative (schema-violating) requests are generated for ``POST /orders`` only, where the
  rules live; schema-violating query values elsewhere would include long waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections import Counter
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import Stack, WorkerPool
from tests.support import ahttp, eventually

pytestmark = pytest.mark.integration

TOKEN = "openapi-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 25
KNOWN_EXAMPLES = 10
NEGATIVE_EXAMPLES = 40
TEST_TIMEOUT_S = 0.2
SKIP = {"GET /analytics/stream"}
NEGATIVE = {"POST /orders"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# A 504 is the documented end of ``?wait=``; any other 5xx is a failure (and
# status_code_conformance still requires the 504 to be documented for the operation).
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "504"]}}}
)
ORDER = {
    "customer_id": "c-openapi",
    "country": "DE",
    "currency": "EUR",
    "lines": [{"sku": "SKU-0001", "quantity": 2, "unit_price": "19.99"}],
    "payment_method": "tok_visa",
}


def narrowed(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with ``?timeout=`` capped, and always sent (its default is 10 s)."""
    out = copy.deepcopy(doc)
    for param in out["paths"]["/orders/{order_id}"]["get"]["parameters"]:
        if param["name"] == "timeout":
            param["required"] = True
            param["schema"]["maximum"] = TEST_TIMEOUT_S
            param["schema"]["default"] = TEST_TIMEOUT_S
    return out


def exercise(
    operation: Any,
    mode: GenerationMode,
    examples: int,
    path: dict[str, str] | None,
    checks: list[Any],
    session: requests.Session,
    base_url: str,
) -> Counter[int]:
    """Send ``examples`` generated cases of ``operation``, check each answer; raises the
    (shrunk) failure.  Returns the statuses seen."""
    counts: Counter[int] = Counter()

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path))
    def test(case: Any) -> None:
        response = case.call_and_validate(
            base_url=base_url, session=session, headers=AUTH, checks=checks, timeout=15
        )
        counts[response.status_code] += 1

    test()
    return counts


def run(
    schema: Any, base_url: str, known: dict[str, dict[str, str]]
) -> tuple[list[str], dict[str, Counter[int]]]:
    """Every operation with generated cases: positive; for ``NEGATIVE`` also negative; for
    ``known`` also positive with those path parameters.  Returns the failures (one per
    operation and pass, shrunk by hypothesis) and the statuses seen per pass."""
    session = requests.Session()
    failures: list[str] = []
    seen: dict[str, Counter[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in SKIP:
            continue
        passes: list[tuple[str, GenerationMode, int, dict[str, str] | None]] = [
            ("positive", GenerationMode.POSITIVE, EXAMPLES, None)
        ]
        if operation.label in NEGATIVE:
            passes.append(("negative", GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES, None))
        if operation.label in known:
            path = known[operation.label]
            passes.append(("known", GenerationMode.POSITIVE, KNOWN_EXAMPLES, path))
        for name, mode, examples, params in passes:
            label = f"{operation.label} ({name})"
            checks = [*CHECKS, negative_data_rejection] if name == "negative" else CHECKS
            try:
                seen[label] = exercise(operation, mode, examples, params, checks, session, base_url)
            except (Exception, BaseExceptionGroup) as err:  # a check failed: go on
                seen[label] = Counter()
                failures.append(f"--- {label}:\n{err}")
    return failures, seen


async def answered(url: str, limit: float = 30.0) -> Any:
    status, body = 0, None

    async def ok() -> bool:
        nonlocal status, body
        status, body, _ = await ahttp("GET", url)
        return status == 200

    with contextlib.suppress(AssertionError):  # timed out: the assertion below tells how
        await eventually(ok, limit, 0.2)
    assert status == 200, (url, status, body)
    return body


async def test_schemathesis_finds_nothing_against_a_live_worker(
    stack: Stack, workers: WorkerPool, builtin_cdc: Any
) -> None:
    worker = workers.start({"ORDERS_API_TOKEN": TOKEN})
    await workers.wait_ready(worker)
    base = worker.url

    # The SSE route, by hand, first: the handler of a closed stream ends at the stream's
    # next event or keep-alive ping, the order below makes an event; a handler still
    # waiting holds up the worker's stop (by up to a ping interval).
    def first_bytes() -> tuple[int, str, bytes]:
        with requests.get(f"{base}/analytics/stream", stream=True, timeout=10) as resp:
            return resp.status_code, resp.headers["Content-Type"], next(resp.iter_content(64))

    status, ctype, first = await asyncio.to_thread(first_bytes)
    assert status == 200 and ctype.startswith("text/event-stream"), (status, ctype)
    assert first.startswith(b": connected")

    status, created, _ = await ahttp("POST", f"{base}/orders", ORDER, AUTH)
    assert status == 201, created
    oid = created["order_id"]
    done = await answered(f"{base}/orders/{oid}?wait=terminal&timeout=30")
    assert done["status"] == "FULFILLED", done
    await answered(f"{base}/analytics/countries/DE")
    await answered(f"{base}/inventory/SKU-0001")
    known = {
        "GET /orders/{order_id}": {"order_id": oid},
        "GET /inventory/{sku}": {"sku": "SKU-0001"},
        "GET /analytics/countries/{code}": {"code": "DE"},
    }

    # Found by schemathesis: a NUL in a string and a total beyond numeric(14, 2) passed
    # the model and failed the INSERT (500); both are 422 naming the field now.
    status, body, _ = await ahttp("POST", f"{base}/orders", {**ORDER, "customer_id": "c\0"}, AUTH)
    assert status == 422 and body["errors"][0]["field"] == "customer_id", body
    huge = [{"sku": "SKU-0001", "quantity": 10_000, "unit_price": "9999999999.99"}]
    status, body, _ = await ahttp("POST", f"{base}/orders", {**ORDER, "lines": huge}, AUTH)
    assert status == 422 and body["errors"][0]["field"] == "lines", body

    status, doc, headers = await ahttp("GET", f"{base}/openapi.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert doc["openapi"] == "3.1.0"
    schema = schemathesis.openapi.from_dict(narrowed(doc), config=CONFIG)
    schema.validate()

    failures, seen = await asyncio.to_thread(run, schema, base, known)
    assert not failures, "\n".join(failures)
    documented = {f"{m.upper()} {p}" for p, item in doc["paths"].items() for m in item}
    assert {label.rsplit(" (", 1)[0] for label in seen} == documented - SKIP
    assert sum(sum(c.values()) for c in seen.values()) >= 200, seen
    # the generated traffic reached the interesting answers, not only the errors
    assert seen["POST /orders (positive)"][201] > 0, seen
    assert seen["POST /orders (negative)"][422] > 0, seen
    for label in known:
        assert seen[f"{label} (known)"][200] > 0, seen

    assert worker.proc.poll() is None
