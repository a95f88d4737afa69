"""`hactl agent`: run the node agent. Nothing heavy is imported until the command runs."""

from __future__ import annotations

from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("agent")
    def agent(
        config_file: str = typer.Option(..., "-c", "--config-file", help="The node's patroni.yml."),
        user: Optional[str] = typer.Option(
            None, "--user", help="OS user that runs PostgreSQL when the agent starts as root [default: postgres]."
        ),
        log_file: Optional[str] = typer.Option(None, "--log-file", help="Write the log here instead of stderr."),
    ) -> None:
        """Run the node agent: leader election in etcd, PostgreSQL primary/replica, REST API."""
        from ctl.agent.runner import run

        raise typer.Exit(run(config_file, user, log_file))
