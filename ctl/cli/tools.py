"""The operator's tools: `plan` (who would take over, and why not), `check` (a lint of config and live cluster),
`audit` (the trail of changes). Each one: parse -> service -> render."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ctl.cli import interaction as ui
from ctl.cli.context import AppState, out
from ctl.errors import ExitCode, UsageError

_FORMAT_HELP = "Output: pretty or json"


def _fmt(value: str, allowed: tuple[str, ...] = ("pretty", "json")) -> str:
    value = value.lower()
    if value not in allowed:
        raise UsageError(f"invalid format {value!r}; choose {' or '.join(allowed)}")
    return value


def cmd_plan(
    ctx: typer.Context,
    action: Annotated[str, typer.Argument(metavar="switchover|failover", help="The operation to plan")],
    cluster_name: ui.ClusterArg = None,
    candidate: Annotated[Optional[str], typer.Option("--candidate", metavar="NAME",
                                                     help="Judge this member as the requested candidate")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", metavar="FMT", help=_FORMAT_HELP)] = "pretty",
) -> int:
    """Show who would take over in a switchover or failover, and every reason each member could not. No changes.

    Exit code 0 when a member is eligible, 7 (refused) when none is."""
    from ctl import render_tools
    from ctl.services import plan as psvc

    state: AppState = ctx.obj
    fmt = _fmt(fmt)
    action = action.lower()
    if action not in ("switchover", "failover"):
        raise UsageError(f"invalid action {action!r}; choose switchover or failover")
    cluster = ui.read_cluster(state, cluster_name)
    if action == "switchover" and cluster.leader is None:
        report = psvc.evaluate(cluster, action, candidate, {})
        report = psvc.PlanReport(report.cluster, action, None, None, "the cluster has no leader to switch over "
                                 "from (plan a failover)", report.members, candidate)
    else:
        report = psvc.make_plan(cluster, state.rest, action, candidate)
    out(render_tools.render_plan(report, fmt))
    return ExitCode.OK if report.chosen else ExitCode.REFUSED


def cmd_check(
    ctx: typer.Context,
    cluster_name: ui.ClusterArg = None,
    strict: Annotated[bool, typer.Option("--strict", help="Warnings fail the check too")] = False,
    fmt: Annotated[str, typer.Option("--format", "-f", metavar="FMT", help=_FORMAT_HELP)] = "pretty",
) -> int:
    """Lint the configuration and the live cluster against best practice (works on Patroni clusters too).

    Exit code 0 without errors (with --strict: without warnings either), 11 with findings, 4 when etcd cannot be
    reached."""
    from ctl import render_tools
    from ctl.services import check as csvc

    state: AppState = ctx.obj
    fmt = _fmt(fmt)
    cluster = ui.read_cluster(state, cluster_name)
    superuser = getattr(getattr(state.config, "postgresql", None), "superuser", None)
    report = csvc.run_check(cluster, state.dcs, state.rest, superuser)
    out(render_tools.render_check(report, fmt))
    return ExitCode.FINDINGS if report.failed(strict) else ExitCode.OK


def cmd_audit(
    ctx: typer.Context,
    cluster_name: ui.ClusterArg = None,
    last: Annotated[int, typer.Option("-n", "--last", metavar="N", help="Show the newest N entries")] = 20,
    fmt: Annotated[str, typer.Option("--format", "-f", metavar="FMT", help="Output: pretty, tsv or json")]
    = "pretty",
) -> None:
    """Show the cluster's audit trail (who changed what, when and why), newest last."""
    from ctl import render_tools
    from ctl.services import audit as asvc
    from ctl.services import cluster as csvc

    state: AppState = ctx.obj
    fmt = _fmt(fmt, ("pretty", "tsv", "json"))
    if last < 0:
        raise UsageError("-n needs a number of entries, 0 for all")
    scope = csvc.cluster_names([cluster_name] if cluster_name else [], state.config.scope)[0]
    out(render_tools.render_audit(asvc.read(state.dcs, state.namespace, scope, last or None), fmt))


def register(app: typer.Typer) -> None:
    app.command("plan")(cmd_plan)
    app.command("check")(cmd_check)
    app.command("audit")(cmd_audit)
