"""ctl.agent.live and ctl.pg.live: REST state read at request time, coalesced, bounded, with a stale fallback.

Reads are plain callables here (no PostgreSQL); threads are real, so timing and coalescing are what a load balancer
polling the REST API would see.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import httpx
import psycopg
import pytest

from ctl.agent.api import ApiServer
from ctl.agent.api_render import cluster_json, health_status, status_json
from ctl.agent.live import LiveStatus, overlay
from ctl.config import RestApiSettings
from ctl.errors import PgCommandError
from ctl.model import NodeStatus
from ctl.pg.live import LiveRead, LiveReader, read_from_row
from ctl.pg.probe import PgState
from tests.unit.test_api import _cluster, _replica_status

MB = 1048576


def _replica_read(received: int, replayed: int | None = None, end: int | None = None) -> LiveRead:
    state = PgState(running=True, in_recovery=True, timeline=1, wal_lsn=received, received_lsn=received,
                    replayed_lsn=replayed if replayed is not None else received, streaming=True,
                    server_version=150018, postmaster_start_time="2026-11-25 16:27:19.521563+00:00")
    return LiveRead(state, end)


def _primary_read(lsn: int) -> LiveRead:
    state = PgState(running=True, in_recovery=False, timeline=2, wal_lsn=lsn, server_version=150018,
                    replication=({"usename": "replicator", "application_name": "node2", "client_addr": "127.0.0.1",
                                  "state": "streaming", "sync_state": "async", "sync_priority": 0},))
    return LiveRead(state)


def _observed(**kw) -> NodeStatus:
    return _replica_status(received_location=64 * MB, replayed_location=64 * MB, last_loop_time=1000.0, **kw)


# ------------------------------------------------------------------------------------------ overlay, fallback


def test_live_positions_replace_the_loops():
    live = LiveStatus(_observed, lambda: _replica_read(80 * MB, 79 * MB, end=80 * MB), wall=lambda: 1003.0)
    st = live.status()
    assert (st.received_location, st.replayed_location, st.latest_end_lsn) == (80 * MB, 79 * MB, 80 * MB)
    assert st.observed_age_s is None and st.replication_state == "streaming"
    body = status_json(st)
    assert body["xlog"]["received_location"] == 80 * MB and "observed_age_s" not in body


def test_a_promoted_node_shows_as_primary_at_once():
    st = overlay(_observed(), _primary_read(90 * MB))
    assert (st.role, st.xlog_location, st.received_location, st.timeline) == ("primary", 90 * MB, None, 2)
    assert status_json(st)["xlog"] == {"location": 90 * MB}
    assert list(status_json(st)["replication"][0]) == ["usename", "application_name", "client_addr", "state",
                                                      "sync_state", "sync_priority"]


def test_fallback_is_the_observation_with_its_age():
    def fail():
        raise PgCommandError("live read failed: connection refused")

    live = LiveStatus(_observed, fail, wall=lambda: 1002.5)
    st = live.status()
    assert st.received_location == 64 * MB and st.observed_age_s == 2.5
    body = status_json(st)
    assert body["observed_age_s"] == 2.5 and list(body)[-1] == "observed_age_s"
    assert body["state"] == "running" and body["role"] == "replica"


def test_no_read_when_postgres_is_not_queryable():
    calls = []
    live = LiveStatus(lambda: replace(_observed(), state="creating replica"), lambda: calls.append(1))
    st = live.status()
    assert st.state == "creating replica" and st.observed_age_s is None and calls == []


def test_replica_lag_check_uses_the_live_upstream_end():
    # the member's own read says the upstream is 5 MB ahead (latest_end_lsn); /status optime is older
    st = overlay(_observed(cluster_optime=64 * MB), _replica_read(80 * MB, end=85 * MB))
    assert health_status(st, "/replica", {"lag": ["1MB"]}) == 503
    assert health_status(st, "/replica", {"lag": ["10MB"]}) == 200


# ------------------------------------------------------------------------------------------ concurrency


def test_a_hung_read_answers_within_the_timeout_and_later_requests_do_not_queue():
    release = threading.Event()
    began: list[float] = []

    def hang():
        began.append(time.monotonic())
        release.wait(5)
        return _replica_read(99 * MB)

    live = LiveStatus(_observed, hang, timeout=0.5)
    try:
        t0 = time.monotonic()
        assert live.status().observed_age_s is not None
        first = time.monotonic() - t0
        deadline = time.monotonic() + 5
        while not began and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(max(0.0, began[0] + 0.6 - time.monotonic()))  # the read has now hung for over the timeout
        t0 = time.monotonic()
        assert live.status().observed_age_s is not None
        second = time.monotonic() - t0
    finally:
        release.set()
    assert 0.45 < first < 2.0, first
    # the read under way is older than the timeout: fall back at once, not after another timeout (0.5 s); the
    # margin is for a loaded 2-core CI machine
    assert second < 0.3, second


def test_concurrent_requests_share_reads_and_each_sees_a_read_that_started_after_it_arrived():
    lock = threading.Lock()
    state = {"running": 0, "max_running": 0, "reads": 0}

    def read():
        with lock:
            state["running"] += 1
            state["max_running"] = max(state["max_running"], state["running"])
            state["reads"] += 1
            n = state["reads"]
        time.sleep(0.02)
        with lock:
            state["running"] -= 1
        return _replica_read(n)  # the position is the read's sequence number

    live = LiveStatus(_observed, read, timeout=2.0)
    results: list[tuple[int, int]] = []

    def request():
        with lock:
            started_before = state["reads"]  # reads started before this request arrived
        got = live.status().received_location
        with lock:
            results.append((started_before, got))

    threads = [threading.Thread(target=request) for _ in range(60)]
    for t in threads:
        t.start()
        time.sleep(0.001)
    for t in threads:
        t.join(5)
    assert len(results) == 60
    assert state["max_running"] == 1  # one connection, one query at a time
    assert state["reads"] < 30  # coalesced: 60 requests over ~60 ms, reads of 20 ms
    assert all(got > before for before, got in results), results  # never an answer older than the request


def test_stop_falls_back():
    live = LiveStatus(_observed, lambda: _replica_read(99 * MB))
    assert live.status().observed_age_s is None
    live.stop()
    assert live.status().observed_age_s is not None


# ------------------------------------------------------------------------------------------ REST wiring


def test_cluster_shows_our_own_entry_live_and_liveness_never_reads():
    reads = []

    def read():
        reads.append(1)
        return _replica_read(70 * MB)

    observed = _replica_status(received_location=64 * MB, replayed_location=64 * MB)
    live = LiveStatus(lambda: observed, read)
    api = ApiServer(RestApiSettings(listen="127.0.0.1:0"), scope="demo", name="node2", version="4.1.5",
                    get_status=live.status, read_cluster=_cluster, observed_status=lambda: observed)
    api.start()
    try:
        with httpx.Client(base_url=api.url, timeout=5) as client:
            assert client.get("/liveness").status_code == 200 and reads == []
            members = {m["name"]: m for m in client.get("/cluster").json()["members"]}
            assert reads == [1]
            assert members["node2"]["receive_lsn"] == "0/4600000" and members["node2"]["lsn"] == "0/4600000"
            assert members["node2"]["state"] == "streaming" and "observed_age_s" not in members["node2"]
            assert members["node3"]["receive_lsn"] == "0/404B2F0"  # others: their member keys
            assert client.get("/patroni").json()["xlog"]["received_location"] == 70 * MB
    finally:
        api.stop()


def test_cluster_entry_says_how_old_a_fallback_is():
    st = replace(_replica_status(received_location=64 * MB, replayed_location=64 * MB), observed_age_s=3.2)
    members = {m["name"]: m for m in cluster_json(_cluster(), "demo", local=st)["members"]}
    assert members["node2"]["observed_age_s"] == 3.2 and members["node2"]["receive_lsn"] == "0/4000000"
    assert "observed_age_s" not in members["node3"] and "observed_age_s" not in members["node1"]


# ------------------------------------------------------------------------------------------ ctl.pg.live


def test_read_from_row():
    row = {"in_recovery": True, "wal_lsn": None, "received_lsn": 300, "replayed_lsn": 200,
           "replayed_timestamp": None, "wal_replay_paused": False, "timeline": 1, "server_version": 150018,
           "postmaster_start_time": None,
           "wal_receiver": {"status": "streaming", "received_tli": 3, "sender_host": "10.0.0.1",
                            "sender_port": 5432, "latest_end_lsn": 400},
           "replication": []}
    read = read_from_row(row)
    assert (read.state.received_lsn, read.state.replayed_lsn, read.latest_end_lsn) == (300, 200, 400)
    assert read.state.streaming and read.state.timeline == 3


class _Conn:
    def __init__(self, row=None, error: Exception | None = None):
        self.row, self.error, self.closed = row, error, False

    def execute(self, sql):
        if self.error is not None:
            raise self.error
        return self

    def fetchone(self):
        return self.row

    def close(self):
        self.closed = True


_ROW = {"in_recovery": False, "wal_lsn": 1234, "timeline": 1, "server_version": 150018}


def test_reader_keeps_its_connection_and_replaces_a_broken_one_once():
    conns = [_Conn(_ROW), _Conn(_ROW)]
    made = []

    def connect(**kw):
        made.append(kw)
        return conns[len(made) - 1]

    reader = LiveReader(lambda: {"host": "/tmp", "password": "x"}, statement_timeout=0.8, connect=connect)
    assert reader.read().state.wal_lsn == 1234
    assert reader.read().state.wal_lsn == 1234
    assert len(made) == 1 and made[0]["options"] == "-c statement_timeout=800"
    conns[0].error = psycopg.OperationalError("server closed the connection unexpectedly")
    assert reader.read().state.wal_lsn == 1234  # reconnected within the same read
    assert len(made) == 2 and conns[0].closed


def test_reader_errors_are_pg_command_errors_without_secrets():
    def refuse(**kw):
        raise psycopg.OperationalError("connection refused")

    reader = LiveReader(lambda: {"password": "s3cret"}, connect=refuse)
    with pytest.raises(PgCommandError) as info:
        reader.read()
    assert "connection refused" in str(info.value) and "s3cret" not in str(info.value)
    slow = _Conn(_ROW)
    made = []
    reader = LiveReader(lambda: {}, connect=lambda **kw: made.append(1) or slow)
    reader.read()
    slow.error = psycopg.errors.QueryCanceled("canceling statement due to statement timeout")
    with pytest.raises(PgCommandError):
        reader.read()
    assert made == [1]  # a timeout is not retried: the answer falls back instead of waiting twice
