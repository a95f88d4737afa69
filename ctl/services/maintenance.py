"""Per-member operations: restart, reload, reinit (and the role filter they share with flush).

Each returns an OperationResult with one MemberOutcome per member; the command exits 0 only when every member did
what was asked. Where an agent's answer alone does not prove the change (a restart, a reinit, pause), the result is
checked: a new postmaster start time, the member running again, the pause flag in etcd.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Sequence

from ctl.errors import NotFound, Refused, RestError, UsageError
from ctl.model import Cluster, Member, MemberRole
from ctl.services.results import Dcs, MemberOutcome, OperationResult, Progress, fresh, quiet, roles_of

ROLES = ("leader", "primary", "standby-leader", "replica", "standby", "any")
_CONDITIONS = frozenset({"postgres_version", "restart_pending", "role"})  # POST /restart filters


def _is_leader(cluster: Cluster, m: Member) -> bool:
    return cluster.leader is not None and cluster.leader.name == m.name


def _role_matches(cluster: Cluster, m: Member, role: str) -> bool:
    if role == "any":
        return True
    leader = _is_leader(cluster, m)
    if role == "leader":
        return leader
    if role == "primary":
        return leader and m.role in (MemberRole.PRIMARY, MemberRole.MASTER) and not (
            cluster.config is not None and cluster.config.is_standby_cluster)
    if role == "standby-leader":
        return leader and (m.role == MemberRole.STANDBY_LEADER or bool(cluster.config and
                                                                       cluster.config.is_standby_cluster))
    return not leader  # replica / standby


def select_members(cluster: Cluster, names: Sequence[str], role: str = "any") -> list[Member]:
    """Members with the role, limited to `names` when given; patronictl's errors.

    Raises:
        UsageError: unknown role.
        NotFound: an empty cluster, a name that is not a member, nobody with the role among the names.
    """
    role = (role or "any").lower()
    if role not in ROLES:
        raise UsageError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    if not cluster.members:
        raise NotFound(f"{cluster.scope} cluster doesn't have any members")
    for name in names:
        if cluster.member(name) is None:
            raise NotFound(f"{name} is not a member of cluster {cluster.scope}")
    picked = [m for m in cluster.members if _role_matches(cluster, m, role) and (not names or m.name in names)]
    if not picked:
        raise NotFound(f"No {role} among provided members" if names else f"No {role} in cluster {cluster.scope}")
    return picked


def summarize(result: OperationResult, verb: str) -> OperationResult:
    """The overall outcome from the members': the worst one wins (failed > unreachable > refused > timeout)."""
    bad = [m for m in result.members if m.outcome not in ("succeeded", "scheduled", "accepted", "nothing to do")]
    if not result.members:
        result.outcome, result.message = "nothing to do", f"no member to {verb}"
        return result
    if not bad:
        outcomes = {m.outcome for m in result.members}
        result.outcome = outcomes.pop() if len(outcomes) == 1 else "succeeded"
        result.message = f"{verb}: {len(result.members)} of {len(result.members)} members ok"
        return result
    for outcome in ("failed", "unknown", "unreachable", "timeout", "refused"):
        if any(m.outcome == outcome for m in bad):
            result.outcome = outcome
            break
    result.message = f"{verb} did not succeed on {len(bad)} of {len(result.members)} members: " + "; ".join(
        f"{m.member}: {m.message}" for m in bad)
    return result


# ----------------------------------------------------------------------------------------------- restart


@dataclass(frozen=True)
class RestartPlan:
    scope: str
    members: tuple[str, ...]
    conditions: dict[str, Any]  # the POST /restart body
    scheduled_at: datetime | None
    flush_scheduled: bool  # --force with a schedule: DELETE /restart first where one is scheduled

    def requested(self, role: str) -> dict[str, Any]:
        return {"cluster": self.scope, "members": list(self.members), "role": role, "conditions": self.conditions}


def plan_restart(cluster: Cluster, names: Sequence[str], role: str = "any", *, any_member: bool = False,
                 pending: bool = False, pg_version: str | None = None, scheduled_at: datetime | None = None,
                 timeout: int | None = None, force: bool = False,
                 pick: Callable[[Sequence[Member]], Member] | None = None) -> RestartPlan:
    """Which members to restart and the request body, as patronictl builds them.

    Raises:
        UsageError, NotFound: see select_members; a bad --pg-version or --timeout.
        Refused: a schedule while paused.
    """
    members = select_members(cluster, names, role)
    if scheduled_at is not None and cluster.is_paused:
        raise Refused("Can't schedule restart in the paused state")
    if pending and scheduled_at is None:
        members = [m for m in members if m.pending_restart]
    if any_member and members:
        if pick is None:
            import random  # lazily: ~5 ms of imports that only --any needs

            pick = random.choice
        members = [pick(members)]
    body: dict[str, Any] = {}
    if pending:
        body["restart_pending"] = True
    if pg_version:
        _check_version(pg_version)
        body["postgres_version"] = pg_version
    if scheduled_at is not None:
        body["schedule"] = scheduled_at.isoformat()
    if timeout is not None:
        if timeout <= 0:
            raise UsageError("--timeout must be a positive number of seconds")
        body["timeout"] = str(timeout)
    return RestartPlan(cluster.scope, tuple(m.name for m in members), body, scheduled_at,
                       flush_scheduled=force and scheduled_at is not None)


def with_pg_version(plan: RestartPlan, version: str) -> RestartPlan:
    """The same members, restarted only where the running PostgreSQL is older than `version`.

    Raises:
        UsageError: not a PostgreSQL version.
    """
    from dataclasses import replace

    _check_version(version)
    return replace(plan, conditions={**plan.conditions, "postgres_version": version})


def _check_version(text: str) -> None:
    parts = text.split(".")
    if not (2 <= len(parts) <= 3 and all(p.isdigit() for p in parts)) or (len(parts) == 2 and int(parts[0]) < 10):
        raise UsageError(f"Invalid PostgreSQL version: {text} (X.Y or X.Y.Z, e.g. 15.4 or 9.6.24)")


def execute_restart(plan: RestartPlan, cluster: Cluster, rest: Any, dcs: Dcs, namespace: str, *, role: str = "any",
                    progress: Progress = quiet, clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep) -> OperationResult:
    """POST /restart to each member in turn; a 200 counts only when GET /patroni then shows a new postmaster."""
    result = OperationResult("restart", plan.requested(role))
    start = clock()
    # an agent publishes its status once per HA loop: give the new start time two loops to show
    settle = 2.0 * (cluster.config.loop_wait if cluster.config else 10) + 3.0
    wait = float(plan.conditions.get("timeout") or 300) + 30
    for name in plan.members:
        m = cluster.member(name)
        assert m is not None
        t0 = clock()
        try:
            before = _start_time(rest, m)
            if plan.flush_scheduled and m.scheduled_restart:
                rest.delete_restart(m)
            answer = rest.post_restart(m, plan.conditions, timeout=wait)
        except RestError as exc:
            out = MemberOutcome(name, "unreachable", str(exc))
        else:
            if answer.status == 202:
                out = MemberOutcome(name, "scheduled", f"restart scheduled on member {name}", answer.status)
            elif answer.status == 200:
                after = _new_start_time(rest, m, before, settle, clock, sleep)
                if before is not None and after == before:
                    out = MemberOutcome(name, "failed", f"the agent said {answer.text!r} but the postmaster start "
                                                        f"time did not change", answer.status)
                else:
                    out = MemberOutcome(name, "succeeded", f"restart on member {name}", answer.status)
            elif "conditions are not satisfied" in answer.text and set(plan.conditions) & _CONDITIONS:
                # asked to restart only if older / only if pending: not restarting is the right result
                out = MemberOutcome(name, "nothing to do", f"member {name} does not meet the conditions "
                                                           f"({answer.text}): not restarted", answer.status)
            elif answer.status == 409:
                out = MemberOutcome(name, "refused", f"another restart is already scheduled on member {name}",
                                    answer.status)
            elif answer.status in (400, 401, 403, 412, 422, 500) or "conditions are not satisfied" in answer.text:
                out = MemberOutcome(name, "refused", f"{answer.text} (HTTP {answer.status})", answer.status)
            else:
                out = MemberOutcome(name, "failed", f"{answer.text} (HTTP {answer.status})", answer.status)
        out.seconds = round(clock() - t0, 3)
        result.members.append(out)
        progress(member_line("restart", out))
    result.timings["total"] = clock() - start
    result.cluster = fresh(dcs, namespace, plan.scope)
    result.final_roles = roles_of(result.cluster)
    return summarize(result, "restart")


def _start_time(rest: Any, m: Member, retries: int = 1) -> str | None:
    for attempt in range(retries):
        try:
            value = rest.get_patroni(m).get("postmaster_start_time")
            return str(value) if value else None
        except RestError:
            if attempt == retries - 1:
                return None
            time.sleep(0.5)
    return None


def _new_start_time(rest: Any, m: Member, before: str | None, settle: float, clock: Callable[[], float],
                    sleep: Callable[[float], None]) -> str | None:
    """GET /patroni until the postmaster start time differs from `before` and PostgreSQL runs, or `settle` s pass."""
    deadline = clock() + settle
    after = None
    while True:
        try:
            status = rest.get_patroni(m)
            after = str(status.get("postmaster_start_time")) if status.get("postmaster_start_time") else None
            if after != before and status.get("state") == "running":
                return after
        except RestError:
            pass
        if clock() >= deadline:
            return after
        sleep(0.25)


def member_line(verb: str, out: MemberOutcome) -> str:
    if out.outcome in ("succeeded", "scheduled", "accepted"):
        return f"Success: {out.message}"
    if out.outcome == "nothing to do":
        return out.message
    return f"Failed: {verb} for member {out.member}: {out.message}"


# ----------------------------------------------------------------------------------------------- reload


def execute_reload(cluster: Cluster, names: Sequence[str], rest: Any, *, progress: Progress = quiet,
                   clock: Callable[[], float] = time.monotonic) -> OperationResult:
    """POST /reload to each member (202: queued, 200: nothing to apply)."""
    result = OperationResult("reload", {"cluster": cluster.scope, "members": list(names)})
    start = clock()
    loop_wait = cluster.config.loop_wait if cluster.config else 10
    for name in names:
        m = cluster.member(name)
        assert m is not None
        try:
            answer = rest.post_reload(m)
        except RestError as exc:
            out = MemberOutcome(name, "unreachable", str(exc))
        else:
            if answer.status == 200:
                out = MemberOutcome(name, "nothing to do", f"No changes to apply on member {name}", 200)
            elif answer.status == 202:
                out = MemberOutcome(name, "accepted", f"Reload request received for member {name} and will be "
                                                      f"processed within {loop_wait} seconds", 202)
            else:
                kind = "refused" if 400 <= answer.status < 500 else "failed"
                out = MemberOutcome(name, kind, f"{answer.text} (HTTP {answer.status})", answer.status)
        result.members.append(out)
        progress(out.message if out.outcome in ("accepted", "nothing to do") else member_line("reload", out))
    result.timings["total"] = clock() - start
    return summarize(result, "reload")


# ----------------------------------------------------------------------------------------------- reinit


def reinit_candidates(cluster: Cluster) -> list[str]:
    return [m.name for m in select_members(cluster, [], "replica")] if cluster.members else []


def backup_progress(value: Any) -> str | None:
    """`120.0/300.0 MB (40%)` from the `basebackup` object of a member's `GET /patroni` (hactl agents)."""
    if not isinstance(value, dict):
        return None
    try:
        done, total = int(value["done_bytes"]), int(value["total_bytes"])
    except (KeyError, TypeError, ValueError):
        return None
    pct = f" ({100 * done // total}%)" if total > 0 else ""
    return f"{done / 1048576:.1f}/{total / 1048576:.1f} MB{pct}"


def execute_reinit(cluster: Cluster, names: Sequence[str], rest: Any, *, force: bool, from_leader: bool,
                   wait: bool, timeout: float, confirm_cancel: Callable[[str], bool] = lambda _: False,
                   progress: Progress = quiet, clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep, status: Progress = quiet) -> OperationResult:
    """POST /reinitialize to each replica; with `wait`, until each runs again on a new postmaster. While a
    member copies, `status` gets its base backup's progress (`node2: creating replica 120/300 MB (40%)`)."""
    result = OperationResult("reinit", {"cluster": cluster.scope, "members": list(names), "force": force,
                                        "from_leader": from_leader, "wait": wait})
    start = clock()
    started: dict[str, tuple[Member, str | None, float]] = {}
    for name in names:
        m = cluster.member(name)
        assert m is not None
        if _is_leader(cluster, m):
            out = MemberOutcome(name, "refused", f"{name} is the leader; only replicas can be reinitialized")
            result.members.append(out)
            progress(member_line("reinitialize", out))
            continue
        try:
            before = _start_time(rest, m)
            answer = rest.post_reinitialize(m, force=force, from_leader=from_leader)
            if answer.status == 503 and answer.text.endswith(" already in progress") and not force \
                    and confirm_cancel(answer.text):
                answer = rest.post_reinitialize(m, force=True, from_leader=from_leader)
        except RestError as exc:
            out = MemberOutcome(name, "unreachable", str(exc))
        else:
            if answer.status == 200:
                out = MemberOutcome(name, "accepted", f"reinitialize for member {name}", 200)
                started[name] = (m, before, clock())
            else:
                kind = "refused" if answer.status in (400, 401, 403, 503) else "failed"
                out = MemberOutcome(name, kind, f"{answer.text} (HTTP {answer.status})", answer.status)
        result.members.append(out)
        progress(member_line("reinitialize", out))
    if wait and started:
        progress("Waiting for reinitialize to complete on: " + ", ".join(started))
        deadline = clock() + timeout
        pending = dict(started)
        while pending:
            for name, (m, before, t0) in list(pending.items()):
                try:
                    answer = rest.get_patroni(m)
                except RestError:
                    continue
                state = str(answer.get("state") or "")
                new_start = answer.get("postmaster_start_time")
                copied = backup_progress(answer.get("basebackup"))
                if copied:
                    status(f"{name}: {state} {copied}")
                out = next(o for o in result.members if o.member == name)
                if state.endswith("failed"):
                    out.outcome, out.message = "failed", f"reinitialize failed on {name}: state {state!r}"
                    pending.pop(name)
                elif state == "running" and (before is None or str(new_start) != before):
                    out.outcome, out.message = "succeeded", f"reinitialize is completed on {name}"
                    out.seconds = round(clock() - t0, 3)
                    pending.pop(name)
                    progress(f"Reinitialize is completed on: {name}")
            if not pending or clock() >= deadline:
                break
            sleep(0.5)
        for name in pending:
            out = next(o for o in result.members if o.member == name)
            out.outcome, out.message = "timeout", f"{name} is not running on a new data directory after {timeout:g}s"
    result.timings["total"] = clock() - start
    return summarize(result, "reinitialize")
