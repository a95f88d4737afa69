"""Output of the operator's tools: `plan`, `check`, `audit` and `drill`. Strings only; never fetches anything."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Sequence

from ctl.model import Cluster
from ctl.render import BASE_COLUMNS, EXTENDED_COLUMNS, EXTRA_KEYS, list_columns, list_rows, service_info
from ctl.render_table import cell, dump, table_string

if TYPE_CHECKING:
    from ctl.services.audit import AuditEntry
    from ctl.services.check import CheckReport
    from ctl.services.plan import PlanReport


def _mb(n: int | None) -> str:
    if n is None:
        return "unknown"
    from ctl.ha.eligibility import fmt_bytes

    return fmt_bytes(n)


def render_list_all(clusters: Sequence[Cluster], fmt: str = "pretty", extended: bool = False, color: bool = False,
                    title: str = "All clusters") -> str:
    """`list --all`: every cluster's members in ONE table/document, the `Cluster` column telling them apart.

    json/yaml: one list of patronictl's member objects (its keys, `Cluster` included), never one list per cluster.
    """
    fmt = "yaml" if fmt == "yml" else fmt
    wanted = set()
    for cluster in clusters:
        wanted.update(list_columns(cluster, extended))
    columns = [*BASE_COLUMNS, *(c for c in EXTENDED_COLUMNS if c in wanted)]
    rows: list[dict[str, Any]] = []
    for cluster in clusters:
        _, full = list_rows(cluster, True, fmt)
        rows += [{**{c: row[c] for c in columns}, **{k: row[k] for k in EXTRA_KEYS if k in row}} for row in full]
    if fmt in ("json", "yaml"):
        return dump([{k: v for k, v in row.items() if str(v)} for row in rows], fmt)
    if fmt == "tsv":
        lines = ["\t".join(columns)] + ["\t".join(cell(row[c], c, "tsv") for c in columns) for row in rows]
        return "\n".join(lines) + "\n"
    if not rows:
        return "No clusters in this namespace.\n"
    header = ["Lag" if c in ("Receive Lag", "Replay Lag") else c for c in columns]
    text = table_string(header, [[cell(row[c], c, "pretty") for c in columns] for row in rows], title, color)
    for cluster in clusters:
        info = service_info(cluster)
        if info:
            text += f" {cluster.scope}: " + "\n ".join(info) + "\n"
    return text


def render_plan(report: "PlanReport", fmt: str = "pretty") -> str:
    """`plan`: every member with its verdict and reasons, then who would be chosen and why."""
    if fmt == "json":
        return json.dumps(report.to_json()) + "\n"
    rows = [[v.member, v.role.replace("_", " ").title(), "yes" if v.eligible else "no", _mb(v.lag_bytes),
             "" if v.timeline is None else str(v.timeline), "\n".join(v.reasons) or "-"] for v in report.members]
    title = f"Plan: {report.action} of {report.cluster}"
    text = table_string(["Member", "Role", "Eligible", "Lag", "TL", "Reasons"], rows, title)
    if report.chosen:
        text += f"Chosen: {report.chosen} ({report.why})\n"
    else:
        text += f"Refused: {report.why}\n"
    return text


def render_check(report: "CheckReport", fmt: str = "pretty") -> str:
    """`check`: one row per finding, errors first, then the count per severity."""
    if fmt == "json":
        return json.dumps(report.to_json()) + "\n"
    s = report.summary
    counts = f"{s['error']} error(s), {s['warning']} warning(s), {s['info']} info"
    if not report.findings:
        return f"Check of {report.cluster}: no findings\n"
    rows = [[f.severity, f.check, f.member or "-", f.message, f.fix or "-"] for f in report.sorted()]
    return table_string(["Severity", "Check", "Member", "Finding", "Fix"], rows,
                         f"Check: {report.cluster}") + counts + "\n"


def render_audit(entries: Sequence["AuditEntry"], fmt: str = "pretty") -> str:
    """`audit`: the trail, oldest first."""
    if fmt == "json":
        return json.dumps([e.to_json() for e in entries]) + "\n"
    if fmt == "tsv":
        cols = ["time", "cluster", "user", "host", "command", "reason", "result", "exit_code", "duration_s"]
        lines = ["\t".join(cols)]
        for e in entries:
            d = e.to_json()
            lines.append("\t".join(_plain(d.get(c)) for c in cols))
        return "\n".join(lines) + "\n"
    rows = [[e.time, f"{e.user}@{e.host}" if e.host else e.user, e.command, e.reason or "-",
             e.result + ("" if e.exit_code in (None, 0) else f" ({e.exit_code})"),
             "" if e.duration_s is None else f"{e.duration_s:.1f}s"] for e in entries]
    if not rows:
        return "No audit entries.\n"
    return table_string(["Time", "Who", "Command", "Reason", "Result", "Took"], rows, "Audit trail")


def _plain(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value).replace("\t", " ").replace("\n", " ")


def render_drill(record: Any) -> str:
    """`drill`: the figures a stopwatch and a client would give, one per row."""
    d = record.to_json()
    rows = [["from / to", f"{d['from'] or '-'} -> {d['to'] or '-'}"],
            ["result", d["result"] + (f" ({d['message']})" if d["message"] else "")],
            ["write_gap_s", "-" if d["write_gap_s"] is None else f"{d['write_gap_s']:.3f}"],
            ["acked_writes", str(d["acked_writes"])],
            ["lost_acked_writes", str(d["lost_acked_writes"])],
            ["verified_after_s", "-" if d["verified_after_s"] is None else f"{d['verified_after_s']:.3f}"],
            ["writers", str(d["writers"])],
            ["record", d["record"] or "(not written)"]]
    text = table_string(["Figure", "Value"], rows, f"Drill: {d['action']} of {d['cluster']}")
    text += ("PASSED\n" if d["passed"] else "FAILED: " + "; ".join(d["problems"]) + "\n")
    return text
