"""What the agent publishes about itself: the member key's JSON and the NodeStatus the REST API renders."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Mapping

from ctl import __version__
from ctl.agent.node import NodeState
from ctl.ha.standby import REMOTE
from ctl.model import NodeStatus


@dataclass(frozen=True)
class Self:
    """The parts of the agent the member key is built from, besides NodeState."""

    conn_url: str
    api_url: str
    tags: Mapping[str, Any]
    task_state: str | None  # the running task's member state ("creating replica", ...)
    task_progress: Mapping[str, Any] | None
    scheduled_restart: Mapping[str, Any] | None
    data_dir_empty: bool
    failsafe_active: bool = False  # failsafe_mode_is_active (ctl/agent/failsafe.py)


def state_name(node: NodeState, me: Self) -> str:
    if me.task_state:
        return me.task_state
    s = node.pg_state
    if s is None or not s.running:
        return "start failed" if node.start_failed else "stopped"
    return "running"


def role_name(node: NodeState, me: Self) -> str:
    s = node.pg_state
    if s is None or not s.running or s.in_recovery is None:
        return "uninitialized" if me.data_dir_empty else "replica"
    if s.in_recovery and node.upstream == REMOTE and node.holds_lock_now():
        return "standby_leader"
    return "replica" if s.in_recovery else "primary"


def member_data(node: NodeState, me: Self) -> dict[str, Any]:
    """The `members/<name>` value, with Patroni's keys."""
    s = node.pg_state
    data: dict[str, Any] = {
        "conn_url": me.conn_url,
        "api_url": me.api_url,
        "state": state_name(node, me),
        "role": role_name(node, me),
        "version": __version__,
    }
    if s is not None and s.running and not me.task_state:  # Patroni leaves positions out while a task runs
        if s.wal_lsn is not None:
            data["xlog_location"] = s.wal_lsn
        if s.in_recovery:
            if s.replayed_lsn is not None:
                data["replay_lsn"] = s.replayed_lsn
            if s.received_lsn is not None:
                data["receive_lsn"] = s.received_lsn
            data["replication_state"] = "streaming" if s.streaming else "in archive recovery"
        if s.timeline is not None:
            data["timeline"] = s.timeline
        if s.pending_restart:
            data["pending_restart"] = True
            data["pending_restart_reason"] = dict(s.pending_restart)
    if me.tags:
        data["tags"] = dict(me.tags)
    if me.scheduled_restart:
        data["scheduled_restart"] = dict(me.scheduled_restart)
    if node.cluster is not None and node.cluster.is_paused:
        data["pause"] = True
    return data


def node_status(previous: NodeStatus, node: NodeState, me: Self) -> NodeStatus:
    """The cached status for `GET /patroni` and the health checks."""
    s = node.pg_state
    cluster = node.cluster
    running = bool(s is not None and s.running)
    return replace(
        previous,
        state=state_name(node, me),
        role=role_name(node, me),
        is_leader=bool(cluster and cluster.leader and cluster.leader.name == node.name),
        server_version=getattr(s, "server_version", None),
        postmaster_start_time=getattr(s, "postmaster_start_time", None),
        xlog_location=s.wal_lsn if running and not s.in_recovery else None,
        received_location=s.received_lsn if running and s.in_recovery else None,
        replayed_location=s.replayed_lsn if running and s.in_recovery else None,
        replayed_timestamp=getattr(s, "replayed_timestamp", None) if running else None,
        wal_replay_paused=bool(getattr(s, "wal_replay_paused", False)),
        timeline=s.timeline if running else None,
        replication_state=("streaming" if s.streaming else "in archive recovery")
        if running and s.in_recovery else None,
        replication=tuple(getattr(s, "replication", ()) or ()) if running else (),
        sync_standby=bool(cluster and cluster.synchronous_mode == "on" and node.name in cluster.sync_standbys),
        quorum_standby=bool(cluster and cluster.synchronous_mode == "quorum" and node.name in cluster.sync_standbys),
        pause=bool(cluster and cluster.is_paused),
        cluster_unlocked=bool(cluster is not None and cluster.leader is None),
        dcs_last_seen=int(time.time()) if cluster is not None else previous.dcs_last_seen,
        tags=dict(me.tags),
        system_identifier=(cluster.initialize if cluster and cluster.initialize else None)
        or getattr(s, "system_identifier", None),
        pending_restart=bool(getattr(s, "pending_restart", None)),
        pending_restart_reason=dict(getattr(s, "pending_restart", None) or {}),
        scheduled_restart=dict(me.scheduled_restart) if me.scheduled_restart else None,
        last_loop_time=time.time(),
        ttl=node.settings.ttl,
        maximum_lag_on_failover=node.settings.maximum_lag_on_failover,
        cluster_optime=cluster.optime if cluster else None,
        basebackup=dict(me.task_progress) if me.task_progress else None,
        failsafe_mode_is_active=me.failsafe_active,
    )
