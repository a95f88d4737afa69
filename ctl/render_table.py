"""What every renderer shares: the prettytable-like ASCII table (drawn by rich) and the json/yaml dumps.

Used by ctl.render (the `list` family), ctl.render_edit, ctl.render_tools and ctl.render_operations. Strings only;
rich and yaml are imported by the functions that need them, to keep startup fast.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

_RIGHT_ALIGNED = frozenset({"Group", "TL", "Receive LSN", "Receive Lag", "Replay LSN", "Replay Lag", "Lag", "LSN"})


def yaml_dump(data: Any, flow: bool = False) -> str:
    """YAML the way patronictl prints it: block style (or flow), unicode kept, long lines unwrapped."""
    import yaml

    return yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True, width=200)


def _box() -> Any:
    from rich import box

    # prettytable's look: + at every crossing, - and | elsewhere.
    return box.Box("+-++\n| ||\n+-++\n| ||\n+-++\n+-++\n| ||\n+-++\n", ascii=True)


_STATE_STYLES = {"running": "green", "streaming": "green", "stopped": "red", "crashed": "red",
                 "start failed": "red", "stop failed": "red", "restart failed": "red", "initdb failed": "red"}


def table_string(columns: Sequence[str], rows: Sequence[Sequence[str]], title: str | None,
                 color: bool = False) -> str:
    """A prettytable-like ASCII table rendered with rich; the title is written into the top rule like patronictl."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text
    import io

    show_lines = any("\n" in c for r in rows for c in r)
    table = Table(box=_box(), header_style=None, highlight=False, show_lines=show_lines, border_style=None)
    for c in columns:
        table.add_column(Text(c), justify="right" if c in _RIGHT_ALIGNED else "left", no_wrap=True)
    for r in rows:
        cells = []
        for c, value in zip(columns, r):
            style = ""
            if color and c == "Role" and value in ("Leader", "Standby Leader"):
                style = "bold"
            elif color and c == "State":
                style = _STATE_STYLES.get(value, "yellow")
            cells.append(Text(value, style=style))
        table.add_row(*cells)
    buf = io.StringIO()
    console = Console(file=buf, width=100_000, force_terminal=color, no_color=not color,
                      color_system="standard" if color else None, legacy_windows=False, highlight=False)
    console.print(table)
    lines = buf.getvalue().splitlines()
    if title and lines and lines[0].startswith("+"):
        line = lines[0]
        head = f" {title} "[: len(line) - 2]
        lines[0] = line[0] + head + line[1 + len(head):]
    return "\n".join(lines) + "\n"


def cell(value: Any, column: str, fmt: str) -> str:
    """One table or tsv cell: Tags as YAML (block style in pretty tables, flow style elsewhere), else str()."""
    if column == "Tags" and value:
        return yaml_dump(value, flow=fmt != "pretty").strip()
    return str(value)


def dump(data: Any, fmt: str) -> str:
    """json or yaml output of a whole view, ending in the newline(s) patronictl prints."""
    if fmt == "json":
        return json.dumps(data) + "\n"
    # patronictl prints yaml.safe_dump(...) with click.echo, which adds one more newline.
    return yaml_dump(data) + "\n"
