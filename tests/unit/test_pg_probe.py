"""ctl.pg.probe: the probe row -> PgState mapping (no server)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from ctl.pg import probe
from ctl.pg.probe import PgState, state_from_row

T = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)



@pytest.fixture(autouse=True)
def _fresh_timeline_memory():
    probe._REPLICA_TLI.clear()
    yield
    probe._REPLICA_TLI.clear()


def _row(**kw):
    row = {
        "in_recovery": False, "wal_lsn": 5000, "received_lsn": None, "replayed_lsn": None,
        "replayed_timestamp": None, "wal_replay_paused": False, "timeline": 3, "system_identifier": "7000",
        "server_version": 150018, "postmaster_start_time": T, "wal_receiver": None, "replication": [],
        "pending_restart": {},
    }
    row.update(kw)
    return row


def test_primary():
    rep = {"usename": "replicator", "application_name": "n2", "client_addr": "127.0.0.1", "state": "streaming",
           "sync_state": "async", "sync_priority": 0, "replay_lsn": 4000}
    state = state_from_row(_row(replication=[rep], pending_restart={"shared_buffers": {"old_value": "16MB",
                                                                                       "new_value": "32MB"}}))
    assert state.running and state.is_primary and state.accepting
    assert state.wal_lsn == 5000 and state.timeline == 3
    assert state.replication == (rep,)
    assert state.pending_restart == {"shared_buffers": {"old_value": "16MB", "new_value": "32MB"}}
    assert state.postmaster_start_time == T.isoformat()
    assert not state.streaming and state.upstream is None


def test_streaming_replica_uses_receiver_timeline_and_max_lsn():
    receiver = {"status": "streaming", "received_tli": 4, "sender_host": "10.0.0.1", "sender_port": 5432,
                "flushed_lsn": 900}
    state = state_from_row(_row(in_recovery=True, wal_lsn=None, received_lsn=900, replayed_lsn=800, timeline=3,
                                replayed_timestamp=T, wal_receiver=receiver))
    assert state.in_recovery is True and not state.is_primary and state.accepting
    assert state.wal_lsn == 900 and state.received_lsn == 900 and state.replayed_lsn == 800
    assert state.timeline == 4
    assert state.streaming and state.upstream == "10.0.0.1:5432"
    assert state.replayed_timestamp == T.isoformat()


def test_replica_without_receiver():
    state = state_from_row(_row(in_recovery=True, wal_lsn=None, received_lsn=None, replayed_lsn=700,
                                wal_replay_paused=True, wal_receiver={"status": "waiting", "sender_host": "/tmp"}))
    assert state.wal_lsn == 700 and state.timeline == 3 and state.wal_replay_paused
    assert not state.streaming and state.upstream == "/tmp"


def test_not_running_and_error_states():
    assert not PgState(running=False).accepting
    failed = PgState(running=True, error="the database system is starting up")
    assert not failed.accepting and not failed.is_primary


def test_replica_timeline_never_goes_back_while_the_postmaster_runs():
    """Streaming on timeline 5, then the upstream dies: the checkpoint still says 4, the replica is on 5."""
    streaming = state_from_row(_row(in_recovery=True, wal_lsn=None, received_lsn=900, replayed_lsn=900, timeline=4,
                                    wal_receiver={"status": "streaming", "received_tli": 5}))
    assert streaming.timeline == 5
    orphan = state_from_row(_row(in_recovery=True, wal_lsn=None, received_lsn=None, replayed_lsn=900, timeline=4,
                                 wal_receiver=None))
    assert orphan.timeline == 5
    restarted = state_from_row(_row(in_recovery=True, wal_lsn=None, received_lsn=None, replayed_lsn=900, timeline=4,
                                    wal_receiver=None, postmaster_start_time=T.replace(year=2030)))
    assert restarted.timeline == 4  # a new postmaster (after a rewind, say) starts from what it reports
    assert state_from_row(_row(in_recovery=True, wal_lsn=None, received_lsn=None, replayed_lsn=900, timeline=4,
                               min_recovery_tli=6, wal_receiver=None)).timeline == 6


def test_the_loop_probe_and_the_live_read_share_columns_but_not_the_primary_position():
    """The HA loop compares and publishes pg_current_wal_lsn(); the REST read reports the flush LSN (Patroni 4)."""
    from ctl.pg.live import LIVE_SQL

    assert "(pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint END AS wal_lsn" in probe.PROBE_SQL
    assert "(pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint END AS wal_lsn" in LIVE_SQL
    assert "pg_current_wal_flush_lsn" not in probe.PROBE_SQL
    for column in ("AS pending_restart", "AS sync_names", "AS system_identifier", "AS flushed_lsn", "AS sent_lsn"):
        assert column in probe.PROBE_SQL and column not in LIVE_SQL, column
    assert "AS latest_end_lsn" in LIVE_SQL and "latest_end_lsn" not in probe.PROBE_SQL
    for column in ("AS timeline", "AS min_recovery_tli", "AS postmaster_start_time", "AS received_lsn",
                   "AS replayed_lsn", "AS wal_receiver", "AS replication", "sync_priority"):
        assert column in probe.PROBE_SQL and column in LIVE_SQL, column
    with pytest.raises(ValueError):
        probe.status_sql(position="pg_terminate_backend")
