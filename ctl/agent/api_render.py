"""Patroni's REST bodies and health rules as pure functions of NodeStatus / Cluster (no I/O).

`status_json` (GET /patroni and the health-check bodies), `cluster_json` (/cluster), `history_json` (/history),
`metrics_text` (/metrics), `health_status` / `liveness_status` / `readiness_status` (status codes), `parse_size`
(`?lag=`). ctl/agent/api.py serves them; keeping them pure keeps the server small and the rules table-testable.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import sys
from typing import Any, Mapping
from urllib.parse import urlsplit

from ctl.model import Cluster, NodeStatus, lsn_to_str

log = logging.getLogger(__name__)

# Patroni's PostgresqlState, in index order (the value of patroni_postgres_state); keys are the state texts.
_PG_STATES = (
    ("initdb", "initializing new cluster"), ("initdb_failed", "initdb failed"),
    ("custom_bootstrap", "running custom bootstrap script"), ("custom_bootstrap_failed", "custom bootstrap failed"),
    ("creating_replica", "creating replica"), ("running", "running"), ("starting", "starting"),
    ("bootstrap_starting", "starting after custom bootstrap"), ("start_failed", "start failed"),
    ("restarting", "restarting"), ("restart_failed", "restart failed"), ("stopping", "stopping"),
    ("stopped", "stopped"), ("stop_failed", "stop failed"), ("crashed", "crashed"),
)
_STATE_INDEX = {k: i for i, names in enumerate(_PG_STATES) for k in names}
_QUERYABLE_STATES = ("running", "restarting", "starting")


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|kB|MB|GB|TB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def parse_size(value: str | None) -> int | None:
    """`?lag=` as Patroni's parse_int(value, 'B'): bytes, or a number with kB/MB/GB/TB (powers of 1024).

    None when absent or unparsable (Patroni then applies no limit).
    """
    if value is None:
        return None
    match = _SIZE_RE.match(value)
    if not match:
        return None
    return int(round(float(match.group(1)) * _SIZE_UNITS[match.group(2)]))


def _is_replica_role(role: str) -> bool:
    return role not in ("primary", "master")


def status_json(st: NodeStatus) -> dict[str, Any]:
    """The body of `GET /patroni` and of the health checks, with Patroni's keys in Patroni's order."""
    out: dict[str, Any]
    if st.state in _QUERYABLE_STATES and st.server_version:
        out = {"state": st.state, "postmaster_start_time": st.postmaster_start_time, "role": st.role,
               "server_version": st.server_version}
        if _is_replica_role(st.role):
            out["xlog"] = {
                "received_location": st.received_location if st.received_location is not None
                else st.replayed_location,
                "replayed_location": st.replayed_location,
                "replayed_timestamp": st.replayed_timestamp,
                "paused": bool(st.wal_replay_paused),
            }
        else:
            out["xlog"] = {"location": st.xlog_location}
        if st.role == "replica":
            if st.sync_standby:
                out["sync_standby"] = True
            elif st.quorum_standby:
                out["quorum_standby"] = True
        out["timeline"] = st.timeline
        if st.replication_state:
            out["replication_state"] = st.replication_state
        if st.replication:
            out["replication"] = [dict(r) for r in st.replication]
    else:
        out = {"state": "unknown" if st.state == "running" else st.state, "role": st.role}
    if st.pause:
        out["pause"] = True
    if st.cluster_unlocked:
        out["cluster_unlocked"] = True
    if getattr(st, "failsafe_mode_is_active", False):
        out["failsafe_mode_is_active"] = True
    out["dcs_last_seen"] = st.dcs_last_seen or 0
    if st.tags:
        out["tags"] = dict(st.tags)
    if st.system_identifier:
        out["database_system_identifier"] = str(st.system_identifier)
    if st.pending_restart or st.pending_restart_reason:
        out["pending_restart"] = True
        out["pending_restart_reason"] = dict(st.pending_restart_reason)
    out["patroni"] = {"version": st.version, "scope": st.scope, "name": st.name}
    if st.scheduled_restart:
        sched = {k: v for k, v in st.scheduled_restart.items() if k != "postmaster_start_time"}
        out["scheduled_restart"] = sched
    if getattr(st, "watchdog_failed", False):
        out["watchdog_failed"] = True
    if getattr(st, "basebackup", None):  # hactl: a running base backup's progress (reinit --wait shows it)
        out["basebackup"] = dict(st.basebackup)
    if st.observed_age_s is not None:  # hactl: PostgreSQL did not answer; this is the HA loop's observation
        out["observed_age_s"] = st.observed_age_s
    return out


def _standby_cluster(cluster: Cluster) -> bool:
    data = cluster.config.data if cluster.config else {}
    sc = data.get("standby_cluster")
    return isinstance(sc, Mapping) and bool(sc.get("host") or sc.get("port") or sc.get("restore_command"))


def _local_positions(st: NodeStatus) -> tuple[int | None, int | None, int | None] | None:
    """(receive, replay, lsn) of our own node from its status, or None when it has none to show."""
    if st.state not in _QUERYABLE_STATES or not st.server_version:
        return None
    if st.xlog_location is not None:
        return None, None, st.xlog_location
    known = [v for v in (st.received_location, st.replayed_location) if v is not None]
    return st.received_location, st.replayed_location, max(known) if known else None


def cluster_json(cluster: Cluster | None, scope: str, local: NodeStatus | None = None) -> dict[str, Any]:
    """The body of `GET /cluster` (Patroni's cluster_as_json plus `scope`).

    `local`: this node's status (read at request time); its entry shows those positions, timeline and replication
    state instead of the member key's, plus `observed_age_s` when they are the HA loop's observation.
    """
    if cluster is None:
        return {"members": [], "scope": scope}
    leader = cluster.leader.name if cluster.leader else None
    cluster_lsn = cluster.status.optime or 0
    mode = cluster.synchronous_mode
    sync_names = set(cluster.sync.sync_standby) if cluster.sync and mode != "off" else set()
    members = []
    for m in cluster.members:
        if m.name == leader:
            role = "standby_leader" if _standby_cluster(cluster) else "leader"
        elif m.name in sync_names:
            role = "quorum_standby" if mode == "quorum" else "sync_standby"
        else:
            role = "replica"
        data = m.data
        state = (data.get("replication_state", "") if role != "leader" else "") or data.get("state", "")
        item: dict[str, Any] = {"name": m.name, "role": role, "state": state, "api_url": m.api_url}
        if m.conn_url:
            parts = urlsplit(m.conn_url)
            if parts.hostname:
                item["host"] = parts.hostname
                try:
                    if parts.port:
                        item["port"] = parts.port
                except ValueError:
                    pass
        for key in ("timeline", "pending_restart", "pending_restart_reason", "scheduled_restart", "tags"):
            if key in data:
                item[key] = data[key]
        mine = _local_positions(local) if local is not None and local.name == m.name else None
        if mine is not None and local is not None:
            if local.timeline is not None:
                item["timeline"] = local.timeline
            if role != "leader" and local.replication_state:
                item["state"] = local.replication_state
        if m.name != leader:
            positions = (("receive_", m.receive_lsn), ("replay_", m.replay_lsn),
                         ("", m.xlog_location if m.xlog_location is not None else m.lsn))
            if mine is not None:
                positions = (("receive_", mine[0]), ("replay_", mine[1]), ("", mine[2]))
            for prefix, lsn in positions:
                if not lsn:
                    item[f"{prefix}lsn"] = "unknown"
                    item[f"{prefix}lag"] = "unknown"
                else:
                    item[f"{prefix}lag"] = cluster_lsn - lsn if cluster_lsn >= lsn else 0
                    item[f"{prefix}lsn"] = lsn_to_str(lsn)
        if mine is not None and local is not None and local.observed_age_s is not None:
            item["observed_age_s"] = local.observed_age_s
        members.append(item)
    members.sort(key=lambda x: x["name"])
    out: dict[str, Any] = {"members": members}
    if cluster.is_paused:
        out["pause"] = True
    if cluster.failover and cluster.failover.scheduled_at:
        sched: dict[str, Any] = {"at": cluster.failover.scheduled_at}
        if cluster.failover.leader:
            sched["from"] = cluster.failover.leader
        if cluster.failover.member:
            sched["to"] = cluster.failover.member
        out["scheduled_switchover"] = sched
    out["scope"] = scope
    return out


def history_json(cluster: Cluster | None) -> list[list[Any]]:
    if cluster is None:
        return []
    return [[h.timeline, h.lsn, h.reason, h.timestamp, h.new_leader] for h in cluster.history]


def _epoch(text: str | None) -> float | int:
    if not text:
        return 0
    try:
        value = _dt.datetime.fromisoformat(str(text))
    except ValueError:
        return 0
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    return (value - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)).total_seconds()


def _padded_version(version: str) -> str:
    parts = version.split("+")[0].split("-")[0].split(".")
    return "".join(p.zfill(2) for p in parts if p.isdigit()) or "0"


def metrics_text(st: NodeStatus) -> str:
    """`GET /metrics`: Prometheus text in Patroni 4.1's order, names and HELP/TYPE lines."""
    body = status_json(st)
    xlog = body.get("xlog", {})
    labels = f'{{scope="{st.scope}",name="{st.name}"}}'
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, value: Any, extra: str | None = None) -> None:
        lines.append(f"# HELP {name} {help_}")
        if extra:
            lines.append(extra)
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name}{labels} {value}")

    role = body.get("role")
    metric("patroni_version", "gauge", "Patroni semver without periods.", _padded_version(st.version))
    metric("patroni_postgres_running", "gauge", "Value is 1 if Postgres is running, 0 otherwise.",
           int(body["state"] == "running"))
    metric("patroni_postmaster_start_time", "gauge", "Epoch seconds since Postgres started.",
           _epoch(body.get("postmaster_start_time")))
    metric("patroni_primary", "gauge", "Value is 1 if this node is the leader, 0 otherwise.", int(role == "primary"))
    metric("patroni_xlog_location", "counter",
           "Current location of the Postgres transaction log, 0 if this node is not the leader.",
           xlog.get("location") or 0)
    metric("patroni_standby_leader", "gauge", "Value is 1 if this node is the standby_leader, 0 otherwise.",
           int(role == "standby_leader"))
    metric("patroni_replica", "gauge", "Value is 1 if this node is a replica, 0 otherwise.", int(role == "replica"))
    metric("patroni_sync_standby", "gauge", "Value is 1 if this node is a sync standby, 0 otherwise.",
           int(bool(body.get("sync_standby", False))))
    metric("patroni_quorum_standby", "gauge", "Value is 1 if this node is a quorum standby, 0 otherwise.",
           int(bool(body.get("quorum_standby", False))))
    metric("patroni_xlog_received_location", "counter",
           "Current location of the received Postgres transaction log, 0 if this node is not a replica.",
           xlog.get("received_location") or 0)
    metric("patroni_xlog_replayed_location", "counter",
           "Current location of the replayed Postgres transaction log, 0 if this node is not a replica.",
           xlog.get("replayed_location") or 0)
    metric("patroni_xlog_replayed_timestamp", "gauge",
           "Current timestamp of the replayed Postgres transaction log, 0 if null.",
           _epoch(xlog.get("replayed_timestamp")))
    metric("patroni_xlog_paused", "gauge", "Value is 1 if the Postgres xlog is paused, 0 otherwise.",
           int(xlog.get("paused", False) is True))
    if (body.get("server_version") or 0) >= 90600:
        metric("patroni_postgres_streaming", "gauge", "Value is 1 if Postgres is streaming, 0 otherwise.",
               int(body.get("replication_state") == "streaming"))
        metric("patroni_postgres_in_archive_recovery", "gauge",
               "Value is 1 if Postgres is replicating from archive, 0 otherwise.",
               int(body.get("replication_state") == "in archive recovery"))
    metric("patroni_postgres_server_version", "gauge", "Version of Postgres (if running), 0 otherwise.",
           body.get("server_version") or 0)
    metric("patroni_cluster_unlocked", "gauge", "Value is 1 if the cluster is unlocked, 0 if locked.",
           int(bool(body.get("cluster_unlocked", False))))
    metric("patroni_failsafe_mode_is_active", "gauge", "Value is 1 if failsafe mode is active, 0 if inactive.",
           int(bool(body.get("failsafe_mode_is_active", False))))
    metric("patroni_postgres_timeline", "gauge", "Postgres timeline of this node (if running), 0 otherwise.",
           body.get("timeline") or 0)
    metric("patroni_dcs_last_seen", "gauge", "Epoch timestamp when DCS was last contacted successfully by Patroni.",
           body.get("dcs_last_seen", 0))
    metric("patroni_pending_restart", "gauge", "Value is 1 if the node needs a restart, 0 otherwise.",
           int(bool(st.pending_restart or st.pending_restart_reason)))
    metric("patroni_is_paused", "gauge", "Value is 1 if auto failover is disabled, 0 otherwise.",
           int(bool(body.get("pause", False))))
    values = ", ".join(f"{i}={names[0]}" for i, names in enumerate(_PG_STATES))
    state = str(st.state).strip().lower()
    metric("patroni_postgres_state", "gauge", "Numeric representation of Postgres state.",
           _STATE_INDEX.get(state, _STATE_INDEX.get(state.replace(" ", "_"), -1)), extra=f"# Values: {values}")
    return "\n".join(lines) + "\n"


def _tag_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value).lower()


def health_status(st: NodeStatus, path: str, query: Mapping[str, list[str]]) -> int:
    """The status code Patroni's health check gives for `path` (200 or 503)."""
    path = "/primary" if path == "/" else path
    body = status_json(st)
    role, state = body.get("role"), body.get("state")
    latest_end_lsn = getattr(st, "latest_end_lsn", None) or 0
    leader_optime = max(st.cluster_optime or 0, latest_end_lsn)
    replayed = body.get("xlog", {}).get("replayed_location") or 0
    first = {k: v[0] for k, v in query.items() if v}
    max_lag = parse_size(first.get("lag"))
    if max_lag is None:
        max_lag = sys.maxsize
    lagging = bool(leader_optime) and leader_optime > replayed + max_lag
    wanted_state = first.get("replication_state")
    state_ok = body.get("replication_state") == wanted_state if wanted_state else True
    noloadbalance = _tag_text(st.tags.get("noloadbalance", False)) in ("true", "on", "yes", "1")
    replica_code = 200 if (not noloadbalance and not lagging and role == "replica" and state == "running"
                           and state_ok) else 503
    if st.is_leader:
        leader_code = 200
        if role == "standby_leader":
            primary_code = replica_code = 503
            standby_leader_code = 200
        else:
            primary_code, standby_leader_code = 200, 503
    else:
        leader_code = primary_code = standby_leader_code = 503

    code, ignore_tags = 503, False
    is_sync, is_quorum = bool(body.get("sync_standby")), bool(body.get("quorum_standby"))
    if "standby_leader" in path or "standby-leader" in path:
        code, ignore_tags = standby_leader_code, True
    elif "leader" in path:
        code, ignore_tags = leader_code, True
    elif "master" in path or "primary" in path or "read-write" in path:
        code, ignore_tags = primary_code, True
    elif "replica" in path:
        code = replica_code
    elif "read-only" in path and "sync" not in path and "quorum" not in path:
        code = 200 if 200 in (primary_code, standby_leader_code) else replica_code
    elif "health" in path:
        code = 200 if state == "running" else 503
    elif path in ("/sync", "/synchronous"):
        code = replica_code if is_sync else 503
    elif path == "/quorum":
        code = replica_code if is_quorum else 503
    elif path in ("/async", "/asynchronous"):
        code = replica_code if not is_sync and not is_quorum else 503
    elif path == "/read-only-quorum":
        code = 200 if 200 in (primary_code, standby_leader_code) else (replica_code if is_quorum else 503)
    elif path in ("/read-only-sync", "/read-only-synchronous"):
        code = 200 if 200 in (primary_code, standby_leader_code) else (replica_code if is_sync else 503)

    if code == 200 and not ignore_tags:
        for key, value in first.items():
            if not key.startswith("tag_"):
                continue
            have = st.tags.get(key[4:])
            if have is None or _tag_text(have) != value:
                return 503
    return code


def liveness_status(st: NodeStatus, now: float, started: float) -> int:
    """200 while paused or the HA loop ran within ttl (running primary) / 2*ttl (others)."""
    primary = st.role == "primary" and st.state == "running"
    threshold = st.ttl * (1 if primary else 2)
    last = st.last_loop_time if st.last_loop_time is not None else started
    return 200 if st.pause or last + threshold > now else 503


def readiness_status(st: NodeStatus, query: Mapping[str, list[str]]) -> int:
    if st.is_leader:
        return 200
    if st.state != "running" or st.replication_state != "streaming":
        return 503
    latest_end_lsn = getattr(st, "latest_end_lsn", None) or 0
    leader_optime = max(st.cluster_optime or 0, latest_end_lsn)
    mode = "write" if (query.get("mode") or [None])[0] == "write" else "apply"
    position = (st.received_location if mode == "write" else st.replayed_location) or 0
    max_lag = parse_size((query.get("lag") or [None])[0])
    if max_lag is None:
        max_lag = st.maximum_lag_on_failover
    lag = leader_optime - position
    if lag > max_lag:
        log.debug("readiness check failure: replication %s lag %s exceeds maximum allowable %s", mode, lag, max_lag)
        return 503
    return 200
