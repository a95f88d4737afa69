"""`hactl demo up|down`: a local etcd + N agents on 127.0.0.1. Thin: the work is in ctl/demo.py."""

from __future__ import annotations

from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    demo = typer.Typer(help="Run a local demo cluster (etcd + agents + PostgreSQL on 127.0.0.1).",
                       no_args_is_help=True)

    @demo.command("up")
    def up(
        nodes: int = typer.Option(3, "--nodes", min=1, max=9, help="Number of PostgreSQL nodes."),
        directory: Optional[str] = typer.Option(None, "--dir", help="Where configs, data and logs go."),
        timeout: float = typer.Option(180.0, "--timeout", help="Seconds to wait for a healthy cluster."),
    ) -> None:
        """Start etcd and the agents, wait until the cluster is healthy, print `hactl list`."""
        from ctl import demo as impl

        raise typer.Exit(impl.up(nodes=nodes, directory=directory, timeout=timeout))

    @demo.command("down")
    def down(
        directory: Optional[str] = typer.Option(None, "--dir", help="The demo directory."),
        purge: bool = typer.Option(False, "--purge", help="Also remove configs, data and logs."),
    ) -> None:
        """Stop everything `demo up` started (by PID)."""
        from ctl import demo as impl

        raise typer.Exit(impl.down(directory=directory, purge=purge))

    app.add_typer(demo, name="demo")
