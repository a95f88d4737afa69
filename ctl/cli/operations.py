"""Mutating commands: restart, reload, reinit, pause, resume, flush, remove, query (switchover/failover: switchover.py).

Options and prompts are patronictl's, so scripts keep working. Differences on purpose: the exit code says what
happened (0 only when the change is verified; REFUSED/FAILED/TIMEOUT/UNKNOWN otherwise), a prompt with no terminal
fails at once naming the flag that answers it, and `-f json` prints one result object.
"""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from ctl import render_operations as rops
from ctl.cli import interaction as ui
from ctl.cli.context import AppState, err, out
from ctl.errors import Aborted, CtlError, UsageError

# ----------------------------------------------------------------------------------------------- restart/reload/reinit


_ROLE_HELP = "leader, primary, standby-leader, replica, standby or any"


def cmd_restart(
    ctx: typer.Context,
    cluster_name: Annotated[str, typer.Argument(metavar="CLUSTER_NAME")],
    member_names: Annotated[Optional[List[str]], typer.Argument(metavar="[MEMBER_NAMES]...")] = None,
    role: Annotated[str, typer.Option("--role", "-r", metavar="ROLE", help=_ROLE_HELP)] = "any",
    any_member: Annotated[bool, typer.Option("--any", help="Restart a single member only")] = False,
    scheduled: Annotated[Optional[str], typer.Option("--scheduled", metavar="TS",
                                                     help="When: ISO 8601 time or now")] = None,
    pg_version: Annotated[Optional[str], typer.Option("--pg-version", metavar="V",
                                                      help="Restart only if the running version is older")] = None,
    pending: Annotated[bool, typer.Option("--pending", help="Restart only members with a pending restart")] = False,
    timeout: Annotated[Optional[int], typer.Option("--timeout", metavar="SEC",
                                                   help="Primary start timeout for this restart")] = None,
    force: Annotated[bool, typer.Option("--force", help="Do not ask for anything")] = False,
    fmt: ui.FormatOpt = "pretty",
) -> None:
    """Restart PostgreSQL on members; each restart is checked (new postmaster, running)."""
    from ctl.services import operations as osvc
    from ctl.services import maintenance as msvc
    state: AppState = ctx.obj
    fmt = ui.output_format(fmt)
    p = ui.Printer(fmt)
    requested = {"cluster": cluster_name, "members": member_names or [], "role": role}
    with ui.json_errors(fmt, "restart", requested):
        cluster = ui.read_cluster(state, cluster_name)
        p.table(cluster)
        msvc.select_members(cluster, member_names or [], role)  # patronictl's errors before any prompt
        if not force and not ui.interactive():
            raise ui.no_terminal("restart would ask for confirmation", "--force")
        when = osvc.parse_schedule(scheduled)
        if scheduled is None and not force:
            when = osvc.parse_schedule(ui.prompt("When should the restart take place (e.g. <now+1h>) ", "now",
                                               "--scheduled TS"))
        plan = msvc.plan_restart(cluster, member_names or [], role, any_member=any_member, pending=pending,
                                 pg_version=pg_version, scheduled_at=when, timeout=timeout, force=force)
        if not force:
            names = ", ".join(plan.members)
            if plan.scheduled_at is not None and pending:
                ui.confirm("The nodes needing a restart will be identified at the scheduled time, and might be "
                         "different from the ones showing pending restart right now. Is this fine?")
            elif plan.scheduled_at is not None:
                ui.confirm(f"Are you sure you want to schedule restart of members {names} at "
                         f"{plan.scheduled_at.isoformat()}?")
            else:
                ui.confirm(f"Are you sure you want to restart members {names}?")
            if pg_version is None:
                version = ui.prompt("Restart if the PostgreSQL version is less than provided (e.g. 9.5.2) ", "",
                                  "--pg-version V")
                if version:
                    plan = msvc.with_pg_version(plan, version)
        result = msvc.execute_restart(plan, cluster, state.rest, state.dcs, state.namespace, role=role,
                                      progress=p.line)
    if not plan.members:
        p.line("No member needs a restart" if pending else "No member to restart")
    p.result(result, table=False)


def cmd_reload(
    ctx: typer.Context,
    cluster_name: Annotated[str, typer.Argument(metavar="CLUSTER_NAME")],
    member_names: Annotated[Optional[List[str]], typer.Argument(metavar="[MEMBER_NAMES]...")] = None,
    role: Annotated[str, typer.Option("--role", "-r", metavar="ROLE", help=_ROLE_HELP)] = "any",
    force: ui.ForceOpt = False,
    fmt: ui.FormatOpt = "pretty",
) -> None:
    """Ask members' agents to reload their configuration (POST /reload)."""
    from ctl.services import maintenance as msvc
    state: AppState = ctx.obj
    fmt = ui.output_format(fmt)
    p = ui.Printer(fmt)
    with ui.json_errors(fmt, "reload", {"cluster": cluster_name, "members": member_names or [], "role": role}):
        cluster = ui.read_cluster(state, cluster_name)
        p.table(cluster)
        members = msvc.select_members(cluster, member_names or [], role)
        if not force:
            ui.confirm(f"Are you sure you want to reload members {', '.join(m.name for m in members)}?")
        result = msvc.execute_reload(cluster, [m.name for m in members], state.rest, progress=p.line)
    p.result(result, table=False)


def cmd_reinit(
    ctx: typer.Context,
    cluster_name: Annotated[str, typer.Argument(metavar="CLUSTER_NAME")],
    member_names: Annotated[Optional[List[str]], typer.Argument(metavar="[MEMBER_NAMES]...")] = None,
    force: Annotated[bool, typer.Option("--force", help="Do not ask; also cancels a running task on the member")]
    = False,
    from_leader: Annotated[bool, typer.Option("--from-leader", help="Copy from the leader, not a replica")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the member runs again")] = False,
    timeout: Annotated[float, typer.Option("--timeout", metavar="SEC", help="How long --wait waits")] = 600.0,
    fmt: ui.FormatOpt = "pretty",
) -> None:
    """Rebuild replicas' data directories from the leader (POST /reinitialize)."""
    from ctl.services import maintenance as msvc
    state: AppState = ctx.obj
    fmt = ui.output_format(fmt)
    p = ui.Printer(fmt)
    names = list(member_names or [])
    with ui.json_errors(fmt, "reinit", {"cluster": cluster_name, "members": names}):
        cluster = ui.read_cluster(state, cluster_name)
        p.table(cluster)
        if not names:
            if force or not ui.interactive():
                raise UsageError("name the members to reinitialize (hactl reinit CLUSTER MEMBER...)")
            choices = msvc.reinit_candidates(cluster)
            names = [ui.prompt(f"Which member do you want to reinitialize [{', '.join(choices)}]?", "", "MEMBER")]
        members = msvc.select_members(cluster, names, "any")
        if not force:
            ui.confirm(f"Are you sure you want to reinitialize members {', '.join(m.name for m in members)}?")

        def cancel(text: str) -> bool:
            if not ui.interactive():
                return False
            return typer.confirm(f"{text}. Do you want to cancel it and reinitialize anyway?", default=False)

        result = msvc.execute_reinit(cluster, [m.name for m in members], state.rest, force=force,
                                     from_leader=from_leader, wait=wait, timeout=timeout, confirm_cancel=cancel,
                                     progress=p.line, status=p.status)
    p.result(result, table=False)


# ----------------------------------------------------------------------------------------------- pause/resume/flush


def _pause(state: AppState, cluster_name: Optional[str], pause: bool, wait: bool, timeout: Optional[float],
           fmt: str) -> None:
    from ctl.services import control as ctrl
    fmt = ui.output_format(fmt)
    p = ui.Printer(fmt)
    word = "pause" if pause else "resume"
    with ui.json_errors(fmt, word, {"cluster": cluster_name, "wait": wait}):
        cluster = ui.read_cluster(state, cluster_name)
        loop_wait = cluster.config.loop_wait if cluster.config else 10
        result = ctrl.execute_pause(cluster, state.rest, state.dcs, state.namespace, pause=pause, wait=wait,
                                    timeout=timeout or max(loop_wait * 2 + 5, 10), progress=p.line)
    if fmt == "pretty" and result.ok:
        out(f"Success: {result.message}\n")
    p.result(result, table=False)


# pause and resume share --wait and its --timeout.
_PauseWaitOpt = Annotated[bool, typer.Option("--wait", help="Wait until every member knows")]
_PauseTimeoutOpt = Annotated[Optional[float], typer.Option("--timeout", metavar="SEC",
                                                          help="How long --wait waits [2*loop_wait+5]")]


def cmd_pause(
    ctx: typer.Context,
    cluster_name: ui.ClusterArg = None,
    wait: _PauseWaitOpt = False,
    timeout: _PauseTimeoutOpt = None,
    fmt: ui.FormatOpt = "pretty",
) -> None:
    """Maintenance mode: no automatic failover or promotion until resume."""
    _pause(ctx.obj, cluster_name, True, wait, timeout, fmt)


def cmd_resume(
    ctx: typer.Context,
    cluster_name: ui.ClusterArg = None,
    wait: _PauseWaitOpt = False,
    timeout: _PauseTimeoutOpt = None,
    fmt: ui.FormatOpt = "pretty",
) -> None:
    """End maintenance mode."""
    _pause(ctx.obj, cluster_name, False, wait, timeout, fmt)


def cmd_flush(
    ctx: typer.Context,
    cluster_name: Annotated[str, typer.Argument(metavar="CLUSTER_NAME")],
    args: Annotated[List[str], typer.Argument(metavar="[MEMBER_NAMES]... {restart|switchover}")],
    role: Annotated[str, typer.Option("--role", "-r", metavar="ROLE", help=_ROLE_HELP)] = "any",
    force: ui.ForceOpt = False,
    fmt: ui.FormatOpt = "pretty",
) -> None:
    """Discard scheduled restarts or a scheduled switchover."""
    from ctl.services import maintenance as msvc
    from ctl.services import control as ctrl
    state: AppState = ctx.obj
    fmt = ui.output_format(fmt)
    p = ui.Printer(fmt)
    if not args or args[-1] not in ("restart", "switchover"):
        raise UsageError("the last argument must be restart or switchover")
    target, names = args[-1], args[:-1]
    with ui.json_errors(fmt, "flush", {"cluster": cluster_name, "target": target, "members": names}):
        cluster = ui.read_cluster(state, cluster_name)
        if target == "restart":
            p.table(cluster)
            members = msvc.select_members(cluster, names, role)
            if not force:
                ui.confirm(f"Are you sure you want to flush members {', '.join(m.name for m in members)}?")
            result = ctrl.execute_flush_restart(cluster, [m.name for m in members], state.rest, progress=p.line)
        else:
            result = ctrl.execute_flush_switchover(cluster, state.rest, state.dcs, state.namespace, progress=p.line)
            if result.outcome != "failed":
                p.line(result.message)
    p.result(result, table=False)


# ----------------------------------------------------------------------------------------------- remove


def cmd_remove(
    ctx: typer.Context,
    cluster_name: Annotated[str, typer.Argument(metavar="CLUSTER_NAME")],
    yes: Annotated[bool, typer.Option("--yes-i-am-aware", help="For scripts: answer the two confirmations")]
    = False,
    leader: Annotated[Optional[str], typer.Option("--leader", metavar="NAME",
                                                  help="With --yes-i-am-aware on a cluster that has a leader: its "
                                                       "name, as the third confirmation")] = None,
    fmt: ui.FormatOpt = "pretty",
) -> None:
    """Delete every key of a cluster from etcd (stop its agents first)."""
    from ctl.services import control as ctrl
    state: AppState = ctx.obj
    fmt = ui.output_format(fmt)
    p = ui.Printer(fmt)
    with ui.json_errors(fmt, "remove", {"cluster": cluster_name}):
        cluster = ui.read_cluster(state, cluster_name)
        p.table(cluster)
        if not yes:
            flags = "--yes-i-am-aware" + (" --leader NAME" if cluster.leader else "")
            if ui.prompt("Please confirm the cluster name to remove", "", flags) != cluster_name:
                raise Aborted("Cluster names specified do not match")
            answer = ui.prompt(f'You are about to remove all information in DCS for {cluster_name}, please type: '
                             f'"Yes I am aware"', "", flags)
            if answer != "Yes I am aware":
                raise Aborted('You did not exactly type "Yes I am aware"')
            if cluster.leader is not None and leader is None:
                leader = ui.prompt("This cluster currently is healthy. Please specify the leader name to continue",
                                 "", flags)
        elif cluster.leader is not None and leader is None:
            raise Aborted(f"cluster {cluster_name} has a leader ({'healthy' if cluster.leader_member else 'lock held'})"
                          f": pass --leader NAME as well to remove it")
        ctrl.check_leader_name(cluster, leader)
        result = ctrl.execute_remove(cluster, state.dcs, state.namespace)
    if fmt == "pretty":
        out(result.message + "\n")
    p.result(result, table=False)


# ----------------------------------------------------------------------------------------------- query


def cmd_query(
    ctx: typer.Context,
    cluster_name: ui.ClusterArg = None,
    role: Annotated[Optional[str], typer.Option("--role", "-r", metavar="ROLE", help=_ROLE_HELP)] = None,
    member: Annotated[Optional[str], typer.Option("--member", "-m", metavar="NAME", help="A member by name")] = None,
    dbname: Annotated[Optional[str], typer.Option("--dbname", "-d", metavar="DB", help="Database")] = None,
    username: Annotated[Optional[str], typer.Option("--username", "-U", metavar="USER",
                                                    help="Database user [the configured superuser]")] = None,
    password: Annotated[bool, typer.Option("--password", help="Ask for the password")] = False,
    fmt: Annotated[str, typer.Option("--format", metavar="FMT", help="tsv (default), csv, json, yaml, pretty")]
    = "tsv",
    file: Annotated[Optional[str], typer.Option("--file", "-f", metavar="FILE", help="SQL from a file (- = stdin)")]
    = None,
    command: Annotated[Optional[str], typer.Option("--command", "-c", metavar="SQL", help="SQL to run")] = None,
    delimiter: Annotated[str, typer.Option("--delimiter", metavar="SEP", show_default=False,
                                           help="tsv column separator [default: tab]")] = "\t",
    w: Annotated[bool, typer.Option("-W", help="Run again every 2 seconds until Ctrl-C")] = False,
    watch: Annotated[Optional[float], typer.Option("--watch", "-w", metavar="SEC",
                                                   help="Run again every SEC seconds until Ctrl-C")] = None,
) -> None:
    """Run SQL on a member (default: the leader) as the configured superuser."""
    from ctl.services import query as qsvc

    state: AppState = ctx.obj
    fmt = fmt.lower()
    if fmt not in rops.QUERY_FORMATS:
        raise UsageError(f"invalid format {fmt!r}; choose one of {', '.join(rops.QUERY_FORMATS)}")
    if role and member:
        raise UsageError("--role and --member are mutually exclusive options")
    sql = qsvc.read_sql(command, file)
    cluster = ui.read_cluster(state, cluster_name)
    target = qsvc.pick_member(cluster, role, member)
    su = state.config.postgresql.superuser
    user = username or su.username
    secret: Optional[str] = None
    if password:
        if not ui.interactive():
            raise ui.no_terminal("--password asks for the password", "the password in PGPASSWORD or ~/.pgpass "
                                                                   "instead of --password")
        secret = typer.prompt("Password", hide_input=True, default="", show_default=False) or None
    elif user == su.username:
        secret = su.password
    interval = watch if watch is not None else (2.0 if w else None)
    if interval is not None and interval <= 0:
        raise UsageError("--watch needs a positive number of seconds")
    if interval is None:
        out(rops.render_query(qsvc.run_query(target, sql, user=user, password=secret, dbname=dbname, role=role),
                              fmt, delimiter))
        return
    import time

    try:
        while True:  # patronictl's watch: errors are shown and the next round runs anyway
            try:
                out(rops.render_query(qsvc.run_query(target, sql, user=user, password=secret, dbname=dbname,
                                                     role=role), fmt, delimiter))
            except CtlError as exc:
                err(f"Error: {exc.message}")
            time.sleep(interval)
    except KeyboardInterrupt:
        return


def register(app: typer.Typer) -> None:
    from ctl.cli import switchover
    from ctl.cli.auditing import audited

    app.command("switchover")(audited("switchover", switchover.cmd_switchover))
    app.command("failover")(audited("failover", switchover.cmd_failover))
    app.command("restart")(audited("restart", cmd_restart))
    app.command("reload")(audited("reload", cmd_reload))
    app.command("reinit")(audited("reinit", cmd_reinit))
    app.command("pause")(audited("pause", cmd_pause))
    app.command("resume")(audited("resume", cmd_resume))
    app.command("flush")(audited("flush", cmd_flush))
    app.command("remove")(audited("remove", cmd_remove))
    app.command("query")(cmd_query)
