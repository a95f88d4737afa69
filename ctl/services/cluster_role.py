"""promote-cluster / demote-cluster (Patroni 4.1): turn a standby cluster into a primary one and back.

Both are a `PATCH /config` of the `standby_cluster` section on the leader's REST API, then a wait until etcd shows
the leader in the new role: `primary` (promote) or `standby_leader` (demote), state `running`, and the former
leader running again. Patroni waits with no limit; hactl stops after `timeout` seconds with exit code TIMEOUT.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from ctl.errors import Refused, RestError, UsageError
from ctl.model import Cluster
from ctl.services.results import Dcs, OperationResult, Progress, fresh, quiet, roles_of


@dataclass(frozen=True)
class ClusterRolePlan:
    action: str  # promote | demote
    patch: dict[str, Any]  # the PATCH /config body
    leader: str
    target_role: str  # primary | standby_leader


def plan_demote(cluster: Cluster, *, host: str | None, port: int | None, restore_command: str | None,
                primary_slot_name: str | None) -> ClusterRolePlan:
    """Raises: UsageError (no host/port/restore_command), Refused (no leader, already a standby cluster)."""
    if not (host or port or restore_command):
        raise UsageError("At least --host, --port or --restore-command should be specified")
    section: dict[str, Any] = {}
    for key, value in (("host", host), ("port", port), ("primary_slot_name", primary_slot_name),
                       ("restore_command", restore_command)):
        if value:
            section[key] = value
    return ClusterRolePlan("demote", {"standby_cluster": section}, _leader(cluster, "demotion", "standby_leader"),
                           "standby_leader")


def plan_promote(cluster: Cluster) -> ClusterRolePlan:
    """Raises: Refused (no leader, already a primary cluster)."""
    return ClusterRolePlan("promote", {"standby_cluster": None}, _leader(cluster, "promotion", "primary"),
                           "primary")


def _leader(cluster: Cluster, what: str, target_role: str) -> str:
    lm = cluster.leader_member
    if cluster.leader is None or lm is None:
        raise Refused(f"Cluster has no leader, {what} is not possible")
    role = "primary" if lm.role in ("primary", "master") else lm.role
    if role == target_role:
        raise Refused("Cluster is already in the required state")
    return lm.name


def _now() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def execute(plan: ClusterRolePlan, cluster: Cluster, rest: Any, dcs: Dcs, namespace: str, *, timeout: float,
            progress: Progress = quiet, clock: Callable[[], float] = time.monotonic,
            sleep: Callable[[float], None] = time.sleep) -> OperationResult:
    """PATCH /config on the leader, then poll etcd every second until the leader has the new role, or timeout."""
    word = plan.action
    result = OperationResult(f"{word}-cluster", {"cluster": cluster.scope, "leader": plan.leader,
                                                 "patch": plan.patch})
    start = clock()
    member = cluster.member(plan.leader)
    assert member is not None
    try:
        answer = rest.patch_config(member, plan.patch)
    except RestError as exc:
        result.outcome, result.message = "unreachable", f"Failed to {word} {cluster.scope} cluster: {exc}"
        return result
    if answer.status != 200:
        result.outcome = "refused" if answer.status in (400, 401, 403, 409, 412) else "failed"
        result.message = (f"Failed to {word} {cluster.scope} cluster: /config PATCH status code={answer.status}, "
                          f"({answer.text})")
        return result
    result.timings["config"] = clock() - start
    deadline = start + timeout
    last = ""
    while True:
        current = fresh(dcs, namespace, cluster.scope)
        done, line = _check(current, plan)
        if done:
            break
        if line != last:
            progress(f"{_now()} {line}")
            last = line
        if clock() >= deadline:
            result.outcome = "timeout" if current is not None else "unknown"
            result.message = f"not {word}d after {timeout:g} seconds; last seen: {line}"
            result.timings["total"] = clock() - start
            result.cluster = current
            return result
        sleep(1.0)
    progress(f"{_now()} cluster is successfully {word}d")
    result.outcome = "succeeded"
    result.message = f"cluster {cluster.scope} is successfully {word}d"
    result.timings["total"] = clock() - start
    result.cluster = current
    result.final_roles = roles_of(current)
    return result


def _check(current: Cluster | None, plan: ClusterRolePlan) -> tuple[bool, str]:
    """Patroni's condition: a leader in the target role and running, and the former leader running."""
    if current is None:
        return False, "etcd could not be read"
    lm = current.leader_member
    role = (lm.role if lm else None) or "None"
    role = "primary" if role == "master" else role
    state = (lm.state if lm else None) or "None"
    old = current.member(plan.leader)
    line = (f"cluster is unlocked: {current.leader is None}, leader role: {role}, leader state: {state}")
    if old is not None and (lm is None or old.name != lm.name):
        line += f", previous leader state: '{old.state}'"
    done = (lm is not None and role == plan.target_role and state == "running"
            and old is not None and old.state == "running")
    return done, line
