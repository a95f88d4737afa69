"""The hactl command line: global options, command registration and the one place errors become exit codes.

Every failure ends as one line `Error: <message>` on stderr and a non-zero exit code from ctl.errors.ExitCode;
Ctrl-C exits 130 quietly; a traceback is printed only with HACTL_DEBUG=1.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any, Optional

import typer
from typer._types import TyperChoice
from typer.core import TyperGroup

from ctl import __version__
from ctl.cli.context import COLOR_MODES, DEFAULT_TIMEOUT, AppState, err, set_color_mode
from ctl.errors import CtlError, ExitCode


class _Group(TyperGroup):
    """Runs the commands with click's standalone mode off, so hactl decides what an error looks like.

    Also loads the non-view command modules on first need (see PLUGINS).
    """

    _merged = False

    def _merge_plugins(self) -> None:
        _load_plugins()
        if self._merged:
            return
        self._merged = True
        fresh = typer.main.get_command(app)  # the click group again, now with the plugins' commands
        for name, cmd in getattr(fresh, "commands", {}).items():
            self.commands.setdefault(name, cmd)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None:
            self._merge_plugins()
            cmd = super().get_command(ctx, cmd_name)
        return cmd

    def list_commands(self, ctx: Any) -> list[str]:
        self._merge_plugins()
        return super().list_commands(ctx)

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,  # type: ignore[override]
             standalone_mode: bool = True, **extra: Any) -> Any:
        code = _run(lambda: super(_Group, self).main(args=args, prog_name=prog_name or "hactl",
                                                     complete_var=complete_var, standalone_mode=False, **extra))
        if standalone_mode:
            sys.exit(code)
        return code


def _run(invoke: Any) -> int:
    try:
        rv = invoke()
        return rv if isinstance(rv, int) else ExitCode.OK
    except CtlError as exc:
        err(f"Error: {exc.message}")
        return exc.exit_code
    except typer.TyperException as exc:  # click usage errors: bad option, missing argument, bad choice
        if type(exc).__name__ == "NoArgsIsHelpError":  # `hactl` or `hactl demo` alone: the help, as asked for
            sys.stdout.write(exc.format_message() + "\n")
            return ExitCode.OK
        hint = ""
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            hint = f" (see '{ctx.command_path} --help')"
        err(f"Error: {exc.format_message()}{hint}")
        return getattr(exc, "exit_code", ExitCode.USAGE) or ExitCode.USAGE
    except typer.Abort:
        err("Error: aborted")
        return ExitCode.ABORTED
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # `hactl list | head`: the reader went away; say nothing.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stops a second error at interpreter exit
        except OSError:
            pass
        return ExitCode.FAILED
    except Exception as exc:  # noqa: BLE001 - the last line of defence against a traceback
        if os.environ.get("HACTL_DEBUG"):
            raise
        err(f"Error: internal error: {type(exc).__name__}: {exc} (set HACTL_DEBUG=1 for a traceback)")
        return ExitCode.FAILED


app = typer.Typer(
    cls=_Group,
    name="hactl",
    help="PostgreSQL high availability the Patroni way: a patronictl-compatible CLI.",
    rich_markup_mode=None,  # plain click help: ~100 ms faster than rich help
    pretty_exceptions_enable=False,
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


_COLOR_CHOICE = TyperChoice(COLOR_MODES)


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"hactl version {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _global_options(
    ctx: typer.Context,
    config_file: Annotated[Optional[str], typer.Option(
        "--config-file", "-c", envvar="PATRONICTL_CONFIG_FILE", show_envvar=True, metavar="PATH",
        help="patroni.yml / patronictl.yaml [default: ~/.config/patroni/patronictl.yaml]")] = None,
    dcs_url: Annotated[Optional[str], typer.Option(
        "--dcs-url", "--dcs", "-d", envvar="DCS_URL", metavar="URL", help="etcd3://HOST:PORT/NAMESPACE, replaces the DCS config")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", "-k", help="Do not verify REST API certificates")] = False,
    timeout: Annotated[float, typer.Option(
        "--timeout", metavar="SEC", help="Give up on etcd and REST calls after this many seconds (at most 10)")] = DEFAULT_TIMEOUT,
    color: Annotated[str, typer.Option(
        "--color", click_type=_COLOR_CHOICE, metavar="WHEN",
        help="Colour: auto (on a terminal without NO_COLOR), always, never")] = "auto",
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the hactl version and exit")] = False,
) -> None:
    set_color_mode(color)
    ctx.call_on_close(lambda: set_color_mode("auto"))  # one invocation's --color never outlives it (CliRunner)
    state = AppState(config_file=config_file, dcs_url=dcs_url, insecure=insecure, timeout=timeout)
    if isinstance(ctx.obj, dict):  # tests hand in fakes at the protocol boundary: CliRunner.invoke(obj={...})
        state._config = ctx.obj.get("config")
        state._dcs = ctx.obj.get("dcs")
        state._rest = ctx.obj.get("rest")
    ctx.obj = state
    ctx.call_on_close(state.close)


# Command modules beyond the read-only views. They are imported only when a command outside the views is asked
# for (or the command list is shown), so `hactl list` does not pay for their imports (~15 ms). A module that does
# not exist is skipped; one that exists but fails to import is a bug and raises.
PLUGINS = ("ctl.cli.operations", "ctl.cli.agent", "ctl.cli.demo", "ctl.cli.editconfig", "ctl.cli.completion",
           "ctl.cli.cluster_role", "ctl.cli.tools", "ctl.cli.drill")
_plugins_loaded = False


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    import importlib

    for name in PLUGINS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(app)


def _register() -> None:
    from ctl.cli import views

    views.register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (`hactl`)."""
    app(args=argv, prog_name="hactl")
