"""`hactl drill switchover|failover`: the real operation under write load, measured and recorded."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from ctl.cli import interaction as ui
from ctl.cli.context import AppState, err, out
from ctl.errors import OperationFailed, UsageError


def cmd_drill(
    ctx: typer.Context,
    action: Annotated[str, typer.Argument(metavar="switchover|failover", help="The operation to rehearse")],
    cluster_name: ui.ClusterArg = None,
    candidate: Annotated[Optional[str], typer.Option("--candidate", metavar="NAME",
                                                     help="The member to promote (failover: required)")] = None,
    writers: Annotated[int, typer.Option("--writers", metavar="N", help="Writer connections")] = 4,
    max_gap: Annotated[Optional[float], typer.Option("--max-gap", metavar="SEC",
                                                     help="Fail when writes stop for longer than this")] = None,
    record_dir: Annotated[Optional[str], typer.Option(
        "--record-dir", metavar="DIR", help="Where the JSON record goes [default: $XDG_STATE_HOME/hactl/drills or "
                                            "~/.local/state/hactl/drills]")] = None,
    force: ui.ForceOpt = False,
    timeout: Annotated[float, typer.Option("--timeout", metavar="SEC", help="How long to wait for the "
                                                                             "operation")] = 60.0,
    fmt: Annotated[str, typer.Option("--format", "-f", metavar="FMT", help="Output: pretty or json")] = "pretty",
) -> None:
    """Rehearse a switchover or failover under write load: gap, acknowledged and lost writes, time to healthy."""
    from ctl import render_tools
    from ctl.cli.auditing import note
    from ctl.services import drill as dsvc
    from ctl.services import operations as osvc
    from ctl.services import plan as psvc

    state: AppState = ctx.obj
    fmt = fmt.lower()
    if fmt not in ("pretty", "json"):
        raise UsageError(f"invalid format {fmt!r}; choose pretty or json")
    action = action.lower()
    if action not in ("switchover", "failover"):
        raise UsageError(f"invalid action {action!r}; choose switchover or failover")
    if writers < 1 or writers > 64:
        raise UsageError("--writers must be between 1 and 64")
    if max_gap is not None and max_gap <= 0:
        raise UsageError("--max-gap must be a positive number of seconds")
    p = ui.Printer(fmt)
    cluster = ui.read_cluster(state, cluster_name)
    if action == "switchover":
        plan = osvc.plan_switchover(cluster, None, candidate)
    else:
        plan = osvc.plan_failover(cluster, candidate)
    report = psvc.make_plan(cluster, state.rest, action, plan.candidate)
    psvc.refuse_unless_eligible(report)
    if plan.candidate is None:
        plan = osvc.SwitchoverPlan(plan.action, plan.scope, plan.leader, report.chosen, None,
                                   chosen_because=report.why)
    if not force:
        ui.confirm(f"Rehearse a {action} of cluster {plan.scope} from {plan.leader} to {plan.candidate} under "
                   f"{writers} writers? This is the real {action}.")
    su = getattr(getattr(state.config, "postgresql", None), "superuser", None)
    tick = None
    if fmt == "pretty":
        def tick(load, elapsed: float) -> None:  # type: ignore[no-untyped-def]
            from ctl.services.drill_load import longest_gap
            import time

            acks = load.ack_times()
            now = time.monotonic()
            last = max(acks) if acks else None
            since = f"{now - last:.1f}s ago" if last is not None else "none yet"
            err(f"  {elapsed:5.1f}s  acked {len(acks)} writes, last {since}, "
                f"longest gap so far {longest_gap(acks, now - elapsed, max(acks) if acks else now):.2f}s")
    record, result = dsvc.run_drill(cluster, plan, state.dcs, state.rest, state.namespace,
                                    user=getattr(su, "username", None), password=getattr(su, "password", None),
                                    writers=writers, max_gap=max_gap, timeout=timeout,
                                    progress=lambda s: p.line(s), tick=tick)
    directory = record_dir or dsvc.default_record_dir()
    try:
        dsvc.save_record(record, directory)
    except OSError as exc:
        err(f"Warning: the drill record was not written to {directory}: {exc.strerror or exc}")
    note(f"{'passed' if record.passed else 'failed'}: {record.result}, gap {record.write_gap_s}s, "
         f"lost {record.lost_acked_writes}")
    if fmt == "json":
        out(json.dumps(record.to_json()) + "\n")
    else:
        out(render_tools.render_drill(record))
    if not record.passed:
        if result is not None and not result.ok:
            ui.raise_for(result)
        raise OperationFailed("drill failed: " + "; ".join(record.problems))


def register(app: typer.Typer) -> None:
    from ctl.cli.auditing import audited

    app.command("drill")(audited("drill", cmd_drill))
