"""Summarise py-spy ``--format raw`` profiles (``BENCH_PROFILE=1 make bench``) as Markdown.

Usage: python -m bench.profile_summary TITLE=FILE.raw [TITLE=FILE.raw ...]

For each profile: where the samples are, by package (self time: the frame on top of the
stack), and the top functions by self time.  Self time by package is the useful view for
an asyncio program: its stacks are shallow (each task step starts at the event loop), so
inclusive times mostly say "the event loop".
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<path>.*?):\d+\)$")


def package(path: str) -> str:
    """py-spy shortens paths to the package: ``faust/topics.py`` -> faust; a single
    module (``records.py``: ours, ``selectors.py``: the stdlib's) keeps its name."""
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    return path.split("/", 1)[0].removesuffix(".py")


def summarise(title: str, raw: Path, top: int = 15) -> str:
    by_package: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        match = FRAME.match(stack.split(";")[-1])
        if match is None:
            by_package["(native)"] += n
            by_function["(native)"] += n
            continue
        by_package[package(match["path"])] += n
        by_function[f"{match['func']} ({package(match['path'])})"] += n
    lines = [f"### {title}", "", f"{total:,} samples (`{raw.name}`)", ""]
    lines += ["| package (self) | share |", "|---|---|"]
    lines += [f"| {k} | {100 * v / total:.1f}% |" for k, v in by_package.most_common(top)]
    lines += ["", "| function (self) | share |", "|---|---|"]
    lines += [f"| `{k}` | {100 * v / total:.1f}% |" for k, v in by_function.most_common(top)]
    return "\n".join(lines) + "\n"


def main(args: list[str]) -> None:
    for arg in args:
        title, _, path = arg.partition("=")
        print(summarise(title, Path(path)))


if __name__ == "__main__":
    main(sys.argv[1:])
