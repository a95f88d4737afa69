"""etcd key/values <-> model.Cluster, in Patroni's value formats (current and legacy). Pure: no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ctl.dcs import keys
from ctl.model import (
    Cluster,
    DynamicConfig,
    Failover,
    HistoryEntry,
    Leader,
    Member,
    Status,
    SyncState,
)


@dataclass(frozen=True)
class KeyValue:
    """One etcd key as read: what every DCS backend hands to the codec."""

    key: str
    value: str
    mod_revision: int = 0
    lease: int | None = None
    create_revision: int = 0


def _json(value: str) -> Any:
    try:
        return json.loads(value)
    except (ValueError, TypeError):
        return None


def _int_or_none(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _str_or_none(value: Any) -> str | None:
    """A text field of a member key; anything else (a list, a number) is treated as absent."""
    return value if isinstance(value, str) else None


def parse_member(name: str, value: str, mod_revision: int = 0, lease: int | None = None) -> Member:
    """A `members/<name>` value: JSON, or the legacy plain `postgres://` connection URL."""
    data = _json(value)
    if not isinstance(data, dict):
        data = {"conn_url": value.strip()} if value.strip().startswith("postgres") else {}
    tags = data.get("tags")
    reason = data.get("pending_restart_reason")
    scheduled = data.get("scheduled_restart")
    return Member(
        name=name,
        conn_url=_str_or_none(data.get("conn_url")),
        api_url=_str_or_none(data.get("api_url")),
        state=_str_or_none(data.get("state")),
        role=_str_or_none(data.get("role")),
        version=_str_or_none(data.get("version")),
        xlog_location=_int_or_none(data.get("xlog_location")),
        receive_lsn=_int_or_none(data.get("receive_lsn")),
        replay_lsn=_int_or_none(data.get("replay_lsn")),
        replication_state=_str_or_none(data.get("replication_state")),
        timeline=_int_or_none(data.get("timeline")),
        tags=tags if isinstance(tags, dict) else {},
        pending_restart=bool(data.get("pending_restart", False)),
        pending_restart_reason=reason if isinstance(reason, dict) else {},
        scheduled_restart=scheduled if isinstance(scheduled, dict) else None,
        pause=bool(data.get("pause", False)),
        mod_revision=mod_revision,
        lease=lease,
        data=data,
    )


def parse_failover(value: str, mod_revision: int = 0) -> Failover:
    """The `failover` key: JSON `{leader, member, scheduled_at}` or legacy `leader:candidate` text."""
    data = _json(value)
    if isinstance(data, dict):
        return Failover(
            leader=data.get("leader") or None,
            member=data.get("member") or data.get("candidate") or None,
            scheduled_at=data.get("scheduled_at") or None,
            mod_revision=mod_revision,
        )
    text = value.strip()
    if ":" in text:
        leader, _, member = text.partition(":")
        return Failover(leader=leader.strip() or None, member=member.strip() or None, mod_revision=mod_revision)
    return Failover(mod_revision=mod_revision)


def parse_sync(value: str, mod_revision: int = 0) -> SyncState:
    data = _json(value)
    if not isinstance(data, dict):
        return SyncState(mod_revision=mod_revision)
    raw = data.get("sync_standby")
    names: tuple[str, ...] = ()
    if isinstance(raw, str) and raw:
        names = tuple(sorted(n.strip() for n in raw.split(",") if n.strip()))
    elif isinstance(raw, list):
        names = tuple(sorted(str(n) for n in raw))
    return SyncState(
        leader=data.get("leader"), sync_standby=names, quorum=_int_or_none(data.get("quorum")), mod_revision=mod_revision
    )


def parse_history(value: str) -> tuple[HistoryEntry, ...]:
    data = _json(value)
    if not isinstance(data, list):
        return ()
    out = []
    for row in data:
        if not isinstance(row, list) or len(row) < 2:
            continue
        tl, lsn = _int_or_none(row[0]), _int_or_none(row[1])
        if tl is None or lsn is None:
            continue
        out.append(
            HistoryEntry(
                timeline=tl,
                lsn=lsn,
                reason=str(row[2]) if len(row) > 2 and row[2] is not None else "",
                timestamp=str(row[3]) if len(row) > 3 and row[3] is not None else "",
                new_leader=str(row[4]) if len(row) > 4 and row[4] is not None else "",
            )
        )
    return tuple(out)


def parse_status(value: str, mod_revision: int = 0) -> Status:
    """The `status` key: `{"optime": int, "slots": {...}, "retain_slots": [...]}`, or a bare int (legacy)."""
    data = _json(value)
    if isinstance(data, dict):
        slots = data.get("slots")
        retain = data.get("retain_slots")
        return Status(
            optime=_int_or_none(data.get("optime")),
            slots={str(k): int(v) for k, v in slots.items() if _int_or_none(v) is not None}
            if isinstance(slots, dict)
            else {},
            retain_slots=tuple(str(s) for s in retain) if isinstance(retain, list) else (),
            mod_revision=mod_revision,
        )
    return Status(optime=_int_or_none(data if data is not None else value.strip()), mod_revision=mod_revision)


def parse_config(value: str, mod_revision: int = 0) -> DynamicConfig:
    data = _json(value)
    return DynamicConfig(data=data if isinstance(data, dict) else {}, mod_revision=mod_revision)


def parse_cluster(scope: str, prefix: str, kvs: Iterable[KeyValue], revision: int = 0) -> Cluster:
    """Build a Cluster from every key under `prefix` (`/<namespace>/<scope>/`)."""
    initialize = config = leader = failover = sync = failsafe = None
    history: tuple[HistoryEntry, ...] = ()
    status = Status()
    legacy_optime: int | None = None
    members: list[Member] = []
    for kv in kvs:
        if not kv.key.startswith(prefix):
            continue
        name = kv.key[len(prefix) :]
        if name == keys.INITIALIZE:
            initialize = kv.value.strip()
        elif name == keys.CONFIG:
            config = parse_config(kv.value, kv.mod_revision)
        elif name == keys.LEADER:
            if kv.value.strip():
                leader = Leader(name=kv.value.strip(), mod_revision=kv.mod_revision, lease=kv.lease)
        elif name.startswith(keys.MEMBERS):
            member_name = name[len(keys.MEMBERS) :]
            if member_name and "/" not in member_name:
                members.append(parse_member(member_name, kv.value, kv.mod_revision, kv.lease))
        elif name == keys.STATUS:
            status = parse_status(kv.value, kv.mod_revision)
        elif name == keys.LEGACY_OPTIME:
            legacy_optime = _int_or_none(kv.value.strip())
        elif name == keys.HISTORY:
            history = parse_history(kv.value)
        elif name == keys.FAILOVER:
            failover = parse_failover(kv.value, kv.mod_revision)
        elif name == keys.SYNC:
            sync = parse_sync(kv.value, kv.mod_revision)
        elif name == keys.FAILSAFE:
            data = _json(kv.value)
            failsafe = data if isinstance(data, dict) else None
    if status.optime is None and legacy_optime is not None:
        status = Status(optime=legacy_optime, slots=status.slots, retain_slots=status.retain_slots,
                        mod_revision=status.mod_revision)
    members.sort(key=lambda m: m.name)
    return Cluster(
        scope=scope,
        initialize=initialize,
        config=config,
        leader=leader,
        members=tuple(members),
        failover=failover,
        sync=sync,
        history=history,
        status=status,
        failsafe=failsafe,
        revision=revision,
    )


def dumps(value: Mapping[str, Any] | list[Any]) -> str:
    """Compact JSON as Patroni writes it."""
    return json.dumps(value, separators=(",", ":"))


def encode_failover(leader: str | None, member: str | None, scheduled_at: str | None = None) -> str:
    data: dict[str, Any] = {}
    if leader:
        data["leader"] = leader
    if member:
        data["member"] = member
    if scheduled_at:
        data["scheduled_at"] = scheduled_at
    return dumps(data)


def encode_history(entries: Iterable[HistoryEntry]) -> str:
    return dumps([[e.timeline, e.lsn, e.reason, e.timestamp, e.new_leader] for e in entries])


def encode_status(optime: int | None, slots: Mapping[str, int] | None = None,
                  retain_slots: Iterable[str] | None = None) -> str:
    data: dict[str, Any] = {"optime": optime}
    if slots:
        data["slots"] = dict(slots)
    if retain_slots:
        data["retain_slots"] = list(retain_slots)
    return dumps(data)


def encode_sync(leader: str, sync_standby: Iterable[str], quorum: int | None = None) -> str:
    names = sorted(sync_standby)
    return dumps({"leader": leader, "quorum": quorum, "sync_standby": ",".join(names) if names else None})
