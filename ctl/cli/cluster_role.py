"""promote-cluster / demote-cluster: patronictl 4.1's commands to switch a cluster between primary and standby.

Options, prompts and messages are patronictl's; hactl bounds the wait (`--wait-timeout`, exit TIMEOUT) where
patronictl waits forever, and exits 0 only when etcd shows the leader in its new role and running.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ctl.cli import interaction as ui
from ctl.cli.context import AppState

_WAIT_HELP = "Give up waiting for the new role after SEC seconds (exit 8); patronictl waits forever"


def cmd_demote_cluster(
    ctx: typer.Context,
    cluster_name: ui.ClusterArg = None,
    host: Annotated[Optional[str], typer.Option("--host", metavar="HOST", help="Address of the remote primary")] = None,
    port: Annotated[Optional[int], typer.Option("--port", metavar="PORT", help="Port of the remote primary")] = None,
    restore_command: Annotated[Optional[str], typer.Option(
        "--restore-command", metavar="CMD", help="restore_command for the standby cluster")] = None,
    primary_slot_name: Annotated[Optional[str], typer.Option(
        "--primary-slot-name", metavar="SLOT", help="Replication slot on the remote primary")] = None,
    force: ui.ForceOpt = False,
    wait_timeout: Annotated[float, typer.Option("--wait-timeout", metavar="SEC", help=_WAIT_HELP)] = 300,
    fmt: ui.FormatOpt = "pretty",
) -> None:
    """Turn a cluster into a standby cluster of a remote primary (PATCH /config standby_cluster)."""
    from ctl.services import cluster_role as svc

    state: AppState = ctx.obj
    fmt = ui.output_format(fmt)
    p = ui.Printer(fmt)
    requested = {"cluster": cluster_name, "host": host, "port": port}
    with ui.json_errors(fmt, "demote-cluster", requested):
        if not (host or port or restore_command):  # before etcd is asked, as patronictl
            svc.plan_demote(None, host=host, port=port, restore_command=restore_command,  # type: ignore[arg-type]
                            primary_slot_name=primary_slot_name)
        cluster = ui.read_cluster(state, cluster_name)
        plan = svc.plan_demote(cluster, host=host, port=port, restore_command=restore_command,
                               primary_slot_name=primary_slot_name)
        p.table(cluster)
        if not force:
            ui.confirm(f"Are you sure you want to demote {cluster.scope} cluster?")
        result = svc.execute(plan, cluster, state.rest, state.dcs, state.namespace, timeout=wait_timeout,
                             progress=p.line)
    p.result(result)


def cmd_promote_cluster(
    ctx: typer.Context,
    cluster_name: ui.ClusterArg = None,
    force: ui.ForceOpt = False,
    wait_timeout: Annotated[float, typer.Option("--wait-timeout", metavar="SEC", help=_WAIT_HELP)] = 300,
    fmt: ui.FormatOpt = "pretty",
) -> None:
    """Promote a standby cluster to a primary cluster (PATCH /config standby_cluster: null)."""
    from ctl.services import cluster_role as svc

    state: AppState = ctx.obj
    fmt = ui.output_format(fmt)
    p = ui.Printer(fmt)
    with ui.json_errors(fmt, "promote-cluster", {"cluster": cluster_name}):
        cluster = ui.read_cluster(state, cluster_name)
        plan = svc.plan_promote(cluster)
        p.table(cluster)
        if not force:
            ui.confirm(f"Are you sure you want to promote {cluster.scope} cluster?")
        result = svc.execute(plan, cluster, state.rest, state.dcs, state.namespace, timeout=wait_timeout,
                             progress=p.line)
    p.result(result)


def register(app: typer.Typer) -> None:
    from ctl.cli.auditing import audited

    app.command("demote-cluster")(audited("demote-cluster", cmd_demote_cluster))
    app.command("promote-cluster")(audited("promote-cluster", cmd_promote_cluster))
