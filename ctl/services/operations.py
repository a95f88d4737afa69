"""Switchover and failover: pure plans (validation, candidate choice) and an execution that verifies the outcome.

Patroni's patronictl posts the request and prints whatever came back (exit 0 even on failure) and shows a table read
right after the call, usually with the old roles. Here the result is checked in etcd and on the new leader:
the new leader holds the lock, its member key says primary/running and `GET /primary` answers 200 on it, and the old
leader is a replica or stopped. Prompts and --force stay in the CLI; nothing here prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

from ctl.dcs import codec, keys
from ctl.errors import CasFailed, CtlError, NotFound, Refused, RestError, UsageError
from ctl.model import Cluster, Member
from ctl.services.results import Dcs, OperationResult, Progress, fresh, quiet, roles_of

_LEADER_ROLES = ("primary", "master", "standby_leader")
_POLL = 0.25  # seconds between DCS reads while verifying
_CAS_ATTEMPTS = 3
_STREAMING_GRACE = 1.5  # once the new leader is verified, how long to wait to report the old one streaming

# ----------------------------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class SwitchoverPlan:
    action: str  # switchover | failover
    scope: str
    leader: str | None  # the current leader (the one to demote), None for a leaderless failover
    candidate: str | None  # None: the leader's agent picks
    scheduled_at: datetime | None = None
    chosen_because: str | None = None  # set when hactl chose the candidate

    def requested(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action, "cluster": self.scope, "leader": self.leader,
                               "candidate": self.candidate,
                               "scheduled_at": self.scheduled_at.isoformat() if self.scheduled_at else None}
        if self.chosen_because:
            out["candidate_chosen_by_hactl"] = self.chosen_because
        return out


def parse_schedule(text: str | None, now: datetime | None = None) -> datetime | None:
    """`now`/empty -> None (immediate); an ISO 8601 time -> aware datetime (a naive time is local time, as Patroni).

    Raises:
        UsageError: with Patroni's message, when the text is not a time, or the time is in the past.
    """
    if text is None or text.strip().lower() in ("", "now"):
        return None
    value = text.strip()
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise UsageError(f"Unable to parse scheduled timestamp ({text}). It should be in an unambiguous format "
                         "(e.g. ISO 8601)") from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time zone, as dateutil + tzlocal in patronictl
    reference = now or datetime.now().astimezone()
    if when < reference:
        raise UsageError(f"the scheduled time {when.isoformat()} is in the past")
    return when


def switchover_candidates(cluster: Cluster) -> list[str]:
    """Patronictl's candidate list: members other than the leader and not tagged nofailover, sorted."""
    leader = cluster.leader.name if cluster.leader else None
    return sorted(m.name for m in cluster.members if m.name != leader and not m.nofailover)


def plan_switchover(cluster: Cluster, leader: str | None, candidate: str | None,
                    scheduled_at: datetime | None = None) -> SwitchoverPlan:
    """Validate a switchover against a snapshot, with patronictl's checks and messages.

    Raises:
        Refused: no leader, wrong leader, unknown/nofailover candidate, the candidate leads already, no candidates,
            a schedule while paused.
    """
    if cluster.leader is None:
        raise Refused(f"This cluster has no leader (cluster {cluster.scope}); use failover --candidate NAME")
    current = cluster.leader.name
    if leader and leader != current:
        raise Refused(f"Member {leader} is not the leader of cluster {cluster.scope} (the leader is {current})")
    candidates = switchover_candidates(cluster)
    if not candidates:
        raise Refused(f"No candidates found to switchover to in cluster {cluster.scope}")
    if candidate:
        if candidate == current:
            raise Refused(f"Member {candidate} is already the leader of cluster {cluster.scope}")
        if candidate not in candidates:
            raise Refused(f"Member {candidate} does not exist in cluster {cluster.scope} or is tagged as nofailover")
        if cluster.synchronous_mode == "on" and candidate not in cluster.sync_standbys:
            raise Refused(f"Member {candidate} is not a synchronous standby; in synchronous mode a switchover can go "
                          f"only to one of: {', '.join(sorted(cluster.sync_standbys)) or 'none'}")
        if cluster.synchronous_mode == "quorum" and candidate not in cluster.sync_standbys:
            raise Refused(f"Member {candidate} is not a quorum standby; in quorum mode a switchover can go "
                          f"only to one of: {', '.join(sorted(cluster.sync_standbys)) or 'none'}")
    if scheduled_at is not None and cluster.is_paused:
        raise Refused("Can't schedule switchover in the paused state")
    if cluster.is_paused and not candidate:
        raise Refused("Switchover is possible only to a specific candidate in a paused state: pass --candidate")
    return SwitchoverPlan("switchover", cluster.scope, current, candidate or None, scheduled_at)


def plan_failover(cluster: Cluster, candidate: str | None) -> SwitchoverPlan:
    """Validate a failover: a candidate is required; with a leader it is a switchover to that candidate.

    Raises:
        UsageError: no candidate.
        Refused: unknown or nofailover candidate, or it is the leader already.
    """
    if not candidate:
        raise UsageError("Failover could be performed only to a specific candidate: pass --candidate NAME")
    leader = cluster.leader.name if cluster.leader else None
    if candidate == leader:
        raise Refused(f"Member {candidate} is already the leader of cluster {cluster.scope}")
    member = cluster.member(candidate)
    if member is None or member.nofailover:
        raise Refused(f"Member {candidate} does not exist in cluster {cluster.scope} or is tagged as nofailover")
    return SwitchoverPlan("failover", cluster.scope, leader, candidate)


def is_async_candidate(cluster: Cluster, candidate: str) -> bool:
    """Failover in synchronous mode to a member outside /sync may lose committed transactions: confirm first."""
    return cluster.synchronous_mode != "off" and candidate not in cluster.sync_standbys


@dataclass(frozen=True)
class CandidateChoice:
    name: str
    reason: str
    rejected: Mapping[str, str]


def choose_candidate(cluster: Cluster, statuses: Mapping[str, Any]) -> CandidateChoice:
    """The best member to switch over to, by the rules the agent applies (ctl/ha/eligibility.py): eligible, then
    least lag, then failover_priority, then name. `statuses`: {member: GET /patroni JSON, or the RestError}.

    Raises:
        Refused: nobody is eligible; the message gives each member's reasons, as `hactl plan` prints them.
    """
    from ctl.services import plan as psvc

    report = psvc.evaluate(cluster, "switchover", None, statuses)
    psvc.refuse_unless_eligible(report)
    assert report.chosen is not None
    reason = report.why
    if report.refusals:
        reason += "; not eligible: " + report.refusal_text()
    return CandidateChoice(report.chosen, reason, report.refusals)


# ----------------------------------------------------------------------------------------------- execution



def _classify(status: int, text: str) -> str:
    """Patroni's answers to POST /switchover|/failover -> an outcome."""
    if status == 202:
        return "scheduled"
    if status == 200:
        return "succeeded"
    if status == 503 and "status unknown" in text.lower():
        return "unknown"
    if status in (400, 401, 403, 404, 409, 412, 422):
        return "refused"
    return "failed"


def write_failover_key(dcs: Dcs, namespace: str, plan: SwitchoverPlan, cluster: Cluster) -> None:
    """Patronictl's DCS fallback, with compare-and-set on the revision read, retried a few times on a lost race.

    Raises:
        CasFailed: lost the race every time.
        DcsError, ResultUnknown: from the gateway.
    """
    leader = plan.leader if plan.action == "switchover" else None
    value = codec.encode_failover(leader, plan.candidate, plan.scheduled_at.isoformat() if plan.scheduled_at else None)
    key = keys.key(namespace, plan.scope, keys.FAILOVER)
    current = cluster
    for attempt in range(_CAS_ATTEMPTS):
        try:
            if current.failover is not None:
                dcs.put(key, value, mod_revision=current.failover.mod_revision)
            else:
                dcs.put(key, value, create=True)
            return
        except CasFailed:
            if attempt == _CAS_ATTEMPTS - 1:
                raise CasFailed(f"the failover key changed {_CAS_ATTEMPTS} times while writing it; not written")
            current = dcs.get_cluster(namespace, plan.scope)


def execute_switchover(plan: SwitchoverPlan, cluster: Cluster, dcs: Dcs, rest: Any, namespace: str, *,
                       wait: bool = True, timeout: float = 60.0, progress: Progress = quiet,
                       clock: Callable[[], float] = time.monotonic,
                       sleep: Callable[[float], None] = time.sleep) -> OperationResult:
    """POST the request to the leader (a leaderless failover: to the candidate), fall back to the failover key
    when that REST API cannot be reached, then verify the outcome in etcd and on the new leader."""
    result = OperationResult(plan.action, plan.requested())
    start = clock()
    deadline = start + timeout
    target_name = plan.leader or plan.candidate
    target = cluster.member(target_name) if target_name else None
    answer = None
    via_dcs = False
    try:
        if target is None:
            raise _unreachable(f"member {target_name} has no member key")
        if plan.action == "switchover":
            answer = rest.post_switchover(target, plan.leader, plan.candidate,
                                          plan.scheduled_at.isoformat() if plan.scheduled_at else None,
                                          timeout=max(timeout, 1.0))
            if answer.status == 501:  # an old Patroni without /switchover
                answer = rest.post_failover(target, plan.candidate or "", leader=plan.leader, timeout=max(timeout, 1.0))
        else:
            answer = rest.post_failover(target, plan.candidate or "", timeout=max(timeout, 1.0))
    except RestError as exc:
        from ctl.restclient import RestUnreachable

        if not isinstance(exc, RestUnreachable):
            # The request went out and no answer came back: it may be under way. Only etcd can tell now.
            result.notes.append(f"no answer from {target_name}'s REST API ({exc}); checking the outcome in etcd")
            progress(result.notes[-1])
        else:
            result.notes.append(f"Could not {plan.action} using the REST API of {target_name} ({exc}); "
                                f"falling back to DCS: writing the failover key with compare-and-set")
            progress(result.notes[-1])
            write_failover_key(dcs, namespace, plan, cluster)
            via_dcs = True
    result.timings["request"] = clock() - start
    if answer is not None:
        result.message = answer.text
        outcome = _classify(answer.status, answer.text)
        result.requested["http_status"] = answer.status
        if outcome in ("refused", "failed"):
            result.outcome = outcome
            result.message = f"{plan.action.title()} {outcome} by {target_name} (HTTP {answer.status}): {answer.text}"
            return _finish(result, dcs, namespace, plan.scope, start, clock)
        if outcome == "scheduled" or plan.scheduled_at is not None:
            return _verify_scheduled(result, plan, dcs, namespace, start, clock)
        if not wait:
            result.outcome = "accepted" if outcome == "succeeded" else "unknown"
            result.message = f"{answer.text} (not verified: --no-wait)"
            result.cluster = fresh(dcs, namespace, plan.scope)
            result.final_roles = roles_of(result.cluster)
            return result
    elif plan.scheduled_at is not None:
        return _verify_scheduled(result, plan, dcs, namespace, start, clock)
    elif not wait:
        result.outcome = "accepted" if via_dcs else "unknown"
        result.message = "failover key written (not verified: --no-wait)" if via_dcs else "no answer (--no-wait)"
        result.cluster = fresh(dcs, namespace, plan.scope)
        result.final_roles = roles_of(result.cluster)
        return result
    return verify_leader_change(result, plan, dcs, rest, namespace, start=start, deadline=deadline,
                                via_dcs=via_dcs, clock=clock, sleep=sleep)


def _unreachable(message: str) -> RestError:
    from ctl.restclient import RestUnreachable

    return RestUnreachable(message)


def _verify_scheduled(result: OperationResult, plan: SwitchoverPlan, dcs: Dcs, namespace: str, start: float,
                      clock: Callable[[], float]) -> OperationResult:
    cluster = fresh(dcs, namespace, plan.scope)
    result.cluster = cluster
    result.final_roles = roles_of(cluster)
    result.timings["total"] = clock() - start
    fo = cluster.failover if cluster else None
    if fo is not None and fo.scheduled_at and (not plan.candidate or fo.member == plan.candidate):
        result.outcome = "scheduled"
        result.message = f"Switchover scheduled at {fo.scheduled_at}" + (f" to {fo.member}" if fo.member else "")
    else:
        result.outcome = "unknown" if cluster is None else "failed"
        result.message = "the failover key does not hold the scheduled switchover"
    return result


def verify_leader_change(result: OperationResult, plan: SwitchoverPlan, dcs: Dcs, rest: Any, namespace: str, *,
                         start: float, deadline: float, via_dcs: bool = False,
                         clock: Callable[[], float] = time.monotonic,
                         sleep: Callable[[float], None] = time.sleep) -> OperationResult:
    """Poll until the candidate (or anyone but the old leader) leads, runs as primary, answers `GET /primary` 200,
    and the old leader is a replica or stopped. Failure is reported as soon as it is certain."""
    old = plan.leader
    seen = "no read of etcd yet"
    last_error: str | None = None
    grace_until: float | None = None
    while True:
        try:
            cluster = dcs.get_cluster(namespace, plan.scope)
            last_error = None
        except CtlError as exc:
            cluster, last_error = None, str(exc)
        now = clock()
        if cluster is not None:
            leader = cluster.leader.name if cluster.leader else None
            fo = cluster.failover
            pending = fo is not None and not fo.is_empty
            if leader and leader != old:
                m = cluster.member(leader)
                if plan.candidate and leader != plan.candidate:
                    result.outcome = "failed"
                    result.message = f'{leader} took over instead of the requested candidate "{plan.candidate}"'
                    return _finish(result, dcs, namespace, plan.scope, start, clock)
                if m is None or m.role not in _LEADER_ROLES or m.state != "running":
                    seen = f"{leader} holds the leader lock but is not yet a running primary"
                else:
                    result.timings.setdefault("new_leader_locked", now - start)
                    # a standby cluster's leader is a standby leader: it answers /standby-leader, not /primary
                    check = "/standby-leader" if cluster.config and cluster.config.is_standby_cluster else "/primary"
                    try:
                        writable = rest.get_health(m, check, timeout=2.0) == 200
                    except RestError as exc:
                        writable, seen = False, f"{leader} holds the lock; GET {check} failed: {exc}"
                    if writable:
                        result.timings.setdefault("new_leader_writable", clock() - start)
                        om = cluster.member(old) if old else None
                        if om is None or om.state != "running" or om.role not in _LEADER_ROLES:
                            following = om is None or om.state != "running" or om.replication_state == "streaming"
                            if not following:
                                # a demoted leader reconnects within a moment: wait briefly to report it streaming
                                grace_until = grace_until or min(now + _STREAMING_GRACE, deadline)
                                if now < grace_until:
                                    seen = f"{leader} is the new primary; {old} is a replica, not yet streaming"
                                    sleep(_POLL)
                                    continue
                            else:
                                result.timings.setdefault("old_leader_following", clock() - start)
                            result.outcome = "succeeded"
                            verb = "switched" if plan.action == "switchover" else "failed"
                            result.message = f'Successfully {verb} over to "{leader}"'
                            if old:
                                result.message += f" ({old}: " + (
                                    "gone from etcd" if om is None else
                                    (om.replication_state or om.state or "unknown") + ")")
                            return _finish(result, dcs, namespace, plan.scope, start, clock)
                        seen = f"{leader} is the new primary; {old} still reports itself as a running primary"
                    elif "failed: " not in seen:
                        seen = f"{leader} holds the lock but GET {check} does not answer 200 yet"
            elif leader == old and not pending and (via_dcs or result.requested.get("http_status") == 200
                                                    or now - start > 2.0):
                # The key was cleared and the old leader still leads: the HA loop refused the request.
                result.outcome = "failed"
                result.message = (f"{plan.action.title()} failed: the failover key was cleared and {old} still "
                                  f"holds the leader lock (an agent refused the request: the log of {old} or of "
                                  f"{plan.candidate or 'the candidates'} says why)")
                return _finish(result, dcs, namespace, plan.scope, start, clock)
            elif leader is None:
                seen = "no member holds the leader lock yet" + (f" (waiting for {plan.candidate})"
                                                                 if plan.candidate else "")
            else:
                seen = f"{leader} still holds the leader lock" + (" (failover key pending)" if pending else "")
        if now >= deadline:
            break
        sleep(min(_POLL, max(deadline - now, 0.01)))
    if last_error is not None:
        result.outcome = "unknown"
        result.message = f"{plan.action.title()} result unknown: cannot read etcd ({last_error})"
    else:
        result.outcome = "timeout"
        result.message = f"{plan.action.title()} not verified within {deadline - start:.0f}s: {seen}"
    return _finish(result, dcs, namespace, plan.scope, start, clock)


def _finish(result: OperationResult, dcs: Dcs, namespace: str, scope: str, start: float,
            clock: Callable[[], float]) -> OperationResult:
    result.timings["total"] = clock() - start
    result.cluster = fresh(dcs, namespace, scope)
    result.final_roles = roles_of(result.cluster)
    return result


def member_statuses(cluster: Cluster, rest: Any, names: Sequence[str]) -> dict[str, Any]:
    """GET /patroni of the named members at once: {name: JSON or RestError}."""
    members = [m for m in cluster.members if m.name in names]
    return {m.name: r for m, r in zip(members, rest.map(rest.get_patroni, members))}


def require_member(cluster: Cluster, name: str) -> Member:
    """Raises: NotFound."""
    m = cluster.member(name)
    if m is None:
        raise NotFound(f"{name} is not a member of cluster {cluster.scope}")
    return m
