"""One probe of the local server: the SQL, and the frozen PgState it becomes.

The probe is a single query (one round trip) so that it is cheap enough for every HA loop tick and for REST
handlers. LSNs are integers (bytes since 0/0); use `ctl.model.lsn_to_str` to print them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

# What the HA loop's probe (PROBE_SQL) and the REST API's request-time read (ctl.pg.live.LIVE_SQL) both select, in
# one round trip. Each fills in its own parts:
#   {position}  the function that gives a primary's position (wal_lsn): the probe's pg_current_wal_lsn, the live
#               read's pg_current_wal_flush_lsn (see LIVE_SQL);
#   {receiver}  more pg_stat_wal_receiver columns, {senders} more pg_stat_replication columns, {extra} more result
#               columns (each with its leading comma).
# Timeline of a primary: the first 8 hex digits of its current WAL file name (as Patroni does); the checkpoint
# timeline lags right after a promotion. A replica: the timeline its WAL receiver streams, else the replayed one
# (the checkpoint's and the minimum recovery point's, combined by replica_timeline()).
_STATUS_SQL = """
SELECT pg_is_in_recovery() AS in_recovery,
  CASE WHEN NOT pg_is_in_recovery() THEN ({position}() - '0/0'::pg_lsn)::bigint END AS wal_lsn,
  (pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::bigint AS received_lsn,
  (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint AS replayed_lsn,
  pg_last_xact_replay_timestamp() AS replayed_timestamp,
  CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END AS wal_replay_paused,
  CASE WHEN NOT pg_is_in_recovery()
       THEN ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
       ELSE (SELECT timeline_id FROM pg_control_checkpoint()) END AS timeline,
  current_setting('server_version_num')::int AS server_version,
  pg_postmaster_start_time() AS postmaster_start_time,
  (SELECT min_recovery_end_timeline FROM pg_control_recovery()) AS min_recovery_tli,
  (SELECT row_to_json(w) FROM (
     SELECT status, received_tli, sender_host, sender_port{receiver}
     FROM pg_stat_wal_receiver) w) AS wal_receiver,
  (SELECT coalesce(json_agg(r ORDER BY r.application_name), '[]'::json) FROM (
     SELECT usename, application_name, host(client_addr) AS client_addr, state, sync_state, sync_priority{senders}
     FROM pg_stat_replication) r) AS replication{extra}
"""
_POSITIONS = ("pg_current_wal_lsn", "pg_current_wal_flush_lsn")


def status_sql(*, position: str, receiver: str = "", senders: str = "", extra: str = "") -> str:
    """The shared status query with one read's own parts filled in (see _STATUS_SQL)."""
    if position not in _POSITIONS:
        raise ValueError(f"unknown position function {position!r}")
    return _STATUS_SQL.format(position=position, receiver=receiver, senders=senders, extra=extra)


# The HA loop's probe: the primary's position is pg_current_wal_lsn() (what the loop publishes as xlog_location and
# compares for failover, as Patroni does); the receiver's flushed LSN, each walsender's positions, the system
# identifier, synchronous_standby_names in effect and the parameters waiting for a restart.
PROBE_SQL = status_sql(
    position="pg_current_wal_lsn",
    receiver=""",
            (flushed_lsn - '0/0'::pg_lsn)::bigint AS flushed_lsn""",
    senders=""",
            (sent_lsn - '0/0'::pg_lsn)::bigint AS sent_lsn, (write_lsn - '0/0'::pg_lsn)::bigint AS write_lsn,
            (flush_lsn - '0/0'::pg_lsn)::bigint AS flush_lsn, (replay_lsn - '0/0'::pg_lsn)::bigint AS replay_lsn""",
    extra=""",
  (SELECT system_identifier FROM pg_control_system())::text AS system_identifier,
  current_setting('synchronous_standby_names') AS sync_names,
  (SELECT coalesce(json_object_agg(s.name, json_build_object(
            'old_value', current_setting(s.name),
            'new_value', (SELECT f.setting FROM pg_file_settings f WHERE f.name = s.name
                          ORDER BY f.seqno DESC LIMIT 1))), '{}'::json)
     FROM pg_settings s WHERE s.pending_restart) AS pending_restart""",
)


@dataclass(frozen=True)
class PgState:
    """One probe of the local server. `running` is about the postmaster process; `error` says why SQL failed."""

    running: bool
    in_recovery: bool | None = None
    timeline: int | None = None
    wal_lsn: int | None = None  # primary: pg_current_wal_lsn; replica: max(received, replayed)
    received_lsn: int | None = None
    replayed_lsn: int | None = None
    replayed_timestamp: str | None = None
    wal_replay_paused: bool = False
    streaming: bool = False  # pg_stat_wal_receiver.status == 'streaming'
    upstream: str | None = None  # sender host:port from pg_stat_wal_receiver
    system_identifier: str | None = None
    server_version: int | None = None
    postmaster_start_time: str | None = None
    replication: tuple[Mapping[str, Any], ...] = ()  # pg_stat_replication rows
    pending_restart: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    sync_names: str | None = None  # synchronous_standby_names in effect
    error: str | None = None

    @property
    def accepting(self) -> bool:
        """The probe query succeeded: the server accepts connections (read-write or read-only)."""
        return self.running and self.error is None and self.in_recovery is not None

    @property
    def is_primary(self) -> bool:
        return self.accepting and self.in_recovery is False


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else str(value)


# The highest timeline each running replica (by postmaster start time) was seen on. A replica's timeline never goes
# down while its postmaster runs, but the sources SQL offers can: without a WAL receiver (its upstream just died)
# only the checkpoint's and the minimum recovery point's timelines are left, and both lag a timeline switch until
# the next restartpoint. A candidate reported a timeline behind the one it had been streaming would be refused.
_REPLICA_TLI: dict[str, int] = {}


def replica_timeline(row: Mapping[str, Any], receiver: Mapping[str, Any]) -> int | None:
    """The replica's timeline: the highest of the WAL receiver's, the checkpoint's, the minimum recovery point's and
    the one this postmaster was last seen on."""
    seen = [int(v) for v in (receiver.get("received_tli"), row.get("timeline"), row.get("min_recovery_tli"))
            if v is not None and int(v) > 0]
    start = _iso(row.get("postmaster_start_time"))
    if start is not None and start in _REPLICA_TLI:
        seen.append(_REPLICA_TLI[start])
    if not seen:
        return None
    best = max(seen)
    if start is not None:
        if len(_REPLICA_TLI) > 8 and start not in _REPLICA_TLI:
            _REPLICA_TLI.clear()
        _REPLICA_TLI[start] = best
    return best


def state_from_row(row: Mapping[str, Any]) -> PgState:
    """Build a PgState from the PROBE_SQL row (a column-name mapping)."""
    in_recovery = bool(row["in_recovery"])
    received, replayed = row.get("received_lsn"), row.get("replayed_lsn")
    receiver = row.get("wal_receiver") or {}
    timeline = row.get("timeline")
    if in_recovery:
        lsns = [v for v in (received, replayed) if v is not None]
        wal_lsn = max(lsns) if lsns else None
        timeline = replica_timeline(row, receiver)
    else:
        wal_lsn = row.get("wal_lsn")
    upstream = None
    if receiver.get("sender_host"):
        upstream = f"{receiver['sender_host']}:{receiver['sender_port']}" if receiver.get("sender_port") else \
            str(receiver["sender_host"])
    return PgState(
        running=True,
        in_recovery=in_recovery,
        timeline=int(timeline) if timeline is not None else None,
        wal_lsn=int(wal_lsn) if wal_lsn is not None else None,
        received_lsn=int(received) if received is not None else None,
        replayed_lsn=int(replayed) if replayed is not None else None,
        replayed_timestamp=_iso(row.get("replayed_timestamp")),
        wal_replay_paused=bool(row.get("wal_replay_paused")),
        streaming=receiver.get("status") == "streaming",
        upstream=upstream,
        system_identifier=row.get("system_identifier"),
        server_version=row.get("server_version"),
        postmaster_start_time=_iso(row.get("postmaster_start_time")),
        replication=tuple(dict(r) for r in row.get("replication") or ()),
        pending_restart={k: dict(v) for k, v in (row.get("pending_restart") or {}).items()},
        sync_names=row.get("sync_names"),
    )
