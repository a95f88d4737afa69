"""edit-config: change the cluster's dynamic configuration safely (validated, shown as a diff, compare-and-set).

The service, the validation tables and the subprocess machinery are imported inside the command: every other
hactl command imports this module at start-up and should not pay for them.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, List, Optional

import typer

from ctl.cli.context import AppState, color_enabled, err, out
from ctl.errors import Aborted, CasFailed, NotFound, OperationFailed, Refused, UsageError


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def editor_command(env: dict[str, str]) -> list[str]:
    """$VISUAL, else $EDITOR, else `editor`, else `vi` (a value may carry arguments: `code -w`).

    Raises:
        OperationFailed: none of them is available.
    """
    import shlex
    import shutil

    for var in ("VISUAL", "EDITOR"):
        if env.get(var, "").strip():
            return shlex.split(env[var])
    for name in ("editor", "vi"):
        if shutil.which(name):
            return [name]
    raise OperationFailed("no editor: set $VISUAL or $EDITOR (editor and vi are not available either); "
                          "or use --set/--pg/--apply/--replace")


def run_editor(text: str, scope: str) -> str:
    """Open the editor on `text` in a temp file named `<scope>-config-XXXX.yaml`; return what was saved.

    Raises:
        OperationFailed: the editor is missing or exits non-zero (nothing is written then).
    """
    import subprocess
    import tempfile

    cmd = editor_command(dict(os.environ))
    fd, path = tempfile.mkstemp(prefix=scope.replace("/", "_") + "-config-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            code = subprocess.call([*cmd, path])
        except OSError as exc:
            raise OperationFailed(f"cannot start the editor {cmd[0]!r}: {exc.strerror or exc}; nothing written"
                                  ) from None
        if code != 0:
            raise OperationFailed(f"the editor {cmd[0]!r} exited with return code {code}; nothing written")
        with open(path, encoding="utf-8") as f:
            return f.read()
    finally:
        os.unlink(path)


def _read_source(value: str, what: str) -> dict:
    from ctl.services import edit_config as ec

    if value == "-":
        return ec.load_yaml_mapping(sys.stdin.read(), f"{what} (stdin)")
    try:
        with open(value, encoding="utf-8") as f:
            return ec.load_yaml_mapping(f.read(), value)
    except OSError as exc:
        raise UsageError(f"cannot read {what} file {value!r}: {exc.strerror or exc}") from None


def _ask(question: str) -> bool:
    try:
        return typer.confirm(question, default=False)
    except typer.Abort:  # EOF or Ctrl-C at the prompt
        raise Aborted("aborted; nothing written") from None


def cmd_edit_config(
    ctx: typer.Context,
    cluster_name: Annotated[Optional[str], typer.Argument()] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not show the diff and the effects")] = False,
    sets: Annotated[Optional[List[str]], typer.Option(
        "--set", "-s", metavar="KEY=VALUE", help="Set a dotted key to a YAML value (null deletes); repeatable")] = None,
    pgs: Annotated[Optional[List[str]], typer.Option(
        "--pg", "-p", metavar="PARAM=VALUE", help="Set postgresql.parameters.PARAM; repeatable")] = None,
    apply: Annotated[Optional[str], typer.Option(
        "--apply", metavar="FILE", help="Merge a YAML file ('-' for stdin) into the configuration")] = None,
    replace: Annotated[Optional[str], typer.Option(
        "--replace", metavar="FILE", help="Replace the configuration with a YAML file ('-' for stdin)")] = None,
    force: Annotated[bool, typer.Option("--force", help="Apply without asking")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the diff and effects; write nothing")] = False,
    no_validate: Annotated[bool, typer.Option(
        "--no-validate", help="Skip the schema and pg_settings checks (--force does not skip them)")] = False,
) -> None:
    """Edit the dynamic configuration: $EDITOR, or --set/--pg/--apply/--replace; validated, diffed, compare-and-set.

    Edits apply in this order: --replace, then --apply (recursive merge, null deletes), then --set, then --pg.
    """
    from ctl import render_edit
    from ctl.services import cluster as svc
    from ctl.services import edit_config as ec

    state: AppState = ctx.obj
    interactive = _stdin_is_tty()
    if not force and not dry_run and not interactive:
        raise Aborted("stdin is not a terminal, so there is no one to confirm: pass --force to apply without "
                      "asking (or --dry-run to only see the changes)")
    if apply == "-" and replace == "-":
        raise UsageError("--apply - and --replace - cannot both read stdin")
    edits = ec.Edits(replace=_read_source(replace, "--replace") if replace is not None else None,
                     apply=_read_source(apply, "--apply") if apply is not None else None,
                     pairs=tuple(sets or ()), pg_pairs=tuple(pgs or ()))
    scope = svc.cluster_names([cluster_name] if cluster_name else [], state.config.scope)[0]
    edited_text: str | None = None  # the editor path keeps the user's text across a refused attempt
    while True:
        cluster = svc.read_cluster(state.dcs, state.namespace, scope)
        if cluster.config is None:
            raise NotFound(f"the config key does not exist in cluster {scope!r}")
        before = dict(cluster.config.data)
        if edits.any:
            after = ec.apply_edits(before, edits)
        else:
            edited_text = run_editor(edited_text if edited_text is not None else ec.dump(before), scope)
            try:
                after = ec.load_yaml_mapping(edited_text, "the edited configuration")
            except UsageError as exc:
                if not interactive or force:
                    raise
                err(f"Error: {exc.message}")
                if _ask("Re-open the editor?"):
                    continue
                raise Aborted("aborted; nothing written") from None
        catalogue = None if no_validate else ec.load_catalogue(cluster, state.config, state.timeout)
        change = ec.plan_change(cluster, after, catalogue, ec.local_parameters_of(cluster, state.config),
                                check=not no_validate)
        if not change.changed:
            if not quiet:
                out("Not changed\n")
            return
        if not quiet:
            out(render_edit.render_diff(change.diff, color=color_enabled()))
            out(render_edit.render_change_effects(change))
        if change.validation is not None and not change.validation.ok:
            message = ("the new configuration is invalid; nothing written:\n"
                       + "\n".join(f"  - {p}" for p in change.validation.problems))
            if not edits.any and interactive and not force:
                err(f"Error: {message}")
                if _ask("Re-open the editor?"):
                    continue
                raise Aborted("aborted; nothing written")
            raise Refused(message + "\n(--no-validate skips these checks)")
        if dry_run:
            out("Dry run: nothing written\n")
            return
        if not force and not _ask("Apply these changes?"):
            raise Aborted("not applied; nothing written")
        try:
            ec.write_config(state.dcs, state.namespace, scope, change)
        except CasFailed as exc:
            if not edits.any and interactive and not force:
                err(f"Error: {exc.message}")
                if _ask("Re-open the editor on the current configuration?"):
                    edited_text = None
                    continue
            raise CasFailed(f"{exc.message}; run edit-config again") from None
        out("Configuration changed\n")
        return


def register(app: typer.Typer) -> None:
    from ctl.cli.auditing import audited

    app.command("edit-config")(audited("edit-config", cmd_edit_config))
