"""What decide() sees of the local PostgreSQL: the loop's probe, the control file when it is down, and whether a
replica stalled. Read-only: nothing here changes PostgreSQL."""

from __future__ import annotations

from typing import Any

from ctl.agent import standby as sb
from ctl.agent.node import NodeState
from ctl.errors import CtlError
from ctl.ha.state import PgView, Replica

CRASHED_STATES = ("in production", "in crash recovery", "shutting down")


def pg_view(node: NodeState, pg: Any, state: Any, now: float, task: str | None,
            last_streaming: float | None) -> PgView:
    """The PgView decide() sees: the probe, plus the control file when PostgreSQL is down and no task runs."""
    empty = pg.data_dir_empty()
    sysid = state.system_identifier if state.running else None
    was_primary = crashed = False
    if not empty and not state.running and task is None:  # a task may be rewriting the data directory
        control = _controldata(pg)
        sysid = control.get("Database system identifier") or sysid
        cluster_state = control.get("Database cluster state", "")
        was_primary = cluster_state in ("in production", "shut down")
        crashed = cluster_state in CRASHED_STATES
    grace = max(2 * node.settings.loop_wait, 5)
    stalled = (bool(state.running and state.in_recovery and not state.streaming and node.upstream)
               and now - max(last_streaming or 0.0, node.follow_since) > grace)
    timeline = state.timeline
    if stalled:  # not streaming: the checkpoint timeline may lag the one the replica switched to
        timeline = max(t for t in (timeline, sb.newest_history_timeline(pg.data_dir), 0) if t is not None)
    return PgView(
        running=state.running,
        in_recovery=state.in_recovery,
        timeline=timeline or state.timeline,
        wal_lsn=state.wal_lsn,
        streaming=state.streaming,
        stream_stalled=stalled,
        upstream=node.upstream if state.running else None,
        data_dir_empty=empty,
        system_identifier=sysid,
        was_primary=was_primary,
        crashed=crashed,
        start_failed=node.start_failed,
        handed_over_at=node.handed_over_at,
        replication=_replicas(state),
        sync_names=getattr(state, "sync_names", None) if state.running else None,
        sync_names_managed=node.sync_names is not None,
        sync_ready_lsn=node.sync_ready_lsn,
    )


def _controldata(pg: Any) -> dict[str, str]:
    try:
        return pg.controldata()
    except CtlError:
        return {}


def _replicas(state: Any) -> tuple[Replica, ...]:
    """pg_stat_replication rows of a running primary, as the HA brain sees them."""
    if not (state.running and state.in_recovery is False):
        return ()
    return tuple(Replica(name=str(r.get("application_name") or ""), state=str(r.get("state") or ""),
                         sync_state=str(r.get("sync_state") or "async"), lsn=r.get("flush_lsn"))
                 for r in state.replication or ())
