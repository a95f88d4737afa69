"""switchover and failover: patronictl's options and prompts; the outcome is verified before hactl exits 0."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ctl import render_operations as rops
from ctl.cli import interaction as ui
from ctl.cli.context import AppState, out
from ctl.errors import Refused, UsageError
from ctl.model import Cluster


def _switch(state: AppState, action: str, cluster_name: Optional[str], leader: Optional[str],
            candidate: Optional[str], scheduled: Optional[str], force: bool, wait: bool, timeout: float,
            fmt: str) -> None:
    from ctl.services import operations as osvc

    fmt = ui.output_format(fmt)
    p = ui.Printer(fmt)
    requested = {"action": action, "leader": leader, "candidate": candidate, "scheduled_at": scheduled}
    with ui.json_errors(fmt, action, requested):
        if timeout <= 0:
            raise UsageError("--timeout must be a positive number of seconds")
        cluster = ui.read_cluster(state, cluster_name)
        p.table(cluster, "Current cluster topology")
        if not force and not ui.interactive():
            hint = "--force" + ("" if candidate else " (with --candidate NAME; without it " +
                                ("a failover cannot run)" if action == "failover" else "hactl picks the best one)"))
            raise ui.no_terminal(f"{action} would ask for confirmation", hint)
        if action == "switchover":
            current = cluster.leader.name if cluster.leader else None
            if current is None:
                raise Refused(f"This cluster has no leader (cluster {cluster.scope}); use failover --candidate NAME")
            if not leader and not force:
                leader = ui.prompt("Standby Leader" if cluster.config and cluster.config.is_standby_cluster
                                   else "Primary", current, "--leader NAME")
            if not candidate and not force:
                names = osvc.switchover_candidates(cluster)
                candidate = ui.prompt(f"Candidate {names}", "", "--candidate NAME") or None
            when = osvc.parse_schedule(scheduled)
            if scheduled is None and not force:
                example = "now+1h as %Y-%m-%dT%H:%M"
                when = osvc.parse_schedule(ui.prompt(
                    f"When should the switchover take place (e.g. <{example}> ) ", "now", "--scheduled TS"))
            plan = osvc.plan_switchover(cluster, leader, candidate, when)
            if plan.candidate is None:
                others = [m.name for m in cluster.members if m.name != plan.leader]
                choice = osvc.choose_candidate(cluster, osvc.member_statuses(cluster, state.rest, others))
                plan = osvc.SwitchoverPlan(plan.action, plan.scope, plan.leader, choice.name, plan.scheduled_at,
                                           chosen_because=choice.reason)
                p.line(rops.render_candidate_choice(choice.name, choice.reason))
            elif plan.scheduled_at is None:
                _refuse_like_plan(state, cluster, "switchover", plan.candidate)
            if not force:
                if plan.scheduled_at is not None:
                    ui.confirm(f"Are you sure you want to schedule switchover of cluster {plan.scope} at "
                               f"{plan.scheduled_at.isoformat()}, demoting current leader {plan.leader}?")
                else:
                    ui.confirm(f"Are you sure you want to switchover cluster {plan.scope}, demoting current leader "
                               f"{plan.leader}?")
        else:
            if not candidate and not force:
                names = sorted(m.name for m in cluster.members if not m.nofailover and
                               (cluster.leader is None or m.name != cluster.leader.name))
                candidate = ui.prompt(f"Candidate {names}", "", "--candidate NAME") or None
            plan = osvc.plan_failover(cluster, candidate)
            _refuse_like_plan(state, cluster, "failover", plan.candidate)
            if not force:
                if plan.candidate and osvc.is_async_candidate(cluster, plan.candidate):
                    ui.confirm(f"Are you sure you want to failover to the asynchronous node {plan.candidate}?")
                demote = f", demoting current leader {plan.leader}" if plan.leader else ""
                ui.confirm(f"Are you sure you want to failover cluster {plan.scope}{demote}?")
    with ui.json_errors(fmt, action, plan.requested()):
        result = osvc.execute_switchover(plan, cluster, state.dcs, state.rest, state.namespace, wait=wait,
                                         timeout=timeout, progress=lambda s: p.line(rops.timestamped(s)))
    refused = result.outcome == "refused"  # nothing changed: no timings, no second table
    if fmt == "pretty":
        if result.ok:
            out(rops.timestamped(result.message))
        if not refused:
            out(rops.render_timings(result))
    p.result(result, table=not refused)


def _refuse_like_plan(state: AppState, cluster: Cluster, action: str, candidate: Optional[str]) -> None:
    """The candidate rules the agent applies (ctl/ha/eligibility.py), checked before anything is asked or sent.

    Raises:
        Refused: with the per-member reasons `hactl plan` prints.
    """
    from ctl.services import plan as psvc

    psvc.refuse_unless_eligible(psvc.make_plan(cluster, state.rest, action, candidate))


def cmd_switchover(
    ctx: typer.Context,
    cluster_name: ui.ClusterArg = None,
    leader: Annotated[Optional[str], typer.Option("--leader", "--primary", metavar="NAME",
                                                  help="The current leader (checked)")] = None,
    candidate: Annotated[Optional[str], typer.Option("--candidate", metavar="NAME",
                                                     help="The member to promote; with --force and without "
                                                          "this, hactl picks the best eligible one")] = None,
    scheduled: Annotated[Optional[str], typer.Option("--scheduled", metavar="TS",
                                                     help="When: ISO 8601 time (local time zone if none) or now")]
    = None,
    force: Annotated[bool, typer.Option("--force", help="Do not ask for anything")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for and verify the outcome")] = True,
    timeout: Annotated[float, typer.Option("--timeout", metavar="SEC", help="How long to wait for it")] = 60.0,
    fmt: ui.FormatOpt = "pretty",
) -> None:
    """Switch the leader role over to a replica, gracefully; verifies the new leader accepts writes."""
    _switch(ctx.obj, "switchover", cluster_name, leader, candidate, scheduled, force, wait, timeout, fmt)


def cmd_failover(
    ctx: typer.Context,
    cluster_name: ui.ClusterArg = None,
    candidate: Annotated[Optional[str], typer.Option("--candidate", metavar="NAME",
                                                     help="The member to promote (required)")] = None,
    force: Annotated[bool, typer.Option("--force", help="Do not ask for anything")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for and verify the outcome")] = True,
    timeout: Annotated[float, typer.Option("--timeout", metavar="SEC", help="How long to wait for it")] = 60.0,
    fmt: ui.FormatOpt = "pretty",
) -> None:
    """Promote a named member, with or without a healthy leader; verifies the outcome."""
    _switch(ctx.obj, "failover", cluster_name, None, candidate, None, force, wait, timeout, fmt)
