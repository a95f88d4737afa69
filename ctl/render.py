"""All of hactl's output: rich tables for `pretty`, and json/yaml/tsv strings with patronictl's keys and values.

Every function here returns a string (tests compare strings) and never fetches anything. The machine formats carry
no colour and no markup. rich and yaml are imported only by the functions that need them, to keep startup fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import urlsplit

from ctl.model import Cluster, ClusterRole, HistoryEntry, Member, MemberVersion, lsn_to_str
from ctl.render_table import cell, dump, table_string, yaml_dump

FORMATS = ("pretty", "tsv", "json", "yaml", "yml")

BASE_COLUMNS = ("Cluster", "Member", "Host", "Role", "State", "TL",
                "Receive LSN", "Receive Lag", "Replay LSN", "Replay Lag")
EXTENDED_COLUMNS = ("Pending restart", "Pending restart reason", "Scheduled restart", "Tags")
HISTORY_COLUMNS = ("TL", "LSN", "Reason", "Timestamp", "New Leader")
# Extra keys hactl adds to json/yaml `list` output. Patronictl's keys are untouched, so scripts keep working.
EXTRA_KEYS = ("receive_lag_bytes", "replay_lag_bytes", "upstream")
_LONG_REASON = 50  # patronictl hides a pending-restart reason longer than this in pretty output


# ----------------------------------------------------------------------------------------------- member rows


@dataclass(frozen=True)
class MemberView:
    """What `list` shows about one member, derived like Patroni's `cluster_as_json`."""

    name: str
    role: ClusterRole
    state: str
    host: str | None
    port: int | None
    timeline: int | None
    is_leader: bool
    receive_lsn: int | None
    replay_lsn: int | None
    receive_lag: int | None  # bytes
    replay_lag: int | None  # bytes
    member: Member


def _port(member: Member) -> int | None:
    """The conn_url port; 5432 when the URL names none (Patroni's conn_kwargs do the same)."""
    if not member.conn_url:
        return None
    try:
        return urlsplit(member.conn_url).port or 5432
    except ValueError:
        return None


def _replay_lsn(member: Member) -> int | None:
    """Patroni falls back to xlog_location when a member publishes no replay_lsn (an old leader does that)."""
    if "replay_lsn" in member.data:
        return member.replay_lsn
    return member.xlog_location


def member_views(cluster: Cluster) -> list[MemberView]:
    """Members sorted by name with cluster role, state and lags, as patronictl derives them."""
    optime = cluster.optime
    out = []
    for m in cluster.members:
        role = cluster.cluster_role(m)
        is_leader = cluster.leader is not None and m.name == cluster.leader.name
        state = (m.replication_state if role != ClusterRole.LEADER else "") or m.state or ""

        def lag(lsn: int | None) -> int | None:
            if is_leader or lsn is None or optime is None:
                return None
            return max(optime - lsn, 0)

        out.append(MemberView(
            name=m.name, role=role, state=state, host=m.host, port=_port(m), timeline=m.timeline,
            is_leader=is_leader, receive_lsn=m.receive_lsn, replay_lsn=_replay_lsn(m),
            receive_lag=lag(m.receive_lsn), replay_lag=lag(_replay_lsn(m)), member=m,
        ))
    return out


def topology_order(views: Sequence[MemberView]) -> list[tuple[int, MemberView, str | None]]:
    """(level, member, upstream) in tree order: replicas hang under their `replicatefrom` replica, else the leader."""
    leader = next((v for v in views if v.role in (ClusterRole.LEADER, ClusterRole.STANDBY_LEADER)), None)
    replicas = {v.name for v in views if v is not leader}
    children: dict[str | None, list[MemberView]] = {}
    for v in views:
        if v is leader:
            continue
        parent = v.member.replicatefrom
        if not (parent and parent != v.name and parent in replicas):
            parent = leader.name if leader else None
        children.setdefault(parent, []).append(v)
    out: list[tuple[int, MemberView, str | None]] = []
    seen: set[str] = set()

    def walk(level: int, view: MemberView, upstream: str | None) -> None:
        if view.name in seen:
            return
        seen.add(view.name)
        out.append((level, view, upstream))
        for child in children.get(view.name, ()):
            walk(level + 1, child, view.name)

    if leader:
        walk(0, leader, None)
    for v in children.get(None, ()):
        walk(1, v, None)
    for v in views:  # a replicatefrom cycle never reaches the leader; still show those members
        if v.name not in seen:
            walk(1, v, v.member.replicatefrom)
    return out


def _format_reason(reason: Mapping[str, Any], hide_long: bool) -> str:
    lines = []
    for param, values in reason.items():
        if isinstance(values, Mapping):
            text = f"{param}: {values.get('old_value')}->{values.get('new_value')}"
        else:
            text = f"{param}: {values}"
        lines.append(f"{param}: [hidden - too long]" if hide_long and len(text) > _LONG_REASON else text)
    return "\n".join(lines)


def _scheduled_restart(member: Member) -> str:
    sr = member.scheduled_restart
    if not sr or not sr.get("schedule"):
        return ""
    value = str(sr["schedule"])
    if "postgres_version" in sr:
        value += f" if version < {sr['postgres_version']}"
    return value


def _mb(lag: int | None) -> int | str:
    return round(lag / 1024 / 1024) if lag is not None else ""


def list_columns(cluster: Cluster, extended: bool) -> list[str]:
    """patronictl's columns: the base ones, plus the extended ones with -e or when any member has a value."""
    members = [m for m in cluster.members if m.host]
    columns = list(BASE_COLUMNS)
    has = {
        "Pending restart": any(m.pending_restart for m in members),
        "Pending restart reason": any(m.pending_restart_reason for m in members),
        "Scheduled restart": any(m.scheduled_restart for m in members),
        "Tags": any(m.tags for m in members),
    }
    columns += [c for c in EXTENDED_COLUMNS if extended or has[c]]
    return columns


def list_rows(cluster: Cluster, extended: bool = False, fmt: str = "pretty",
              topology: bool = False) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows): one dict per member keyed by patronictl's column names, plus EXTRA_KEYS.

    Values are what patronictl prints: lags in MB (int), LSNs as X/Y or `unknown`, empty string for no value.
    """
    columns = list_columns(cluster, extended)
    views = member_views(cluster)
    with_host = [v for v in views if v.host]
    append_port = any(v.port is not None and v.port != 5432 for v in with_host) or \
        len({v.host for v in with_host}) < len(with_host)
    hide_long = fmt in ("pretty", "topology")
    ordered = topology_order(views) if topology else [(0, v, None) for v in views]
    tree = fmt in ("pretty", "topology")  # machine formats keep plain names and say the upstream instead
    rows = []
    for level, v, upstream in ordered:
        m = v.member
        host = v.host or ""
        if append_port and host and v.port:
            host = f"{host}:{v.port}"
        name = f"{'  ' * (level - 1)}+ {v.name}" if level > 0 and tree else v.name
        row: dict[str, Any] = {
            "Cluster": cluster.scope,
            "Member": name,
            "Host": host,
            "Role": v.role.value.replace("_", " ").title(),
            "State": v.state,
            "TL": v.timeline if v.timeline is not None else "",
            "Receive LSN": "" if v.is_leader else lsn_to_str(v.receive_lsn),
            "Receive Lag": _mb(v.receive_lag),
            "Replay LSN": "" if v.is_leader else lsn_to_str(v.replay_lsn),
            "Replay Lag": _mb(v.replay_lag),
            "Pending restart": "*" if m.pending_restart else "",
            "Pending restart reason": _format_reason(m.pending_restart_reason, hide_long),
            "Scheduled restart": _scheduled_restart(m),
            "Tags": dict(m.tags) if m.tags else "",
        }
        out = {c: row[c] for c in columns}
        out["receive_lag_bytes"] = v.receive_lag if v.receive_lag is not None else ""
        out["replay_lag_bytes"] = v.replay_lag if v.replay_lag is not None else ""
        if topology:
            out["upstream"] = upstream or ""
        rows.append(out)
    return columns, rows


# ----------------------------------------------------------------------------------------------- the list view


def cluster_title(cluster: Cluster) -> str:
    init = {None: "uninitialized", "": "initializing"}.get(cluster.initialize, cluster.initialize)
    return f"Cluster: {cluster.scope} ({init})"


def service_info(cluster: Cluster) -> list[str]:
    """The footer lines below a pretty table: maintenance mode and a scheduled switchover."""
    info = []
    if cluster.is_paused:
        info.append("Maintenance mode: on")
    f = cluster.failover
    if f is not None and f.scheduled_at:
        text = f"Switchover scheduled at: {_iso(f.scheduled_at)}"
        if f.leader:
            text += f"\n{'from':>24}: {f.leader}"
        if f.member:
            text += f"\n{'to':>24}: {f.member}"
        info.append(text)
    return info


def _iso(value: str) -> str:
    from datetime import datetime

    try:
        return datetime.fromisoformat(value).isoformat()
    except ValueError:
        return value


def render_list(cluster: Cluster, fmt: str = "pretty", extended: bool = False, topology: bool = False,
                color: bool = False) -> str:
    """`list`/`topology` output for one cluster, in any format."""
    fmt = "yaml" if fmt == "yml" else fmt
    columns, rows = list_rows(cluster, extended, "topology" if topology and fmt == "pretty" else fmt, topology)
    if fmt in ("json", "yaml"):
        # patronictl drops empty values from list output; the extra keys follow the same rule.
        elements = [{k: v for k, v in row.items() if str(v)} for row in rows]
        return dump(elements, fmt)
    if fmt == "tsv":
        if topology:
            columns = [*columns, "upstream"]
        lines = ["\t".join(columns)]
        lines += ["\t".join(cell(row[c], c, "tsv") for c in columns) for row in rows]
        return "\n".join(lines) + "\n"
    cell_fmt = "topology" if topology else "pretty"
    shown = [c for c in columns if c != "Cluster"]
    header = ["Lag" if c in ("Receive Lag", "Replay Lag") else c for c in shown]
    body = [[cell(row[c], c, cell_fmt) for c in shown] for row in rows]
    text = table_string(header, body, cluster_title(cluster), color)
    info = service_info(cluster)
    if info:
        text += " " + "\n ".join(info) + "\n"
    return text


# ----------------------------------------------------------------------------------------------- other views


def render_history(history: Iterable[HistoryEntry], fmt: str = "pretty") -> str:
    """`history`: TL, LSN, Reason, Timestamp, New Leader."""
    fmt = "yaml" if fmt == "yml" else fmt
    rows = [[e.timeline, e.lsn, e.reason, e.timestamp, e.new_leader] for e in history]
    if fmt in ("json", "yaml"):
        return dump([dict(zip(HISTORY_COLUMNS, r)) for r in rows], fmt)
    if fmt == "tsv":
        return "\n".join("\t".join(map(str, r)) for r in [list(HISTORY_COLUMNS), *rows]) + "\n"
    return table_string(HISTORY_COLUMNS, [[str(c) for c in r] for r in rows], None)


def render_config(data: Mapping[str, Any], fmt: str = "yaml") -> str:
    """`show-config`: the dynamic configuration, YAML with sorted keys (or JSON)."""
    if fmt == "json":
        return json.dumps(data, sort_keys=True) + "\n"
    return yaml_dump(dict(data)) + "\n"


def render_dsn(member: Member, fmt: str = "pretty") -> str:
    if fmt == "json":
        return json.dumps({"member": member.name, "host": member.host, "port": member.port}) + "\n"
    return f"host={member.host} port={member.port}\n"


def format_pg_version(version: int) -> str:
    """150018 -> 15.18; 90624 -> 9.6.24 (PostgreSQL's server_version_num)."""
    if version < 100000:
        return f"{version // 10000}.{version // 100 % 100}.{version % 100}"
    return f"{version // 10000}.{version % 10000}"


def render_versions(client_version: str, lines: Sequence[MemberVersion] | None, fmt: str = "pretty") -> str:
    if fmt == "json":
        data: dict[str, Any] = {"hactl": client_version}
        if lines is not None:
            data["members"] = [
                {k: v for k, v in (("name", ln.member), ("patroni_version", ln.patroni_version),
                                   ("postgresql_version", format_pg_version(ln.server_version)
                                    if ln.server_version else None), ("error", ln.error)) if v is not None}
                for ln in lines
            ]
        return json.dumps(data) + "\n"
    out = [f"hactl version {client_version}"]
    if lines is not None:
        out.append("")
        for ln in lines:
            if ln.error is not None:
                out.append(f"{ln.member}: failed to get version: {ln.error}")
            else:
                pg = f" PostgreSQL {format_pg_version(ln.server_version)}" if ln.server_version else ""
                out.append(f"{ln.member}: Patroni {ln.patroni_version}{pg}")
    return "\n".join(out) + "\n"


def timestamp_line(now: Any = None) -> str:
    """`-t`: the local time before each table, as patronictl prints it."""
    from datetime import datetime

    return (now or datetime.now()).strftime("%Y-%m-%d %H:%M:%S") + "\n"
