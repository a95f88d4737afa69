"""Frozen snapshots of what hactl reads from etcd and PostgreSQL.

Everything here is plain data: no I/O, no imports beyond the standard library. A `Cluster` is one versioned
snapshot of `/<namespace>/<scope>/`; each piece keeps the etcd mod_revision it was read at, for compare-and-set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Mapping
from urllib.parse import urlsplit


class MemberRole(StrEnum):
    """The `role` a member publishes in its `members/<name>` key."""

    PRIMARY = "primary"
    MASTER = "master"  # legacy spelling, still parsed
    REPLICA = "replica"
    STANDBY_LEADER = "standby_leader"
    DEMOTED = "demoted"
    UNINITIALIZED = "uninitialized"
    UNKNOWN = "unknown"


class ClusterRole(StrEnum):
    """The role `list` shows: derived from the leader key and /sync, not from the member's own claim."""

    LEADER = "leader"
    STANDBY_LEADER = "standby_leader"
    SYNC_STANDBY = "sync_standby"
    QUORUM_STANDBY = "quorum_standby"
    REPLICA = "replica"


def lsn_to_str(lsn: int | None) -> str:
    """`X/Y` as PostgreSQL prints an LSN, or `unknown`."""
    if lsn is None:
        return "unknown"
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_from_str(text: str) -> int:
    """Parse `X/Y` into an integer LSN.

    Raises:
        ValueError: when the text is not an LSN.
    """
    hi, lo = text.strip().split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "on", "yes", "1", "y")
    return bool(value)


def tags_failover_priority(tags: Mapping[str, Any]) -> int:
    try:
        return int(tags.get("failover_priority", 1))
    except (TypeError, ValueError):
        return 1


def tags_nofailover(tags: Mapping[str, Any]) -> bool:
    """Patroni's rule: an explicit `nofailover` tag decides; otherwise `failover_priority <= 0` means nofailover."""
    if tags.get("nofailover") is not None:
        return _truthy(tags["nofailover"])
    return "failover_priority" in tags and tags_failover_priority(tags) <= 0


def tags_sync_priority(tags: Mapping[str, Any]) -> int:
    try:
        return int(tags.get("sync_priority", 1))
    except (TypeError, ValueError):
        return 1


def tags_nosync(tags: Mapping[str, Any]) -> bool:
    """Patroni's rule: `nosync: true`, or `sync_priority <= 0`, keeps a member out of the synchronous standbys."""
    if _truthy(tags.get("nosync", False)):
        return True
    return "sync_priority" in tags and tags_sync_priority(tags) <= 0


@dataclass(frozen=True)
class Member:
    """One `members/<name>` key."""

    name: str
    conn_url: str | None = None
    api_url: str | None = None
    state: str | None = None
    role: str | None = None
    version: str | None = None
    xlog_location: int | None = None
    receive_lsn: int | None = None
    replay_lsn: int | None = None
    replication_state: str | None = None
    timeline: int | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)
    pending_restart: bool = False
    pending_restart_reason: Mapping[str, Any] = field(default_factory=dict)
    scheduled_restart: Mapping[str, Any] | None = None
    pause: bool = False
    mod_revision: int = 0
    lease: int | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def host(self) -> str | None:
        if not self.conn_url:
            return None
        try:
            return urlsplit(self.conn_url).hostname
        except ValueError:
            return None

    @property
    def port(self) -> int:
        if not self.conn_url:
            return 5432
        try:
            return urlsplit(self.conn_url).port or 5432
        except ValueError:
            return 5432

    @property
    def api_base(self) -> str | None:
        """scheme://host:port of the member's REST API (Patroni uses only these parts of api_url)."""
        if not self.api_url:
            return None
        try:
            parts = urlsplit(self.api_url)
        except ValueError:  # e.g. "http://[" in a hand-edited key
            return None
        return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None

    @property
    def nofailover(self) -> bool:
        return tags_nofailover(self.tags)

    @property
    def failover_priority(self) -> int:
        return tags_failover_priority(self.tags)

    @property
    def nosync(self) -> bool:
        return tags_nosync(self.tags)

    @property
    def sync_priority(self) -> int:
        return tags_sync_priority(self.tags)

    @property
    def noloadbalance(self) -> bool:
        return _truthy(self.tags.get("noloadbalance", False))

    @property
    def replicatefrom(self) -> str | None:
        value = self.tags.get("replicatefrom")
        return str(value) if value else None

    @property
    def lsn(self) -> int | None:
        """The best known WAL position of the member: replay/receive for a replica, xlog_location otherwise."""
        candidates = [v for v in (self.receive_lsn, self.replay_lsn) if v is not None]
        if candidates:
            return max(candidates)
        return self.xlog_location


@dataclass(frozen=True)
class Leader:
    name: str
    mod_revision: int = 0
    lease: int | None = None


@dataclass(frozen=True)
class Failover:
    """The `failover` key: a requested switchover/failover, maybe scheduled. `member` is the candidate."""

    leader: str | None = None
    member: str | None = None
    scheduled_at: str | None = None
    mod_revision: int = 0

    @property
    def is_empty(self) -> bool:
        return not (self.leader or self.member or self.scheduled_at)


@dataclass(frozen=True)
class SyncState:
    leader: str | None = None
    sync_standby: tuple[str, ...] = ()
    quorum: int | None = None
    mod_revision: int = 0


@dataclass(frozen=True)
class HistoryEntry:
    timeline: int
    lsn: int
    reason: str = ""
    timestamp: str = ""
    new_leader: str = ""


@dataclass(frozen=True)
class Status:
    """The `status` key (and the legacy `optime/leader`)."""

    optime: int | None = None
    slots: Mapping[str, int] = field(default_factory=dict)
    retain_slots: tuple[str, ...] = ()
    mod_revision: int = 0


@dataclass(frozen=True)
class DynamicConfig:
    """The `config` key: the cluster-wide dynamic configuration."""

    data: Mapping[str, Any] = field(default_factory=dict)
    mod_revision: int = 0

    def _int(self, key: str, default: int) -> int:
        try:
            return int(self.data.get(key, default))
        except (TypeError, ValueError):
            return default

    @property
    def ttl(self) -> int:
        return self._int("ttl", 30)

    @property
    def loop_wait(self) -> int:
        return self._int("loop_wait", 10)

    @property
    def retry_timeout(self) -> int:
        return self._int("retry_timeout", 10)

    @property
    def maximum_lag_on_failover(self) -> int:
        return self._int("maximum_lag_on_failover", 1048576)

    @property
    def pause(self) -> bool:
        return _truthy(self.data.get("pause", False))

    @property
    def synchronous_mode(self) -> str:
        """`off`, `on` or `quorum`."""
        value = self.data.get("synchronous_mode", False)
        if isinstance(value, str) and value.lower() == "quorum":
            return "quorum"
        return "on" if _truthy(value) else "off"

    @property
    def postgresql(self) -> Mapping[str, Any]:
        value = self.data.get("postgresql")
        return value if isinstance(value, Mapping) else {}

    @property
    def is_standby_cluster(self) -> bool:
        """Patroni's rule: a `standby_cluster` section with a host, port or restore_command."""
        sc = self.data.get("standby_cluster")
        return isinstance(sc, Mapping) and bool(sc.get("host") or sc.get("port") or sc.get("restore_command"))


@dataclass(frozen=True)
class Cluster:
    """One consistent read of `/<namespace>/<scope>/` (a single etcd range request)."""

    scope: str
    initialize: str | None = None  # None: key absent; "": initializing
    config: DynamicConfig | None = None
    leader: Leader | None = None
    members: tuple[Member, ...] = ()
    failover: Failover | None = None
    sync: SyncState | None = None
    history: tuple[HistoryEntry, ...] = ()
    status: Status = field(default_factory=Status)
    failsafe: Mapping[str, str] | None = None
    revision: int = 0  # the etcd header revision of the read

    @property
    def is_empty(self) -> bool:
        return self.initialize is None and self.config is None and not self.members and self.leader is None

    def member(self, name: str) -> Member | None:
        for m in self.members:
            if m.name == name:
                return m
        return None

    @property
    def leader_member(self) -> Member | None:
        return self.member(self.leader.name) if self.leader else None

    @property
    def is_paused(self) -> bool:
        return bool(self.config and self.config.pause)

    @property
    def synchronous_mode(self) -> str:
        return self.config.synchronous_mode if self.config else "off"

    @property
    def sync_standbys(self) -> frozenset[str]:
        if self.sync is None or self.synchronous_mode == "off":
            return frozenset()
        if self.leader is None or self.sync.leader != self.leader.name:
            return frozenset()
        return frozenset(self.sync.sync_standby)

    def cluster_role(self, member: Member) -> ClusterRole:
        """The role Patroni's `cluster_as_json` reports for a member (checked against real patronictl 4.1.5).

        The leader is a standby leader only in a standby cluster (dynamic config), whatever the member claims; a
        member listed in /sync is a sync standby even when /sync names another leader (`SyncState.matches`).
        """
        if self.leader is not None and member.name == self.leader.name:
            if self.config is not None and self.config.is_standby_cluster:
                return ClusterRole.STANDBY_LEADER
            return ClusterRole.LEADER
        if self.synchronous_mode != "off" and self.sync is not None and member.name in self.sync.sync_standby:
            return ClusterRole.QUORUM_STANDBY if self.synchronous_mode == "quorum" else ClusterRole.SYNC_STANDBY
        return ClusterRole.REPLICA

    @property
    def optime(self) -> int | None:
        """The last known WAL position of the leader: /status optime, else the leader member's xlog_location."""
        if self.status.optime is not None:
            return self.status.optime
        lm = self.leader_member
        return lm.xlog_location if lm else None


@dataclass(frozen=True)
class NodeStatus:
    """What an agent knows about its own node; the REST API renders it (`GET /patroni` and health checks)."""

    name: str
    scope: str
    version: str
    state: str = "stopped"  # running, starting, stopped, crashed, creating replica, ...
    role: str = "uninitialized"  # primary, replica, standby_leader, demoted, uninitialized
    is_leader: bool = False  # holds the leader key
    server_version: int | None = None
    postmaster_start_time: str | None = None
    xlog_location: int | None = None  # primary: pg_current_wal_lsn
    received_location: int | None = None
    replayed_location: int | None = None
    replayed_timestamp: str | None = None
    wal_replay_paused: bool = False
    timeline: int | None = None
    replication_state: str | None = None  # streaming, in archive recovery
    replication: tuple[Mapping[str, Any], ...] = ()  # pg_stat_replication rows
    sync_standby: bool = False
    quorum_standby: bool = False
    pause: bool = False
    cluster_unlocked: bool = False
    dcs_last_seen: int | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)
    system_identifier: str | None = None
    pending_restart: bool = False
    pending_restart_reason: Mapping[str, Any] = field(default_factory=dict)
    scheduled_restart: Mapping[str, Any] | None = None
    last_loop_time: float | None = None  # time.time() of the last completed HA loop
    ttl: int = 30
    maximum_lag_on_failover: int = 1048576
    cluster_optime: int | None = None  # /status optime as last seen, for ?lag=
    failsafe_mode_is_active: bool = False
    basebackup: Mapping[str, Any] | None = None  # a running base backup: {"done_bytes": n, "total_bytes": n}
    latest_end_lsn: int | None = None  # a replica's WAL receiver: the upstream's end of WAL as last reported
    # None: PostgreSQL was read for this answer; else seconds since the HA loop published what is shown
    observed_age_s: float | None = None


@dataclass(frozen=True)
class MemberVersion:
    """One member's answer to `GET /patroni` for `version`, or why there is none."""

    member: str
    patroni_version: str | None = None
    server_version: int | None = None
    error: str | None = None
