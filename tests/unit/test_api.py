"""ctl.agent.api: the Patroni-compatible REST server, served on 127.0.0.1:0 with fake callables (no PostgreSQL).

Expected bodies and status codes are Patroni 4.1.5's, captured in /work/shared/reference/patroni-4.1.5-observed/rest/
(leader = node1, replica = node2 of a healthy 3-node async cluster) and embedded below.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from dataclasses import replace

import httpx
import pytest

from ctl.agent.api import ApiServer, Request, Response
from ctl.agent.api_render import health_status, metrics_text, parse_size, status_json
from ctl.config import RestApiSettings
from ctl.dcs.codec import KeyValue, parse_cluster
from ctl.errors import DcsUnavailable
from ctl.model import Cluster, NodeStatus

# ------------------------------------------------------------------------------------------ observed Patroni 4.1.5

_LEADER_PATRONI = {'state': 'running',
 'postmaster_start_time': '2026-11-25 16:27:15.068056+00:00',
 'role': 'primary',
 'server_version': 150018,
 'xlog': {'location': 67416816},
 'timeline': 1,
 'replication': [{'usename': 'replicator',
                  'application_name': 'node2',
                  'client_addr': '127.0.0.1',
                  'state': 'streaming',
                  'sync_state': 'async',
                  'sync_priority': 0},
                 {'usename': 'replicator',
                  'application_name': 'node3',
                  'client_addr': '127.0.0.1',
                  'state': 'streaming',
                  'sync_state': 'async',
                  'sync_priority': 0}],
 'dcs_last_seen': 1795624205,
 'database_system_identifier': '7712146500642140331',
 'patroni': {'version': '4.1.5', 'scope': 'demo', 'name': 'node1'}}

_REPLICA_PATRONI = {'state': 'running',
 'postmaster_start_time': '2026-11-25 16:27:19.521563+00:00',
 'role': 'replica',
 'server_version': 150018,
 'xlog': {'received_location': 67416816,
          'replayed_location': 67416816,
          'replayed_timestamp': '2026-11-25 16:28:45.252828+00:00',
          'paused': False},
 'timeline': 1,
 'replication_state': 'streaming',
 'dcs_last_seen': 1795624205,
 'database_system_identifier': '7712146500642140331',
 'patroni': {'version': '4.1.5', 'scope': 'demo', 'name': 'node2'}}

_CLUSTER = {'members': [{'name': 'node1',
              'role': 'leader',
              'state': 'running',
              'api_url': 'http://127.0.0.1:8008/patroni',
              'host': '127.0.0.1',
              'port': 5433,
              'timeline': 1},
             {'name': 'node2',
              'role': 'replica',
              'state': 'streaming',
              'api_url': 'http://127.0.0.1:8009/patroni',
              'host': '127.0.0.1',
              'port': 5434,
              'timeline': 1,
              'receive_lag': 0,
              'receive_lsn': '0/404B2B8',
              'replay_lag': 0,
              'replay_lsn': '0/404B2B8',
              'lag': 0,
              'lsn': '0/404B2B8'},
             {'name': 'node3',
              'role': 'replica',
              'state': 'streaming',
              'api_url': 'http://127.0.0.1:8010/patroni',
              'host': '127.0.0.1',
              'port': 5435,
              'timeline': 1,
              'receive_lag': 0,
              'receive_lsn': '0/404B2B8',
              'replay_lag': 0,
              'replay_lsn': '0/404B2B8',
              'lag': 0,
              'lsn': '0/404B2B8'}],
 'scope': 'demo'}

_CONFIG = {'ttl': 30,
 'loop_wait': 10,
 'retry_timeout': 10,
 'maximum_lag_on_failover': 1048576,
 'postgresql': {'use_pg_rewind': True,
                'use_slots': True,
                'pg_hba': ['local all all trust',
                           'host replication replicator 127.0.0.1/32 md5',
                           'host all all 127.0.0.1/32 md5'],
                'parameters': {'wal_level': 'replica',
                               'hot_standby': 'on',
                               'max_connections': 100,
                               'max_wal_senders': 10,
                               'max_replication_slots': 10,
                               'wal_keep_size': '128MB',
                               'wal_log_hints': 'on'}}}

_LEADER_METRICS = """\
# HELP patroni_version Patroni semver without periods.
# TYPE patroni_version gauge
patroni_version{scope="demo",name="node1"} 040105
# HELP patroni_postgres_running Value is 1 if Postgres is running, 0 otherwise.
# TYPE patroni_postgres_running gauge
patroni_postgres_running{scope="demo",name="node1"} 1
# HELP patroni_postmaster_start_time Epoch seconds since Postgres started.
# TYPE patroni_postmaster_start_time gauge
patroni_postmaster_start_time{scope="demo",name="node1"} 1795624035.068056
# HELP patroni_primary Value is 1 if this node is the leader, 0 otherwise.
# TYPE patroni_primary gauge
patroni_primary{scope="demo",name="node1"} 1
# HELP patroni_xlog_location Current location of the Postgres transaction log, 0 if this node is not the leader.
# TYPE patroni_xlog_location counter
patroni_xlog_location{scope="demo",name="node1"} 67416816
# HELP patroni_standby_leader Value is 1 if this node is the standby_leader, 0 otherwise.
# TYPE patroni_standby_leader gauge
patroni_standby_leader{scope="demo",name="node1"} 0
# HELP patroni_replica Value is 1 if this node is a replica, 0 otherwise.
# TYPE patroni_replica gauge
patroni_replica{scope="demo",name="node1"} 0
# HELP patroni_sync_standby Value is 1 if this node is a sync standby, 0 otherwise.
# TYPE patroni_sync_standby gauge
patroni_sync_standby{scope="demo",name="node1"} 0
# HELP patroni_quorum_standby Value is 1 if this node is a quorum standby, 0 otherwise.
# TYPE patroni_quorum_standby gauge
patroni_quorum_standby{scope="demo",name="node1"} 0
# HELP patroni_xlog_received_location Current location of the received Postgres transaction log, 0 if this node is not a replica.
# TYPE patroni_xlog_received_location counter
patroni_xlog_received_location{scope="demo",name="node1"} 0
# HELP patroni_xlog_replayed_location Current location of the replayed Postgres transaction log, 0 if this node is not a replica.
# TYPE patroni_xlog_replayed_location counter
patroni_xlog_replayed_location{scope="demo",name="node1"} 0
# HELP patroni_xlog_replayed_timestamp Current timestamp of the replayed Postgres transaction log, 0 if null.
# TYPE patroni_xlog_replayed_timestamp gauge
patroni_xlog_replayed_timestamp{scope="demo",name="node1"} 0
# HELP patroni_xlog_paused Value is 1 if the Postgres xlog is paused, 0 otherwise.
# TYPE patroni_xlog_paused gauge
patroni_xlog_paused{scope="demo",name="node1"} 0
# HELP patroni_postgres_streaming Value is 1 if Postgres is streaming, 0 otherwise.
# TYPE patroni_postgres_streaming gauge
patroni_postgres_streaming{scope="demo",name="node1"} 0
# HELP patroni_postgres_in_archive_recovery Value is 1 if Postgres is replicating from archive, 0 otherwise.
# TYPE patroni_postgres_in_archive_recovery gauge
patroni_postgres_in_archive_recovery{scope="demo",name="node1"} 0
# HELP patroni_postgres_server_version Version of Postgres (if running), 0 otherwise.
# TYPE patroni_postgres_server_version gauge
patroni_postgres_server_version{scope="demo",name="node1"} 150018
# HELP patroni_cluster_unlocked Value is 1 if the cluster is unlocked, 0 if locked.
# TYPE patroni_cluster_unlocked gauge
patroni_cluster_unlocked{scope="demo",name="node1"} 0
# HELP patroni_failsafe_mode_is_active Value is 1 if failsafe mode is active, 0 if inactive.
# TYPE patroni_failsafe_mode_is_active gauge
patroni_failsafe_mode_is_active{scope="demo",name="node1"} 0
# HELP patroni_postgres_timeline Postgres timeline of this node (if running), 0 otherwise.
# TYPE patroni_postgres_timeline gauge
patroni_postgres_timeline{scope="demo",name="node1"} 1
# HELP patroni_dcs_last_seen Epoch timestamp when DCS was last contacted successfully by Patroni.
# TYPE patroni_dcs_last_seen gauge
patroni_dcs_last_seen{scope="demo",name="node1"} 1795624211
# HELP patroni_pending_restart Value is 1 if the node needs a restart, 0 otherwise.
# TYPE patroni_pending_restart gauge
patroni_pending_restart{scope="demo",name="node1"} 0
# HELP patroni_is_paused Value is 1 if auto failover is disabled, 0 otherwise.
# TYPE patroni_is_paused gauge
patroni_is_paused{scope="demo",name="node1"} 0
# HELP patroni_postgres_state Numeric representation of Postgres state.
# Values: 0=initdb, 1=initdb_failed, 2=custom_bootstrap, 3=custom_bootstrap_failed, 4=creating_replica, 5=running, 6=starting, 7=bootstrap_starting, 8=start_failed, 9=restarting, 10=restart_failed, 11=stopping, 12=stopped, 13=stop_failed, 14=crashed
# TYPE patroni_postgres_state gauge
patroni_postgres_state{scope="demo",name="node1"} 5
"""

# status_codes.tsv: path -> (leader, replica)
_STATUS_CODES = {
    "patroni": (200, 200), "cluster": (200, 200), "history": (200, 200), "config": (200, 200),
    "health": (200, 200), "leader": (200, 503), "primary": (200, 503), "master": (200, 503),
    "standby-leader": (503, 503), "replica": (503, 200), "read-write": (200, 503), "read-only": (200, 200),
    "liveness": (200, 200), "readiness": (200, 200), "metrics": (200, 200), "async": (503, 200),
    "sync": (503, 503), "quorum": (503, 503), "read-only-sync": (200, 503), "read-only-quorum": (200, 503),
    "asynchronous": (503, 200), "synchronous": (503, 503), "replica?lag=1MB": (503, 200),
    "replica?tag_nofailover=false": (503, 503), "failsafe": (502, 502), "no-such-endpoint": (503, 503),
}
_STATUS_LINE_ONLY = {"primary": (200, 503), "replica": (503, 200), "health": (200, 200), "read-write": (200, 503)}

_DCS = {  # the `# plain:` section of dcs_layout.txt
    "config": json.dumps(_CONFIG, separators=(",", ":")),
    "initialize": "7712146500642140331",
    "leader": "node1",
    "members/node1": '{"conn_url":"postgres://127.0.0.1:5433/postgres","api_url":"http://127.0.0.1:8008/patroni",'
                     '"state":"running","role":"primary","version":"4.1.5","xlog_location":67416816,"timeline":1}',
    "members/node2": '{"conn_url":"postgres://127.0.0.1:5434/postgres","api_url":"http://127.0.0.1:8009/patroni",'
                     '"state":"running","role":"replica","version":"4.1.5","xlog_location":67416816,'
                     '"replay_lsn":67416816,"receive_lsn":67416816,"replication_state":"streaming","timeline":1}',
    "members/node3": '{"conn_url":"postgres://127.0.0.1:5435/postgres","api_url":"http://127.0.0.1:8010/patroni",'
                     '"state":"running","role":"replica","version":"4.1.5","xlog_location":67416816,'
                     '"replay_lsn":67416816,"receive_lsn":67416816,"replication_state":"streaming","timeline":1}',
    "status": '{"optime":67416816,"slots":{"node3":67416816,"node2":67416816,"node1":67416816},'
              '"retain_slots":["node1","node2","node3"]}',
}


def _cluster(extra: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> Cluster:
    data = {**_DCS, **(extra or {})}
    kvs = [KeyValue(key="/service/demo/" + k, value=v, mod_revision=i + 2) for i, (k, v) in enumerate(data.items())
           if k not in drop]
    return parse_cluster("demo", "/service/demo/", kvs, 41)


def _leader_status(**kw) -> NodeStatus:
    base = NodeStatus(
        name="node1", scope="demo", version="4.1.5", state="running", role="primary", is_leader=True,
        server_version=150018, postmaster_start_time="2026-11-25 16:27:15.068056+00:00", xlog_location=67416816,
        timeline=1, replication=tuple(_LEADER_PATRONI["replication"]), dcs_last_seen=1795624205,
        system_identifier="7712146500642140331", last_loop_time=time.time(), cluster_optime=67416816)
    return replace(base, **kw)


def _replica_status(**kw) -> NodeStatus:
    base = NodeStatus(
        name="node2", scope="demo", version="4.1.5", state="running", role="replica", is_leader=False,
        server_version=150018, postmaster_start_time="2026-11-25 16:27:19.521563+00:00",
        received_location=67416816, replayed_location=67416816,
        replayed_timestamp="2026-11-25 16:28:45.252828+00:00", timeline=1, replication_state="streaming",
        dcs_last_seen=1795624205, system_identifier="7712146500642140331", last_loop_time=time.time(),
        cluster_optime=67416816)
    return replace(base, **kw)


class _Node:
    """A running ApiServer whose status/cluster can be swapped by the test."""

    def __init__(self, status: NodeStatus, settings: RestApiSettings | None = None, cluster: Cluster | None = None):
        self.status = status
        self.cluster = cluster if cluster is not None else _cluster()
        self.cluster_error: Exception | None = None
        self.api = ApiServer(settings or RestApiSettings(listen="127.0.0.1:0"), scope="demo", name=status.name,
                             version="4.1.5", get_status=lambda: self.status, read_cluster=self._read)
        self.api.start()
        self.client = httpx.Client(base_url=self.api.url, timeout=5)

    def _read(self) -> Cluster:
        if self.cluster_error is not None:
            raise self.cluster_error
        return self.cluster

    def close(self) -> None:
        self.client.close()
        self.api.stop()


@pytest.fixture(scope="module")
def _servers():
    nodes = {"leader": _Node(_leader_status()), "replica": _Node(_replica_status())}
    yield nodes
    for node in nodes.values():
        node.close()


def _reset(node: _Node, status: NodeStatus) -> _Node:
    node.status, node.cluster, node.cluster_error = status, _cluster(), None
    node.api.routes.clear()
    return node


@pytest.fixture
def leader(_servers):
    return _reset(_servers["leader"], _leader_status())


@pytest.fixture
def replica(_servers):
    return _reset(_servers["replica"], _replica_status())


def _raw(node: _Node, method: str, path: str) -> bytes:
    """The exact bytes the server sends for a body-less request."""
    host, port = node.api.address
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(f"{method} {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


# ------------------------------------------------------------------------------------------ status codes


@pytest.mark.parametrize("path", sorted(_STATUS_CODES))
def test_get_status_codes_match_patroni(leader, replica, path):
    want_leader, want_replica = _STATUS_CODES[path]
    assert leader.client.get("/" + path).status_code == want_leader, f"leader GET /{path}"
    assert replica.client.get("/" + path).status_code == want_replica, f"replica GET /{path}"


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS"])
@pytest.mark.parametrize("path", sorted(_STATUS_LINE_ONLY))
def test_head_options_status_line_only(leader, replica, method, path):
    want_leader, want_replica = _STATUS_LINE_ONLY[path]
    for node, want in ((leader, want_leader), (replica, want_replica)):
        raw = _raw(node, method, "/" + path)
        reason = "OK" if want == 200 else "Service Unavailable"
        assert raw == f"HTTP/1.0 {want} {reason}\r\n\r\n".encode()


def test_liveness_readiness_are_status_line_only(leader):
    assert _raw(leader, "GET", "/liveness") == b"HTTP/1.0 200 OK\r\n\r\n"
    assert _raw(leader, "GET", "/readiness") == b"HTTP/1.0 200 OK\r\n\r\n"


def test_health_check_bodies_are_the_status_json(leader):
    r = leader.client.get("/no-such-endpoint")
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/json"
    assert r.json() == _LEADER_PATRONI
    assert leader.client.get("/").status_code == 200


# ------------------------------------------------------------------------------------------ bodies


def test_patroni_body_matches_reference(leader, replica):
    r = leader.client.get("/patroni")
    assert r.headers["content-type"] == "application/json"
    assert r.json() == _LEADER_PATRONI
    assert list(r.json()) == list(_LEADER_PATRONI)  # key order too
    r = replica.client.get("/patroni")
    assert r.json() == _REPLICA_PATRONI
    assert list(r.json()) == list(_REPLICA_PATRONI)


def test_patroni_body_optional_keys():
    st = _replica_status(sync_standby=True, pause=True, cluster_unlocked=True, tags={"nofailover": True},
                         pending_restart=True, pending_restart_reason={"max_connections": {"old_value": "100",
                                                                                          "new_value": "150"}},
                         scheduled_restart={"schedule": "2030-01-01T00:00:00+00:00", "postmaster_start_time": "x"})
    body = status_json(st)
    assert body["sync_standby"] is True
    assert list(body).index("sync_standby") < list(body).index("timeline")
    assert body["pause"] is True and body["cluster_unlocked"] is True
    assert body["tags"] == {"nofailover": True}
    assert body["pending_restart"] is True and body["pending_restart_reason"]["max_connections"]["new_value"] == "150"
    assert body["scheduled_restart"] == {"schedule": "2030-01-01T00:00:00+00:00"}
    stopped = status_json(_replica_status(state="stopped", server_version=None))
    assert stopped == {"state": "stopped", "role": "replica", "dcs_last_seen": 1795624205,
                       "database_system_identifier": "7712146500642140331",
                       "patroni": {"version": "4.1.5", "scope": "demo", "name": "node2"}}


def test_cluster_body_matches_reference(leader, replica):
    # leader_cluster.body was captured when the replicas and /status were at 0/404B2B8 (67416760)
    at_capture = {k: v.replace("67416816", "67416760") for k, v in _DCS.items() if k != "members/node1"}
    for node in (leader, replica):
        node.cluster = _cluster(at_capture)
        r = node.client.get("/cluster")
        assert r.status_code == 200
        assert r.json() == _CLUSTER
        for got, want in zip(r.json()["members"], _CLUSTER["members"]):
            assert list(got) == list(want)


def test_cluster_body_pause_switchover_sync_and_lag(leader):
    config = dict(_CONFIG, pause=True, synchronous_mode=True)
    leader.cluster = _cluster({
        "config": json.dumps(config),
        "failover": '{"leader":"node1","member":"node2","scheduled_at":"2026-11-25T16:46:16+00:00"}',
        "sync": '{"leader":"node1","quorum":null,"sync_standby":"node3"}',
        "status": '{"optime":67426816}',
    })
    body = leader.client.get("/cluster").json()
    assert body["pause"] is True
    assert body["scheduled_switchover"] == {"at": "2026-11-25T16:46:16+00:00", "from": "node1", "to": "node2"}
    roles = {m["name"]: m["role"] for m in body["members"]}
    assert roles == {"node1": "leader", "node2": "replica", "node3": "sync_standby"}
    node2 = body["members"][1]
    assert node2["lag"] == node2["replay_lag"] == node2["receive_lag"] == 10000
    assert "lag" not in body["members"][0] and "lsn" not in body["members"][0]


def test_cluster_unknown_lsn_and_dcs_error(leader):
    leader.cluster = _cluster({"members/node4": '{"conn_url":"postgres://h:1/postgres","state":"stopped"}'})
    node4 = leader.client.get("/cluster").json()["members"][3]
    assert node4["lsn"] == node4["lag"] == node4["replay_lag"] == "unknown"
    assert node4["state"] == "stopped" and node4["host"] == "h" and node4["port"] == 1
    leader.cluster_error = DcsUnavailable("etcd at http://127.0.0.1:1 is unreachable")
    r = leader.client.get("/cluster")
    assert r.status_code == 503 and "unreachable" in r.text
    assert leader.client.get("/history").status_code == 503


def test_history_and_config(leader):
    assert leader.client.get("/history").json() == []
    leader.cluster = _cluster({"history": '[[1,67416984,"no recovery target specified","2026-11-25T16:33:02+00:00",'
                                          '"node2"]]'})
    assert leader.client.get("/history").json() == [
        [1, 67416984, "no recovery target specified", "2026-11-25T16:33:02+00:00", "node2"]]
    r = leader.client.get("/config")
    assert r.status_code == 200 and r.json() == _CONFIG
    leader.cluster = _cluster(drop=("config",))
    r = leader.client.get("/config")
    assert r.status_code == 502 and "Bad Gateway" in r.text


def test_failsafe_enabled(leader):
    assert leader.client.get("/failsafe").status_code == 502
    leader.cluster = _cluster({"config": json.dumps(dict(_CONFIG, failsafe_mode=True)),
                               "failsafe": '{"node1":"http://127.0.0.1:8008/patroni"}'})
    r = leader.client.get("/failsafe")
    assert r.status_code == 200 and r.json() == {"node1": "http://127.0.0.1:8008/patroni"}
    # switched off again: the stale key stays and is still served, as Patroni does
    leader.cluster = _cluster({"failsafe": '{"node1":"http://127.0.0.1:8008/patroni"}'})
    r = leader.client.get("/failsafe")
    assert r.status_code == 200 and r.json() == {"node1": "http://127.0.0.1:8008/patroni"}
    leader.cluster = _cluster({"failsafe": '"not a dict"'})
    assert leader.client.get("/failsafe").status_code == 502


# ------------------------------------------------------------------------------------------ metrics


def test_metrics_leader_exact(leader):
    st = _leader_status(dcs_last_seen=1795624211)
    assert metrics_text(st) == _LEADER_METRICS
    leader.status = st
    r = leader.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"] == "text/plain"
    assert r.text == _LEADER_METRICS


def test_metrics_replica_values():
    text = metrics_text(_replica_status(dcs_last_seen=1795624211))
    want = _LEADER_METRICS.replace('name="node1"', 'name="node2"')
    for name, value in [("patroni_postmaster_start_time", "1795624039.521563"), ("patroni_primary", "0"),
                        ("patroni_xlog_location", "0"), ("patroni_replica", "1"),
                        ("patroni_xlog_received_location", "67416816"), ("patroni_xlog_replayed_location", "67416816"),
                        ("patroni_xlog_replayed_timestamp", "1795624125.252828"),
                        ("patroni_postgres_streaming", "1")]:
        prefix = f'{name}{{scope="demo",name="node2"}} '
        want = "\n".join(prefix + value if line.startswith(prefix) else line for line in want.split("\n"))
    assert text == want


def test_metrics_when_postgres_is_down():
    text = metrics_text(_replica_status(state="stopped", server_version=None))
    assert "patroni_postgres_streaming" not in text
    assert 'patroni_postgres_running{scope="demo",name="node2"} 0' in text
    assert 'patroni_postgres_state{scope="demo",name="node2"} 12' in text
    assert 'patroni_postgres_state{scope="demo",name="node2"} 4' in metrics_text(
        _replica_status(state="creating replica", server_version=None))


# ------------------------------------------------------------------------------------------ health rules


def test_parse_size():
    assert parse_size("1MB") == 1048576 and parse_size("16kB") == 16384 and parse_size("1GB") == 1 << 30
    assert parse_size("100") == 100 and parse_size("bogus") is None and parse_size(None) is None


def test_replica_lag_rules():
    st = _replica_status(cluster_optime=67416816 + 2 * 1048576)
    assert health_status(st, "/replica", {}) == 200
    assert health_status(st, "/replica", {"lag": ["1MB"]}) == 503
    assert health_status(st, "/replica", {"lag": ["3MB"]}) == 200
    assert health_status(st, "/replica", {"lag": ["garbage"]}) == 200  # Patroni: unparsable = no limit
    assert health_status(st, "/replica", {"replication_state": ["streaming"]}) == 200
    assert health_status(st, "/replica", {"replication_state": ["in archive recovery"]}) == 503
    assert health_status(st, "/async", {"lag": ["1MB"]}) == 503


def test_tags_and_noloadbalance():
    st = _replica_status(tags={"nofailover": True, "zone": "a"})
    assert health_status(st, "/replica", {"tag_nofailover": ["true"]}) == 200
    assert health_status(st, "/replica", {"tag_zone": ["a"]}) == 200
    assert health_status(st, "/replica", {"tag_zone": ["b"]}) == 503
    assert health_status(st, "/read-only", {"tag_missing": ["x"]}) == 503
    assert health_status(_leader_status(), "/primary", {"tag_missing": ["x"]}) == 200  # leader checks ignore tags
    assert health_status(_replica_status(tags={"noloadbalance": True}), "/replica", {}) == 503


def test_sync_quorum_standby_leader():
    sync = _replica_status(sync_standby=True)
    assert health_status(sync, "/sync", {}) == 200 and health_status(sync, "/synchronous", {}) == 200
    assert health_status(sync, "/async", {}) == 503 and health_status(sync, "/read-only-sync", {}) == 200
    quorum = _replica_status(quorum_standby=True)
    assert health_status(quorum, "/quorum", {}) == 200 and health_status(quorum, "/read-only-quorum", {}) == 200
    standby_leader = _replica_status(role="standby_leader", is_leader=True)
    for path, code in [("/standby-leader", 200), ("/standby_leader", 200), ("/leader", 200), ("/primary", 503),
                       ("/replica", 503), ("/read-only", 200), ("/master", 503)]:
        assert health_status(standby_leader, path, {}) == code, path
    stopped = _replica_status(state="stopped", server_version=None)
    assert health_status(stopped, "/health", {}) == 503 and health_status(stopped, "/replica", {}) == 503


def test_liveness_and_readiness_rules(leader, replica):
    leader.status = _leader_status(last_loop_time=time.time() - 31)
    assert leader.client.get("/liveness").status_code == 503
    leader.status = _leader_status(last_loop_time=time.time() - 31, pause=True)
    assert leader.client.get("/liveness").status_code == 200
    replica.status = _replica_status(last_loop_time=time.time() - 31)  # replicas get 2*ttl
    assert replica.client.get("/liveness").status_code == 200
    replica.status = _replica_status(last_loop_time=time.time() - 61)
    assert replica.client.get("/liveness").status_code == 503
    replica.status = _replica_status(cluster_optime=67416816 + 2 * 1048576)
    assert replica.client.get("/readiness").status_code == 503  # lag > maximum_lag_on_failover
    assert replica.client.get("/readiness?lag=4MB").status_code == 200
    replica.status = _replica_status(replication_state="in archive recovery")
    assert replica.client.get("/readiness").status_code == 503


# ------------------------------------------------------------------------------------------ unsafe framework


def _echo(request: Request) -> Response:
    return Response(200, {"got": request.data, "path": request.path, "query": request.arg("x")})


@pytest.fixture
def secured():
    node = _Node(_leader_status(), RestApiSettings(listen="127.0.0.1:0", username="admin", password="s3cret"))
    node.api.register("POST", "echo", _echo, body="required")
    node.api.register("POST", "optional", _echo, body="optional")
    node.api.register("DELETE", "thing", lambda r: Response(200, "deleted"))
    yield node
    node.close()


def test_basic_auth(secured):
    c = secured.client
    r = c.post("/echo", json={"a": 1})
    assert r.status_code == 401 and r.text == "no auth header received"
    assert r.headers["www-authenticate"] == 'Basic realm="Patroni"'
    r = c.post("/echo", json={"a": 1}, auth=("admin", "wrong"))
    assert r.status_code == 401 and r.text == "not authenticated"
    r = c.post("/echo", json={"a": 1}, headers={"Authorization": "Bearer xyz"})
    assert r.status_code == 401
    r = c.post("/echo?x=7", json={"a": 1}, auth=("admin", "s3cret"))
    assert r.status_code == 200 and r.json() == {"got": {"a": 1}, "path": "/echo", "query": "7"}
    assert c.delete("/thing", auth=("admin", "s3cret")).text == "deleted"
    # safe GETs stay open
    assert c.get("/patroni").status_code == 200


def test_body_411_400(secured):
    auth = "Basic " + base64.b64encode(b"admin:s3cret").decode()
    host, port = secured.api.address
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(f"POST /echo HTTP/1.0\r\nAuthorization: {auth}\r\n\r\n".encode())
        assert s.recv(100).startswith(b"HTTP/1.0 411")
    c = secured.client
    assert c.post("/echo", content=b"{not json", auth=("admin", "s3cret")).status_code == 400
    assert c.post("/echo", content=b"{}", auth=("admin", "s3cret")).status_code == 400  # empty object
    assert c.post("/echo", content=b"[1]", auth=("admin", "s3cret")).status_code == 400
    r = c.post("/optional", auth=("admin", "s3cret"))
    assert r.status_code == 200 and r.json()["got"] == {}
    assert c.post("/echo", content=b" " * (2 << 20), auth=("admin", "s3cret")).status_code == 413
    r = c.post("/echo", json={"a": 1}, headers={"AUTHORIZATION": auth})  # header names are case-insensitive
    assert r.status_code == 200


def test_unregistered_unsafe_is_501(leader):
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        r = leader.client.request(method, "/switchover", json={"leader": "node1"})
        assert r.status_code == 501, method


def test_allowlist():
    node = _Node(_leader_status(), RestApiSettings(listen="127.0.0.1:0", allowlist=("10.0.0.0/8",)))
    try:
        node.api.register("POST", "echo", _echo, body="optional")
        r = node.client.post("/echo")
        assert r.status_code == 403 and r.text == "Access is denied"
        assert node.client.get("/patroni").status_code == 200
    finally:
        node.close()
    node = _Node(_leader_status(), RestApiSettings(listen="127.0.0.1:0", allowlist=("10.0.0.0/8", "127.0.0.1")))
    try:
        node.api.register("POST", "echo", _echo, body="optional")
        assert node.client.post("/echo").status_code == 200
    finally:
        node.close()


def test_allowlist_include_members():
    node = _Node(_leader_status(), RestApiSettings(listen="127.0.0.1:0", allowlist=("10.0.0.0/8",),
                                                   allowlist_include_members=True))
    try:
        node.api.register("POST", "echo", _echo, body="optional")
        assert node.client.post("/echo").status_code == 200  # members' api_url hosts are 127.0.0.1
        node.cluster = _cluster(drop=("members/node1", "members/node2", "members/node3"))
        assert node.client.post("/echo").status_code == 403
    finally:
        node.close()


def test_handler_errors_and_registered_get(leader):
    def boom(request: Request) -> Response:
        raise RuntimeError("kaboom")

    leader.api.register("POST", "boom", boom)
    leader.api.register("GET", "custom", lambda r: Response(200, ["ok"]), unsafe=False)
    assert leader.client.post("/boom").status_code == 500
    assert leader.client.get("/custom").json() == ["ok"]
    assert leader.client.get("/patroni").status_code == 200  # the server survived


def test_start_stop_idempotent_and_no_secrets_in_logs(caplog):
    caplog.set_level("DEBUG", logger="ctl.agent.api")
    node = _Node(_leader_status(), RestApiSettings(listen="127.0.0.1:0", username="admin", password="s3cret"))
    node.api.register("POST", "echo", _echo, body="optional")
    node.client.post("/echo", auth=("admin", "s3cret"), json={"a": 1})
    node.close()
    node.api.stop()
    assert "s3cret" not in caplog.text
    assert base64.b64encode(b"admin:s3cret").decode() not in caplog.text
    assert "POST /echo" in caplog.text  # one debug line per request



# Throwaway test PKI (EC P-256, valid 100 years, generated with openssl for these tests only).
_PEM = {
    "ca.crt": """\
-----BEGIN CERTIFICATE-----
MIIBhzCCAS2gAwIBAgIUGI3YWOIeUNikZs8jSV0kY68qtE8wCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNaGFjdGwtdGVzdC1jYTAgFw0yNjExMjUxODA3MzZaGA8yMTI2
MTEwMTE4MDczNlowGDEWMBQGA1UEAwwNaGFjdGwtdGVzdC1jYTBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABCaVy8m5gDWk7vaoWRbw775gyPH6BF0gR24Ls/55vth5
9Nv/znN2n9ibkOwsILtyGFXYah15W2BSsj5U2/vUtpqjUzBRMB0GA1UdDgQWBBST
i/7/VaVLAVrNsHnkX+eL1UG9yjAfBgNVHSMEGDAWgBSTi/7/VaVLAVrNsHnkX+eL
1UG9yjAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCID1UgoW0PAOH
do30RQpORHvk7UGgYoNczCBqX96se5RpAiEA2TJa8913RqJ4dZIBu+yJ5PuLtiNd
hJM3pcv5G4MZp00=
-----END CERTIFICATE-----
""",
    "server.crt": """\
-----BEGIN CERTIFICATE-----
MIIBjTCCATSgAwIBAgIUIUaH9RSQBRCrFXwUpyPDZxMWNggwCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNaGFjdGwtdGVzdC1jYTAgFw0yNjExMjUxODA3MzZaGA8yMTI2
MTEwMTE4MDczNlowFDESMBAGA1UEAwwJMTI3LjAuMC4xMFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAEw7cLRkOTIf480KQubenVGnt/IeX21zXHjM3dQQqCtpz8/8rQ
WQYj+8NSTo08z8POR+clCpzza8smgJQtu1RMHKNeMFwwGgYDVR0RBBMwEYcEfwAA
AYIJbG9jYWxob3N0MB0GA1UdDgQWBBSrCHZ/M8oAhpl8q2vDAaXjeGJhcTAfBgNV
HSMEGDAWgBSTi/7/VaVLAVrNsHnkX+eL1UG9yjAKBggqhkjOPQQDAgNHADBEAiA8
20Guu9Jzgpap3mjgVCUuvA59iv5mw+9KC2qhL5yG6AIgJBKkIcmfuZMF4eCVUIqZ
ULdi9F4885UUPm8U+P/RIw8=
-----END CERTIFICATE-----
""",
    "server.key": """\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg4dHFHLZqlJ8Vh5dv
tAeMJLMSbqQfpXJ1St6dgEyF652hRANCAATDtwtGQ5Mh/jzQpC5t6dUae38h5fbX
NceMzd1BCoK2nPz/ytBZBiP7w1JOjTzPw85H5yUKnPNryyaAlC27VEwc
-----END PRIVATE KEY-----
""",
    "client.crt": """\
-----BEGIN CERTIFICATE-----
MIIBJDCBzAIUIUaH9RSQBRCrFXwUpyPDZxMWNgkwCgYIKoZIzj0EAwIwGDEWMBQG
A1UEAwwNaGFjdGwtdGVzdC1jYTAgFw0yNjExMjUxODA3MzZaGA8yMTI2MTEwMTE4
MDczNlowETEPMA0GA1UEAwwGY2xpZW50MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcD
QgAEUvJHBnNfLkbs73yqPLEAh6l/NNum2ZNc5dXP9y3ZL7sSAnIftouKVljUvoOp
tirJNy/HuWp1G+/90J1Uu7q/QTAKBggqhkjOPQQDAgNHADBEAiBjyP8p8kK7shok
6McR+WlxdxwMdbeK3u8rSJytA5jw6QIgankXB1a5ftqrlUiFpGBTyU2gPAA0rTsT
oNYOyxbPR3Q=
-----END CERTIFICATE-----
""",
    "client.key": """\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgx5LM6JLSKshD918K
G3+RX7Fg0clTz7auYYnv2AwblaihRANCAARS8kcGc18uRuzvfKo8sQCHqX8026bZ
k1zl1c/3LdkvuxICch+2i4pWWNS+g6m2Ksk3L8e5anUb7/3QnVS7ur9B
-----END PRIVATE KEY-----
""",
}


def _pki(tmp_path) -> dict[str, str]:
    paths = {}
    for name, text in _PEM.items():
        path = tmp_path / name
        path.write_text(text)
        paths[name] = str(path)
    return paths


@pytest.mark.parametrize("verify_client", ["none", "optional", "required"])
def test_tls_and_client_certificates(tmp_path, verify_client):
    import ssl

    pki = _pki(tmp_path)
    settings = RestApiSettings(listen="127.0.0.1:0", certfile=pki["server.crt"], keyfile=pki["server.key"],
                               cafile=pki["ca.crt"], verify_client=verify_client)
    api = ApiServer(settings, scope="demo", name="node1", version="4.1.5", get_status=_leader_status,
                    read_cluster=_cluster)
    api.register("POST", "echo", _echo, body="optional")
    api.start()
    try:
        assert api.url.startswith("https://127.0.0.1:")
        anon = ssl.create_default_context(cafile=pki["ca.crt"])
        with_cert = ssl.create_default_context(cafile=pki["ca.crt"])
        with_cert.load_cert_chain(pki["client.crt"], pki["client.key"])
        with httpx.Client(base_url=api.url, verify=with_cert, timeout=5) as c:
            assert c.get("/patroni").json()["role"] == "primary"
            assert c.post("/echo").status_code == 200
        with httpx.Client(base_url=api.url, verify=anon, timeout=5) as c:
            if verify_client == "required":
                with pytest.raises(httpx.HTTPError):
                    c.get("/patroni")
            else:
                assert c.get("/patroni").status_code == 200
                r = c.post("/echo")
                if verify_client == "optional":
                    assert r.status_code == 403 and r.text == "client certificate required"
                else:
                    assert r.status_code == 200
        # a plain-HTTP client against the TLS port does not hang the server
        with pytest.raises(httpx.HTTPError):
            httpx.get(api.url.replace("https", "http") + "/patroni", timeout=2)
        with httpx.Client(base_url=api.url, verify=with_cert, timeout=5) as c:
            assert c.get("/health").status_code == 200
    finally:
        api.stop()
