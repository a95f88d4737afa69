"""Shared by the benchmark scripts: write one marked section of docs/benchmarks.md, leave the others alone."""

from __future__ import annotations

import os
import platform
import statistics
from datetime import datetime, timezone

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "benchmarks.md")
HEADER = "# Benchmarks\n\nEach section is written by a script in `bench/`; rerun it to refresh the numbers.\n"


def machine() -> str:
    return f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} {platform.machine()}"


def stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write_section(name: str, body: str) -> None:
    """Replace the text between `<!-- name:start -->` and `<!-- name:end -->` (append the section if missing)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    try:
        with open(DOC, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = HEADER
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    os.makedirs(os.path.dirname(DOC), exist_ok=True)
    with open(DOC, "w", encoding="utf-8") as f:
        f.write(text)
