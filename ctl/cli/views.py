"""Read-only commands: list, topology, history, show-config, dsn, version. Each one: parse -> service -> render."""

from __future__ import annotations

import time
from typing import Annotated, Callable, List, Optional

import typer

from ctl import __version__, render
from ctl.cli.context import AppState, color_enabled, err, is_terminal, out
from ctl.errors import CtlError, NotFound, RestError, UsageError
from ctl.model import Cluster
from ctl.services import cluster as svc

_FORMAT_HELP = "Output format: pretty, tsv, json, yaml (or yml)"


def _fmt(value: str, allowed: tuple[str, ...] = render.FORMATS) -> str:
    value = value.lower()
    if value not in allowed:
        raise UsageError(f"invalid format {value!r}; choose one of {', '.join(allowed)}")
    return "yaml" if value == "yml" else value


def _interval(watch: Optional[float], w: bool) -> Optional[float]:
    if watch is not None:
        if watch <= 0:
            raise UsageError("--watch needs a positive number of seconds")
        return watch
    return 2.0 if w else None


def _watch(frame: Callable[[], str], interval: float, live: bool) -> None:
    """Redraw `frame()` every `interval` seconds until Ctrl-C, which ends the command with exit code 0.

    On a terminal the table is redrawn in place (rich Live); otherwise each frame is printed after the previous one.
    An etcd error is shown in the frame and the watch goes on.
    """

    def safe_frame() -> str:
        try:
            return frame()
        except CtlError as exc:
            return f"Error: {exc.message}\n"

    try:
        if live:
            from rich.console import Console
            from rich.live import Live
            from rich.text import Text

            def text() -> Text:
                # Wider than the terminal: crop rather than wrap, so the table keeps its shape while redrawn.
                return Text.from_ansi(safe_frame(), no_wrap=True, overflow="crop")

            with Live(text(), console=Console(), auto_refresh=False, redirect_stdout=False) as display:
                while True:
                    time.sleep(interval)
                    display.update(text(), refresh=True)
        else:
            while True:
                out(safe_frame())
                time.sleep(interval)
    except KeyboardInterrupt:
        return


def _list_all(state: AppState, names: List[str], fmt: str, extended: bool, ts: bool, watch: Optional[float],
              w: bool) -> None:
    fmt = _fmt(fmt)
    if names:
        raise UsageError("--all lists every cluster in the namespace: give no cluster names with it")
    interval = _interval(watch, w)
    dcs, namespace = state.dcs, state.namespace
    color = fmt == "pretty" and color_enabled()

    def frame() -> str:
        text = render.timestamp_line() if ts else ""
        clusters = [c for c in dcs.get_all_clusters(namespace) if not c.is_empty]
        from ctl import render_tools

        return text + render_tools.render_list_all(clusters, fmt, extended, color, title=f"Namespace: {namespace}")

    if interval is None:
        out(frame())
    else:
        _watch(frame, interval, live=color_enabled() and is_terminal() and fmt == "pretty")


def _list_like(state: AppState, names: List[str], fmt: str, extended: bool, ts: bool,
               watch: Optional[float], w: bool, topology: bool) -> None:
    fmt = _fmt(fmt)
    interval = _interval(watch, w)
    clusters = svc.cluster_names(names, state.config.scope)
    dcs = state.dcs
    color = fmt == "pretty" and color_enabled()

    def frame() -> str:
        text = render.timestamp_line() if ts else ""
        for name in clusters:
            cluster = svc.read_cluster(dcs, state.namespace, name)
            text += render.render_list(cluster, fmt, extended=extended, topology=topology, color=color)
        return text

    if interval is None:
        out(frame())
    else:
        _watch(frame, interval, live=color_enabled() and is_terminal() and fmt == "pretty")


def cmd_list(
    ctx: typer.Context,
    cluster_names: Annotated[Optional[List[str]], typer.Argument(metavar="[CLUSTER_NAME]...")] = None,
    extended: Annotated[bool, typer.Option("--extended", "-e", help="Show pending restarts, schedules, tags")] = False,
    ts: Annotated[bool, typer.Option("--timestamp", "-t", help="Print a timestamp before each table")] = False,
    fmt: Annotated[str, typer.Option("--format", "-f", metavar="FMT", help=_FORMAT_HELP)] = "pretty",
    w: Annotated[bool, typer.Option("-W", help="Refresh every 2 seconds until Ctrl-C")] = False,
    watch: Annotated[Optional[float], typer.Option("--watch", "-w", help="Refresh every SEC seconds",
                                                   metavar="SEC")] = None,
    all_clusters: Annotated[bool, typer.Option("--all", "-a", help="Every cluster in the namespace, in one "
                                                                   "table or document (one etcd read)")] = False,
) -> None:
    """List the members of clusters (default: the configured scope)."""
    if all_clusters:
        _list_all(ctx.obj, cluster_names or [], fmt, extended, ts, watch, w)
        return
    _list_like(ctx.obj, cluster_names or [], fmt, extended, ts, watch, w, topology=False)


def cmd_topology(
    ctx: typer.Context,
    cluster_names: Annotated[Optional[List[str]], typer.Argument(metavar="[CLUSTER_NAME]...")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", metavar="FMT",
                                     help=_FORMAT_HELP + "; machine formats name each member's upstream")] = "pretty",
    w: Annotated[bool, typer.Option("-W", help="Refresh every 2 seconds until Ctrl-C")] = False,
    watch: Annotated[Optional[float], typer.Option("--watch", "-w", help="Refresh every SEC seconds",
                                                   metavar="SEC")] = None,
) -> None:
    """Show members as a tree: cascading replicas (replicatefrom tag) under their upstream."""
    _list_like(ctx.obj, cluster_names or [], fmt, False, False, watch, w, topology=True)


def _one_cluster(state: AppState, name: Optional[str]) -> Cluster:
    scope = svc.cluster_names([name] if name else [], state.config.scope)[0]
    return svc.read_cluster(state.dcs, state.namespace, scope)


def cmd_history(
    ctx: typer.Context,
    cluster_name: Annotated[Optional[str], typer.Argument()] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", metavar="FMT", help=_FORMAT_HELP)] = "pretty",
) -> None:
    """Show the timeline history: TL, LSN, Reason, Timestamp, New Leader."""
    fmt = _fmt(fmt)
    cluster = _one_cluster(ctx.obj, cluster_name)
    out(render.render_history(cluster.history, fmt))


def cmd_show_config(
    ctx: typer.Context,
    cluster_name: Annotated[Optional[str], typer.Argument()] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", metavar="FMT", help="yaml (default) or json")] = "yaml",
    effective: Annotated[Optional[str], typer.Option(
        "--effective", metavar="MEMBER", help="The values MEMBER runs with and their layer (DCS, local file, "
                                              "default)")] = None,
) -> None:
    """Show the dynamic configuration (the config key) as YAML with sorted keys."""
    fmt = _fmt(fmt, ("yaml", "yml", "json"))
    cluster = _one_cluster(ctx.obj, cluster_name)
    if effective is not None:
        from ctl import render_edit
        from ctl.services import edit_config

        out(render_edit.render_effective(edit_config.effective_config(cluster, effective, ctx.obj.config), fmt))
        return
    if cluster.config is None:
        raise NotFound(f"cluster {cluster.scope!r} has no dynamic configuration (no config key)")
    out(render.render_config(cluster.config.data, fmt))


def cmd_dsn(
    ctx: typer.Context,
    cluster_name: Annotated[Optional[str], typer.Argument()] = None,
    role: Annotated[Optional[str], typer.Option(
        "--role", "-r", metavar="ROLE", help="leader (default), primary, standby-leader, replica, standby or any")] = None,
    member: Annotated[Optional[str], typer.Option("--member", "-m", metavar="NAME", help="A member by name")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", metavar="FMT", help="pretty (default) or json")] = "pretty",
) -> None:
    """Print host and port of a member as `host=H port=P` (default: the leader)."""
    fmt = _fmt(fmt, ("pretty", "json"))
    if role and member:
        raise UsageError("--role and --member are mutually exclusive options")
    cluster = _one_cluster(ctx.obj, cluster_name)
    out(render.render_dsn(svc.select_member(cluster, role, member), fmt))


def cmd_version(
    ctx: typer.Context,
    cluster_name: Annotated[Optional[str], typer.Argument()] = None,
    member_names: Annotated[Optional[List[str]], typer.Argument(metavar="[MEMBER_NAME]...")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", metavar="FMT", help="pretty (default) or json")] = "pretty",
) -> None:
    """Print hactl's version; with a cluster, each member's Patroni and PostgreSQL versions."""
    fmt = _fmt(fmt, ("pretty", "json"))
    state: AppState = ctx.obj
    if not cluster_name:
        out(render.render_versions(__version__, None, fmt))
        return
    cluster = svc.read_cluster(state.dcs, state.namespace, cluster_name)
    lines = svc.member_versions(cluster, state.rest, member_names or [])
    out(render.render_versions(__version__, lines, fmt))
    failed = [ln.member for ln in lines if ln.error is not None]
    if failed:
        err(f"Error: no version from {len(failed)} of {len(lines)} members: {', '.join(failed)}")
        raise typer.Exit(RestError.exit_code)


def register(app: typer.Typer) -> None:
    app.command("list", no_args_is_help=False)(cmd_list)
    app.command("topology")(cmd_topology)
    app.command("history")(cmd_history)
    app.command("show-config")(cmd_show_config)
    app.command("dsn")(cmd_dsn)
    app.command("version")(cmd_version)


