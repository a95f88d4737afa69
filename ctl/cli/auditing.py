"""`--reason` on every changing command, and the audit entry each one appends to etcd when it ends.

`audited(name, command)` wraps a command function: it adds the `--reason TEXT` option and, however the command
ends (success, refusal, error, declined prompt), appends one entry with the OS user and host, the arguments (secrets
redacted), the reason, the result, the exit code and the duration. A failed audit write is a warning on stderr and
never changes the command's exit code.
"""

from __future__ import annotations

import functools
import inspect
import time
from contextlib import contextmanager
from typing import Annotated, Any, Callable, Iterator, Optional

import typer

from ctl.cli.context import err
from ctl.errors import CtlError, ExitCode

REASON_HELP = "Why: recorded in the cluster's audit trail (hactl audit)"
_SKIP_ARGS = frozenset({"ctx", "fmt", "reason"})
_note: list[str] = []


def note(result: str) -> None:
    """The command's own one-line result, for the entry (otherwise `ok` or the error message)."""
    _note[:] = [result]


def audited(command: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` with a `--reason` option whose every run is recorded in the audit trail."""

    @functools.wraps(fn)
    def wrapper(*args: Any, reason: Optional[str] = None, **kwargs: Any) -> Any:
        ctx = kwargs.get("ctx") or (args[0] if args else None)
        with recording(ctx, command, kwargs.get("cluster_name"), reason, kwargs):
            return fn(*args, **kwargs)

    sig = inspect.signature(fn, eval_str=True)  # the Annotated typer options as objects, not strings
    option = inspect.Parameter("reason", inspect.Parameter.KEYWORD_ONLY, default=None,
                               annotation=Annotated[Optional[str], typer.Option("--reason", metavar="TEXT",
                                                                                 help=REASON_HELP)])
    params = [p if p.kind != inspect.Parameter.POSITIONAL_OR_KEYWORD else p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
              for p in sig.parameters.values()]
    wrapper.__signature__ = sig.replace(parameters=[*params, option])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
    return wrapper


@contextmanager
def recording(ctx: Any, command: str, cluster_name: Optional[str], reason: Optional[str],
              params: dict[str, Any], scope_of: Callable[[], Optional[str]] | None = None) -> Iterator[None]:
    start = time.monotonic()
    _note.clear()
    code, result = int(ExitCode.OK), "ok"
    try:
        yield
    except CtlError as exc:
        code, result = int(exc.exit_code), exc.message
        raise
    except typer.Exit as exc:
        code = int(exc.exit_code or 0)
        result = "ok" if code == 0 else f"exit code {code}"
        raise
    except typer.Abort:
        code, result = int(ExitCode.ABORTED), "aborted"
        raise
    except KeyboardInterrupt:
        code, result = int(ExitCode.INTERRUPTED), "interrupted"
        raise
    except Exception as exc:  # noqa: BLE001 - recorded, then handled by the app's last line of defence
        code, result = int(ExitCode.FAILED), f"internal error: {type(exc).__name__}"
        raise
    finally:
        if code == 0 and _note:
            result = _note[0]
        unreachable = code in (ExitCode.DCS_UNAVAILABLE, ExitCode.CONFIG)  # a second try would only wait again
        if not unreachable and not (command == "remove" and code == 0):  # the trail went with the cluster
            _write(ctx, command, cluster_name, reason, params, code, result, time.monotonic() - start)


def _write(ctx: Any, command: str, cluster_name: Optional[str], reason: Optional[str], params: dict[str, Any],
           code: int, result: str, duration: float) -> None:
    from ctl.dcs import audit as layout
    from ctl.services import audit as asvc

    state = getattr(ctx, "obj", None)
    if state is None:
        return
    try:
        scope = cluster_name or state.config.scope
        if not scope:
            return
        user, host = layout.who()
        args = layout.redact({k: v for k, v in params.items() if k not in _SKIP_ARGS and v not in (None, (), [])})
        entry = layout.AuditEntry(time=layout.now_iso(), command=command, user=user, host=host, source="hactl",
                                  args=args, reason=layout.redact(reason) if reason else None,
                                  result=layout.redact(result), exit_code=code, duration_s=round(duration, 3))
        asvc.append(state.dcs, state.namespace, scope, entry)
    except CtlError as exc:
        err(f"Warning: the audit entry for this {command} was not written: {exc.message}")
