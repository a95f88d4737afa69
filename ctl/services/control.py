"""Cluster-wide control: pause/resume (maintenance mode), flush of scheduled restarts and switchovers, remove.

A 200 from an agent is checked against etcd where it can be: the pause flag in the config key (and, with --wait,
in every member key), the failover key after a flush, an empty prefix after remove.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from ctl.dcs import codec, keys
from ctl.errors import CasFailed, Refused, RestError
from ctl.model import Cluster, Member
from ctl.services.maintenance import member_line, summarize
from ctl.services.results import Dcs, MemberOutcome, OperationResult, Progress, fresh, quiet, roles_of


# ----------------------------------------------------------------------------------------------- pause/resume


def _leader_first(cluster: Cluster) -> list[Member]:
    leader = cluster.leader_member
    rest = [m for m in cluster.members if m.api_url and m is not leader]
    return ([leader] if leader is not None and leader.api_url else []) + rest


def execute_pause(cluster: Cluster, rest: Any, dcs: Dcs, namespace: str, *, pause: bool, wait: bool,
                  timeout: float, progress: Progress = quiet, clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> OperationResult:
    """PATCH /config {"pause": true|null} on the leader, else another member; then check the config key in etcd
    and, with `wait`, every member key.

    Raises:
        Refused: already in the requested state.
    """
    word = "pause" if pause else "resume"
    if cluster.is_paused == pause:
        raise Refused("Cluster is already paused" if pause else "Cluster is not paused")
    result = OperationResult(word, {"cluster": cluster.scope, "wait": wait})
    start = clock()
    answer = None
    for m in _leader_first(cluster):
        try:
            answer = rest.patch_config(m, {"pause": True if pause else None})
        except RestError as exc:
            result.notes.append(f"Member {m.name} is not accessible: {exc}")
            progress(f"Warning: {result.notes[-1]}")
            continue
        result.requested["via"] = m.name
        break
    if answer is None:
        result.outcome, result.message = "unreachable", "Can not find accessible cluster member"
        return result
    if answer.status != 200:
        result.outcome = "refused" if answer.status in (400, 401, 403, 409, 412) else "failed"
        result.message = f"{word} cluster management: HTTP {answer.status}, ({answer.text})"
        return result
    current = fresh(dcs, namespace, cluster.scope)
    if current is None or current.is_paused != pause:
        result.outcome = "unknown" if current is None else "failed"
        result.message = f"the agent answered 200 but the config key in etcd does not say pause: {pause}"
        return result
    result.timings["config"] = clock() - start
    if wait:
        progress(f"'{word}' request sent, waiting until it is recognized by all nodes")
        deadline = clock() + timeout
        while True:
            current = fresh(dcs, namespace, cluster.scope)
            lagging = [m.name for m in (current.members if current else ()) if m.pause != pause]
            if current is not None and not lagging:
                break
            if clock() >= deadline:
                result.outcome = "timeout"
                result.message = (f"{len(lagging)} members didn't recognize the {word} state after {timeout:g} "
                                  f"seconds: {', '.join(lagging)}")
                result.timings["total"] = clock() - start
                return result
            sleep(0.25)
        result.timings["recognized"] = clock() - start
    result.outcome = "succeeded"
    result.message = f"cluster management is {'paused' if pause else 'resumed'}"
    result.timings["total"] = clock() - start
    result.cluster = current
    result.final_roles = roles_of(current)
    return result


# ----------------------------------------------------------------------------------------------- flush


def execute_flush_restart(cluster: Cluster, names: Sequence[str], rest: Any, *,
                          progress: Progress = quiet) -> OperationResult:
    """DELETE /restart on each member that has a scheduled restart."""
    result = OperationResult("flush", {"cluster": cluster.scope, "target": "restart", "members": list(names)})
    for name in names:
        m = cluster.member(name)
        assert m is not None
        if not m.scheduled_restart:
            out = MemberOutcome(name, "nothing to do", f"No scheduled restart for member {name}")
        else:
            try:
                answer = rest.delete_restart(m)
            except RestError as exc:
                out = MemberOutcome(name, "unreachable", str(exc))
            else:
                if answer.status == 200:
                    out = MemberOutcome(name, "succeeded", f"flush scheduled restart for member {name}", 200)
                elif answer.status == 404:
                    out = MemberOutcome(name, "nothing to do", f"No scheduled restart for member {name} "
                                                               f"(it ran or was flushed meanwhile)", 404)
                else:
                    out = MemberOutcome(name, "failed", f"{answer.text} (HTTP {answer.status})", answer.status)
        result.members.append(out)
        progress(member_line("flush scheduled restart", out))
    return summarize(result, "flush restart")


def execute_flush_switchover(cluster: Cluster, rest: Any, dcs: Dcs, namespace: str, *,
                             progress: Progress = quiet) -> OperationResult:
    """DELETE /switchover on the leader, then the others; when none answers, clear the key with compare-and-set."""
    result = OperationResult("flush", {"cluster": cluster.scope, "target": "switchover"})
    fo = cluster.failover
    if fo is None or not fo.scheduled_at:
        result.outcome, result.message = "nothing to do", "No pending scheduled switchover"
        return result
    for m in _leader_first(cluster):
        try:
            answer = rest.delete_switchover(m)
        except RestError as exc:
            result.notes.append(f"{m.name}: {exc}")
            continue
        if answer.status == 200:
            result.outcome, result.message = "succeeded", "Success: scheduled switchover deleted"
            break
        if answer.status == 404:
            result.outcome = "nothing to do"
            result.message = "No switchover is scheduled any more (it ran or was flushed meanwhile)"
            break
        result.notes.append(f"{m.name}: HTTP {answer.status} {answer.text}")
    else:
        progress(f"Could not find any accessible member of cluster {cluster.scope}: clearing the failover key "
                 f"with compare-and-set")
        try:
            dcs.put(keys.key(namespace, cluster.scope, keys.FAILOVER), codec.encode_failover(None, None),
                    mod_revision=fo.mod_revision)
        except CasFailed:
            result.outcome = "failed"
            result.message = "the failover key changed since it was read; not cleared (run flush again)"
            return result
        result.outcome, result.message = "succeeded", "scheduled switchover deleted from etcd"
    if result.outcome == "succeeded":
        current = fresh(dcs, namespace, cluster.scope)
        if current is not None and current.failover is not None and current.failover.scheduled_at:
            result.outcome, result.message = "failed", "the failover key still holds a scheduled switchover"
        result.cluster = current
    return result


# ----------------------------------------------------------------------------------------------- remove


def execute_remove(cluster: Cluster, dcs: Any, namespace: str,
                   sleep: Callable[[float], None] = time.sleep) -> OperationResult:
    """Delete every key of the cluster, then check that nothing is left. Member keys on a lease mean running agents,
    which write their keys again within a loop: then the check waits one loop (at most 5 s) before it looks.

    Raises:
        DcsError, DcsUnavailable: from the gateway.
    """
    result = OperationResult("remove", {"cluster": cluster.scope})
    alive = [m.name for m in cluster.members if m.lease]
    deleted = dcs.delete_prefix(keys.cluster_prefix(namespace, cluster.scope))
    if alive:
        sleep(min((cluster.config.loop_wait if cluster.config else 10) + 1.0, 5.0))
    left = fresh(dcs, namespace, cluster.scope)
    if left is not None and left.is_empty:
        result.outcome, result.message = "succeeded", f"removed cluster {cluster.scope}: {deleted} keys deleted"
    elif left is None:
        result.outcome, result.message = "unknown", f"{deleted} keys deleted; cannot read etcd to check"
    else:
        back = sorted({*(m.name for m in left.members), *(["leader"] if left.leader else [])})
        result.outcome = "failed"
        result.message = (f"{deleted} keys deleted, but running agents wrote keys again ({', '.join(back)}): "
                          f"stop the agents first")
    return result


def check_leader_name(cluster: Cluster, given: str | None) -> None:
    """Raises: Refused when the cluster has a leader and `given` is not its name."""
    if cluster.leader is not None and given != cluster.leader.name:
        raise Refused("This cluster currently is healthy: the leader name given does not match")

