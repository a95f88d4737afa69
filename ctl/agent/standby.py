"""Standby cluster, the agent's side: what a standby leader streams from and how it is configured.

The rules (who is the standby leader, that it never promotes) are in ctl/ha/standby.py. Here:

- `remote_conninfo()`: `primary_conninfo` to the `standby_cluster` host/port with this node's replication user
  (a comma-separated host list with a slot gets `target_session_attrs=read-write`, as Patroni);
- `recovery_parameters()`: `restore_command` and `archive_cleanup_command` for every member,
  `recovery_min_apply_delay` for the standby leader only (Patroni's rules);
- `bootstrap_from_remote()`: the first node of a new standby cluster clones the remote instead of running initdb;
- `demote_cluster()`: a primary whose cluster became a standby cluster (`demote-cluster`, or `standby_cluster` set
  with edit-config) stops cleanly and starts again as the standby leader, keeping the leader lock.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping

from ctl.agent import settings as st
from ctl.config import Config
from ctl.errors import CtlError
from ctl.ha.standby import REMOTE
from ctl.model import Member

if TYPE_CHECKING:
    from ctl.agent.node import NodeState
    from ctl.agent.pgtasks import PgTasks
    from ctl.agent.taskrunner import Job

log = logging.getLogger("hactl.agent")


def _valid(section: Any) -> Mapping[str, Any] | None:
    if isinstance(section, Mapping) and (section.get("host") or section.get("port") or section.get("restore_command")):
        return section
    return None


def section(config: Config, node: "NodeState") -> Mapping[str, Any] | None:
    """The `standby_cluster` section in force: the dynamic config, or bootstrap.dcs before the cluster exists."""
    good = node.good_config
    if good is not None and good.mod_revision:
        return _valid(good.data.get("standby_cluster"))
    return _valid(st.bootstrap_dcs(config).get("standby_cluster"))


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def remote_conninfo(config: Config, node: "NodeState", *, replication: bool = True) -> str | None:
    """libpq conninfo to the remote primary, or None when the section names no host or port."""
    sc = section(config, node)
    if sc is None or not (sc.get("host") or sc.get("port")):
        return None
    pgc = config.postgresql
    user = pgc.replication if replication else (pgc.rewind or pgc.superuser)
    parts = []
    if sc.get("host"):
        parts.append(f"host={_quote(str(sc['host']))}")
    if sc.get("port"):
        parts.append(f"port={int(sc['port'])}")
    parts.append(f"user={_quote(user.username)}")
    if user.password:
        parts.append(f"password={_quote(user.password)}")
    if replication:
        parts.append(f"application_name={_quote(node.name)}")
        if "," in str(sc.get("host") or "") and sc.get("primary_slot_name"):
            parts.append("target_session_attrs=read-write")
    else:
        parts.append("dbname=postgres")
    parts.append("connect_timeout=5")
    return " ".join(parts)


def remote_member(config: Config, node: "NodeState") -> Member | None:
    """The remote as a Member (host, port), for reachability checks; None without a host."""
    sc = section(config, node)
    if sc is None or not sc.get("host"):
        return None
    host = str(sc["host"]).split(",")[0].strip()
    return Member(name="(remote)", conn_url=f"postgres://{host}:{int(sc.get('port') or 5432)}/postgres")


def remote_slot(config: Config, node: "NodeState") -> str | None:
    """The section's `primary_slot_name`; no slot when absent (Patroni's code, not its docs)."""
    sc = section(config, node)
    value = sc.get("primary_slot_name") if sc else None
    return str(value) if value else None


def recovery_parameters(config: Config, node: "NodeState", target: str | None) -> dict[str, Any]:
    """restore_command / archive_cleanup_command on every member, recovery_min_apply_delay on the standby leader."""
    sc = section(config, node)
    if sc is None or target is None:
        return {}
    names = ["restore_command", "archive_cleanup_command"]
    if target == REMOTE:
        names.append("recovery_min_apply_delay")
    return {k: sc[k] for k in names if sc.get(k) not in (None, "")}


def bootstrap_from_remote(tasks: "PgTasks", job: "Job") -> bool:
    """A new standby cluster: clone the remote primary (pg_basebackup) instead of initdb; False if not one.

    Raises:
        CtlError: the section names no host/port to clone from, or pg_basebackup failed.
    """
    if section(tasks.config, tasks.node) is None:
        return False
    source = remote_conninfo(tasks.config, tasks.node)
    if source is None:
        raise CtlError("standby_cluster has no host/port to clone from (restore_command-only bootstrap is not "
                       "supported)")
    job.state = "creating replica"
    log.info("trying to bootstrap a new standby leader: pg_basebackup from the standby_cluster remote")
    try:
        tasks.pg.basebackup(source, options=st.basebackup_options(tasks.config))
    except CtlError:
        tasks.pg.remove_data_dir()
        raise
    job.check()
    return True


def demote_cluster(tasks: "PgTasks", job: "Job") -> bool:
    """The lock holder is a primary but the cluster is now a standby cluster: restart as the standby leader."""
    log.info("demoting to a standby cluster: stopping PostgreSQL cleanly, then following the remote primary")
    job.state = "stopping"
    tasks.pg.stop(mode="fast", checkpoint=True)
    tasks.node.hooks.stopped("demoted")  # Patroni's demote(): on_stop demoted, then on_role_change standby_leader
    job.check()
    tasks.start(job, standby=True, target=REMOTE)
    log.info("now the standby leader, following the standby_cluster remote")
    return True


def newest_history_timeline(data_dir: str) -> int | None:
    """The highest timeline with a history file in pg_wal: the timeline a replica switched to, even when no
    restartpoint has recorded it yet (pg_control_checkpoint lags), e.g. a replica that followed its leader's
    promotion just before `demote-cluster` took that leader back to the remote's timeline."""
    import os
    import re

    try:
        names = os.listdir(os.path.join(data_dir, "pg_wal"))
    except OSError:
        return None
    tlis = [int(m.group(1), 16) for m in (re.fullmatch(r"([0-9A-F]{8})\.history", n) for n in names) if m]
    return max(tlis) if tlis else None
