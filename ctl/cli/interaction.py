"""How the operation commands talk to a person or a script: prompts that refuse to run without a terminal, the
printer that keeps stdout clean for `-f json`, and the mapping from a result's outcome to an error and exit code."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, Iterator, Optional

import typer

from ctl import render
from ctl import render_operations as rops
from ctl.cli.context import AppState, color_enabled, err, out
from ctl.errors import (Aborted, CtlError, ExitCode, OperationFailed, OperationTimeout, Refused, RestError,
                        ResultUnknown, UsageError)
from ctl.model import Cluster
from ctl.services import cluster as csvc

if TYPE_CHECKING:
    from ctl.services.results import OperationResult

FORMAT_HELP = "Output: pretty (patronictl's lines and tables) or json (one result object)"
# The parameters most commands share, declared once.
ClusterArg = Annotated[Optional[str], typer.Argument(metavar="[CLUSTER_NAME]")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Do not ask for confirmation")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", metavar="FMT", help=FORMAT_HELP)]


def output_format(value: str) -> str:
    value = value.lower()
    if value in ("pretty", "json"):
        return value
    if value in ("tsv", "yaml", "yml"):
        return "pretty"  # patronictl's -f on remove/… only shapes the table; hactl prints it pretty
    raise UsageError(f"invalid format {value!r}; choose pretty or json")


def interactive() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def no_terminal(what: str, flags: str) -> Aborted:
    return Aborted(f"{what}, but stdin is not a terminal: pass {flags}")


def confirm(question: str, flags: str = "--force") -> None:
    """Raises: Aborted when the answer is no, or there is no terminal to ask on."""
    if not interactive():
        raise no_terminal(f"would ask '{question}'", flags)
    if not typer.confirm(question, default=False):
        raise Aborted("Aborting: not confirmed")


def prompt(question: str, default: str, flags: str) -> str:
    if not interactive():
        raise no_terminal(f"would ask '{question}'", flags)
    return str(typer.prompt(question, default=default, show_default=bool(default)))


_ERRORS: dict[str, type[CtlError]] = {"refused": Refused, "failed": OperationFailed, "timeout": OperationTimeout,
                                      "unknown": ResultUnknown, "unreachable": RestError}


def raise_for(result: "OperationResult") -> None:
    if not result.ok:
        raise _ERRORS.get(result.outcome, ResultUnknown)(result.message)


class Printer:
    """Progress and results: on stdout in pretty mode; with -f json, stdout carries only the result object."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self._status_shown = False

    def line(self, text: str) -> None:
        if self.fmt == "json":
            err(text)
        else:
            self._clear_status()
            out(text if text.endswith("\n") else text + "\n")

    def status(self, text: str) -> None:
        """A transient one-line status (a base backup's progress), rewritten in place: only on a terminal and
        only in pretty mode, so scripts and -f json never see it."""
        if self.fmt != "pretty" or not sys.stdout.isatty():
            return
        out("\r\x1b[2K" + text)
        self._status_shown = True

    def _clear_status(self) -> None:
        if self._status_shown:
            out("\r\x1b[2K")
            self._status_shown = False

    def table(self, cluster: Cluster | None, title: str | None = None) -> None:
        if self.fmt == "pretty" and cluster is not None and not cluster.is_empty:
            out((title + "\n" if title else "") + render.render_list(cluster, "pretty", color=color_enabled()))

    def result(self, result: "OperationResult", table: bool = True) -> None:
        from ctl.cli.auditing import note

        note(f"{result.outcome}: {result.message}" if result.message else result.outcome)
        if self.fmt == "json":
            out(rops.render_result_json(result))
        elif table:
            self.table(result.cluster)
        raise_for(result)


_OUTCOMES = {ExitCode.REFUSED: "refused", ExitCode.ABORTED: "aborted", ExitCode.USAGE: "usage error",
             ExitCode.CONFIG: "configuration error", ExitCode.DCS_UNAVAILABLE: "etcd unavailable",
             ExitCode.NOT_FOUND: "not found", ExitCode.TIMEOUT: "timeout", ExitCode.UNKNOWN: "unknown",
             ExitCode.REST_UNAVAILABLE: "unreachable"}


@contextmanager
def json_errors(fmt: str, command: str, requested: dict[str, Any]) -> Iterator[None]:
    """With -f json, an error before any result (validation, prompts, etcd) still prints a result object."""
    try:
        yield
    except CtlError as exc:
        if fmt == "json":
            outcome = _OUTCOMES.get(exc.exit_code, "failed")
            out(rops.render_error_json(command, requested, outcome, exc.message, int(exc.exit_code)))
        raise


def read_cluster(state: AppState, name: Optional[str]) -> Cluster:
    scope = csvc.cluster_names([name] if name else [], state.config.scope)[0]
    return csvc.read_cluster(state.dcs, state.namespace, scope)

