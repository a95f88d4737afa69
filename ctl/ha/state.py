"""What the HA brain sees: one observation of the DCS, the local PostgreSQL and the peers. Plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ctl.model import Cluster


@dataclass(frozen=True)
class HaSettings:
    ttl: int = 30
    loop_wait: int = 10
    retry_timeout: int = 10
    maximum_lag_on_failover: int = 1048576
    use_pg_rewind: bool = False
    nofailover: bool = False
    failover_priority: int = 1
    replicatefrom: str | None = None  # tag: stream from this member instead of the leader (cascading)
    synchronous_mode: str = "off"  # off, on, quorum (always off in a standby cluster)
    synchronous_mode_strict: bool = False
    synchronous_node_count: int = 1
    maximum_lag_on_syncnode: int = -1
    primary_start_timeout: int = 300  # seconds a crashed primary gets to restart in place (0: fail over)
    member_slots_ttl: int = 1800  # the leader keeps the slot of a member gone for this long


@dataclass(frozen=True)
class Replica:
    """One pg_stat_replication row on the primary: a walsender and the member it streams to."""

    name: str  # application_name (hactl and Patroni set it to the member name)
    state: str = "streaming"
    sync_state: str = "async"  # async, potential, sync, quorum
    lsn: int | None = None  # flush_lsn: what the standby has made durable


@dataclass(frozen=True)
class PgView:
    """The local PostgreSQL as the loop probed it."""

    running: bool = False
    in_recovery: bool | None = None
    timeline: int | None = None
    wal_lsn: int | None = None
    streaming: bool = False
    # not streaming although a leader is up, for longer than the rejoin grace period
    stream_stalled: bool = False
    upstream: str | None = None  # the member name our primary_conninfo points at (None: no upstream)
    data_dir_empty: bool = True
    system_identifier: str | None = None
    # the last clean state of the data directory says it ran as a primary (pg_controldata "in production"/"shut down")
    was_primary: bool = False
    # the control file says it did not shut down cleanly ("in production", "in crash recovery"): it crashed
    crashed: bool = False
    start_failed: bool = False
    handed_over_at: float | None = None  # monotonic time this node released the lock for a failover (HAND_OVER)
    replication: tuple[Replica, ...] = ()  # primary: its walsenders
    sync_names: str | None = None  # the synchronous_standby_names in effect (None: unknown)
    sync_names_managed: bool = False  # the agent has set synchronous_standby_names itself since it started
    # primary: its WAL position once the last change of synchronous_standby_names was in effect; a standby that
    # reports `sync` is trusted with promotion only after it has flushed up to here (commits acknowledged before
    # the change may have waited for other standbys only)
    sync_ready_lsn: int | None = None


@dataclass(frozen=True)
class PeerView:
    """A peer's answer to GET /patroni, gathered only when the leader key is missing."""

    name: str
    reachable: bool
    wal_lsn: int | None = None
    is_primary: bool = False
    nofailover: bool = False
    failover_priority: int = 1
    replicatefrom: str | None = None  # tag: stream from this member instead of the leader (cascading)
    timeline: int | None = None


@dataclass(frozen=True)
class FailsafeView:
    """`failsafe_mode` as this node sees it (ctl/ha/failsafe.py has the rules)."""

    enabled: bool = False  # failsafe_mode in the last good dynamic config
    members: Mapping[str, str] | None = None  # the last `failsafe` key read: {name: api_url}
    # DCS down and this node a running primary: did every other member in `members` answer POST /failsafe with
    # `Accepted`? None: not asked this loop
    all_accepted: bool | None = None
    unreachable: tuple[str, ...] = ()  # the members that did not accept
    leader: str | None = None  # a replica: the member whose POST /failsafe arrived within the last ttl seconds


@dataclass(frozen=True)
class Observation:
    name: str
    now: float  # monotonic seconds
    settings: HaSettings
    pg: PgView
    cluster: Cluster | None  # None: the DCS read failed
    last_lock_renewal: float | None = None  # monotonic time of our last successful leader renewal
    peers: Mapping[str, PeerView] = field(default_factory=dict)
    wall_time: float = 0.0  # epoch seconds, for scheduled switchovers
    failsafe: FailsafeView = field(default_factory=FailsafeView)
    task: str | None = None  # the long task the task runner is running ("reinitialize", "restart", ...)

    @property
    def failover(self):
        """The pending switchover/failover request, or None."""
        fo = self.cluster.failover if self.cluster else None
        return fo if fo is not None and not fo.is_empty else None

    @property
    def dcs_ok(self) -> bool:
        return self.cluster is not None

    @property
    def holds_lock(self) -> bool:
        return bool(self.cluster and self.cluster.leader and self.cluster.leader.name == self.name)

    @property
    def is_primary(self) -> bool:
        return self.pg.running and self.pg.in_recovery is False
