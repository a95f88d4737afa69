"""ctl.agent.operations: the unsafe REST endpoints, served on 127.0.0.1:0 against a fake agent (no PostgreSQL, no etcd).

The fake DCS keeps etcd's compare-and-set semantics (mod_revision, create) and hands out `Cluster` snapshots through
the real codec; the fake agent records submitted tasks. Messages and codes are Patroni's (patronictl.md §6.3).
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from urllib.parse import urlsplit

import httpx
import pytest

from ctl.agent.api import ApiServer
from ctl.agent.operations import (
    parse_schedule,
    postgres_version_to_int,
    register_operations,
    rejection,
    restart_matches,
)
from ctl.agent.taskrunner import TaskResult
from ctl.config import RestApiSettings
from ctl.dcs.codec import KeyValue, parse_cluster
from ctl.errors import DcsUnavailable
from ctl.ha.state import HaSettings, PeerView
from ctl.model import Cluster, Member, NodeStatus

PREFIX = "/service/demo/"
CONFIG = {"ttl": 8, "loop_wait": 1, "retry_timeout": 3, "maximum_lag_on_failover": 1048576,
          "postgresql": {"parameters": {"max_connections": 100}}}
MB = 1048576


def _member(role: str, state: str = "running", lsn: int = 100 * MB, **extra: Any) -> str:
    port = {"primary": 8008}.get(role, 8009)
    data = {"conn_url": f"postgres://127.0.0.1:{port}/postgres", "api_url": f"http://127.0.0.1:{port}/patroni",
            "state": state, "role": role, "version": "0.1", "xlog_location": lsn, **extra}
    if role == "replica":
        data.update(receive_lsn=lsn, replay_lsn=lsn)
    return json.dumps(data)


class FakeDcs:
    """Keys relative to the cluster prefix, each with etcd's mod_revision; put/delete are compare-and-set."""

    def __init__(self) -> None:
        self.kv: dict[str, tuple[str, int]] = {}
        self.revision = 1
        self.puts: list[tuple[str, str, int | None, bool]] = []
        self.before_put: Callable[[str], None] | None = None
        self.error: Exception | None = None
        self.script: list[Callable[["FakeDcs"], None]] = []  # applied one per get_cluster() after a failover write
        self.armed = False
        self.lock = threading.Lock()

    def set(self, key: str, value: str) -> None:
        with self.lock:
            self.revision += 1
            self.kv[key] = (value, self.revision)

    def remove(self, key: str) -> None:
        with self.lock:
            self.revision += 1
            self.kv.pop(key, None)

    def value(self, key: str) -> Any:
        raw = self.kv.get(key)
        return json.loads(raw[0]) if raw else None

    def get_cluster(self) -> Cluster:
        if self.script and self.armed:
            self.script.pop(0)(self)
        with self.lock:
            kvs = [KeyValue(PREFIX + k, v, r) for k, (v, r) in self.kv.items()]
            return parse_cluster("demo", PREFIX, kvs, self.revision)

    def get(self, key: str) -> KeyValue | None:
        raw = self.kv.get(key)
        return KeyValue(PREFIX + key, raw[0], raw[1]) if raw else None

    def put(self, key: str, value: str, *, mod_revision: int | None = None, create: bool = False) -> bool:
        self.puts.append((key, value, mod_revision, create))
        if self.error is not None:
            raise self.error
        if self.before_put is not None:
            self.before_put(key)
        with self.lock:
            current = self.kv.get(key)
            if create and current is not None:
                return False
            if mod_revision is not None and (current is None or current[1] != mod_revision):
                return False
        self.set(key, value)
        self.armed = self.armed or key == "failover"
        return True

    def delete(self, key: str, *, mod_revision: int | None = None) -> bool:
        with self.lock:
            current = self.kv.get(key)
            if current is None or (mod_revision is not None and current[1] != mod_revision):
                return False
        self.remove(key)
        return True


class FakeAgent:
    def __init__(self, dcs: FakeDcs) -> None:
        self.name = "node1"
        self.dcs = dcs
        self.settings = HaSettings(ttl=8, loop_wait=1, retry_timeout=3, maximum_lag_on_failover=MB)
        self.cluster: Cluster | None = None
        self.busy: str | None = None
        self.scheduled_restart: dict[str, Any] | None = None
        self.last_switchover_result: str | None = None
        self.wake = threading.Event()
        self.node = NodeStatus(name="node1", scope="demo", version="0.1", state="running", role="primary",
                               is_leader=True, server_version=150004, xlog_location=100 * MB,
                               postmaster_start_time="2026-11-25 16:31:00.464518+00:00")
        self.submitted: list[tuple[str, dict, bool, float]] = []
        self.result = TaskResult(True, "done")
        self.read_errors = 0  # the next n read_cluster() calls fail

    def read_cluster(self) -> Cluster | None:
        if self.read_errors:
            self.read_errors -= 1
            raise DcsUnavailable("etcd is not reachable")
        self.cluster = self.dcs.get_cluster()
        return self.cluster

    def status(self) -> NodeStatus:
        return self.node

    def submit(self, kind: str, params: Any = None, *, wait: bool = True, timeout: float = 60.0) -> TaskResult:
        self.submitted.append((kind, dict(params or {}), wait, timeout))
        return self.result


class Peers:
    """The `fetch` double: every asked member answers with its DCS position unless told otherwise."""

    def __init__(self) -> None:
        self.views: dict[str, PeerView] = {}
        self.asked: list[list[str]] = []

    def __call__(self, members: Any, *, timeout: float) -> dict[str, PeerView]:
        members = list(members)
        self.asked.append([m.name for m in members])
        return {m.name: self.views.get(m.name, PeerView(m.name, reachable=True, wal_lsn=m.lsn)) for m in members}


@pytest.fixture
def dcs() -> FakeDcs:
    d = FakeDcs()
    d.set("initialize", "7712146500642140331")
    d.set("config", json.dumps(CONFIG))
    d.set("leader", "node1")
    d.set("members/node1", _member("primary"))
    d.set("members/node2", _member("replica"))
    d.set("members/node3", _member("replica"))
    d.set("status", json.dumps({"optime": 100 * MB}))
    return d


@pytest.fixture
def agent(dcs: FakeDcs) -> FakeAgent:
    return FakeAgent(dcs)


@pytest.fixture
def peers() -> Peers:
    return Peers()


def _serve(agent: FakeAgent, peers: Peers, **settings: Any):
    api = ApiServer(RestApiSettings(listen="127.0.0.1:0", **settings), scope="demo", name="node1", version="0.1",
                    get_status=agent.status, read_cluster=agent.read_cluster)
    register_operations(api, agent, fetch=peers, poll_interval=0.01, poll_timeout=0.5, lag_grace=0)
    api.start()
    return api


class _Current:
    """Forwards to the test's agent (or peer fetcher), so that one server serves the whole module."""

    def __init__(self) -> None:
        object.__setattr__(self, "target", None)

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "target"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(object.__getattribute__(self, "target"), name, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return object.__getattribute__(self, "target")(*args, **kwargs)


@pytest.fixture(scope="module")
def _shared():
    agent, peers = _Current(), _Current()
    api = ApiServer(RestApiSettings(listen="127.0.0.1:0"), scope="demo", name="node1", version="0.1",
                    get_status=lambda: agent.status(), read_cluster=lambda: agent.read_cluster())
    register_operations(api, agent, fetch=peers, poll_interval=0.01, poll_timeout=0.5, lag_grace=0)
    api.start()
    with httpx.Client(base_url=api.url, timeout=10) as c:
        yield agent, peers, c
    api.stop()


@pytest.fixture
def client(_shared, agent: FakeAgent, peers: Peers):
    current_agent, current_peers, c = _shared
    object.__setattr__(current_agent, "target", agent)
    object.__setattr__(current_peers, "target", peers)
    return c


def _pause(dcs: FakeDcs) -> None:
    dcs.set("config", json.dumps({**CONFIG, "pause": True}))


def _future(minutes: int = 30) -> str:
    return (datetime.now(timezone.utc) + timedelta(minutes=minutes)).replace(microsecond=0).isoformat()


def _promote(name: str, state: str = "running") -> Callable[[FakeDcs], None]:
    def step(d: FakeDcs) -> None:
        d.set("leader", name)
        d.set(f"members/{name}", _member("primary", state=state))
    return step


def _wait(d: FakeDcs) -> None:
    return None


# ------------------------------------------------------------------------------------------ switchover validation


@pytest.mark.parametrize(
    ("path", "body", "status", "text"),
    [
        ("/failover", {"leader": "node1"}, 400, "Failover could be performed only to a specific candidate"),
        ("/switchover", {"candidate": "node2"}, 400, "Switchover could be performed only from a specific leader"),
        ("/failover", {"candidate": "node2", "leader": "node1", "scheduled_at": _future()}, 400,
         "Failover can't be scheduled"),
        ("/switchover", {"leader": "node1", "scheduled_at": "2026-01-01T10:00:00"}, 400,
         "Timezone information is mandatory for the scheduled switchover"),
        ("/switchover", {"leader": "node1", "scheduled_at": "2020-01-01T10:00:00+00:00"}, 422,
         "Cannot schedule switchover in the past"),
        ("/switchover", {"leader": "node1", "scheduled_at": "next tuesday"}, 422,
         "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601"),
        ("/switchover", {"leader": "node1", "candidate": "node1"}, 400, "Switchover target and source are the same"),
        ("/failover", {"leader": "node2", "member": "node2"}, 400, "Switchover target and source are the same"),
        ("/switchover", {"leader": "node2", "candidate": "node3"}, 412, "leader name does not match"),
        ("/switchover", {"leader": "node1", "candidate": "node9"}, 412, "candidate does not exists"),
        ("/failover", {"candidate": "node9"}, 412, "candidate does not exists"),
    ],
)
def test_switchover_validation(client, dcs, path, body, status, text):
    r = client.post(path, json=body)
    assert (r.status_code, r.text) == (status, text)
    assert not any(p[0] == "failover" for p in dcs.puts)


def test_switchover_validation_order_paused(client, dcs):
    _pause(dcs)
    r = client.post("/switchover", json={"leader": "node1", "candidate": "node2", "scheduled_at": _future()})
    assert (r.status_code, r.text) == (400, "Can't schedule switchover in the paused state")
    r = client.post("/switchover", json={"leader": "node1"})
    assert (r.status_code, r.text) == (400, "Switchover is possible only to a specific candidate in a paused state")
    # failover without a candidate is refused before the paused rule
    r = client.post("/failover", json={"leader": "node1"})
    assert r.text == "Failover could be performed only to a specific candidate"


def test_body_required(client):
    assert client.post("/switchover", json={}).status_code == 400
    assert client.post("/switchover", content=b"{not json").status_code == 400
    assert client.patch("/config", content=b"[1]").status_code == 400
    host, port = urlsplit(str(client.base_url)).hostname, urlsplit(str(client.base_url)).port
    for method, path in (("POST", "/switchover"), ("POST", "/failover"), ("PATCH", "/config"), ("PUT", "/config")):
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(f"{method} {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
            assert s.recv(100).startswith(b"HTTP/1.0 411"), (method, path)
    assert client.post("/no-such-endpoint").status_code == 501
    assert client.put("/switchover", json={"a": 1}).status_code == 501


def test_sync_mode_candidate_checks(client, dcs):
    dcs.set("config", json.dumps({**CONFIG, "synchronous_mode": True}))
    r = client.post("/switchover", json={"leader": "node1", "candidate": "node2"})
    assert (r.status_code, r.text) == (412, "candidate name does not match with sync_standby")
    r = client.post("/switchover", json={"leader": "node1"})
    assert (r.status_code, r.text) == (412, "switchover is not possible: can not find sync_standby")
    # a failover does not need a sync standby
    dcs.set("sync", json.dumps({"leader": "node1", "sync_standby": "node3", "quorum": None}))
    r = client.post("/switchover", json={"leader": "node1", "candidate": "node2"})
    assert r.text == "candidate name does not match with sync_standby"


def test_quorum_mode_switchover_refuses_a_candidate_that_is_not_a_quorum_standby(client, dcs):
    # stricter than Patroni's REST (mode on only): the leader's loop would refuse it anyway, so say so now
    dcs.set("config", json.dumps({**CONFIG, "synchronous_mode": "quorum"}))
    dcs.set("sync", json.dumps({"leader": "node1", "quorum": 0, "sync_standby": "node3"}))
    r = client.post("/switchover", json={"leader": "node1", "candidate": "node2"})
    assert (r.status_code, r.text) == (412, "candidate name does not match with sync_standby")


def test_only_leader(client, dcs, peers):
    dcs.remove("members/node2")
    dcs.remove("members/node3")
    r = client.post("/switchover", json={"leader": "node1"})
    assert (r.status_code, r.text) == (412, "switchover is not possible: cluster does not have members except leader")
    assert peers.asked == []


def test_no_good_candidates_lists_every_reason(client, dcs, peers):
    dcs.set("members/node2", _member("replica", tags={"nofailover": True}))
    dcs.set("members/node3", _member("replica", lsn=95 * MB))
    r = client.post("/switchover", json={"leader": "node1"})
    assert r.status_code == 412
    assert r.text == ("switchover is not possible: no good candidates have been found: node2: is tagged nofailover; "
                      "node3: lags 5.0 MB behind (maximum_lag_on_failover 1.0 MB)")
    assert peers.asked == [["node2", "node3"]]


@pytest.mark.parametrize(
    ("view", "reason"),
    [
        (PeerView("node2", reachable=False), "does not answer on its REST API"),
        (PeerView("node2", reachable=True, nofailover=True, wal_lsn=100 * MB), "is tagged nofailover"),
        (PeerView("node2", reachable=True, wal_lsn=90 * MB),
         "lags 10.0 MB behind (maximum_lag_on_failover 1.0 MB)"),
    ],
)
def test_named_candidate_not_healthy(client, dcs, peers, view, reason):
    peers.views["node2"] = view
    r = client.post("/switchover", json={"leader": "node1", "candidate": "node2"})
    assert (r.status_code, r.text) == (412, f"candidate node2 is not healthy: {reason}")
    assert "failover" not in dcs.kv


def test_failover_priority_zero_is_nofailover(client, dcs):
    dcs.set("members/node2", _member("replica", tags={"failover_priority": 0}))
    r = client.post("/failover", json={"candidate": "node2"})
    assert (r.status_code, r.text) == (412, "candidate node2 is not healthy: has failover_priority 0 "
                                            "(0 or less: never promoted)")


def test_lag_uses_our_own_position_when_we_lead(client, dcs, agent):
    agent.node = replace(agent.node, xlog_location=103 * MB)  # /status optime (100 MB) is older
    r = client.post("/switchover", json={"leader": "node1", "candidate": "node2"})
    assert (r.status_code, r.text) == (412, "candidate node2 is not healthy: lags 3.0 MB behind "
                                            "(maximum_lag_on_failover 1.0 MB)")


class _CatchingUp(Peers):
    """node2 answers `behind` for its first `times` answers, then its DCS position."""

    def __init__(self, behind: int, times: int) -> None:
        super().__init__()
        self.behind, self.times = behind, times

    def __call__(self, members: Any, *, timeout: float) -> dict[str, PeerView]:
        views = super().__call__(members, timeout=timeout)
        if "node2" in views and self.times > 0:
            self.times -= 1
            views["node2"] = PeerView("node2", reachable=True, wal_lsn=self.behind)
        return views


@pytest.mark.parametrize(("times", "ok"), [(2, True), (1000, False)])
def test_wal_in_flight_is_not_lag(agent, dcs, times, ok):
    """A candidate 16 MB behind (a WAL segment switch in flight) is asked again against the same reference."""
    peers = _CatchingUp(84 * MB, times)
    api = ApiServer(RestApiSettings(listen="127.0.0.1:0"), scope="demo", name="node1", version="0.1",
                    get_status=agent.status, read_cluster=agent.read_cluster)
    register_operations(api, agent, fetch=peers, poll_interval=0.01, poll_timeout=0.2, lag_grace=0.3)
    api.start()
    try:
        t0 = time.monotonic()
        r = httpx.post(api.url + "/switchover", json={"leader": "node1", "candidate": "node2"}, timeout=5)
        took = time.monotonic() - t0
    finally:
        api.stop()
    if ok:
        assert dcs.value("failover") == {"leader": "node1", "member": "node2"}, r.text
        assert len(peers.asked) == 3
    else:
        assert (r.status_code, r.text) == (412, "candidate node2 is not healthy: lags 16.0 MB behind "
                                                "(maximum_lag_on_failover 1.0 MB)")
        assert "failover" not in dcs.kv and len(peers.asked) >= 3 and 0.3 <= took < 2


def test_reference_is_the_leaders_live_position_when_we_do_not_lead(client, dcs, agent, peers):
    agent.name = "node3"  # the request reached a replica; node1 leads
    peers.views["node1"] = PeerView("node1", reachable=True, wal_lsn=103 * MB, is_primary=True)
    r = client.post("/switchover", json={"leader": "node1", "candidate": "node2"})
    assert (r.status_code, r.text) == (412, "candidate node2 is not healthy: lags 3.0 MB behind "
                                            "(maximum_lag_on_failover 1.0 MB)")
    assert peers.asked == [["node1"], ["node2"]]  # the leader first, then the candidate


def test_lag_not_checked_without_a_healthy_leader(client, dcs):
    dcs.set("members/node1", _member("primary", state="stopped"))
    dcs.set("members/node2", _member("replica", lsn=10 * MB))
    dcs.script = [_promote("node2")]
    r = client.post("/failover", json={"candidate": "node2"})
    assert (r.status_code, r.text) == (200, 'Successfully failed over to "node2"')
    assert dcs.value("failover") == {"member": "node2"}


# ------------------------------------------------------------------------------------------ switchover outcome


def test_scheduled_switchover(client, dcs, agent):
    when = _future()
    r = client.post("/switchover", json={"leader": "node1", "candidate": "node2", "scheduled_at": when})
    assert (r.status_code, r.text) == (202, "Switchover scheduled")
    assert dcs.value("failover") == {"leader": "node1", "member": "node2", "scheduled_at": when}
    assert dcs.puts[-1][2:] == (None, True)  # the key was absent: create-only
    assert agent.wake.is_set()


def test_scheduled_switchover_without_candidate_skips_candidate_checks(client, dcs, peers):
    r = client.post("/switchover", json={"leader": "node1", "scheduled_at": "2099-01-01T00:00:00Z"})
    assert (r.status_code, r.text) == (202, "Switchover scheduled")
    assert dcs.value("failover") == {"leader": "node1", "scheduled_at": "2099-01-01T00:00:00+00:00"}
    assert peers.asked == []


def test_switchover_success_waits_for_a_running_primary(client, dcs, agent):
    agent.last_switchover_result = "an old reason"
    # the lock moves first, PostgreSQL is promoted a few reads later; the key is cleared on the way
    dcs.script = [_wait, _promote("node2", state="starting"), lambda d: d.set("failover", "{}"), _wait,
                  _promote("node2")]
    r = client.post("/switchover", json={"leader": "node1", "candidate": "node2"})
    assert (r.status_code, r.text) == (200, 'Successfully switched over to "node2"')
    assert dcs.script == []
    assert agent.last_switchover_result is None


def test_switchover_without_candidate(client, dcs):
    dcs.script = [_promote("node3")]
    r = client.post("/switchover", json={"leader": "node1"})
    assert (r.status_code, r.text) == (200, 'Successfully switched over to "node3"')
    assert dcs.value("failover") == {"leader": "node1"}


def test_failover_with_leader_is_a_switchover(client, dcs):
    dcs.script = [_promote("node2")]
    r = client.post("/failover", json={"leader": "node1", "candidate": "node2"})
    assert (r.status_code, r.text) == (200, 'Successfully switched over to "node2"')


def test_switched_over_to_another_member(client, dcs):
    dcs.script = [_promote("node3")]
    r = client.post("/switchover", json={"leader": "node1", "member": "node2"})
    assert (r.status_code, r.text) == (200, 'Switched over to "node3" instead of "node2"')


def test_failed_over_to_another_member(client, dcs):
    dcs.script = [_promote("node2")]
    r = client.post("/failover", json={"candidate": "node3"})
    assert (r.status_code, r.text) == (200, 'Failed over to "node2" instead of "node3"')


def test_switchover_failed_with_the_loops_reason(client, dcs, agent):
    def refuse(d: FakeDcs) -> None:
        agent.last_switchover_result = "node2 lags 5 MB behind (maximum_lag_on_failover 1 MB)"
        d.remove("failover")

    dcs.script = [_wait, refuse]
    r = client.post("/switchover", json={"leader": "node1", "candidate": "node2"})
    assert (r.status_code, r.text) == (503, "Switchover failed: node2 lags 5 MB behind (maximum_lag_on_failover 1 MB)")


def test_switchover_failed_without_reason(client, dcs):
    dcs.script = [lambda d: d.set("failover", "{}")]
    r = client.post("/switchover", json={"leader": "node1", "candidate": "node2"})
    assert (r.status_code, r.text) == (503, "Switchover failed")


def test_leaderless_with_the_key_gone_is_not_yet_a_failure(client, dcs):
    dcs.script = [lambda d: (d.remove("leader"), d.remove("failover")), _wait, _promote("node2")]
    r = client.post("/switchover", json={"leader": "node1", "candidate": "node2"})
    assert (r.status_code, r.text) == (200, 'Successfully switched over to "node2"')


def test_switchover_poll_survives_dcs_errors(client, dcs, agent):
    def flaky(d: FakeDcs) -> None:
        agent.read_errors = 3

    dcs.script = [flaky, _promote("node2")]
    r = client.post("/switchover", json={"leader": "node1", "candidate": "node2"})
    assert (r.status_code, r.text) == (200, 'Successfully switched over to "node2"')


def test_dcs_unreachable(client, agent):
    agent.read_errors = 1
    r = client.post("/switchover", json={"leader": "node1", "candidate": "node2"})
    assert (r.status_code, r.text) == (503, "etcd is not reachable")
    agent.read_errors = 1
    assert client.patch("/config", json={"pause": True}).status_code == 503
    agent.read_errors = 1
    agent.cluster = None  # no snapshot either
    assert client.post("/reinitialize").text == "Cluster has no leader, can not reinitialize"


def test_switchover_status_unknown(client, dcs):
    r = client.post("/failover", json={"candidate": "node2"})
    assert (r.status_code, r.text) == (
        503, "Failover status unknown after 0 seconds; operation may still be in progress")
    assert dcs.value("failover") == {"member": "node2"}


def test_default_poll_timeout_is_at_least_30_seconds(agent, peers, dcs, monkeypatch):
    from ctl.agent import switchover as operations

    api = ApiServer(RestApiSettings(listen="127.0.0.1:0"), scope="demo", name="node1", version="0.1",
                    get_status=agent.status, read_cluster=agent.read_cluster)
    register_operations(api, agent, fetch=peers, poll_interval=0.0)
    clock = iter(range(0, 1000, 5))
    monkeypatch.setattr(operations.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(operations.time, "sleep", lambda s: None)
    route = api.routes[("POST", "switchover")]
    from ctl.agent.api import Request

    r = route.handler(Request("POST", "/switchover", {}, {}, data={"leader": "node1", "candidate": "node2"}))
    assert (r.status, r.body) == (503, "Switchover status unknown after 30 seconds; operation may still be in progress")
    agent.settings = replace(agent.settings, loop_wait=20)
    dcs.remove("failover")
    r = route.handler(Request("POST", "/switchover", {}, {}, data={"leader": "node1", "candidate": "node2"}))
    assert r.body == "Switchover status unknown after 40 seconds; operation may still be in progress"


def test_failover_key_is_written_with_cas(client, dcs):
    dcs.set("failover", json.dumps({"leader": "node1", "member": "node3", "scheduled_at": _future(60)}))
    revision = dcs.kv["failover"][1]
    when = _future()
    r = client.post("/switchover", json={"leader": "node1", "candidate": "node2", "scheduled_at": when})
    assert r.status_code == 202
    assert dcs.puts[-1][2:] == (revision, False)
    assert dcs.value("failover") == {"leader": "node1", "member": "node2", "scheduled_at": when}


def test_failover_key_cas_conflict(client, dcs):
    dcs.before_put = lambda key: dcs.set("failover", "{}") if key == "failover" else None
    r = client.post("/switchover", json={"leader": "node1", "candidate": "node2", "scheduled_at": _future()})
    assert (r.status_code, r.text) == (503, "failed to write failover key into DCS")


def test_failover_key_write_error(client, dcs):
    dcs.error = DcsUnavailable("etcd is down")
    r = client.post("/switchover", json={"leader": "node1", "candidate": "node2"})
    assert (r.status_code, r.text) == (503, "failed to write failover key into DCS")


# ------------------------------------------------------------------------------------------ DELETE /switchover


def test_delete_switchover(client, dcs, agent):
    assert (client.delete("/switchover").status_code, client.delete("/switchover").text) == (
        404, "no switchover is scheduled")
    dcs.set("failover", json.dumps({"leader": "node1", "member": "node2"}))  # immediate: not deletable
    assert client.delete("/switchover").status_code == 404
    dcs.set("failover", json.dumps({"leader": "node1", "scheduled_at": _future()}))
    revision = dcs.kv["failover"][1]
    r = client.delete("/switchover")
    assert (r.status_code, r.text) == (200, "scheduled switchover deleted")
    assert dcs.value("failover") == {}
    assert dcs.puts[-1][2] == revision
    assert client.delete("/switchover").status_code == 404


def test_delete_switchover_conflict(client, dcs):
    dcs.set("failover", json.dumps({"leader": "node1", "scheduled_at": _future()}))
    dcs.before_put = lambda key: dcs.set("failover", json.dumps({"leader": "node1", "scheduled_at": _future(5)}))
    assert client.delete("/switchover").status_code == 409


# ------------------------------------------------------------------------------------------ restart


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({"role": "leader"}, 400, "PostgreSQL role should be either primary, standby_leader, or replica"),
        ({"postgres_version": "fifteen"}, 400,
         "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: fifteen"),
        ({"postgres_version": "9.6"}, 400, "Invalid PostgreSQL version: 9.6"),
        ({"timeout": 0}, 400, "Timeout should be a positive number of seconds"),
        ({"timeout": "soon"}, 400, "Timeout should be a positive number of seconds"),
        ({"force": True}, 400, "Unknown filter for the scheduled restart: force"),
        ({"schedule": "2026-01-01 10:00"}, 400, "Timezone information is mandatory for the scheduled restart"),
        ({"schedule": "2020-01-01T10:00:00+00:00"}, 422, "Cannot schedule restart in the past"),
        ({"schedule": "tomorrow"}, 422,
         "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601"),
        # the keys are checked in the order they were sent
        ({"zzz": 1, "role": "x"}, 400, "Unknown filter for the scheduled restart: zzz"),
    ],
)
def test_restart_validation(client, agent, body, status, text):
    r = client.post("/restart", json=body)
    assert (r.status_code, r.text) == (status, text)
    assert agent.submitted == [] and agent.scheduled_restart is None


def test_restart_paused_schedule(client, dcs):
    _pause(dcs)
    r = client.post("/restart", json={"schedule": _future()})
    assert (r.status_code, r.text) == (500, "Can't schedule restart in the paused state")


def test_scheduled_restart(client, agent):
    when = _future()
    r = client.post("/restart", json={"schedule": when, "role": "master", "restart_pending": True, "timeout": "60s"})
    assert (r.status_code, r.text) == (202, "Restart scheduled")
    assert agent.scheduled_restart == {"schedule": when, "postmaster_start_time": "2026-11-25 16:31:00.464518+00:00",
                                       "role": "primary", "restart_pending": True, "timeout": 60}
    r = client.post("/restart", json={"schedule": _future(40)})
    assert (r.status_code, r.text) == (409, "Another restart is already scheduled")
    assert agent.scheduled_restart["schedule"] == when
    assert agent.submitted == []
    r = client.delete("/restart")
    assert (r.status_code, r.text) == (200, "scheduled restart deleted")
    assert agent.scheduled_restart is None
    r = client.delete("/restart")
    assert (r.status_code, r.text) == (404, "no restarts are scheduled")


def test_restart_now(client, agent):
    agent.result = TaskResult(True, "restarted successfully")
    r = client.post("/restart")
    assert (r.status_code, r.text) == (200, "restarted successfully")
    assert agent.submitted == [("restart", {"timeout": 300}, True, 330)]
    r = client.post("/restart", json={"timeout": 20, "role": "primary", "postgres_version": "15.5"})
    assert r.status_code == 200
    assert agent.submitted[-1] == ("restart", {"timeout": 20}, True, 50)


def test_restart_failed(client, agent):
    agent.result = TaskResult(False, "postgres is not running")
    r = client.post("/restart", json={})
    assert (r.status_code, r.text) == (503, "postgres is not running")
    agent.result = TaskResult(False, "")
    assert client.post("/restart").text == "restart failed"


@pytest.mark.parametrize("body", [{"role": "replica"}, {"postgres_version": "15.4"}, {"postgres_version": "14.9"},
                                  {"restart_pending": True}])
def test_restart_conditions_not_satisfied(client, agent, body):
    r = client.post("/restart", json=body)
    assert (r.status_code, r.text) == (503, "restart conditions are not satisfied")
    assert agent.submitted == []


def test_restart_busy(client, agent):
    agent.busy = "reinitialize"
    r = client.post("/restart")
    assert (r.status_code, r.text) == (503, "reinitialize already in progress")
    assert agent.submitted == []


def test_restart_matches_table():
    st = NodeStatus(name="n", scope="s", version="v", role="replica", server_version=150004, pending_restart=True)
    assert restart_matches({}, st)
    assert restart_matches({"role": "replica", "postgres_version": "15.5", "restart_pending": True}, st)
    assert not restart_matches({"role": "primary"}, st)
    assert not restart_matches({"postgres_version": "15.4"}, st)
    assert not restart_matches({"postgres_version": "16.0"}, replace(st, server_version=None))
    assert not restart_matches({"restart_pending": True}, replace(st, pending_restart=False))
    assert restart_matches({"restart_pending": False}, replace(st, pending_restart=False))


# ------------------------------------------------------------------------------------------ reload, reinitialize


def test_reload(client, agent):
    r = client.post("/reload")
    assert (r.status_code, r.text) == (202, "reload scheduled")
    assert agent.submitted == [("reload", {}, False, 5)]


def test_reinitialize(client, agent, dcs):
    r = client.post("/reinitialize")
    assert (r.status_code, r.text) == (503, "I am the leader, can not reinitialize")
    agent.name = "node2"
    agent.busy = "restart"
    r = client.post("/reinitialize", json={})
    assert (r.status_code, r.text) == (503, "restart already in progress")
    assert agent.submitted == []
    r = client.post("/reinitialize", json={"force": True, "from_leader": "true"})
    assert (r.status_code, r.text) == (200, "reinitialize started")
    assert agent.submitted == [("reinitialize", {"force": True, "from_leader": True}, False, 10)]
    agent.busy = None
    agent.result = TaskResult(False, "reinitialize did not start within 10s")
    r = client.post("/reinitialize")
    assert (r.status_code, r.text) == (503, "reinitialize did not start within 10s")
    dcs.remove("leader")
    r = client.post("/reinitialize")
    assert (r.status_code, r.text) == (503, "Cluster has no leader, can not reinitialize")


# ------------------------------------------------------------------------------------------ config


def test_patch_config(client, dcs, agent):
    revision = dcs.kv["config"][1]
    r = client.patch("/config", json={"pause": True, "postgresql": {"parameters": {"max_connections": None}},
                                      "maximum_lag_on_failover": None})
    assert r.status_code == 200
    expected = {"ttl": 8, "loop_wait": 1, "retry_timeout": 3, "postgresql": {"parameters": {}}, "pause": True}
    assert r.json() == expected
    assert dcs.value("config") == expected
    assert dcs.puts[-1][2] == revision
    assert agent.wake.is_set()


def test_patch_config_without_change_writes_nothing(client, dcs):
    r = client.patch("/config", json={"ttl": 8})
    assert r.status_code == 200 and r.json() == CONFIG
    assert dcs.puts == []


def test_patch_config_invalid(client, dcs):
    r = client.patch("/config", json={"ttl": 5, "maximum_lag_on_failover": -1})
    assert r.status_code == 400
    assert r.text == ("loop_wait + 2*retry_timeout must be <= ttl (1 + 2*3 > 5); "
                      "maximum_lag_on_failover must be >= 0, got -1")
    assert dcs.puts == []


def test_patch_config_existing_problems_do_not_block(client, dcs):
    dcs.set("config", json.dumps({**CONFIG, "no_such_key": 1}))  # as in Patroni 4.1.5's captured DCS
    r = client.patch("/config", json={"pause": True})
    assert r.status_code == 200 and r.json()["pause"] is True
    r = client.patch("/config", json={"postgresql": {"parameters": {"max_connections": "lots"}}})
    assert (r.status_code, r.text) == (400, "postgresql.parameters.max_connections must be an integer, got 'lots'")
    assert client.put("/config", json={**CONFIG, "no_such_key": 2}).status_code == 200
    r = client.put("/config", json={**CONFIG, "other_key": 2})
    assert (r.status_code, r.text) == (400, "unknown key other_key")


def test_patch_config_conflict_and_missing(client, dcs):
    dcs.before_put = lambda key: dcs.set("config", json.dumps({**CONFIG, "loop_wait": 2}))
    assert client.patch("/config", json={"pause": True}).status_code == 409
    assert dcs.value("config")["loop_wait"] == 2
    dcs.remove("config")
    assert client.patch("/config", json={"pause": True}).status_code == 503
    assert client.patch("/config", json={}).status_code == 400


def test_put_config(client, dcs, agent):
    new = {"ttl": 20, "loop_wait": 2, "retry_timeout": 5}
    r = client.put("/config", json=new)
    assert (r.status_code, r.json()) == (200, new)
    assert dcs.value("config") == new
    assert dcs.puts[-1][2:] == (None, False)  # unconditional
    assert agent.wake.is_set()
    dcs.puts.clear()
    assert client.put("/config", json=new).status_code == 200
    assert dcs.puts == []  # unchanged: nothing written
    r = client.put("/config", json={"ttl": "x"})
    assert (r.status_code, r.text) == (400, "ttl must be an integer, got 'x'")
    dcs.error = DcsUnavailable("etcd is down")
    assert client.put("/config", json={"ttl": 30}).status_code == 502
    dcs.error = None
    agent.read_errors = 1  # PUT does not need to read first
    assert client.put("/config", json={"ttl": 30}).status_code == 200
    assert dcs.value("config") == {"ttl": 30}


# ------------------------------------------------------------------------------------------ access


ENDPOINTS = [("POST", "/switchover"), ("POST", "/failover"), ("DELETE", "/switchover"), ("POST", "/restart"),
             ("DELETE", "/restart"), ("POST", "/reload"), ("POST", "/reinitialize"), ("PATCH", "/config"),
             ("PUT", "/config")]


def test_authentication_required(agent, peers, dcs):
    api = _serve(agent, peers, username="admin", password="s3cret")
    try:
        with httpx.Client(base_url=api.url, timeout=10) as c:
            for method, path in ENDPOINTS:
                r = c.request(method, path, json={"leader": "node1"})
                assert (r.status_code, r.text) == (401, "no auth header received"), (method, path)
                assert r.headers["WWW-Authenticate"] == 'Basic realm="Patroni"'
                r = c.request(method, path, json={"leader": "node1"}, auth=("admin", "wrong"))
                assert (r.status_code, r.text) == (401, "not authenticated"), (method, path)
            assert agent.submitted == [] and dcs.puts == []
            r = c.post("/reload", auth=("admin", "s3cret"))
            assert (r.status_code, r.text) == (202, "reload scheduled")
            token = base64.b64encode(b"admin:s3cret").decode()
            r = c.delete("/restart", headers={"Authorization": f"Basic {token}"})
            assert r.status_code == 404
    finally:
        api.stop()


def test_allowlist(agent, peers):
    api = _serve(agent, peers, allowlist=("10.0.0.0/8",))
    try:
        with httpx.Client(base_url=api.url, timeout=10) as c:
            r = c.post("/reload")
            assert (r.status_code, r.text) == (403, "Access is denied")
    finally:
        api.stop()


# ------------------------------------------------------------------------------------------ pure helpers


def test_parse_schedule():
    now = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
    assert parse_schedule("2026-11-25T12:59:59+01:00", "switchover", now)[:2] == (422, "Cannot schedule switchover "
                                                                                        "in the past")
    status, error, when = parse_schedule("2026-11-25 12:30Z", "restart", now)
    assert (status, error) == (None, None)
    assert when == datetime(2026, 11, 25, 12, 30, tzinfo=timezone.utc)
    assert parse_schedule(None, "restart", now)[0] == 422


def test_postgres_version_to_int():
    assert postgres_version_to_int("15.4") == 150004
    assert postgres_version_to_int("9.6.24") == 90624
    assert postgres_version_to_int("16.0") == 160000
    for bad in ("15", "1.2.3.4", "9.6", "x.y"):
        with pytest.raises(ValueError):
            postgres_version_to_int(bad)


def test_rejection_order():
    m = Member("n", tags={"nofailover": True}, xlog_location=0)
    assert rejection(m, None, 10, 1) == ("is tagged nofailover; does not answer on its REST API; "
                                         "lags 10 bytes behind (maximum_lag_on_failover 1 bytes)")
    m = Member("n", replay_lsn=5)
    assert rejection(m, None, 10, 1) == ("does not answer on its REST API; "
                                         "lags 5 bytes behind (maximum_lag_on_failover 1 bytes)")
    assert rejection(m, PeerView("n", reachable=True), 10, 1) == "lags 5 bytes behind (maximum_lag_on_failover 1 bytes)"
    assert rejection(m, PeerView("n", reachable=True, wal_lsn=9), 10, 1) is None
    assert rejection(m, PeerView("n", reachable=True, wal_lsn=0), None, 1) is None  # no healthy leader: no lag check
    assert rejection(Member("n"), PeerView("n", reachable=True), 10, 1) == "reports no WAL position"
