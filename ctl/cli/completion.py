"""Shell-completion support: the hidden `hactl _complete clusters|members [CLUSTER]` command.

The scripts in completions/ are generated from ctl/cli/tree.py by scripts/gen_completions.py; they complete
commands, options and option values in the shell itself and call `hactl _complete` only for the names that live in
etcd. That call must be fast and quiet: it reads the config and one etcd range with a short timeout, prints one
name per line, and prints nothing at all on any error. Nothing beyond typer is imported until it runs.
"""

from __future__ import annotations

from typing import Any, Optional

import typer

# The longest a TAB may wait for etcd: a dead endpoint must not hang the shell.
COMPLETE_TIMEOUT = 1.5


def _names(kind: str, cluster: Optional[str], state: Any) -> list[str]:
    from ctl.dcs.gateway import EtcdGateway

    cfg = state.config
    if cfg.etcd is None:
        return []
    with EtcdGateway(cfg.etcd, timeout=min(state.timeout, COMPLETE_TIMEOUT)) as dcs:
        if kind == "clusters":
            return dcs.list_clusters(cfg.namespace)
        scope = cluster or cfg.scope
        if not scope:
            return []
        return sorted(m.name for m in dcs.get_cluster(cfg.namespace, scope).members)


def register(app: typer.Typer) -> None:
    @app.command("_complete", hidden=True)
    def complete(
        ctx: typer.Context,
        kind: str = typer.Argument(..., help="clusters or members"),
        cluster: Optional[str] = typer.Argument(None, help="The cluster whose members to list [default: scope]"),
    ) -> None:
        """Print cluster or member names for shell completion, one a line; print nothing on any error."""
        try:
            names = _names(kind, cluster, ctx.obj) if kind in ("clusters", "members") else []
        except Exception:  # noqa: BLE001 - a TAB must never show an error or a traceback
            return
        if names:
            typer.echo("\n".join(names))
