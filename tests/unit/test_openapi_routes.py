"""The OpenAPI document (``web/openapi.py``) against what the worker really serves, no
broker needed: the (method, path) pairs of the aiohttp router the Faust app builds (after
the same autodiscovery a worker does) equal the document's; every query parameter a view
reads is documented and nothing else; the ``POST /orders`` rules equal the model's; the
document is valid OpenAPI 3.1, with and without a token."""

from __future__ import annotations

import ast
import inspect
import itertools
import string
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from faust.web import View
from faust.web.drivers.aiohttp import Web as AiohttpWeb
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from orders_app.app import app
from web import routing
from web.openapi import MONEY_IN, NO_NUL, build, document
from web.orders import MAX_TOTAL, unstorable
from web.orders_rules import LineIn, OrderIn

METHODS = ("get", "post", "put", "patch", "delete", "options")
VALID = {
    "customer_id": "c-42",
    "country": "DE",
    "currency": "EUR",
    "lines": [{"sku": "SKU-0001", "quantity": 2, "unit_price": "19.99"}],
    "payment_method": "tok_visa",
}


@pytest.fixture(scope="module")
def served() -> dict[tuple[str, str], View]:
    """(method, path) -> the view the worker's router dispatches it to (the first route
    wins: Faust's production index is registered at ``/`` after the dashboard)."""
    app.discover()
    web = app.web
    assert isinstance(web, AiohttpWeb)
    web.init_server()
    out: dict[tuple[str, str], View] = {}
    for route in web.web_app.router.routes():
        handler = inspect.getclosurevars(route.handler).nonlocals["handler"]
        assert isinstance(handler, View) and route.resource is not None, route
        out.setdefault((route.method, route.resource.canonical), handler)
    return out


def documented() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document()["paths"].items():
        for method, op in item.items():
            assert method in METHODS, (path, method)
            yield method.upper(), path, op


def test_every_route_is_documented_and_nothing_else(served: dict[tuple[str, str], View]) -> None:
    routes = {key for key in served if key[0] != "HEAD"}
    ops = {(method, path) for method, path, _op in documented()}
    assert routes - ops == set(), "served but not in web/openapi.py"
    assert ops - routes == set(), "documented but not served"
    # Faust adds HEAD beside every view (answered by GET), which the document leaves out.
    assert {path for method, path in served if method == "HEAD"} == {path for _m, path in ops}


def query_reads(fun: Callable[..., Any]) -> set[str]:
    """Names passed to ``request.query.get(...)`` / ``request.query[...]`` in ``fun``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fun)))
    names: set[str] = set()
    for node in ast.walk(tree):
        target: ast.expr | None = None
        key: ast.expr | None = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "get" and node.args:
                target, key = node.func.value, node.args[0]
        elif isinstance(node, ast.Subscript):
            target, key = node.value, node.slice
        if (
            isinstance(target, ast.Attribute)
            and target.attr == "query"
            and isinstance(key, ast.Constant)
            and isinstance(key.value, str)
        ):
            names.add(key.value)
    return names


def test_every_query_parameter_a_view_reads_is_documented(
    served: dict[tuple[str, str], View],
) -> None:
    routed_reads = query_reads(routing.routed)
    assert routed_reads == {"local"}
    for method, path, op in documented():
        handler = getattr(served[(method, path)], method.lower())
        reads = query_reads(inspect.unwrap(handler))
        if getattr(handler, "__wrapped__", None) is not None:  # @routed(...)
            reads |= routed_reads
        params = {p["name"] for p in op.get("parameters", ()) if p["in"] == "query"}
        assert reads == params, (method, path)
        in_path = {p["name"] for p in op.get("parameters", ()) if p["in"] == "path"}
        fields = {name for _lit, name, _spec, _conv in string.Formatter().parse(path) if name}
        assert in_path == fields, path


def codes(field: str, length: int) -> set[str]:
    out = set()
    for letters in itertools.product(string.ascii_uppercase, repeat=length):
        code = "".join(letters)
        try:
            OrderIn.model_validate({**VALID, field: code})
        except ValidationError:
            continue
        out.add(code)
    return out


@pytest.mark.parametrize(("field", "length"), [("country", 2), ("currency", 3)])
def test_the_code_lists_are_exactly_what_the_model_accepts(field: str, length: int) -> None:
    schema = document()["components"]["schemas"]["OrderIn"]["properties"][field]
    assert set(schema["enum"]) == codes(field, length)


def line_schema() -> dict[str, Any]:
    schemas = document()["components"]["schemas"]
    ref = schemas["OrderIn"]["properties"]["lines"]["items"]["$ref"]
    line: dict[str, Any] = schemas[ref.rsplit("/", 1)[-1]]
    return line


def test_unit_price_is_a_decimal_string() -> None:
    price = line_schema()["properties"]["unit_price"]
    assert price == {**price, "type": "string", "pattern": MONEY_IN}
    for number in (19.99, 1, 0):
        with pytest.raises(ValidationError):
            LineIn.model_validate({"sku": "S", "quantity": 1, "unit_price": number})


@settings(max_examples=200, derandomize=True, deadline=None)
@given(price=st.from_regex(MONEY_IN, fullmatch=True))
def test_every_price_the_document_admits_is_accepted(price: str) -> None:
    LineIn.model_validate({"sku": "S", "quantity": 1, "unit_price": price})


@pytest.mark.parametrize("token", [False, True])
def test_the_document_is_valid_openapi_3_1(token: bool) -> None:
    doc = build(
        token=token, max_body=65536, router=True, tables=True, table_names=sorted(app.tables)
    )
    schema = schemathesis.openapi.from_dict(doc)
    schema.validate()
    post = doc["paths"]["/orders"]["post"]
    assert ("401" in post["responses"]) is token
    assert bool(post["security"]) is token


def test_what_the_document_adds_to_the_model_is_what_post_orders_checks() -> None:
    """No NUL in a string (Postgres text cannot hold one) and a total that fits
    ``orders.total`` numeric(14, 2): both beyond the model, both in the document."""
    order = document()["components"]["schemas"]["OrderIn"]
    assert order["properties"]["customer_id"]["pattern"] == NO_NUL
    assert f"{MAX_TOTAL:f}" in order["properties"]["lines"]["description"]
    assert unstorable(OrderIn.model_validate(VALID)) == []
    nul = OrderIn.model_validate({**VALID, "customer_id": "c\x00"})
    assert [e["field"] for e in unstorable(nul)] == ["customer_id"]
    line = {"sku": "S", "quantity": 101, "unit_price": "9999999999.99"}
    big = OrderIn.model_validate({**VALID, "lines": [line]})
    assert big.total >= MAX_TOTAL
    assert [e["field"] for e in unstorable(big)] == ["lines"]
    fits = OrderIn.model_validate({**VALID, "lines": [{**line, "quantity": 100}]})
    assert unstorable(fits) == []
