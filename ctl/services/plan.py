"""`hactl plan`: who could take over the leader role now, and every reason why the others could not.

The rules are ctl/ha/eligibility.py, the same functions the agent's HA loop runs when it steps down for a switchover,
and the same ones `switchover`/`failover` run before they send a request. This module only gathers the inputs
(the etcd snapshot plus each member's live `GET /patroni`) and shapes the answer. No side effects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ctl.errors import Refused
from ctl.ha import eligibility as el
from ctl.model import Cluster

_LEADER_ROLES = ("primary", "master", "standby_leader")


@dataclass(frozen=True)
class MemberVerdict:
    member: str
    role: str
    eligible: bool
    reasons: tuple[str, ...]
    lag_bytes: int | None
    timeline: int | None

    def to_json(self) -> dict[str, Any]:
        return {"member": self.member, "role": self.role, "eligible": self.eligible, "reasons": list(self.reasons),
                "lag_bytes": self.lag_bytes, "timeline": self.timeline}


@dataclass(frozen=True)
class PlanReport:
    cluster: str
    action: str
    leader: str | None
    chosen: str | None
    why: str
    members: tuple[MemberVerdict, ...]
    candidate: str | None = None

    @property
    def refusals(self) -> dict[str, str]:
        """{member: reasons joined by '; '} for every member that is not eligible, the leader left out."""
        return {v.member: "; ".join(v.reasons) for v in self.members
                if not v.eligible and v.reasons != ("is the current leader",)}

    def refusal_text(self) -> str:
        """The per-member reasons as one line: `node2: lags 16.2 MB behind (...); node3: is tagged nofailover`."""
        return "; ".join(f"{n}: {r}" for n, r in self.refusals.items()) or "the cluster has no other members"

    def to_json(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "action": self.action, "leader": self.leader, "chosen": self.chosen,
                "why": self.why, "members": [v.to_json() for v in self.members]}


def _status(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def situation(cluster: Cluster, action: str, candidate: str | None,
              statuses: Mapping[str, Any]) -> el.Situation:
    """The cluster-wide facts, as the leader's agent would see them when it acts on the request."""
    leader = cluster.leader.name if cluster.leader else None
    lm = cluster.leader_member
    healthy = lm is not None and lm.role in _LEADER_ROLES and lm.state == "running"
    leader_status = _status(statuses.get(leader)) if leader else None
    leader_lsn: int | None = None
    leader_tl = lm.timeline if lm is not None else None
    if healthy:
        live = el.candidate_from_status(leader or "", lm, leader_status) if leader_status else None
        leader_lsn = live.wal_lsn if live is not None and live.wal_lsn is not None else cluster.optime
        if live is not None and live.timeline is not None:
            leader_tl = live.timeline
    fo = cluster.failover
    scheduled = fo.scheduled_at if fo is not None and not fo.is_empty and fo.scheduled_at else None
    max_lag = cluster.config.maximum_lag_on_failover if cluster.config else 1048576
    return el.Situation(action, leader, leader_lsn, int(max_lag), leader_tl, cluster.synchronous_mode,
                        cluster.sync_standbys, cluster.is_paused, candidate, scheduled,
                        quorum=(cluster.sync.quorum or 0) if cluster.sync is not None else 0)


def evaluate(cluster: Cluster, action: str, candidate: str | None, statuses: Mapping[str, Any]) -> PlanReport:
    """Judge every member. `statuses`: {member: GET /patroni JSON, or the error it raised}."""
    s = situation(cluster, action, candidate, statuses)
    cands = [el.candidate_from_status(m.name, m, _status(statuses.get(m.name))) for m in cluster.members]
    choice = el.choose(s, cands)
    verdicts = []
    for v in choice.verdicts:
        c = v.candidate
        lag = None
        if s.leader_lsn is not None and c.wal_lsn is not None:
            lag = max(s.leader_lsn - c.wal_lsn, 0)
        m = cluster.member(v.name)
        role = str(cluster.cluster_role(m)) if m is not None else "unknown"
        verdicts.append(MemberVerdict(v.name, role, v.eligible, v.reasons, lag,
                                      c.timeline if c.timeline is not None else (m.timeline if m else None)))
    return PlanReport(cluster.scope, action, s.leader, choice.chosen, choice.why, tuple(verdicts), candidate)


def fetch_statuses(cluster: Cluster, rest: Any) -> dict[str, Any]:
    """GET /patroni of every member at once: {name: JSON or RestError}."""
    members = list(cluster.members)
    return {m.name: r for m, r in zip(members, rest.map(rest.get_patroni, members))}


def make_plan(cluster: Cluster, rest: Any, action: str, candidate: str | None) -> PlanReport:
    return evaluate(cluster, action, candidate, fetch_statuses(cluster, rest))


def refuse_unless_eligible(report: PlanReport) -> None:
    """Raises: Refused with the same per-member reasons `hactl plan` prints, when nobody (or not the named
    candidate) may take over."""
    if report.chosen is not None:
        return
    if report.candidate:
        reasons = report.refusals.get(report.candidate) or report.why
        raise Refused(f"{report.action} refused: candidate {report.candidate} is not eligible in cluster "
                      f"{report.cluster}: {report.candidate}: {reasons}")
    raise Refused(f"no eligible candidate for a {report.action} in cluster {report.cluster}: "
                  f"{report.refusal_text()}")
