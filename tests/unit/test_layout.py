"""Imports flow one way (DESIGN.md: settings -> records -> app -> topics -> tables ->
agents/web): the core (``orders_app``), ``tables`` and ``web`` import no agent module,
and the core imports neither tables nor web.  Read from the source, not by importing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "orders_app": ("agents", "tables", "web"),
    "tables": ("agents", "web"),
    "web": ("agents",),
}


def imported(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(package: str) -> None:
    found = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / package).rglob("*.py")
        for name in imported(path)
        if name.split(".")[0] in FORBIDDEN[package]
    }
    assert not found, sorted(found)
