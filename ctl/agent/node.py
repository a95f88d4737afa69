"""What one agent knows and its actions change, shared by the loop, the executor and the tasks; plus the two
things every action needs from the configuration: a conninfo to another member and the PostgreSQL config files.

The loop thread and the task runner's worker both write here. Each field is one reference assigned whole, so a
reader sees an old or a new value, never a torn one; the loop reads it once per iteration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ctl.agent import settings as st
from ctl.agent import standby as sb
from ctl.agent.callbacks import CallbackHooks
from ctl.config import Config
from ctl.ha.standby import REMOTE
from ctl.ha.state import HaSettings
from ctl.model import Cluster, DynamicConfig
from ctl.pg.conf import slot_name


@dataclass
class NodeState:
    name: str
    settings: HaSettings
    cluster: Cluster | None = None
    pg_state: Any = None  # the last ctl.pg.probe.PgState the loop read
    good_config: DynamicConfig | None = None  # the last valid `config` key
    last_lock_renewal: float | None = None  # monotonic time of our last successful renewal (None: no lock)
    upstream: str | None = None  # the member our primary_conninfo points at
    follow_since: float = 0.0
    start_failed: bool = False
    handed_over_at: float | None = None  # when this node released the lock for a replica to take over
    last_switchover_result: str | None = None  # why the leader refused/cleared a switchover request
    hooks: CallbackHooks = field(default_factory=lambda: CallbackHooks(None))  # postgresql.callbacks
    sync_names: str | None = None  # synchronous_standby_names chosen by the leader (None: the configured value)
    sync_ready_lsn: int | None = None  # primary's WAL position once that choice was in effect (ctl.agent.sync)

    def holds_lock_now(self) -> bool:
        c = self.cluster
        return bool(c and c.leader and c.leader.name == self.name) or self.last_lock_renewal is not None

    @property
    def leader(self) -> str | None:
        c = self.cluster
        return c.leader.name if c is not None and c.leader is not None else None


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def conninfo(config: Config, node: NodeState, target: str, *, replication: bool) -> str | None:
    """A libpq conninfo to member `target` (replication user, or the rewind/superuser), or None if unknown."""
    if target == REMOTE:  # a standby cluster's remote primary
        return sb.remote_conninfo(config, node, replication=replication)
    m = node.cluster.member(target) if node.cluster is not None and target else None
    if m is None or not m.host:
        return None
    pgc = config.postgresql
    user = pgc.replication if replication else (pgc.rewind or pgc.superuser)
    parts = [f"host={m.host}", f"port={m.port}", f"user={_quote(user.username)}"]
    if user.password:
        parts.append(f"password={_quote(user.password)}")
    if replication:
        parts.append(f"application_name={_quote(node.name)}")
    else:
        parts.append("dbname=postgres")
    parts.append("connect_timeout=5")
    return " ".join(parts)


def write_config(config: Config, node: NodeState, pg: Any, *, standby: bool, target: str | None) -> bool:
    """Write PostgreSQL's configuration files for running as a primary, or as a standby of `target`."""
    dynamic = node.good_config
    primary_conninfo = conninfo(config, node, target, replication=True) if (standby and target) else None
    # only the leader keeps slots (for every member); a cascading replica streams without one
    slot = (slot_name(node.name)
            if (primary_conninfo and target == node.leader and st.use_slots(config, dynamic)) else None)
    slot = sb.remote_slot(config, node) if target == REMOTE else slot
    params = {**st.pg_parameters(config, dynamic), **(sb.recovery_parameters(config, node, target) if standby else {})}
    if node.sync_names is not None:  # synchronous mode: the leader's choice, not the configured value
        params["synchronous_standby_names"] = node.sync_names
    return pg.write_config(
        params,
        st.pg_hba(config, dynamic),
        standby=standby,
        primary_conninfo=primary_conninfo,
        primary_slot_name=slot,
    )
