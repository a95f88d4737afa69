"""Output of the operation commands (switchover ... query): result lines, the JSON result object, query rows.

Kept apart from ctl/render.py, which holds the `list` family; same rules: functions return strings, never fetch
anything, machine formats carry no colour.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from ctl.services.results import OperationResult
    from ctl.services.query import QueryResult

QUERY_FORMATS = ("tsv", "json", "yaml", "yml", "pretty", "csv")


def timestamp(now: datetime | None = None) -> str:
    """patronictl's `%Y-%m-%d %H:%M:%S.%f` cut to 5 fractional digits."""
    return (now or datetime.now()).strftime("%Y-%m-%d %H:%M:%S.%f")[:-1]


def timestamped(message: str, now: datetime | None = None) -> str:
    return f"{timestamp(now)} {message}\n"


def render_result_json(result: "OperationResult") -> str:
    return json.dumps(result.as_dict(), default=str) + "\n"


def render_error_json(command: str, requested: dict[str, Any], outcome: str, message: str, code: int) -> str:
    """The result object for a request refused before anything was sent (validation, prompts, etcd errors)."""
    return json.dumps({"command": command, "requested": requested, "outcome": outcome, "ok": False,
                       "exit_code": code, "message": message, "timings": {}, "final_roles": {}}) + "\n"


def render_timings(result: "OperationResult") -> str:
    """One line: how long the request and the verification took."""
    t = result.timings
    parts = []
    if "request" in t:
        parts.append(f"request {t['request']:.2f} s")
    if "new_leader_writable" in t:
        parts.append(f"new leader writable after {t['new_leader_writable']:.2f} s")
    if "recognized" in t:
        parts.append(f"recognized by all members after {t['recognized']:.2f} s")
    total = f"{t['total']:.2f} s" if "total" in t else "?"
    word = "verified" if result.ok and result.outcome in ("succeeded", "scheduled") else "took"
    return f"{word} in {total}" + (f" ({', '.join(parts)})" if parts else "") + "\n"


def render_candidate_choice(name: str, reason: str) -> str:
    return f"Candidate: {name} (chosen by hactl: {reason})\n"


def render_query(result: "QueryResult", fmt: str = "tsv", delimiter: str = "\t") -> str:
    """Rows of a query: tsv (patronictl's default, header first), csv, json/yaml (list of objects), pretty."""
    fmt = "yaml" if fmt == "yml" else fmt
    if not result.columns:
        return f"{result.status}\n" if fmt in ("tsv", "pretty", "csv") and result.status else ""
    rows = [[_plain(v) for v in r] for r in result.rows]
    if fmt in ("json", "yaml"):
        data = [dict(zip(result.columns, r)) for r in rows]
        if fmt == "json":
            return json.dumps(data, default=str) + "\n"
        from ctl.render_table import yaml_dump

        return yaml_dump(data)
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows(["" if v is None else v for v in r] for r in rows)
        return buf.getvalue()
    if fmt == "pretty":
        from ctl.render_table import table_string

        return table_string(result.columns, [["" if v is None else str(v) for v in r] for r in rows], None)
    lines = [delimiter.join(result.columns)]
    lines += [delimiter.join("" if v is None else str(v) for v in r) for r in rows]
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str, list, dict)):
        return value
    return str(value)


def render_member_lines(lines: Sequence[str]) -> str:
    return "".join(f"{line}\n" for line in lines)
