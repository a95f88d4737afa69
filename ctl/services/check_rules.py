"""The `hactl check` catalogue: best-practice findings from one snapshot of the cluster. Pure: no I/O.

Each check is a function `(CheckInputs) -> list[Finding]` in CHECKS, with a stable id an operator can grep for.
The inputs are what hactl reads the same way from Patroni and hactl agents: the etcd keys, each member's
`GET /patroni`, etcd's own member list and health, and (when the CLI has credentials) two PostgreSQL settings.
"Can anyone take over?" is answered by the agent's own candidate rules (ctl/ha/eligibility.py via plan.evaluate).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

from ctl.model import Cluster, Member

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    check: str
    severity: str  # error | warning | info
    member: str | None
    message: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "severity": self.severity, "member": self.member, "message": self.message,
                "fix": self.fix}


@dataclass(frozen=True)
class EtcdMember:
    name: str
    url: str
    healthy: bool | None  # None: not asked (no client URL)
    error: str | None = None


@dataclass(frozen=True)
class CheckInputs:
    cluster: Cluster
    statuses: Mapping[str, Any]  # member -> GET /patroni JSON, or the error it raised
    etcd: Sequence[EtcdMember] | None = None  # None: the member list could not be read
    etcd_error: str | None = None
    pg_settings: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # member -> {name: value}
    now: float = 0.0  # epoch seconds


def _status(inputs: CheckInputs, name: str) -> Mapping[str, Any] | None:
    value = inputs.statuses.get(name)
    return value if isinstance(value, Mapping) else None


def _cfg(inputs: CheckInputs) -> Mapping[str, Any]:
    return inputs.cluster.config.data if inputs.cluster.config else {}


def _pg_cfg(inputs: CheckInputs) -> Mapping[str, Any]:
    pg = _cfg(inputs).get("postgresql")
    return pg if isinstance(pg, Mapping) else {}


def _on(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("on", "true", "yes", "1")
    return bool(value)


def _leader(inputs: CheckInputs) -> str | None:
    return inputs.cluster.leader.name if inputs.cluster.leader else None


def _replicas(inputs: CheckInputs) -> list[Member]:
    return [m for m in inputs.cluster.members if m.name != _leader(inputs)]


# ------------------------------------------------------------------------------------------------- the checks


def check_etcd(inputs: CheckInputs) -> list[Finding]:
    if inputs.etcd is None:
        return [Finding("etcd-members", "warning", None, f"cannot read etcd's member list: {inputs.etcd_error}",
                        "grant the CLI's etcd user read access to the cluster API, or check etcd by hand")]
    out = []
    n = len(inputs.etcd)
    if n < 3:
        out.append(Finding("etcd-size", "warning", None, f"etcd has {n} member(s): losing one stops every "
                           "leader renewal" if n < 2 else f"etcd has {n} members: it survives no member loss",
                           "run 3 or 5 etcd members on separate hosts"))
    elif n % 2 == 0:
        out.append(Finding("etcd-size", "warning", None, f"etcd has an even number of members ({n}): one more "
                           "member adds no fault tolerance", f"run {n - 1} or {n + 1} etcd members"))
    for m in inputs.etcd:
        if m.healthy is False:
            out.append(Finding("etcd-health", "error", None, f"etcd member {m.name or m.url} is unhealthy"
                               + (f": {m.error}" if m.error else ""), "restore or replace that etcd member"))
    return out


def check_leader(inputs: CheckInputs) -> list[Finding]:
    if inputs.cluster.leader is None:
        return [Finding("no-leader", "error", None, "no member holds the leader lock",
                        "see `hactl plan failover` and the agents' logs")]
    return []


def check_reachable(inputs: CheckInputs) -> list[Finding]:
    out = []
    for m in inputs.cluster.members:
        status = inputs.statuses.get(m.name)
        if not isinstance(status, Mapping):
            out.append(Finding("rest-unreachable", "error", m.name, f"REST API does not answer ({status})",
                               "start the agent, or fix its restapi listen/connect_address"))
        elif status.get("state") != "running":
            out.append(Finding("postgres-down", "error", m.name,
                               f"PostgreSQL is {status.get('state') or 'not running'}",
                               "see the agent's log; `hactl restart` or `hactl reinit` once the cause is fixed"))
    return out


def check_replication(inputs: CheckInputs) -> list[Finding]:
    out = []
    lm = inputs.cluster.leader_member
    leader_status = _status(inputs, lm.name) if lm else None
    xlog = leader_status.get("xlog") if leader_status and isinstance(leader_status.get("xlog"), Mapping) else {}
    optime = xlog.get("location") if isinstance(xlog.get("location"), int) else inputs.cluster.optime
    max_lag = inputs.cluster.config.maximum_lag_on_failover if inputs.cluster.config else 1048576
    for m in _replicas(inputs):
        status = _status(inputs, m.name)
        if status is None or status.get("state") != "running":
            continue  # reported by check_reachable
        if status.get("replication_state") != "streaming":
            out.append(Finding("not-streaming", "warning", m.name,
                               f"replica is not streaming (replication_state {status.get('replication_state')!r})",
                               "check primary_conninfo, pg_hba.conf and the replication slot on the leader"))
        rx = status.get("xlog") if isinstance(status.get("xlog"), Mapping) else {}
        pos = [v for v in (rx.get("received_location"), rx.get("replayed_location")) if isinstance(v, int)]
        if optime is not None and pos and optime - max(pos) > max_lag:
            lag = optime - max(pos)
            out.append(Finding("lag", "warning", m.name, f"lags {lag} bytes behind the leader "
                               f"(maximum_lag_on_failover {max_lag}): it cannot take over now",
                               "find what slows replay or the network; it catches up by itself once fixed"))
    return out


def check_candidates(inputs: CheckInputs) -> list[Finding]:
    """The switchover rules the agent applies (ctl/ha/eligibility.py), plus: the member must be streaming."""
    from ctl.services.plan import evaluate

    if not _replicas(inputs):
        return [Finding("no-candidate", "error", None, "the cluster has no replica: nothing can take over",
                        "add a member")]
    if inputs.cluster.leader is None:
        return []  # reported by check_leader; `hactl plan failover` tells who could take over
    # pause and a pending schedule have their own findings: judge the members as if neither were there
    c = inputs.cluster
    unpaused = replace(c, failover=None, config=replace(c.config, data={**c.config.data, "pause": False})
                       if c.config else None)
    report = evaluate(unpaused, "switchover", None, inputs.statuses)
    reasons = dict(report.refusals)
    for v in report.members:
        status = _status(inputs, v.member)
        if v.eligible and (status is None or status.get("replication_state") != "streaming"):
            reasons[v.member] = "is not streaming"
    if len(reasons) < len(_replicas(inputs)):
        return []
    why = "; ".join(f"{n}: {r}" for n, r in sorted(reasons.items()))
    return [Finding("no-candidate", "error", None, f"no replica can take over now: {why}",
                    "see `hactl plan switchover`; untag (nofailover/failover_priority) or repair a replica")]


def check_rewind(inputs: CheckInputs) -> list[Finding]:
    pg = _pg_cfg(inputs)
    if not _on(pg.get("use_pg_rewind")):
        return []
    params = pg.get("parameters") if isinstance(pg.get("parameters"), Mapping) else {}
    out = []
    members = inputs.pg_settings or {}
    if members:
        for name, settings in sorted(members.items()):
            if not _on(settings.get("wal_log_hints")) and not _on(settings.get("data_checksums")):
                out.append(Finding("rewind-hints", "error", name, "use_pg_rewind is on, but wal_log_hints and "
                                   "data_checksums are both off: pg_rewind will refuse to run",
                                   "set postgresql.parameters.wal_log_hints: on (needs a restart)"))
    elif "wal_log_hints" in params and not _on(params.get("wal_log_hints")):
        out.append(Finding("rewind-hints", "error", None, "use_pg_rewind is on, but the dynamic config sets "
                           "wal_log_hints off: pg_rewind fails unless the data has checksums",
                           "set postgresql.parameters.wal_log_hints: on (needs a restart)"))
    return out


def check_slots(inputs: CheckInputs) -> list[Finding]:
    pg = _pg_cfg(inputs)
    if "use_slots" in pg and not _on(pg.get("use_slots")):
        return [Finding("use-slots", "warning", None, "use_slots is off: the leader may recycle WAL a replica "
                        "still needs, and that replica must be re-cloned", "hactl edit-config -s "
                        "postgresql.use_slots=true")]
    return []


def check_timing(inputs: CheckInputs) -> list[Finding]:
    c = inputs.cluster.config
    if c is None:
        return []
    if c.loop_wait + 2 * c.retry_timeout > c.ttl:
        return [Finding("timing", "error", None, f"loop_wait + 2*retry_timeout = {c.loop_wait + 2 * c.retry_timeout}"
                        f" exceeds ttl {c.ttl}: a leader may lose its lock during a short etcd hiccup",
                        "raise ttl or lower loop_wait/retry_timeout (hactl edit-config)")]
    return []


def check_sync(inputs: CheckInputs) -> list[Finding]:
    mode = inputs.cluster.synchronous_mode
    if mode == "off":
        return [Finding("synchronous-mode", "info", None, "synchronous_mode is off: a failover may lose commits "
                        "acknowledged within the last maximum_lag_on_failover bytes",
                        "hactl edit-config -s synchronous_mode=on, if the latency is acceptable")]
    if not inputs.cluster.sync_standbys:
        strict = _on(_cfg(inputs).get("synchronous_mode_strict"))
        return [Finding("synchronous-mode", "error" if strict else "warning", None,
                        f"synchronous_mode is {mode} but no member is a synchronous standby"
                        + (": writes block" if strict else ": commits are not protected now"),
                        "get a replica streaming; check synchronous_node_count")]
    return []


def check_versions(inputs: CheckInputs) -> list[Finding]:
    pg, agent = {}, {}
    for name, status in sorted(inputs.statuses.items()):
        if isinstance(status, Mapping):
            if status.get("server_version"):
                pg.setdefault(status["server_version"], []).append(name)
            version = (status.get("patroni") or {}).get("version") if isinstance(status.get("patroni"), Mapping) \
                else None
            if version:
                agent.setdefault(version, []).append(name)
    out = []
    if len(pg) > 1:
        out.append(Finding("versions", "warning", None, "members run different PostgreSQL versions: " + "; ".join(
            f"{v}: {', '.join(n)}" for v, n in sorted(pg.items())), "finish the upgrade on every member"))
    if len(agent) > 1:
        out.append(Finding("versions", "warning", None, "members run different agent versions: " + "; ".join(
            f"{v}: {', '.join(n)}" for v, n in sorted(agent.items())), "finish the upgrade on every member"))
    return out


def check_pending_restart(inputs: CheckInputs) -> list[Finding]:
    out = []
    for m in inputs.cluster.members:
        status = _status(inputs, m.name)
        if m.pending_restart or (status is not None and status.get("pending_restart")):
            out.append(Finding("pending-restart", "warning", m.name, "a changed setting waits for a restart",
                               f"hactl restart {inputs.cluster.scope} {m.name}"))
    return out


def check_paused(inputs: CheckInputs) -> list[Finding]:
    if inputs.cluster.is_paused:
        return [Finding("paused", "warning", None, "the cluster is paused: no automatic failover",
                        f"hactl resume {inputs.cluster.scope}")]
    return []


def _epoch(text: str) -> float | None:
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    return ts.timestamp() if ts.tzinfo else None


def check_schedules(inputs: CheckInputs) -> list[Finding]:
    out = []
    fo = inputs.cluster.failover
    if fo is not None and fo.scheduled_at:
        at = _epoch(fo.scheduled_at)
        if at is not None and at < inputs.now - 60:
            out.append(Finding("scheduled-past", "warning", None, f"a switchover scheduled at {fo.scheduled_at} "
                               "is still pending", f"hactl flush {inputs.cluster.scope} switchover"))
    for m in inputs.cluster.members:
        sr = m.scheduled_restart
        at = _epoch(str(sr.get("schedule"))) if isinstance(sr, Mapping) and sr.get("schedule") else None
        if at is not None and at < inputs.now - 60:
            out.append(Finding("scheduled-past", "warning", m.name, f"a restart scheduled at {sr['schedule']} is "
                               "still pending", f"hactl flush {inputs.cluster.scope} {m.name} restart"))
    return out


CHECKS: tuple[Callable[[CheckInputs], list[Finding]], ...] = (
    check_etcd, check_leader, check_reachable, check_replication, check_candidates, check_rewind, check_slots,
    check_timing, check_sync, check_versions, check_pending_restart, check_paused, check_schedules,
)


def run(inputs: CheckInputs) -> list[Finding]:
    found: list[Finding] = []
    for check in CHECKS:
        found += check(inputs)
    return found
